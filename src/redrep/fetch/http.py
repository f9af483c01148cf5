"""One file over HTTP(S), resumable and verified: a pooch downloader, and :func:`download_file` around it.

:class:`RangeDownloader` is a pooch downloader (a callable ``(url, output_file, pooch)``) adding what
pooch's own lacks: it streams into ``DEST.part``, which a later call resumes with an HTTP ``Range``
request; refuses a body larger than the file can be; treats a stalled server as a transient failure
(no response headers within ``stall_timeout`` seconds, or under ``min_rate`` bytes/s over a
``stall_timeout`` window); retries transient failures with capped exponential backoff; checks size and
digests; and only then renames the part onto ``output_file``. Every failure is a one-line RedrepError
with the password of a ``user:pw@`` URL hidden. The transport is urllib rather than requests: its
connection classes hand over the socket that the header deadline closes, and it reads ``file://`` too.
"""

from __future__ import annotations

import base64
import http.client
import os
import re
import socket
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pooch
from tqdm.auto import tqdm

from .. import __version__
from ..core.validation import RedrepError, check_float, check_int
from ..storage.io import write_error

CHUNK_BYTES = 1 << 20
USER_AGENT = f"redrep/{__version__} (+python urllib)"
#: HTTP statuses worth asking again: the server may recover.
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
#: The most retries in a row, and the longest wait before one (seconds).
MAX_RETRIES, MAX_WAIT = 10, 30.0


@dataclass
class Limits:
    """How long and how often one transfer may try.

    retries : transient failures in a row retried (0..10); an attempt that takes the file further than
        it ever was resets the count, unless it ended in a stall
    backoff : seconds before the first retry, doubled at each further one, at most 30 s
    connect_timeout, read_timeout : seconds to connect, and to wait for each piece of data
    stall_timeout : seconds allowed for the response headers, and the window over which the body
        must average ``min_rate`` bytes/s
    min_rate : bytes/s; a slower body is a stall (0: never)
    max_attempts : requests in all, whatever the server does
    """

    retries: int = 4
    backoff: float = 0.5
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    stall_timeout: float = 30.0
    min_rate: float = 1000.0
    max_attempts: int = 100

    def __post_init__(self):
        self.retries = check_int(self.retries, "retries", min_value=0, max_value=MAX_RETRIES)
        self.backoff = check_float(self.backoff, "backoff", min_value=0.0, max_value=MAX_WAIT)
        self.min_rate = check_float(self.min_rate, "min_rate", min_value=0.0)
        for name in ("connect_timeout", "read_timeout", "stall_timeout"):
            setattr(self, name, check_float(getattr(self, name), name, min_value=1e-3))
        self.max_attempts = check_int(self.max_attempts, "max_attempts", min_value=1)

    def wait(self, failures: int) -> float:
        """Seconds to sleep before retrying after ``failures`` failures in a row."""
        return min(MAX_WAIT, self.backoff * 2.0 ** (failures - 1))


def file_md5(path) -> str:
    """Hex md5 of a file, read in blocks."""
    return pooch.file_hash(str(path), alg="md5")


def file_sha256(path) -> str:
    """Hex sha256 of a file, read in blocks."""
    return pooch.file_hash(str(path), alg="sha256")


def part_path(dest) -> Path:
    """The partial file beside ``dest`` that :class:`RangeDownloader` writes and resumes."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def file_size(path: Path) -> int:
    """Size in bytes, 0 for a missing file."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def redact(url) -> str:
    """``url`` with its userinfo (``user:password@``) shown as ``***@``: fit for messages, logs and manifests."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@", r"\1***@", str(url))


def check_url(url) -> str:
    """An ``http(s)://`` or ``file://`` URL with a host (http) that urllib can parse; one-line error otherwise."""
    text = str(url)
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise RedrepError(f"{redact(text)}: expected a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https", "file"):
        raise RedrepError(f"{redact(text)}: expected an http(s):// or file:// URL")
    if parts.scheme.lower() in ("http", "https") and not parts.hostname:
        raise RedrepError(f"{redact(text)}: expected an http(s):// URL with a host name")
    return text


