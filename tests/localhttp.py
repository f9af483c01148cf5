"""A scriptable HTTP server on 127.0.0.1 for download tests.

Usage::

    with LocalServer() as srv:
        srv.routes["/f.bin"] = Route(body=b"...", drop_after=[100])
        download_file(srv.url("/f.bin"), tmp_path / "f.bin")
        assert srv.requests[-1].range == "bytes=100-"

Each :class:`Route` says what the server does for one path, request after
request: fail with a status, cut the body short, stall, ignore ``Range``.
Every request is logged in ``srv.requests``.
"""

from __future__ import annotations

import base64
import io
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    """Behaviour of one path.

    body : bytes served (with Content-Length unless ``send_length`` is False)
    status : status of a normal reply (e.g. 302 with a Location header)
    headers : extra headers of every reply
    fail : statuses sent, one per request, before serving normally
    drop_after : body bytes sent, one entry per request, before the connection is cut
    reset : cut with a TCP reset instead of a clean close
    stall : seconds to wait, one entry per request, after the headers before the body
    ranges : honour ``Range: bytes=N-`` requests (206 / 416)
    hang_after : body bytes sent on every request before the server stops sending (and holds the connection)
    hang : seconds it then holds the connection open, silent
    trickle : seconds between body bytes, sent one at a time after the headers (a stalling server)
    trickle_head : seconds between the bytes of a head that never ends (a header line grown byte by byte)
    auth : "user:password" that a Basic Authorization header must carry (401 otherwise)
    """

    body: bytes = b""
    status: int = 200
    headers: dict = field(default_factory=dict)
    fail: list = field(default_factory=list)
    drop_after: list = field(default_factory=list)
    reset: bool = False
    stall: list = field(default_factory=list)
    ranges: bool = True
    send_length: bool = True
    hang_after: int | None = None
    hang: float = 5.0
    trickle: float | None = None
    trickle_head: float | None = None
    auth: str | None = None


@dataclass
class Logged:
    method: str
    path: str
    range: str | None
    status: int
    auth: str | None = None


class _Handler(BaseHTTPRequestHandler):
    server_version = "redrep-test"

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        srv = self.server.owner
        route = srv.routes.get(self.path)
        rng = self.headers.get("Range")
        with srv.lock:
            fail = route.fail.pop(0) if route and route.fail else None
            drop = route.drop_after.pop(0) if route and route.drop_after else None
            stall = route.stall.pop(0) if route and route.stall else 0.0
        if route is None:
            return self._status(404, rng)
        if fail is not None:
            return self._status(fail, rng)
        auth = self.headers.get("Authorization")
        if route.auth is not None and auth != "Basic " + base64.b64encode(route.auth.encode()).decode():
            return self._status(401, rng)
        if route.trickle_head is not None:
            srv.requests.append(Logged("GET", self.path, rng, 200, auth))
            return self._trickle(b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 100_000, route.trickle_head)
        body, status, extra = route.body, route.status, {}
        if route.ranges and rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[len("bytes=") : -1])
            if start >= len(body):
                srv.requests.append(Logged("GET", self.path, rng, 416))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            extra["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
            body, status = body[start:], 206
        srv.requests.append(Logged("GET", self.path, rng, status, auth))
        self.send_response(status)
        for k, v in {**route.headers, **extra}.items():
            self.send_header(k, v)
        if route.send_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.flush()
        if stall:
            time.sleep(stall)
        if route.trickle is not None:
            return self._trickle(body, route.trickle)
        if route.hang_after is not None:
            self.wfile.write(body[: route.hang_after])
            self.wfile.flush()
            time.sleep(route.hang)
            self.close_connection = True
            return
        if drop is not None:
            self.wfile.write(body[:drop])
            self.wfile.flush()
            self._cut(route.reset)
            return
        self.wfile.write(body)

    def _trickle(self, data, gap, limit=30.0):
        """Send ``data`` one byte every ``gap`` seconds until the client goes away, the server stops or ``limit``
        seconds pass."""
        self.close_connection = True
        end = time.monotonic() + limit
        try:
            for i in range(len(data)):
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
                if time.monotonic() > end or self.server.owner.stopping.wait(gap):
                    break
        except OSError:  # the client gave up: what the tests expect
            pass

    def _status(self, code, rng):
        self.server.owner.requests.append(Logged("GET", self.path, rng, code, self.headers.get("Authorization")))
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _cut(self, reset):
        self.close_connection = True
        if reset:  # SO_LINGER 0: closing sends RST; the file objects hold the socket open until closed
            time.sleep(0.2)  # let the client read what was sent: a RST discards unread data
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.wfile.close()
            self.connection.close()
            self.wfile = io.BytesIO()  # http.server flushes wfile after the handler returns
        else:
            self.connection.shutdown(socket.SHUT_WR)


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 with scriptable :class:`Route` s."""

    def __init__(self):
        self.routes: dict[str, Route] = {}
        self.requests: list[Logged] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()  # ends the trickles still sending when the server exits
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def hits(self, path: str) -> list[Logged]:
        return [r for r in self.requests if r.path == path]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
