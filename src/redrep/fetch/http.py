"""Download one file over HTTP(S), resumably and verified.

:func:`download_file` streams a URL to ``dest`` + ``".part"``, resumes a
partial file with an HTTP ``Range`` request, retries transient failures with
exponential backoff, checks size and checksums, and only then renames the
partial file onto ``dest``. A reader never sees a half-downloaded ``dest``.

Failures raise :class:`~redrep.core.validation.RedrepError` with one line. A
transfer that broke off leaves its ``.part`` file behind so that the next call
resumes it; a file that fails its checks is deleted.

Only the standard library is used (``urllib.request`` with its proxy and
redirect handling), so downloading needs no extra dependency.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from .. import __version__
from ..core.validation import RedrepError
from ..storage.io import write_error

CHUNK_BYTES = 1 << 20
USER_AGENT = f"redrep/{__version__} (+python urllib)"
#: HTTP statuses worth asking again: the server may recover.
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Requests for one file in all, whatever the server does (progress included), before giving up.
MAX_ATTEMPTS = 100


def file_md5(path) -> str:
    """Hex md5 of a file, read in blocks."""
    return _file_digest(path, "md5")


def file_sha256(path) -> str:
    """Hex sha256 of a file, read in blocks."""
    return _file_digest(path, "sha256")


def _file_digest(path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(CHUNK_BYTES):
            h.update(block)
    return h.hexdigest()


def part_path(dest) -> Path:
    """The partial file beside ``dest`` that :func:`download_file` writes and resumes."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


class _Transient(Exception):
    """A failure worth retrying; ``str`` is the one-line reason."""


