"""Tests for dlcourse.download against a local HTTP server started by the tests (never the real network).

Each test serves small files from ``http.server`` on 127.0.0.1 (port 0) in a thread: success and the cache
hit with the server gone, a wrong checksum, 404, a server that never answers, a transfer cut short, the
fallback to a second mirror, a half-written file in the cache, and ``DLCOURSE_OFFLINE``.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import time
from pathlib import Path

import pytest

from dlcourse import download
from dlcourse.download import DownloadError, RemoteFile

PAYLOAD = bytes(range(256)) * 400                     # 100 kB: several read chunks
SHA = hashlib.sha256(PAYLOAD).hexdigest()
FAST = 0.3                                              # seconds: the timeout used for servers that stall


class _Server:
    """A threaded HTTP server on 127.0.0.1 serving ``routes`` (path -> bytes, or a function that answers).

    Counts requests; ``stop()`` shuts it down and closes the port, so later requests are refused."""

    def __init__(self, routes: dict) -> None:
        self.routes, self.requests, self.release = routes, [], threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the http.server API)
                server.requests.append(self.path)
                route = server.routes.get(self.path)
                if route is None:
                    self.send_error(404, "Not Found")
                elif callable(route):
                    route(self, server.release)
                else:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(route)))
                    self.end_headers()
                    self.wfile.write(route)

            def log_message(self, *args):  # keep pytest's output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def stop(self) -> None:
        self.release.set()                                # let stalled handlers finish
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(download.DATA_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(download.OFFLINE_ENV, raising=False)
    return tmp_path / "cache"


@pytest.fixture
def server():
    servers = []

    def start(routes: dict) -> _Server:
        servers.append(_Server(routes))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def _file(*urls: str, sha: str = SHA, size: int | None = len(PAYLOAD)) -> RemoteFile:
    return RemoteFile("data.bin", sha, size, tuple(urls))


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.part")) if folder.exists() else []


def test_data_dir_follows_the_environment(cache):
    assert download.data_dir() == cache
    assert download.cache_path(_file(), "sub") == cache / "sub" / "data.bin"


def test_download_then_cache_hit_with_the_server_gone(cache, server, capsys):
    s = server({"/data.bin": PAYLOAD})
    remote = _file(s.url("/data.bin"))
    path = download.fetch(remote, "sub")
    assert path == cache / "sub" / "data.bin" and path.read_bytes() == PAYLOAD
    assert download.is_cached(remote, "sub") and _leftovers(path.parent) == []
    assert "downloading data.bin" in capsys.readouterr().out
    s.stop()
    assert download.fetch(remote, "sub", offline=True, quiet=True) == path    # no network needed, or allowed
    assert download.fetch(remote, "sub", quiet=True) == path
    assert s.requests == ["/data.bin"]                                       # exactly one download


def test_wrong_checksum_fails_and_leaves_nothing_that_looks_valid(cache, server):
    s = server({"/data.bin": PAYLOAD})
    remote = _file(s.url("/data.bin"), sha="0" * 64)
    with pytest.raises(DownloadError) as info:
        download.fetch(remote, quiet=True)
    message = str(info.value)
    for part in (s.url("/data.bin"), "wrong SHA-256", "data.bin", str(cache / "data.bin"), "DLCOURSE_OFFLINE",
                 "dlcourse data fetch"):
        assert part in message
    assert not (cache / "data.bin").exists() and _leftovers(cache) == []


def test_404_names_the_url_and_the_status(cache, server):
    s = server({})
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        download.fetch(_file(s.url("/missing.bin")), quiet=True)
    assert s.url("/missing.bin") in str(info.value) and not (cache / "data.bin").exists()


def test_a_server_that_accepts_and_never_answers_fails_within_the_timeout(cache):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)                              # the kernel completes the handshake; nobody ever replies
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/data.bin"
        start = time.monotonic()
        with pytest.raises(DownloadError, match="timed out") as info:
            download.fetch(_file(url), timeout=FAST, quiet=True)
        assert time.monotonic() - start < 10 * FAST
        assert url in str(info.value)
    finally:
        silent.close()
    assert _leftovers(cache) == [] and not (cache / "data.bin").exists()


def _stall_mid_body(handler, release: threading.Event) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(PAYLOAD)))
    handler.end_headers()
    handler.wfile.write(PAYLOAD[:100])
    handler.wfile.flush()
    release.wait(5)                               # stalls until the test is over


def _cut_short(handler, release: threading.Event) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(PAYLOAD)))
    handler.end_headers()
    handler.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
    handler.close_connection = True               # the connection closes with half the promised bytes


def test_a_transfer_that_stalls_mid_body_fails_fast(cache, server):
    s = server({"/data.bin": _stall_mid_body})
    start = time.monotonic()
    with pytest.raises(DownloadError, match="timed out"):
        download.fetch(_file(s.url("/data.bin")), timeout=FAST, quiet=True)
    assert time.monotonic() - start < 10 * FAST
    assert _leftovers(cache) == [] and not (cache / "data.bin").exists()


def test_a_transfer_cut_short_fails(cache, server):
    s = server({"/data.bin": _cut_short})
    with pytest.raises(DownloadError, match="data.bin"):
        download.fetch(_file(s.url("/data.bin")), timeout=FAST, quiet=True)
    assert _leftovers(cache) == [] and not (cache / "data.bin").exists()


def test_more_bytes_than_expected_are_refused(cache, server):
    s = server({"/data.bin": PAYLOAD + b"extra"})
    with pytest.raises(DownloadError, match="more than the expected"):
        download.fetch(_file(s.url("/data.bin")), quiet=True)


def test_falls_back_to_the_second_mirror(cache, server):
    bad, good = server({}), server({"/data.bin": PAYLOAD})
    path = download.fetch(_file(bad.url("/data.bin"), good.url("/data.bin")), quiet=True)
    assert path.read_bytes() == PAYLOAD
    assert bad.requests == ["/data.bin"] and good.requests == ["/data.bin"]


def test_a_half_written_file_in_the_cache_is_replaced(cache, server):
    s = server({"/data.bin": PAYLOAD})
    remote = _file(s.url("/data.bin"))
    cache.mkdir(parents=True)
    (cache / "data.bin").write_bytes(PAYLOAD[:1000])           # an interrupted copy
    (cache / "data.bin.xyz.part").write_bytes(PAYLOAD[:10])    # a killed download's leftover
    assert not download.is_cached(remote)
    with pytest.raises(DownloadError, match="wrong size or checksum"):
        download.fetch(remote, offline=True, quiet=True)       # offline: reported, not used
    assert download.fetch(remote, quiet=True).read_bytes() == PAYLOAD
    assert s.requests == ["/data.bin"]


def test_a_half_written_file_is_removed_when_the_download_fails(cache, server):
    s = server({})
    cache.mkdir(parents=True)
    (cache / "data.bin").write_bytes(PAYLOAD[:1000])
    with pytest.raises(DownloadError):
        download.fetch(_file(s.url("/data.bin")), quiet=True)
    assert not (cache / "data.bin").exists()


def test_offline_environment_never_touches_the_network(cache, server, monkeypatch):
    s = server({"/data.bin": PAYLOAD})
    monkeypatch.setenv(download.OFFLINE_ENV, "1")
    with pytest.raises(DownloadError, match="DLCOURSE_OFFLINE") as info:
        download.fetch(_file(s.url("/data.bin")), quiet=True)
    assert str(cache / "data.bin") in str(info.value) and s.requests == []


def test_unknown_size_still_checks_the_checksum(cache, server):
    s = server({"/data.bin": PAYLOAD})
    assert download.fetch(_file(s.url("/data.bin"), size=None), quiet=True).read_bytes() == PAYLOAD


# --- the command line: dlcourse data path / fetch ------------------------------------------------------------

def test_cli_data_path(cache, capsys):
    from dlcourse.cli import main

    assert main(["data", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(cache)


def test_cli_data_fetch_fills_the_cache_and_reports_failures(cache, server, monkeypatch, capsys):
    from dlcourse import data
    from dlcourse.cli import build_parser, main

    for name in data.REAL_DATASETS:                        # the command offers every real dataset
        assert build_parser().parse_args(["data", "fetch", name]).names == [name]
    s = server({"/data.bin": PAYLOAD})
    monkeypatch.setitem(data.REAL_DATASETS, "fashion-mnist", (data.fashion_mnist, [_file(s.url("/data.bin"))]))
    assert main(["data", "fetch", "fashion-mnist"]) == 0
    assert f"1 file(s) verified (SHA-256) in {cache / 'fashion-mnist'}" in capsys.readouterr().out
    assert (cache / "fashion-mnist" / "data.bin").read_bytes() == PAYLOAD
    monkeypatch.setitem(data.REAL_DATASETS, "fashion-mnist", (data.fashion_mnist, [_file(s.url("/gone.bin"))]))
    (cache / "fashion-mnist" / "data.bin").unlink()
    assert main(["data", "fetch", "fashion-mnist"]) == 1
    assert "HTTP 404" in capsys.readouterr().err
