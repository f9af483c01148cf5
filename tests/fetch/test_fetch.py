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
from redrep.fetch.http import Limits, download_file, file_md5, file_sha256, part_path


def fast(progress=False, **limits) -> dict:
    """download_file's keywords for quick tests: few retries, short waits, no bar."""
    return dict(
        limits=Limits(**{"retries": 2, "backoff": 0.01, "connect_timeout": 2.0, "read_timeout": 2.0, **limits}),
        progress=progress,
    )


FAST = fast()


def payload(seed: int, n: int = 300_000) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size=n, dtype=np.uint8).tobytes()


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def recorded_sleeps(monkeypatch) -> list:
    """The downloader's sleeps, recorded instead of slept (time.sleep is global: other threads still sleep)."""
    sleeps, sleep = [], time.sleep
    main = threading.main_thread()
    monkeypatch.setattr(
        fetch.time, "sleep", lambda s: sleeps.append(s) if threading.current_thread() is main else sleep(s)
    )
    return sleeps


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
        download_file(srv.url("/a.bin"), dest, **fast(retries=0))
    assert not dest.exists()
    assert part_path(dest).read_bytes() == data[:120_000]
    download_file(srv.url("/a.bin"), dest, sha256=sha256(data), **FAST)
    assert dest.read_bytes() == data
    assert srv.hits("/a.bin")[-1].range == "bytes=120000-"


def test_progress_resets_the_retry_budget(srv, tmp_path):
    # five cuts in a row, each after new data: one retry is enough since every attempt makes progress
    data = payload(7)
    srv.routes["/a.bin"] = Route(body=data, drop_after=[40_000] * 5)
    dest = download_file(srv.url("/a.bin"), tmp_path / "a.bin", **fast(retries=1))
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
        download_file(srv.url("/missing"), dest, **fast(retries=3))
    assert len(srv.hits("/missing")) == 1
    assert dest.read_bytes() == b"old" and not part_path(dest).exists()


def test_403_fails_at_once(srv, tmp_path):
    srv.routes["/a.bin"] = Route(fail=[403])
    with pytest.raises(RedrepError, match=r"/a.bin: HTTP 403 Forbidden$"):
        download_file(srv.url("/a.bin"), tmp_path / "a.bin", **FAST)
    assert len(srv.hits("/a.bin")) == 1


def test_500_is_retried_then_fails(srv, tmp_path, monkeypatch):
    sleeps = recorded_sleeps(monkeypatch)
    srv.routes["/a.bin"] = Route(body=b"x", fail=[500] * 10)
    with pytest.raises(RedrepError, match=r"/a.bin: HTTP 500 Internal Server Error \(4 attempts in a row"):
        download_file(srv.url("/a.bin"), tmp_path / "a.bin", **fast(retries=3, backoff=0.25))
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
        download_file(url, tmp_path / "a.bin", **fast(retries=1))
    assert not (tmp_path / "a.bin").exists() and not part_path(tmp_path / "a.bin").exists()


def test_tls_to_a_plain_http_server(srv, tmp_path):
    srv.routes["/a.bin"] = Route(body=b"x")
    url = srv.url("/a.bin").replace("http://", "https://")
    with pytest.raises(RedrepError, match=r"^https://.*/a.bin: TLS handshake failed \([^)]+\) \(1 attempt\)$"):
        download_file(url, tmp_path / "a.bin", **fast(retries=0))


def test_read_timeout_is_retried(srv, tmp_path):
    data = payload(15)
    srv.routes["/a.bin"] = Route(body=data, stall=[1.0])
    dest = download_file(srv.url("/a.bin"), tmp_path / "a.bin", **fast(read_timeout=0.2))
    assert dest.read_bytes() == data
    assert len(srv.hits("/a.bin")) == 2


def test_read_timeout_exhausted(srv, tmp_path):
    srv.routes["/a.bin"] = Route(body=payload(16), stall=[1.0])
    with pytest.raises(RedrepError, match=r"/a.bin: connection lost after 0 bytes \(timed out\)"):
        download_file(srv.url("/a.bin"), tmp_path / "a.bin", **fast(retries=0, read_timeout=0.2))


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
    download_file(srv.url("/a.bin"), tmp_path / "a.bin", **fast(progress=True), desc="thing")
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
            download_file(srv.url("/a.bin"), tmp_path / "a.bin", **fast(retries=1, read_timeout=0.3))
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
        download_file(srv.url("/a.bin"), tmp_path / "a.bin", **fast(max_attempts=3))
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


# ----------------------------------------------------------- stalls (issue 19)
def _within(seconds, call):
    """Run ``call`` in a daemon thread: the RedrepError it raised, or a failure if it still runs after ``seconds``."""
    outcome = []

    def run():
        try:
            call()
        except RedrepError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)  # an endless transfer fails the test instead of hanging it
    worker.start()
    worker.join(timeout=seconds)
    assert not worker.is_alive(), f"still transferring after {seconds} s"
    assert len(outcome) == 1, "expected a RedrepError"
    return outcome[0]