def download_file(
    url: str,
    dest: Path | str,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    retries: int = 4,
    backoff: float = 0.5,
    timeout: tuple[float, float] = (10.0, 60.0),
    progress: bool = True,
    desc: str | None = None,
    max_bytes: int | None = None,
    max_attempts: int = MAX_ATTEMPTS,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``; return ``dest``.

    Parameters
    ----------
    url : str
        An ``http(s)://`` URL (``file://`` works too, without resuming).
    dest : path
        Final file. Its folder is created. An existing ``dest`` is replaced
        only once the new file is complete and verified.
    md5, sha256 : str, optional
        Expected hex digests; a mismatch deletes the partial file and raises.
    size : int, optional
        Expected size in bytes, checked like the digests.
    retries : int
        How many times in a row a transient failure (connection refused or
        reset, timeout, HTTP 408/429/5xx, a body cut short) is retried. An
        attempt that takes the file further than it ever was resets the count,
        so a long transfer over a flaky link keeps going as long as it makes
        progress; a server that restarts the file (a 200 to a ``Range``
        request) and breaks off again makes none.
    backoff : float
        Seconds before the first retry; doubled at each further one.
    timeout : (float, float)
        Connect and read timeouts in seconds (the read timeout bounds each
        wait for data, not the whole transfer).
    progress : bool
        Show a tqdm bar on stderr (total from Content-Length when sent).
    desc : str, optional
        Label of the bar; the file name by default.
    max_bytes : int, optional
        The most the file can be when ``size`` is not known; a body that
        announces or sends more is deleted and refused. ``size`` bounds it
        when given.
    max_attempts : int
        Requests in all, whatever the server does, before giving up.

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    RedrepError
        HTTP 4xx (at once), transient failures beyond ``retries`` or
        ``max_attempts``, a body larger than the file can be, a size/digest
        mismatch, a full disk. The ``.part`` file stays for a
        resume unless its content is known to be wrong.
    """
    check_url(url)
    dest = Path(dest)
    part = part_path(dest)
    retries = max(0, int(retries))
    limit = size if size is not None else max_bytes
    connect_timeout, read_timeout = (float(t) for t in timeout)
    opener = _opener(read_timeout)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(exc, dest.parent) from None

    failures = 0
    attempts = 0
    furthest = file_size(part)  # progress means holding more of the file than ever before
    while True:
        attempts += 1
        try:
            done = _attempt(opener, url, part, size, limit, connect_timeout, progress, desc or dest.name)
        except _Transient as exc:
            held = file_size(part)
            failures = 1 if held > furthest else failures + 1
            furthest = max(furthest, held)
            if failures > retries or attempts >= max_attempts:
                if failures > retries:
                    tries = "1 attempt" if retries == 0 else f"{retries + 1} attempts in a row"
                else:
                    tries = f"{attempts} attempts in all"
                if held:
                    tries += f"; {held} bytes kept in {part}, run again to resume"
                raise RedrepError(f"{url}: {exc} ({tries})") from None
            time.sleep(backoff * 2 ** (failures - 1))
            continue
        if done:
            break
        if attempts >= max_attempts:
            raise RedrepError(f"{url}: the server kept restarting the transfer ({attempts} attempts in all)")

    _verify(part, dest, size=size, md5=md5, sha256=sha256)
    try:
        os.replace(part, dest)
    except OSError as exc:
        raise write_error(exc, dest) from None
    return dest


def _attempt(opener, url, part, size, limit, connect_timeout, progress, desc) -> bool:
    """One request; True when ``part`` holds the whole body, False to ask again at once."""
    offset = file_size(part)
    if size is not None and offset >= size:
        if offset == size:
            return True  # complete from an earlier run; verified by the caller
        _unlink(part)  # longer than the file can be: not a prefix of it
        offset = 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = opener.open(request, timeout=connect_timeout)
    except urllib.error.HTTPError as exc:
        with exc:
            if exc.code == 416 and offset:
                # Nothing left past our offset: either complete or not a prefix of this file.
                total = _content_range_total(exc.headers.get("Content-Range"))
                if total == offset:
                    return True
                _unlink(part)
                return False
            line = f"HTTP {exc.code} {exc.reason}".rstrip()
            if exc.code in TRANSIENT_STATUS:
                raise _Transient(line) from None
            raise RedrepError(f"{url}: {line}") from None
    except urllib.error.URLError as exc:
        raise _connection_error(url, exc.reason) from None
    except (http.client.HTTPException, OSError) as exc:
        raise _connection_error(url, exc) from None
    except ValueError as exc:  # malformed URL
        raise RedrepError(f"{url}: expected a valid URL ({exc})") from None

    with response:
        status = response.getcode() or 200  # file:// has no status
        mode = "wb"
        if offset and status == 206:
            start = _content_range_start(response.headers.get("Content-Range"))
            if start != offset:
                _unlink(part)
                return False  # a range we did not ask for: start over cleanly
            mode = "ab"
        elif offset:
            offset = 0  # 200 to a Range request: the server cannot resume, start from zero
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.strip().isdigit() else None
        if limit is not None and length is not None and offset + length > limit:
            _unlink(part)
            raise RedrepError(
                f"{url}: the server announces {offset + length} bytes, more than the {limit} bytes the file can be; "
                f"expected {_expected(size, limit)}"
            )
        total = offset + length if length is not None else size
        bar = tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=desc,
            disable=not progress,
            file=sys.stderr,
            leave=False,
        )
        received = 0
        try:
            f = open(part, mode)
        except OSError as exc:
            raise write_error(exc, part) from None
        with f, bar:
            while True:
                try:
                    block = response.read1(CHUNK_BYTES)  # what has arrived: keeps data sent before a reset
                except (http.client.HTTPException, OSError) as exc:
                    where = f"after {offset + received} bytes"
                    raise _Transient(f"connection lost {where} ({_reason(exc)})") from None
                if not block:
                    break
                if limit is not None and offset + received + len(block) > limit:
                    f.close()
                    _unlink(part)  # cannot be the file: nothing to resume
                    raise RedrepError(
                        f"{url}: the body goes past {limit} bytes, more than the file can be; "
                        f"expected {_expected(size, limit)} (deleted {part})"
                    )
                try:
                    f.write(block)
                except OSError as exc:
                    raise write_error(exc, part) from None
                received += len(block)
                bar.update(len(block))
        if length is not None and received < length:
            # http.client returns b"" rather than raising when the peer closes early
            where = f"after {offset + received} of {offset + length} bytes"
            raise _Transient(f"connection closed {where}")
    return True


def _verify(part: Path, dest: Path, *, size, md5, sha256) -> None:
    found = file_size(part)
    if size is not None and found != size:
        _unlink(part)
        raise RedrepError(f"{dest}: size mismatch, expected {size} bytes, found {found}")
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected is None:
            continue
        try:
            digest = _file_digest(part, algorithm)
        except OSError as exc:
            raise write_error(exc, part) from None
        if digest.lower() != expected.strip().lower():
            _unlink(part)
            raise RedrepError(f"{dest}: {algorithm} mismatch, expected {expected}, found {digest}")


def _expected(size, limit) -> str:
    return f"exactly {size} bytes" if size is not None else f"at most {limit} bytes"


def check_url(url) -> str:
    """An ``http(s)://`` or ``file://`` URL with a host (http) that urllib can parse; one-line error otherwise."""
    text = str(url)
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise RedrepError(f"{text}: expected a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https", "file"):
        raise RedrepError(f"{text}: expected an http(s):// or file:// URL")
    if parts.scheme.lower() in ("http", "https") and not parts.hostname:
        raise RedrepError(f"{text}: expected an http(s):// URL with a host name")
    return text


# --------------------------------------------------------------------- errors
def _reason(exc) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__


def _connection_error(url: str, reason) -> Exception:
    """Classify a failure to get a response: certificate problems are final, the rest transient."""
    if isinstance(reason, ssl.SSLCertVerificationError):
        return RedrepError(f"{url}: TLS certificate rejected ({reason.verify_message or reason})")
    if isinstance(reason, ssl.SSLError):
        return _Transient(f"TLS handshake failed ({reason.reason or reason})")
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return _Transient("timed out waiting for the server")
    if isinstance(reason, (FileNotFoundError, PermissionError, IsADirectoryError)):  # file:// URLs
        return RedrepError(f"{url}: {reason.strerror or reason}")
    if isinstance(reason, (http.client.HTTPException, ConnectionResetError, ConnectionAbortedError)):
        return _Transient(f"connection lost ({_reason(reason)})")
    if isinstance(reason, str):
        return _Transient(f"network unreachable ({reason})")
    return _Transient(f"network unreachable ({_reason(reason)})")


# ---------------------------------------------------------------------- utils
def file_size(path: Path) -> int:
    """Size in bytes, 0 for a missing file."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-199/200"
    try:
        return int(value.split()[1].split("-")[0])
    except (AttributeError, IndexError, ValueError):
        return None


def _content_range_total(value: str | None) -> int | None:
    # "bytes */200"
    try:
        return int(value.rsplit("/", 1)[1])
    except (AttributeError, IndexError, ValueError):
        return None


_TIMED_CLASSES: dict = {}


def _timed_connection(cls, read_timeout: float):
    """A connection class that connects under the request timeout, then reads under ``read_timeout``."""
    key = (cls, read_timeout)
    if key not in _TIMED_CLASSES:

        class Timed(cls):
            def connect(self):
                super().connect()
                self.sock.settimeout(read_timeout)

        _TIMED_CLASSES[key] = Timed
    return _TIMED_CLASSES[key]


class _TimedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, read_timeout: float):
        super().__init__()
        self.read_timeout = read_timeout

    def do_open(self, http_class, req, **kwargs):
        return super().do_open(_timed_connection(http_class, self.read_timeout), req, **kwargs)


class _TimedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, read_timeout: float):
        super().__init__()
        self.read_timeout = read_timeout

    def do_open(self, http_class, req, **kwargs):
        return super().do_open(_timed_connection(http_class, self.read_timeout), req, **kwargs)


def _opener(read_timeout: float) -> urllib.request.OpenerDirector:
    # build_opener keeps its proxy, redirect and file handlers and uses ours for http(s)
    return urllib.request.build_opener(_TimedHTTPHandler(read_timeout), _TimedHTTPSHandler(read_timeout))
