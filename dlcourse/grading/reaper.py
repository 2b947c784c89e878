"""No process a student's kernel starts outlives its grading, even without the sandbox.

A grading worker makes itself a *child subreaper* (Linux ``PR_SET_CHILD_SUBREAPER``): a process that double-forks
and calls ``setsid`` to leave its kernel's process group is re-parented to the worker instead of to init, so it
stays in the worker's process tree. Before the worker reports a result, and before the coordinator gives up on a
stuck worker, every process in that tree is stopped (so none can fork while the tree is walked) and killed, until
the tree is empty. Elsewhere (macOS) the subreaper is not available and only the walk remains.
"""

from __future__ import annotations

import os
import sys

import psutil

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Adopt this process's orphaned descendants (Linux); returns whether it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def kill_descendants(pid: int | None = None, *, rounds: int = 20) -> int:
    """Stop, then kill, every descendant of ``pid`` (default: this process) until none is left; returns how many
    were killed. The process itself is left alone."""
    try:
        root = psutil.Process(pid or os.getpid())
    except psutil.NoSuchProcess:
        return 0
    killed = 0
    for _ in range(rounds):
        _reap(root)
        try:
            found = [p for p in root.children(recursive=True) if _alive(p)]
        except psutil.NoSuchProcess:
            break
        if not found:
            break
        for proc in found:  # freeze first: a stopped process cannot fork a new one while we walk the tree
            try:
                proc.suspend()
            except psutil.Error:
                pass
        for proc in found:
            try:
                proc.kill()
                killed += 1
            except psutil.Error:
                pass
        psutil.wait_procs(found, timeout=2)
    return killed


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _reap(root: psutil.Process) -> None:
    """Collect this process's dead children (orphans it adopted as a subreaper are its children now)."""
    if root.pid != os.getpid():
        return
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_tree(pid: int) -> None:
    """Kill ``pid`` and everything below it (descendants first, so orphans cannot escape to init)."""
    kill_descendants(pid)
    try:
        psutil.Process(pid).kill()
    except psutil.Error:
        pass
