"""Start JupyterLab exactly as `make lab` does (dlcourse.cli.lab_command), for tests/test_jupyterlab.py and
tests/test_browser.py."""

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from dlcourse.cli import lab_command

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "dlcourse-test-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git_status(root: Path = ROOT) -> str | None:
    """``git status --porcelain`` of the course's notebooks, labs and solutions (what JupyterLab or jupytext could
    write; not the whole checkout, which other tests running alongside may touch); None outside a git checkout."""
    try:
        done = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", "notebooks", "labs",
                               "solutions"], cwd=root,
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def start_lab(workspace: Path, runtime: Path, **env: str) -> tuple[subprocess.Popen, str]:
    """JupyterLab as `make lab` starts it (plus a token and a loopback address), serving ``workspace``, with ``env``
    added to the environment; returns the process and the base URL once the server answers (its log goes to
    ``runtime/server.log``; its settings and runtime files stay in ``runtime``)."""
    port = free_port()
    command = lab_command(workspace, port, open_browser=False) + [f"--IdentityProvider.token={TOKEN}",
                                                                  "--ServerApp.ip=127.0.0.1"]
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime), "JUPYTER_CONFIG_DIR": str(runtime / "config"), **env}
    log = open(runtime / "server.log", "wb")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workspace)
    log.close()
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 90
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"JupyterLab exited: {(runtime / 'server.log').read_text(errors='replace')}")
        try:
            api(url, "/api/status")
            return server, url
        except OSError:
            time.sleep(0.3)
    stop(server)
    raise AssertionError("JupyterLab did not answer within 90 s")


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def api(url: str, path: str, method: str = "GET", body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, method=method,
                                     headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)
