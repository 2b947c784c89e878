"""Where a student's kernel runs: inside a bubblewrap sandbox (``bwrap``) by default on Linux, or unconfined.

In the sandbox the kernel has its own PID namespace (nothing it starts outlives it; no other process is visible),
no network (its own loopback only), the Python environment and the course package read-only, a private writable
``/tmp`` and working directory, and nothing else of the file system: not ``solutions/``, not a hidden-test overlay,
not the grader's output folder, not the home directory. The kernel talks to the grader over Unix sockets in one
folder bound into the sandbox (ZeroMQ's ``ipc`` transport), because TCP cannot cross the network namespace.

``sandbox="none"`` runs the kernel as an ordinary process (macOS, containers without user namespaces): the grader
then relies on its other defences (killing a kernel's every descendant, hashing the course files) and says loudly
that a hostile submission can read files and reach the network.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from functools import lru_cache
from pathlib import Path

MODES = ("auto", "bwrap", "none")
#: /etc entries a Python kernel may need (dynamic linker, users for getpass, time zone); nothing secret.
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group", "nsswitch.conf",
       "alternatives")
HOSTNAME = "sandbox"
#: System folders bound read-only: executables and shared libraries (no user data lives there).
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")

INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: `sudo apt-get install bubblewrap`; Fedora: `sudo dnf install "
                "bubblewrap`), or grade with `--sandbox none` on a machine you trust the class with")


class SandboxError(RuntimeError):
    """The requested sandbox cannot run here; the message says why and what to do."""


@lru_cache(maxsize=None)
def _bwrap_works(bwrap: str) -> str:
    """'' when ``bwrap`` can create the namespaces we need here, else bwrap's own complaint."""
    try:
        probe = subprocess.run([bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--proc",
                                "/proc", "--dev", "/dev", "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return "" if probe.returncode == 0 else (probe.stderr.strip() or f"exit code {probe.returncode}")


def resolve(mode: str = "auto") -> str:
    """The sandbox to use: "bwrap" or "none". ``auto`` means bwrap on Linux and fails (never silently unconfined)
    when it is missing or cannot run; "none" must be asked for."""
    if mode not in MODES:
        raise SandboxError(f"unknown sandbox {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "none":
        return "none"
    if not sys.platform.startswith("linux"):
        raise SandboxError(f"no kernel sandbox on {sys.platform}: bubblewrap needs Linux. Grade on Linux, or pass "
                           "`--sandbox none` if you trust every submission (it can then read files and use the "
                           "network)")
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxError(f"bubblewrap (`bwrap`) is not installed: {INSTALL_HINT}")
    problem = _bwrap_works(bwrap)
    if problem:
        raise SandboxError(f"bubblewrap cannot create a sandbox here ({problem}); this machine may not allow user "
                           f"namespaces (e.g. inside some containers). {INSTALL_HINT}")
    return "bwrap"


def available() -> tuple[str, str]:
    """("bwrap", "") when bubblewrap can confine a kernel here, else ("none", why not)."""
    try:
        return resolve("auto"), ""
    except SandboxError as exc:
        return "none", str(exc)


def _python_roots() -> list[Path]:
    """Folders the kernel's Python needs: its environment, the base interpreter's, and the course package."""
    import dlcourse

    roots = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), Path(sysconfig.get_paths()["purelib"]),
             Path(dlcourse.__file__).resolve().parent}
    for path in list(roots):  # a venv's python is a symlink into the base interpreter's folder
        roots.add(path.resolve())
    return sorted(p for p in roots if p.exists())


def bwrap_prefix(workdir: Path, runtime: Path, *, gpu: bool = False) -> list[str]:
    """The ``bwrap ... --`` argument list that confines a kernel: ``workdir`` (its cwd) and ``runtime`` (the
    connection file and sockets) are the only writable places besides a private ``/tmp``."""
    # Its own host name, resolvable through a hosts file of its own: torchrun and gloo look the host name up
    # (the machine's /etc/hosts is not bound, and DNS is out of reach).
    hosts = runtime / "hosts"
    hosts.write_text(f"127.0.0.1 localhost {HOSTNAME}\n::1 localhost ip6-localhost\n")
    argv = [shutil.which("bwrap") or "bwrap", "--unshare-all", "--die-with-parent", "--new-session",
            "--hostname", HOSTNAME, "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/dev/shm",
            "--ro-bind", str(hosts), "/etc/hosts"]
    for folder in SYSTEM:
        if Path(folder).exists():
            argv += ["--ro-bind", folder, folder] if not Path(folder).is_symlink() else \
                ["--symlink", str(Path(folder).readlink()), folder]
    for name in ETC:
        if (Path("/etc") / name).exists():
            argv += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    for root in _python_roots():
        argv += ["--ro-bind", str(root), str(root)]
    if gpu:  # the NVIDIA device files and the driver's view of the system
        for dev in sorted(Path("/dev").glob("nvidia*")):
            argv += ["--dev-bind", str(dev), str(dev)]
        if Path("/sys").exists():
            argv += ["--ro-bind", "/sys", "/sys"]
    argv += ["--bind", str(workdir), str(workdir), "--bind", str(runtime), str(runtime), "--chdir", str(workdir),
             "--setenv", "HOME", str(workdir), "--setenv", "TMPDIR", "/tmp", "--setenv", "MPLCONFIGDIR", "/tmp",
             "--unsetenv", "JPY_PARENT_PID", "--"]
    return argv


def kernel_manager(kernel_name: str, sandbox: str, workdir: Path, runtime: Path, *, gpu: bool = False):
    """A jupyter_client kernel manager for one kernel: unconfined (TCP on localhost, as usual) or in bubblewrap
    (the launch command wrapped in bwrap, ZeroMQ over Unix sockets in ``runtime``).

    It is the asynchronous manager, as nbclient makes for itself: a blocking one gives nbclient a blocking client
    whose wait for output holds the event loop, so a kernel that dies mid-cell (``os._exit``, a crash) is never
    polled and the run waits for its timeout."""
    from jupyter_client.manager import AsyncKernelManager as KernelManager

    if sandbox == "none":
        return KernelManager(kernel_name=kernel_name)
    prefix = bwrap_prefix(workdir, runtime, gpu=gpu)

    class SandboxedKernelManager(KernelManager):
        def format_kernel_cmd(self, extra_arguments=None):
            return [*prefix, *super().format_kernel_cmd(extra_arguments)]

    return SandboxedKernelManager(kernel_name=kernel_name, transport="ipc", ip=str(runtime / "kernel"),
                                  connection_file=str(runtime / "kernel.json"))
