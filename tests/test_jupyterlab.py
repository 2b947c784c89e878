"""`make lab` serves the course: start JupyterLab exactly as `dlcourse lab` does and list the notebooks."""

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from dlcourse.cli import lab_command

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_jupyterlab_lists_the_course_notebooks(tmp_path):
    pytest.importorskip("jupyterlab", reason="JupyterLab is in the `lab` extra, not installed here (a GPU box)")
    port, token = _free_port(), "dlcourse-test-token"
    command = lab_command(ROOT, port, open_browser=False) + [f"--IdentityProvider.token={token}",
                                                             "--ServerApp.ip=127.0.0.1"]
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path), "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        listing, deadline = None, time.monotonic() + 90
        while listing is None and time.monotonic() < deadline:
            if server.poll() is not None:
                raise AssertionError(f"JupyterLab exited: {server.stdout.read().decode(errors='replace')}")
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/api/contents/notebooks",
                                                 headers={"Authorization": f"token {token}"})
                with urllib.request.urlopen(request, timeout=5) as response:
                    listing = json.load(response)
            except OSError:
                time.sleep(0.5)
        assert listing is not None, "JupyterLab did not answer within 90 s"
        names = {item["name"] for item in listing["content"]}
        expected = {p.with_suffix(".ipynb").name for p in (ROOT / "notebooks").glob("*.py")}
        assert expected and expected <= names
        with urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{port}/api/kernelspecs", headers={"Authorization": f"token {token}"})) as r:
            assert "dlcourse" in json.load(r)["kernelspecs"], "the dlcourse kernel is not registered"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