def download_file(
    url, dest, *, md5=None, sha256=None, size=None, max_bytes=None, desc=None, progress=True, limits=None
):
    """Download ``url`` to ``dest`` through ``dest.part`` (see :class:`RangeDownloader`); return ``dest``.

    An existing ``dest`` is replaced only once the new file is complete and verified.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(exc, dest.parent) from None
    RangeDownloader(dest, md5=md5, sha256=sha256, size=size, max_bytes=max_bytes, limits=limits, desc=desc,
                    progress=progress)(url, dest)  # fmt: skip
    return dest


class _Transient(Exception):
    """A failure worth retrying; ``str`` is the one-line reason; a stall never counts as progress."""

    def __init__(self, reason: str, stalled: bool = False):
        super().__init__(reason)
        self.stalled = stalled


class RangeDownloader:
    """A pooch downloader that resumes ``dest.part``, bounded and verified, and hands it to ``output_file``.

    Parameters
    ----------
    dest : path
        The file being fetched: names the ``.part`` file and the messages.
    md5, sha256 : str, optional
        Expected hex digests; a mismatch deletes the part and raises.
    size : int, optional
        Expected size in bytes, checked like the digests; it also bounds the body.
    max_bytes : int, optional
        The most the file can be when ``size`` is not known.
    limits : Limits, optional
        Retries, timeouts and the stall rule.
    desc, progress : label of the tqdm bar on stderr, and whether to show it.
    """

    def __init__(
        self, dest, *, md5=None, sha256=None, size=None, max_bytes=None, limits=None, desc=None, progress=True
    ):
        self.dest, self.part = Path(dest), part_path(dest)
        self.digests = {"md5": md5, "sha256": sha256}
        self.size, self.limit = size, size if size is not None else max_bytes
        self.limits = limits or Limits()
        self.desc, self.progress = desc or self.dest.name, progress

    def __call__(self, url: str, output_file, _pooch=None) -> None:
        check_url(url)
        shown, lim = redact(url), self.limits
        failures = attempts = 0
        furthest = file_size(self.part)  # progress means holding more of the file than ever before
        while True:
            attempts += 1
            try:
                if self._attempt(url, shown):
                    break
            except _Transient as exc:
                held = file_size(self.part)
                failures = 1 if held > furthest and not exc.stalled else failures + 1
                furthest = max(furthest, held)
                if failures > lim.retries or attempts >= lim.max_attempts:
                    raise RedrepError(f"{shown}: {exc} ({self._tries(failures, attempts, held)})") from None
                time.sleep(lim.wait(failures))
                continue
            if attempts >= lim.max_attempts:
                raise RedrepError(f"{shown}: the server kept restarting the transfer ({attempts} attempts in all)")
        self._verify()
        try:
            os.replace(self.part, output_file)
        except OSError as exc:
            raise write_error(exc, output_file) from None

    def _tries(self, failures: int, attempts: int, held: int) -> str:
        if failures > self.limits.retries:
            tries = "1 attempt" if self.limits.retries == 0 else f"{self.limits.retries + 1} attempts in a row"
        else:
            tries = f"{attempts} attempts in all"
        return tries + (f"; {held} bytes kept in {self.part}, run again to resume" if held else "")

    def _attempt(self, url: str, shown: str) -> bool:
        """One request; True when the part holds the whole body, False to ask again at once."""
        offset = file_size(self.part)
        if self.size is not None and offset >= self.size:
            if offset == self.size:
                return True  # complete from an earlier run; verified next
            _unlink(self.part)  # longer than the file can be: not a prefix of it
            offset = 0
        response = self._open(url, shown, offset)
        if isinstance(response, bool):
            return response
        with response:
            mode = "wb"
            if offset and response.getcode() == 206:
                if _range_start(response.headers.get("Content-Range")) != offset:
                    _unlink(self.part)
                    return False  # a range we did not ask for: start over cleanly
                mode = "ab"
            offset = offset if mode == "ab" else 0  # a 200 to a Range request: the server restarts the file
            self._stream(response, offset, mode, shown)
        return True

    def _open(self, url: str, shown: str, offset: int):
        """The response once its headers are in (a bool where a 416 settles the attempt)."""
        parts = urllib.parse.urlsplit(url)
        plain = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        request = urllib.request.Request(plain, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        if parts.username is not None:  # an unredirected header: never sent on to a redirect's target
            user = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            request.add_unredirected_header("Authorization", "Basic " + base64.b64encode(user.encode()).decode())
        stalled = _Transient(f"no response headers within {self.limits.stall_timeout:g} s", stalled=True)
        with _Deadline(self.limits.stall_timeout) as deadline:
            try:
                response = _opener(self.limits.read_timeout, deadline).open(
                    request, timeout=self.limits.connect_timeout
                )
            except urllib.error.HTTPError as exc:
                with exc:
                    return self._refused(exc, shown, offset)
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                raise stalled if deadline.fired else _connection_error(shown, getattr(exc, "reason", exc)) from None
            except ValueError as exc:  # malformed URL
                raise RedrepError(f"{shown}: expected a valid URL ({exc})") from None
        if deadline.fired:  # cut between two header lines: what was read is not the whole head
            response.close()
            raise stalled
        return response

    def _refused(self, exc: urllib.error.HTTPError, shown: str, offset: int) -> bool:
        if exc.code == 416 and offset:
            # Nothing left past our offset: either complete or not a prefix of this file.
            if _range_total(exc.headers.get("Content-Range")) == offset:
                return True
            _unlink(self.part)
            return False
        line = f"HTTP {exc.code} {exc.reason}".rstrip()
        if exc.code in TRANSIENT_STATUS:
            raise _Transient(line) from None
        raise RedrepError(f"{shown}: {line}") from None

    def _stream(self, response, offset: int, mode: str, shown: str) -> None:
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.strip().isdigit() else None
        if self.limit is not None and length is not None and offset + length > self.limit:
            _unlink(self.part)
            raise RedrepError(
                f"{shown}: the server announces {offset + length} bytes, more than the {self.limit} bytes the file "
                f"can be; expected {self._expected()}"
            )
        total = offset + length if length is not None else self.size
        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=self.desc,
                   disable=not self.progress, file=sys.stderr, leave=False)  # fmt: skip
        try:
            f = open(self.part, mode)
        except OSError as exc:
            raise write_error(exc, self.part) from None
        received, window = 0, (time.monotonic(), 0)
        with f, bar:
            while block := _read(response, offset + received):
                if self.limit is not None and offset + received + len(block) > self.limit:
                    f.close()
                    _unlink(self.part)  # cannot be the file: nothing to resume
                    raise RedrepError(
                        f"{shown}: the body goes past {self.limit} bytes, more than the file can be; "
                        f"expected {self._expected()} (deleted {self.part})"
                    )
                try:
                    f.write(block)
                except OSError as exc:
                    raise write_error(exc, self.part) from None
                received += len(block)
                bar.update(len(block))
                window = self._check_rate(window, received, offset)
        if length is not None and received < length:
            # http.client returns b"" rather than raising when the peer closes early
            raise _Transient(f"connection closed after {offset + received} of {offset + length} bytes")

    def _check_rate(self, window: tuple[float, int], received: int, offset: int) -> tuple[float, int]:
        """The stall rule over consecutive windows of ``stall_timeout`` seconds; returns the current window."""
        start, base = window
        now = time.monotonic()
        if now - start < self.limits.stall_timeout:
            return window
        rate = (received - base) / (now - start)
        if rate < self.limits.min_rate:
            raise _Transient(
                f"stalled after {offset + received} bytes ({rate:.0f} B/s over the last {now - start:.0f} s, "
                f"below the minimum of {self.limits.min_rate:g} B/s)",
                True,
            )
        return now, received

    def _verify(self) -> None:
        found = file_size(self.part)
        if self.size is not None and found != self.size:
            _unlink(self.part)
            raise RedrepError(f"{self.dest}: size mismatch, expected {self.size} bytes, found {found}")
        for algorithm, expected in self.digests.items():
            if expected is None:
                continue
            try:
                digest = pooch.file_hash(str(self.part), alg=algorithm)
            except OSError as exc:
                raise write_error(exc, self.part) from None
            if digest.lower() != expected.strip().lower():
                _unlink(self.part)
                raise RedrepError(f"{self.dest}: {algorithm} mismatch, expected {expected}, found {digest}")

    def _expected(self) -> str:
        return f"exactly {self.size} bytes" if self.size is not None else f"at most {self.limit} bytes"


def _read(response, at: int) -> bytes:
    try:
        return response.read1(CHUNK_BYTES)  # what has arrived: keeps data sent before a reset
    except (http.client.HTTPException, OSError) as exc:
        raise _Transient(f"connection lost after {at} bytes ({_reason(exc)})") from None


def _reason(exc) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__


def _connection_error(shown: str, reason) -> Exception:
    """Classify a failure to get a response: certificate problems and missing local files are final."""
    if isinstance(reason, ssl.SSLCertVerificationError):
        return RedrepError(f"{shown}: TLS certificate rejected ({reason.verify_message or reason})")
    if isinstance(reason, ssl.SSLError):
        return _Transient(f"TLS handshake failed ({reason.reason or reason})")
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return _Transient("timed out waiting for the server")
    if isinstance(reason, (FileNotFoundError, PermissionError, IsADirectoryError)):  # file:// URLs
        return RedrepError(f"{shown}: {reason.strerror or reason}")
    if isinstance(reason, (http.client.HTTPException, ConnectionResetError, ConnectionAbortedError)):
        return _Transient(f"connection lost ({_reason(reason)})")
    return _Transient(f"network unreachable ({reason if isinstance(reason, str) else _reason(reason)})")


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


def _range_start(value: str | None) -> int | None:  # "bytes 100-199/200"
    try:
        return int(value.split()[1].split("-")[0])
    except (AttributeError, IndexError, ValueError):
        return None


def _range_total(value: str | None) -> int | None:  # "bytes */200"
    try:
        return int(value.rsplit("/", 1)[1])
    except (AttributeError, IndexError, ValueError):
        return None


class _Deadline:
    """The header deadline: once it passes, the request's sockets are shut, which wakes a blocked read."""

    def __init__(self, seconds: float):
        self.socks, self.fired = [], False
        self.timer = threading.Timer(seconds, self.fire)

    def __enter__(self):
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()

    def add(self, sock) -> None:
        self.socks.append(sock)
        if self.fired:
            self.fire()

    def fire(self) -> None:
        self.fired = True
        for sock in list(self.socks):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _opener(read_timeout: float, deadline: _Deadline) -> urllib.request.OpenerDirector:
    """urllib's opener (proxies, redirects, file://) whose connections read under ``read_timeout`` once
    connected (under the request's connect timeout) and are watched by ``deadline``."""

    def handler(base):
        class Timed(base):
            def do_open(self, http_class, req, **kwargs):
                class Connection(http_class):
                    def connect(self):
                        super().connect()
                        self.sock.settimeout(read_timeout)
                        deadline.add(self.sock)

                return super().do_open(Connection, req, **kwargs)

        return Timed()

    return urllib.request.build_opener(handler(urllib.request.HTTPHandler), handler(urllib.request.HTTPSHandler))
