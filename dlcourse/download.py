"""Downloads with SHA-256 checks and a cache directory: the only code in the course that touches the network.

Used by :mod:`dlcourse.data` for the real datasets of full scale (Fashion-MNIST in notebooks 03 and 05) and by
``dlcourse data fetch``, which fills the cache in advance on a machine with network. Rules:

- The cache is ``$DLCOURSE_DATA_DIR``, else ``$XDG_CACHE_HOME/dlcourse``, else ``~/.cache/dlcourse``. A file
  already there with the right checksum is used without touching the network.
- A download goes to a temporary ``*.part`` file next to its destination, is hashed while it is written, and
  is renamed into place only when its SHA-256 is right: a reader never sees half a file, and a corrupt
  download is deleted, never left looking valid. Parallel processes downloading the same file do not collide.
- Connecting and every read have a timeout, and the whole transfer has a deadline, so a stalled server ends
  with an error instead of a hang.
- Mirrors are tried in order. When all fail (no network, 404, timeout, wrong checksum), one
  :class:`DownloadError` names every URL tried and why, the file, the cache path and what to do.
- With ``$DLCOURSE_OFFLINE`` set, nothing is downloaded: only the cache is used.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .config import OFFLINE_ENV, offline_requested

DATA_DIR_ENV = "DLCOURSE_DATA_DIR"
#: Seconds allowed to connect and for each read: a server that accepts and then stays silent fails this fast.
TIMEOUT = 30.0
#: The slowest average speed tolerated (bytes per second) before a transfer is abandoned as stalled.
MIN_RATE = 20_000
CHUNK = 1 << 16


class DownloadError(RuntimeError):
    """A file could not be downloaded or verified; the message says which URLs were tried and what to do."""


@dataclass(frozen=True)
class RemoteFile:
    """A file to download: its name in the cache, its SHA-256 (hex), its size in bytes and its mirrors."""

    name: str
    sha256: str
    size: int | None
    urls: tuple[str, ...]


def data_dir() -> Path:
    """The cache directory for downloaded datasets (not created here)."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dlcourse"


def sha256_of(path: Path) -> str:
    """SHA-256 of a file's bytes, as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_path(file: RemoteFile, subdir: str = "") -> Path:
    """Where ``file`` lives in the cache: ``data_dir() / subdir / file.name``."""
    return data_dir() / subdir / file.name


def is_cached(file: RemoteFile, subdir: str = "") -> bool:
    """True when the cache holds ``file`` with the right size and checksum (reads it; never downloads)."""
    path = cache_path(file, subdir)
    if not path.is_file() or (file.size is not None and path.stat().st_size != file.size):
        return False
    return sha256_of(path) == file.sha256


def _download(url: str, destination: Path, file: RemoteFile, timeout: float) -> None:
    """Stream ``url`` to a temp file beside ``destination``; rename it into place if the SHA-256 is right.

    Raises OSError (urllib's errors included) for network problems and DownloadError for a wrong size or
    checksum."""
    request = urllib.request.Request(url, headers={"User-Agent": "dlcourse (urllib)"})
    deadline = time.monotonic() + timeout + (file.size or 0) / MIN_RATE
    digest, received = hashlib.sha256(), 0
    fd, tmp_name = tempfile.mkstemp(dir=destination.parent, prefix=destination.name + ".", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
            while True:
                block = response.read(CHUNK)
                if not block:
                    break
                received += len(block)
                if file.size is not None and received > file.size:
                    raise DownloadError(f"the server sent more than the expected {file.size:,} bytes")
                if time.monotonic() > deadline:
                    raise DownloadError(f"stalled: {received:,} bytes by the deadline")
                digest.update(block)
                out.write(block)
        if file.size is not None and received != file.size:
            raise DownloadError(f"got {received:,} bytes, expected {file.size:,} (transfer cut short?)")
        if digest.hexdigest() != file.sha256:
            raise DownloadError(f"wrong SHA-256 {digest.hexdigest()} (expected {file.sha256})")
        os.replace(tmp, destination)        # atomic on one file system: readers see no file or all of it
    finally:
        tmp.unlink(missing_ok=True)


def _reason(error: BaseException) -> str:
    """A short, readable reason for a failed attempt."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        error = error.reason if isinstance(error.reason, BaseException) else error
    if isinstance(error, (socket.timeout, TimeoutError)):
        return "timed out (no answer)"
    return str(error) or type(error).__name__


def fetch(file: RemoteFile, subdir: str = "", *, timeout: float = TIMEOUT, offline: bool | None = None,
          quiet: bool = False) -> Path:
    """The path of ``file`` in the cache folder ``subdir`` (a dataset's name, e.g. ``"fashion-mnist"``),
    downloading it from its mirrors first when it is missing or corrupt.

    ``offline`` (default: ``$DLCOURSE_OFFLINE``) forbids the network: only an already cached file is returned.
    Raises :class:`DownloadError` naming every URL tried and why, the cache path and what to do.
    """
    destination = cache_path(file, subdir)
    if destination.is_file():
        if is_cached(file, subdir):
            return destination
        problem = f"the cached copy at {destination} has the wrong size or checksum (an interrupted copy?)"
    else:
        problem = f"{file.name} is not in the cache {destination.parent}"
    if offline is None:
        offline = offline_requested()
    size = f", {file.size:,} bytes" if file.size is not None else ""
    how = (f"What to do: download the file by hand from one of the URLs above to {destination} (SHA-256 "
           f"{file.sha256}{size}), or run `dlcourse data fetch {subdir or 'NAME'}` on a machine with network "
           f"and "
           f"copy its cache folder to {data_dir()} (or point {DATA_DIR_ENV} at the copy)")
    if offline:
        raise DownloadError(f"{problem}, and {OFFLINE_ENV} forbids downloading it.\n"
                            f"  URLs: {', '.join(file.urls)}"
                            f"\n{how}; or unset {OFFLINE_ENV} to let the course download it.")
    destination.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in file.urls:
        if not quiet:
            print(f"downloading {file.name}{size} from {url} ...", flush=True)
        try:
            _download(url, destination, file, timeout)
        except (OSError, http.client.HTTPException, DownloadError, ValueError) as error:  # URLError: OSError
            failures.append(f"  {url}: {_reason(error)}")
            continue
        if not quiet:
            print(f"saved {destination}", flush=True)
        return destination
    if destination.is_file() and not is_cached(file, subdir):
        destination.unlink()                  # a corrupt file must not look valid to the next reader
    raise DownloadError(f"could not download {file.name} into {destination}; tried:\n" + "\n".join(failures) +
                        f"\n{how}; or set {OFFLINE_ENV}=1 to run full scale on the offline datasets.")
