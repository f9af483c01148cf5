"""download_file against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from localhttp import LocalServer, Route, closed_port
from redrep.core.validation import RedrepError
from redrep.fetch import http as fetch
from redrep.fetch.http import download_file, file_md5, file_sha256, part_path

FAST = dict(retries=2, backoff=0.01, timeout=(2.0, 2.0), progress=False)


def payload(seed: int, n: int = 300_000) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size=n, dtype=np.uint8).tobytes()


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def srv():
    with LocalServer() as s:
        yield s


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_digests_match_hashlib(tmp_path, seed):
    data = payload(seed, 3 * fetch.CHUNK_BYTES // 2 + seed)  # crosses a block boundary
    f = tmp_path / "x"
    f.write_bytes(data)
    assert file_md5(f) == md5(data)
    assert file_sha256(f) == sha256(data)


@pytest.mark.parametrize("seed", [0, 1])
def test_download_verified_and_renamed(srv, tmp_path, seed):
    data = payload(seed, 2 * fetch.CHUNK_BYTES + 17)
    srv.routes["/a.bin"] = Route(body=data)
    dest = tmp_path / "sub" / "a.bin"
    out = download_file(srv.url("/a.bin"), dest, md5=md5(data), sha256=sha256(data), size=len(data), **FAST)
    assert out == dest
    assert dest.read_bytes() == data
    assert not part_path(dest).exists()
    assert [r.range for r in srv.hits("/a.bin")] == [None]


def test_download_without_content_length(srv, tmp_path):
    data = payload(3)
    srv.routes["/a.bin"] = Route(body=data, send_length=False)
    dest = download_file(srv.url("/a.bin"), tmp_path / "a.bin", sha256=sha256(data), **FAST)
    assert dest.read_bytes() == data


def test_redirect_is_followed(srv, tmp_path):
    data = payload(4)
    srv.routes["/real"] = Route(body=data)
    srv.routes["/moved"] = Route(status=302, headers={"Location": srv.url("/real")})
    dest = download_file(srv.url("/moved"), tmp_path / "a.bin", md5=md5(data), **FAST)
    assert dest.read_bytes() == data


@pytest.mark.parametrize("reset", [False, True])
def test_dropped_connection_is_resumed_with_range(srv, tmp_path, reset):
    data = payload(5)
    srv.routes["/a.bin"] = Route(body=data, drop_after=[100_000], reset=reset)
    dest = download_file(srv.url("/a.bin"), tmp_path / "a.bin", **FAST)
    assert file_sha256(dest) == sha256(data)
    hits = srv.hits("/a.bin")
    assert [(h.range, h.status) for h in hits] == [(None, 200), ("bytes=100000-", 206)]


def test_broken_transfer_leaves_part_and_next_call_resumes(srv, tmp_path):
    data = payload(6)
    srv.routes["/a.bin"] = Route(body=data, drop_after=[120_000])
    dest = tmp_path / "a.bin"
    match = r"/a.bin: connection closed after 120000 of 300000 bytes \(1 attempt; 120000 bytes kept in .*a.bin.part, "
    with pytest.raises(RedrepError, match=match):
        download_file(srv.url("/a.bin"), dest, **{**FAST, "retries": 0})
    assert not dest.exists()
    assert part_path(dest).read_bytes() == data[:120_000]
    download_file(srv.url("/a.bin"), dest, sha256=sha256(data), **FAST)
    assert dest.read_bytes() == data
    assert srv.hits("/a.bin")[-1].range == "bytes=120000-"


def test_progress_resets_the_retry_budget(srv, tmp_path):
    # five cuts in a row, each after new data: one retry is enough since every attempt makes progress
    data = payload(7)
    srv.routes["/a.bin"] = Route(body=data, drop_after=[40_000] * 5)
    dest = download_file(srv.url("/a.bin"), tmp_path / "a.bin", **{**FAST, "retries": 1})
    assert dest.read_bytes() == data
    assert [h.range for h in srv.hits("/a.bin")] == [None] + [f"bytes={40_000 * k}-" for k in range(1, 6)]


def test_server_without_range_support_restarts_from_zero(srv, tmp_path):
    data = payload(8)
    srv.routes["/a.bin"] = Route(body=data, ranges=False)
    dest = tmp_path / "a.bin"
    part_path(dest).write_bytes(b"garbage that is not a prefix")
    download_file(srv.url("/a.bin"), dest, md5=md5(data), **FAST)
    assert dest.read_bytes() == data
    hits = srv.hits("/a.bin")
    assert [(h.range, h.status) for h in hits] == [("bytes=28-", 200)]


def test_complete_part_is_finished_by_416(srv, tmp_path):
    data = payload(9)
    srv.routes["/a.bin"] = Route(body=data)
    dest = tmp_path / "a.bin"
    part_path(dest).write_bytes(data)
    download_file(srv.url("/a.bin"), dest, sha256=sha256(data), **FAST)
    assert dest.read_bytes() == data
    assert [h.status for h in srv.hits("/a.bin")] == [416]


def test_complete_part_of_known_size_needs_no_request(srv, tmp_path):
    data = payload(10)
    dest = tmp_path / "a.bin"
    part_path(dest).write_bytes(data)
    download_file(srv.url("/a.bin"), dest, size=len(data), md5=md5(data), **FAST)
    assert dest.read_bytes() == data
    assert srv.requests == []


def test_overlong_part_is_discarded(srv, tmp_path):
    data = payload(11)
    srv.routes["/a.bin"] = Route(body=data)
    dest = tmp_path / "a.bin"
    part_path(dest).write_bytes(data + b"extra")
    download_file(srv.url("/a.bin"), dest, size=len(data), **FAST)
    assert dest.read_bytes() == data
    assert [h.range for h in srv.hits("/a.bin")] == [None]


def test_wrong_prefix_fails_md5_and_is_deleted(srv, tmp_path):
    data = payload(12)
    srv.routes["/a.bin"] = Route(body=data)
    dest = tmp_path / "a.bin"
    part_path(dest).write_bytes(b"\0" * 1000)  # resumed, but not this file's first bytes
    expected = md5(data)
    bad = md5(b"\0" * 1000 + data[1000:])
    with pytest.raises(RedrepError, match=f"a.bin: md5 mismatch, expected {expected}, found {bad}"):
        download_file(srv.url("/a.bin"), dest, md5=expected, **FAST)
    assert not part_path(dest).exists() and not dest.exists()
    download_file(srv.url("/a.bin"), dest, md5=expected, **FAST)  # a clean rerun succeeds
    assert dest.read_bytes() == data


@pytest.mark.parametrize("kind", ["size", "md5", "sha256"])
def test_mismatch_keeps_existing_dest(srv, tmp_path, kind):
    data = payload(13)
    srv.routes["/a.bin"] = Route(body=data)
    dest = tmp_path / "a.bin"
    dest.write_bytes(b"old")
    wrong = {"size": len(data) + 1, "md5": "0" * 32, "sha256": "f" * 64}[kind]
    with pytest.raises(RedrepError, match=f"a.bin: {kind} mismatch, expected {wrong}"):
        download_file(srv.url("/a.bin"), dest, **{kind: wrong}, **FAST)
    assert dest.read_bytes() == b"old"
    assert not part_path(dest).exists()


def test_404_fails_at_once(srv, tmp_path):
    dest = tmp_path / "a.bin"
    dest.write_bytes(b"old")
    with pytest.raises(RedrepError, match=r"^http://127\.0\.0\.1:\d+/missing: HTTP 404 Not Found$"):
        download_file(srv.url("/missing"), dest, **{**FAST, "retries": 3})
    assert len(srv.hits("/missing")) == 1
    assert dest.read_bytes() == b"old" and not part_path(dest).exists()


def test_403_fails_at_once(srv, tmp_path):
    srv.routes["/a.bin"] = Route(fail=[403])
    with pytest.raises(RedrepError, match=r"/a.bin: HTTP 403 Forbidden$"):
        download_file(srv.url("/a.bin"), tmp_path / "a.bin", **FAST)
    assert len(srv.hits("/a.bin")) == 1


def test_500_is_retried_then_fails(srv, tmp_path, monkeypatch):
    sleeps = []
    monkeypatch.setattr(fetch.time, "sleep", sleeps.append)
    srv.routes["/a.bin"] = Route(body=b"x", fail=[500] * 10)
    with pytest.raises(RedrepError, match=r"/a.bin: HTTP 500 Internal Server Error \(4 attempts in a row"):
        download_file(srv.url("/a.bin"), tmp_path / "a.bin", **{**FAST, "retries": 3, "backoff": 0.25})
    assert len(srv.hits("/a.bin")) == 4
    assert sleeps == [0.25, 0.5, 1.0]  # exponential backoff
    assert not (tmp_path / "a.bin").exists()


def test_transient_5xx_then_success(srv, tmp_path):
    data = payload(14)
    srv.routes["/a.bin"] = Route(body=data, fail=[503, 502])
    dest = download_file(srv.url("/a.bin"), tmp_path / "a.bin", md5=md5(data), **FAST)
    assert dest.read_bytes() == data
    assert [h.status for h in srv.hits("/a.bin")] == [503, 502, 200]


def test_connection_refused_is_network_unreachable(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/a.bin"
    match = r"/a.bin: network unreachable \(Connection refused\) \(2 attempts in a row\)$"
    with pytest.raises(RedrepError, match=match):
        download_file(url, tmp_path / "a.bin", **{**FAST, "retries": 1})
    assert not (tmp_path / "a.bin").exists() and not part_path(tmp_path / "a.bin").exists()


def test_tls_to_a_plain_http_server(srv, tmp_path):
    srv.routes["/a.bin"] = Route(body=b"x")
    url = srv.url("/a.bin").replace("http://", "https://")
    with pytest.raises(RedrepError, match=r"^https://.*/a.bin: TLS handshake failed \([^)]+\) \(1 attempt\)$"):
        download_file(url, tmp_path / "a.bin", **{**FAST, "retries": 0})


def test_read_timeout_is_retried(srv, tmp_path):
    data = payload(15)
    srv.routes["/a.bin"] = Route(body=data, stall=[1.0])
    dest = download_file(srv.url("/a.bin"), tmp_path / "a.bin", **{**FAST, "timeout": (2.0, 0.2)})
    assert dest.read_bytes() == data
    assert len(srv.hits("/a.bin")) == 2


def test_read_timeout_exhausted(srv, tmp_path):
    srv.routes["/a.bin"] = Route(body=payload(16), stall=[1.0])
    with pytest.raises(RedrepError, match=r"/a.bin: connection lost after 0 bytes \(timed out\)"):
        download_file(srv.url("/a.bin"), tmp_path / "a.bin", **{**FAST, "retries": 0, "timeout": (2.0, 0.2)})


def test_unsupported_url(tmp_path):
    with pytest.raises(RedrepError, match=r"nowhere: expected an http\(s\):// or file:// URL"):
        download_file("nowhere", tmp_path / "a.bin", **FAST)


def test_file_url(tmp_path):
    data = payload(17)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    dest = download_file(src.as_uri(), tmp_path / "out" / "a.bin", sha256=sha256(data), **FAST)
    assert dest.read_bytes() == data


def test_missing_file_url_fails_at_once(tmp_path):
    url = (tmp_path / "nope.bin").as_uri()
    with pytest.raises(RedrepError, match=r"nope.bin: No such file or directory$"):
        download_file(url, tmp_path / "a.bin", **FAST)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_disk_full_is_one_line(srv, tmp_path):
    srv.routes["/a.bin"] = Route(body=payload(18))
    dest = tmp_path / "a.bin"
    os.symlink("/dev/full", part_path(dest))  # every write to the partial file fails with ENOSPC
    with pytest.raises(RedrepError, match=r"^no space left on device writing .*a\.bin\.part$"):
        download_file(srv.url("/a.bin"), dest, **FAST)
    assert len(srv.hits("/a.bin")) == 1  # not retried
    assert not dest.exists()


def test_progress_bar_goes_to_stderr(srv, tmp_path, capsys):
    data = payload(19)
    srv.routes["/a.bin"] = Route(body=data)
    download_file(srv.url("/a.bin"), tmp_path / "a.bin", **{**FAST, "progress": True}, desc="thing")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "thing" in captured.err


# ------------------------------------------------------------ bounded attempts
def test_stalling_server_that_restarts_the_file_is_given_up(srv, tmp_path):
    """200 to every request (no resume), two bytes, then silence: no attempt is progress, so retries bound it."""
    srv.routes["/a.bin"] = Route(body=payload(20), ranges=False, hang_after=2, hang=3.0)
    outcome = []

    def attempt():
        try:
            download_file(srv.url("/a.bin"), tmp_path / "a.bin", **{**FAST, "retries": 1, "timeout": (2.0, 0.3)})
        except RedrepError as exc:
            outcome.append(exc)

    t0 = time.monotonic()
    worker = threading.Thread(target=attempt, daemon=True)  # a daemon: an endless retry loop fails, not hangs
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), f"still retrying after {len(srv.hits('/a.bin'))} requests"
    assert len(outcome) == 1
    assert re.match(r".*/a.bin: connection lost after 2 bytes \(timed out\) \(2 attempts in a row", str(outcome[0]))
    assert len(srv.hits("/a.bin")) == 2
    assert [h.status for h in srv.hits("/a.bin")] == [200, 200] and srv.hits("/a.bin")[1].range == "bytes=2-"
    assert time.monotonic() - t0 < 20  # a bound, not a speed test: without one it never ends


def test_progress_is_capped_in_total_attempts(srv, tmp_path):
    data = payload(21)
    srv.routes["/a.bin"] = Route(body=data, drop_after=[1000] * 10)
    with pytest.raises(RedrepError, match=r"connection closed after 3000 of 300000 bytes \(3 attempts in all; 3000"):
        download_file(srv.url("/a.bin"), tmp_path / "a.bin", **{**FAST, "max_attempts": 3})
    assert len(srv.hits("/a.bin")) == 3


# ---------------------------------------------------------------- size bounds
@pytest.mark.parametrize("send_length", [True, False])
def test_body_larger_than_the_bound_is_deleted(srv, tmp_path, send_length):
    srv.routes["/a.bin"] = Route(body=payload(22, 3_000_000), send_length=send_length)
    dest = tmp_path / "a.bin"
    what = "announces 3000000 bytes" if send_length else "body goes past 100000 bytes"
    with pytest.raises(RedrepError, match=rf"/a.bin: the (server )?{what}, more than .*expected at most 100000 bytes"):
        download_file(srv.url("/a.bin"), dest, max_bytes=100_000, **FAST)
    assert not dest.exists() and not part_path(dest).exists()
    assert len(srv.hits("/a.bin")) == 1  # refused, not retried


def test_known_size_bounds_the_body(srv, tmp_path):
    data = payload(23)
    srv.routes["/a.bin"] = Route(body=data + data, send_length=False)
    with pytest.raises(RedrepError, match=r"the body goes past 300000 bytes, .*expected exactly 300000 bytes"):
        download_file(srv.url("/a.bin"), tmp_path / "a.bin", size=len(data), max_bytes=10**9, **FAST)
    assert not part_path(tmp_path / "a.bin").exists()
    srv.routes["/b.bin"] = Route(body=data)  # within the bound: fine
    assert download_file(srv.url("/b.bin"), tmp_path / "b.bin", max_bytes=len(data), **FAST).read_bytes() == data


@pytest.mark.parametrize(
    "url, match",
    [
        ("http://[::1", r"expected a valid URL \(Invalid IPv6 URL\)"),
        ("http://127.0.0.1:99999/a", r"expected a valid URL \(Port out of range"),
        ("http:///a.bin", r"expected an http\(s\):// URL with a host name"),
        ("ftp://x/a", r"expected an http\(s\):// or file:// URL"),
    ],
)
def test_malformed_urls(tmp_path, url, match):
    with pytest.raises(RedrepError, match=rf"^{re.escape(url)}: {match}"):
        download_file(url, tmp_path / "a.bin", **FAST)