def test_trickling_body_is_a_stall_retried_then_given_up(srv, tmp_path):
    """200, Content-Length 10 MB, then one byte every 0.05 s: under the minimum rate, so each attempt stalls;
    the second resumes the first's bytes with Range, yet a stall never counts as progress."""
    data = bytes(range(256)) * 39063  # 10 000 128 bytes
    srv.routes["/a.bin"] = Route(body=data, trickle=0.05)
    dest = tmp_path / "a.bin"
    t0 = time.monotonic()
    exc = _within(20, lambda: download_file(srv.url("/a.bin"), dest, **fast(retries=1, stall_timeout=0.5)))
    assert time.monotonic() - t0 < 5
    held = len(part_path(dest).read_bytes())
    match = (
        r"/a.bin: stalled after \d+ bytes \(\d+ B/s over the last \d+ s, below the minimum of 1000 B/s\) "
        rf"\(2 attempts in a row; {held} bytes kept in .*a.bin.part, run again to resume\)$"
    )
    assert re.search(match, str(exc)), str(exc)
    assert 0 < held < 100 and part_path(dest).read_bytes() == data[:held]  # kept for the Range resume
    hits = srv.hits("/a.bin")
    assert len(hits) == 2 and hits[0].range is None and hits[1].range.startswith("bytes=") and hits[1].status == 206
    assert not dest.exists()


def test_stall_rule_off_with_min_rate_zero(srv, tmp_path):
    data = payload(24, 40)
    srv.routes["/a.bin"] = Route(body=data, trickle=0.02)
    dest = download_file(srv.url("/a.bin"), tmp_path / "a.bin", **fast(stall_timeout=0.2, min_rate=0))
    assert dest.read_bytes() == data  # slow (0.8 s for 40 bytes) but never stalled


def test_header_line_grown_byte_by_byte_hits_the_deadline(srv, tmp_path):
    srv.routes["/a.bin"] = Route(trickle_head=0.02)
    t0 = time.monotonic()
    exc = _within(
        20, lambda: download_file(srv.url("/a.bin"), tmp_path / "a.bin", **fast(retries=1, stall_timeout=0.5))
    )
    assert 0.9 < time.monotonic() - t0 < 5  # two attempts of 0.5 s
    assert re.search(r"/a.bin: no response headers within 0.5 s \(2 attempts in a row\)$", str(exc)), str(exc)
    assert len(srv.hits("/a.bin")) == 2
    assert not (tmp_path / "a.bin").exists() and not part_path(tmp_path / "a.bin").exists()


# -------------------------------------------------------------- backoff (issue 19)
def test_backoff_is_capped(srv, tmp_path, monkeypatch):
    sleeps = recorded_sleeps(monkeypatch)
    srv.routes["/a.bin"] = Route(body=b"x", fail=[503] * 20)
    with pytest.raises(RedrepError, match=r"/a.bin: HTTP 503 Service Unavailable \(11 attempts in a row\)$"):
        download_file(srv.url("/a.bin"), tmp_path / "a.bin", **fast(retries=10, backoff=5.0))
    assert sleeps == [5.0, 10.0, 20.0] + [30.0] * 7  # doubling from 5 s, never over 30 s
    assert sum(sleeps) <= fetch.MAX_RETRIES * fetch.MAX_WAIT


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"retries": 11}, "retries: expected an integer <= 10, found 11"),
        ({"retries": -1}, "retries: expected an integer >= 0, found -1"),
        ({"backoff": 31.0}, "backoff: expected a number <= 30.0, found 31.0"),
        ({"stall_timeout": 0.0}, "stall_timeout: expected a number >= 0.001, found 0.0"),
        ({"min_rate": -1.0}, "min_rate: expected a number >= 0.0, found -1.0"),
    ],
)
def test_limits_are_bounded(kw, match):
    with pytest.raises(RedrepError, match=f"^{re.escape(match)}$"):
        Limits(**kw)


# ----------------------------------------------------------- passwords (issue 19)
def test_password_in_url_is_sent_as_basic_auth_and_never_shown(srv, tmp_path):
    data = payload(25)
    srv.routes["/a.bin"] = Route(body=data, auth="user:s3cret")
    url = srv.url("/a.bin").replace("http://", "http://user:s3cret@")
    assert download_file(url, tmp_path / "a.bin", **FAST).read_bytes() == data
    assert srv.hits("/a.bin")[0].auth == "Basic dXNlcjpzM2NyZXQ="  # base64 of user:s3cret
    wrong = url.replace("s3cret", "wr0ng")
    with pytest.raises(RedrepError) as info:
        download_file(wrong, tmp_path / "b.bin", **FAST)
    assert str(info.value) == f"http://***@127.0.0.1:{srv.port}/a.bin: HTTP 401 Unauthorized"


@pytest.mark.parametrize(
    "url",
    ["http://u:s3cret@127.0.0.1:{port}/missing", "http://u:s3cret@[::1/x", "ftp://u:s3cret@host/x", "http://u:s3cret@"],
)
def test_password_never_in_an_error(srv, tmp_path, url):
    with pytest.raises(RedrepError) as info:
        download_file(url.format(port=srv.port), tmp_path / "a.bin", **FAST)
    assert "s3cret" not in str(info.value) and "***@" in str(info.value)


def test_credentials_stay_with_the_host_that_asked_for_them(srv, tmp_path):
    data = payload(26)
    srv.routes["/real"] = Route(body=data)
    srv.routes["/moved"] = Route(status=302, headers={"Location": srv.url("/real")}, auth="user:s3cret")
    url = srv.url("/moved").replace("http://", "http://user:s3cret@")
    assert download_file(url, tmp_path / "a.bin", **FAST).read_bytes() == data
    assert srv.hits("/moved")[0].auth is not None and srv.hits("/real")[0].auth is None
