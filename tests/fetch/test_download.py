"""redrep download against a real HTTP server on 127.0.0.1.

Each test builds a small set in the authors' layout (their file names, torch
tensors), serves it as figshare would (a files listing in the API's shape, the
files, the article zip) and fetches it; the success cases then run
``redrep analyze`` on the result.
"""

from __future__ import annotations

import hashlib
import io as stdio
import json
import re
import signal
import struct
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import procs
import redrep.fetch.authors as dl
from localhttp import LocalServer, Route, closed_port
from redrep.cli import main
from redrep.core.validation import RedrepError
from redrep.fetch.authors import (
    MANIFEST_NAME,
    STAGING_NAME,
    ZIP_NAME,
    DownloadConfig,
    KnownFile,
    Release,
    check_zip,
    download_authors,
    verify_manifest,
)
from redrep.fetch.http import file_sha256, part_path
from redrep.storage.repset import AUTHORS_ENSEMBLE_FILE, AUTHORS_FILES, AUTHORS_SUBDIR
from redrep.storage.results import load_results

N_TRAIN, N_TEST, WIDTH, N_CLASSES = 150, 80, 16, 4
ENSEMBLE_ACC = 0.875


class Published:
    """A small set in the authors' layout: file bytes, the matching Release, the arrays."""

    def __init__(self, seed: int):
        rng = np.random.default_rng(seed)
        w = rng.normal(size=(N_CLASSES, WIDTH)).astype(np.float32)
        b = rng.normal(size=N_CLASSES).astype(np.float32)
        arrays = {}
        for split, n in (("train", N_TRAIN), ("test", N_TEST)):
            x = rng.normal(size=(n, WIDTH)).astype(np.float32)
            y = np.argmax(x @ w.T + b, axis=1)
            flip = rng.random(n) < 0.2
            y[flip] = rng.integers(0, N_CLASSES, size=int(flip.sum()))
            arrays[f"features_{split}"], arrays[f"labels_{split}"] = x, y.astype(np.int64)
        arrays["weight"], arrays["bias"] = w, b
        self.arrays = arrays
        self.files: dict[str, bytes] = {}
        shapes = {}
        for key, name in AUTHORS_FILES.items():
            buf = stdio.BytesIO()
            torch.save(torch.from_numpy(arrays[key]), buf)
            self.files[name] = buf.getvalue()
            shapes[name] = arrays[key].shape
        buf = stdio.BytesIO()
        np.save(buf, np.array([ENSEMBLE_ACC, 0.01]))
        self.files[AUTHORS_ENSEMBLE_FILE] = buf.getvalue()
        self.release = Release(
            article=dl.FIGSHARE_ARTICLE,
            version=dl.FIGSHARE_VERSION,
            files=tuple(
                KnownFile(n, shapes.get(n), len(data), size=len(data), md5=hashlib.md5(data).hexdigest())
                for n, data in self.files.items()
            ),
        )

    def test_accuracy(self) -> float:
        a = self.arrays
        logits = a["features_test"] @ a["weight"].T + a["bias"]
        return float(np.mean(np.argmax(logits, axis=1) == a["labels_test"]))

    def zip_bytes(self, *, drop=(), extra=(), folder="", corrupt=None) -> bytes:
        buf = stdio.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in self.files.items():
                if name not in drop:
                    zf.writestr(folder + name, data)
            for name, data in extra:
                zf.writestr(name, data)
        raw = buf.getvalue()
        if corrupt is not None:  # flip bytes inside a member's compressed data
            with zipfile.ZipFile(stdio.BytesIO(raw)) as zf:
                info = zf.getinfo(folder + corrupt)
            start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 10
            raw = raw[:start] + bytes(c ^ 0xFF for c in raw[start : start + 8]) + raw[start + 8 :]
        return raw


class Figshare:
    """Routes of a fake figshare on a LocalServer: /api/files, /files/<i>, /article.zip."""

    def __init__(self, srv: LocalServer, pub: Published, md5_override=None):
        self.srv, self.pub = srv, pub
        listing = []
        for i, (name, data) in enumerate(pub.files.items()):
            srv.routes[f"/files/{i}"] = Route(body=data)
            md5 = (md5_override or {}).get(name, hashlib.md5(data).hexdigest())
            listing.append(
                {
                    "id": 1000 + i,
                    "name": name,
                    "size": len(data),
                    "is_link_only": False,
                    "download_url": srv.url(f"/files/{i}"),
                    "supplied_md5": "",
                    "computed_md5": md5,
                    "mimetype": "application/octet-stream",
                }
            )
        listing.append({"id": 2000, "name": "README.txt", "size": 5, "download_url": srv.url("/readme")})
        srv.routes["/api/files"] = Route(
            body=json.dumps(listing).encode(), headers={"Content-Type": "application/json"}
        )
        record = {"id": 21153040, "version": 2, "files": listing}
        srv.routes["/api/versions/2"] = Route(
            body=json.dumps(record).encode(), headers={"Content-Type": "application/json"}
        )
        srv.routes["/article.zip"] = Route(body=pub.zip_bytes())
        self.files_url, self.zip_url = srv.url("/api/files"), srv.url("/article.zip")

    def route_of(self, name: str) -> str:
        return f"/files/{list(self.pub.files).index(name)}"

    def config(self, path, **kw) -> DownloadConfig:
        base = dict(path=path, files_url=self.files_url, zip_url=self.zip_url, retries=1, backoff=0.01)
        base.update(kw)
        return DownloadConfig(**base)

    def cli(self, path, *args) -> list[str]:
        return ["download", "--path", str(path), "--files-url", self.files_url, "--zip-url", self.zip_url, *args]


@pytest.fixture
def srv():
    with LocalServer() as s:
        yield s


@pytest.fixture(params=[0, 1])
def pub(request):
    return Published(request.param)


@pytest.fixture
def fig(srv, pub):
    return Figshare(srv, pub)


@pytest.fixture
def patched(monkeypatch, pub):
    """The CLI uses the package's table; make it describe the test's small set."""
    monkeypatch.setattr(dl, "AUTHORS_RELEASE", pub.release)
    return pub


def run(args):
    return CliRunner().invoke(main, args)


def assert_installed(path: Path, pub: Published):
    target = path / AUTHORS_SUBDIR
    for name, data in pub.files.items():
        assert (target / name).read_bytes() == data
    doc = json.loads((target / MANIFEST_NAME).read_text())
    assert set(doc["files"]) == set(pub.files)
    for name, data in pub.files.items():
        assert doc["files"][name] == {
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "md5": hashlib.md5(data).hexdigest(),
        }
    assert verify_manifest(target, pub.release) == []
    # nothing left over beside the set
    assert sorted(p.name for p in path.iterdir()) == [AUTHORS_SUBDIR]


def assert_analyze_runs(path: Path, pub: Published):
    res = run(["analyze", "--device", "cpu", "--path", str(path), "--acc-rep", "3", "--r2-rep", "2", "-q"])
    assert res.exit_code == 0, res.output + str(res.exception)
    results = load_results(path / "results")
    acc = results.series("accuracy", "test")
    assert acc["chunk_size"][-1] == WIDTH
    assert acc["mean"][-1] == pytest.approx(pub.test_accuracy(), abs=1e-12)  # the whole layer: no randomness
    assert results.error_inf == pytest.approx(1 - ENSEMBLE_ACC)


def assert_nothing_installed(path: Path):
    assert not (path / AUTHORS_SUBDIR).exists()
    leftovers = [p for p in path.rglob("*") if p.is_file()] if path.exists() else []
    return leftovers


# -------------------------------------------------------------------- success
def test_files_listing_route_then_analyze(fig, patched, tmp_path):
    res = run(fig.cli(tmp_path / "d", "--retries", "1"))
    assert res.exit_code == 0, res.output + str(res.exception)
    assert "(files)" in res.stdout and "next: redrep analyze --path" in res.stdout
    assert_installed(tmp_path / "d", patched)
    assert fig.srv.hits("/article.zip") == [] and fig.srv.hits("/readme") == []
    assert len(fig.srv.hits("/api/files")) == 1
    assert_analyze_runs(tmp_path / "d", patched)


def test_files_from_the_version_record(fig, patched, tmp_path):
    """The default source is the article's version-2 record, whose "files" hold the listing."""
    args = [
        "download",
        "--path",
        str(tmp_path / "d"),
        "--files-url",
        fig.srv.url("/api/versions/2"),
        "--zip-url",
        fig.zip_url,
        "--retries",
        "1",
    ]
    res = run(args)
    assert res.exit_code == 0, res.output + str(res.exception)
    assert_installed(tmp_path / "d", patched)
    assert len(fig.srv.hits("/api/versions/2")) == 1 and fig.srv.hits("/article.zip") == []


def test_zip_fallback_when_listing_fails_then_analyze(fig, patched, tmp_path):
    fig.srv.routes["/api/files"] = Route(fail=[503] * 10)
    res = run(fig.cli(tmp_path / "d", "--retries", "0"))
    assert res.exit_code == 0, res.output + str(res.exception)
    assert "files listing unavailable" in res.stderr and "HTTP 503" in res.stderr
    assert "(zip)" in res.stdout
    assert_installed(tmp_path / "d", patched)
    assert len(fig.srv.hits("/article.zip")) == 1
    assert_analyze_runs(tmp_path / "d", patched)


def test_listing_not_json_falls_back_to_zip(fig, pub, tmp_path):
    fig.srv.routes["/api/files"] = Route(body=b"<html>maintenance</html>")
    notes = []
    result = download_authors(fig.config(tmp_path), release=pub.release, progress=False, log=notes.append)
    assert result.method == "zip"
    assert any("expected a JSON files listing" in n for n in notes)
    assert_installed(tmp_path, pub)


def test_url_mirror_skips_the_listing(fig, patched, tmp_path):
    fig.srv.routes["/mirror/set.zip"] = Route(body=patched.zip_bytes(folder="download_repr/"))
    res = run(fig.cli(tmp_path, "--url", fig.srv.url("/mirror/set.zip"), "-q"))
    assert res.exit_code == 0, res.output + str(res.exception)
    assert fig.srv.hits("/api/files") == [] and fig.srv.hits("/article.zip") == []
    assert_installed(tmp_path, patched)


def test_from_zip_needs_no_network(patched, tmp_path):
    z = tmp_path / "by_hand.zip"
    z.write_bytes(patched.zip_bytes())
    data = tmp_path / "d"
    res = run(["download", "--path", str(data), "--from-zip", str(z), "--files-url", "http://127.0.0.1:1/x"])
    assert res.exit_code == 0, res.output + str(res.exception)
    assert "(from-zip)" in res.stdout
    assert_installed(data, patched)
    assert z.is_file()  # the user's zip is left alone
    assert_analyze_runs(data, patched)


# --------------------------------------------------------- rerun and --force
def test_rerun_skips_then_force_downloads_again(fig, patched, tmp_path):
    assert run(fig.cli(tmp_path, "-q")).exit_code == 0
    n_requests = len(fig.srv.requests)
    res = run(fig.cli(tmp_path, "-q"))
    assert res.exit_code == 0
    assert "7 files verified against manifest.json" in res.stdout
    assert len(fig.srv.requests) == n_requests  # nothing fetched
    res = run(fig.cli(tmp_path, "-q", "--force"))
    assert res.exit_code == 0 and "(files)" in res.stdout
    assert len(fig.srv.requests) == n_requests + 1 + len(patched.files)
    assert_installed(tmp_path, patched)


def test_rerun_refetches_a_damaged_file(fig, pub, tmp_path):
    download_authors(fig.config(tmp_path), release=pub.release, progress=False)
    name = AUTHORS_FILES["features_test"]
    victim = tmp_path / AUTHORS_SUBDIR / name
    victim.write_bytes(b"\0" + victim.read_bytes()[1:])
    assert verify_manifest(tmp_path / AUTHORS_SUBDIR, pub.release) == [f"{name}: sha256 differs from the manifest"]
    result = download_authors(fig.config(tmp_path), release=pub.release, progress=False)
    assert result.status == "installed"
    assert any("sha256 differs" in n for n in result.notes)
    assert_installed(tmp_path, pub)


def test_existing_folder_without_manifest_needs_force(fig, pub, tmp_path):
    target = tmp_path / AUTHORS_SUBDIR
    target.mkdir()
    (target / "mine.txt").write_text("keep me")
    with pytest.raises(RedrepError, match="exists without manifest.json .* or force to replace it"):
        download_authors(fig.config(tmp_path), release=pub.release, progress=False)
    assert (target / "mine.txt").read_text() == "keep me"
    download_authors(fig.config(tmp_path, force=True), release=pub.release, progress=False)
    assert_installed(tmp_path, pub)


# ------------------------------------------------------------ transfer errors
def test_listing_md5_mismatch(srv, pub, tmp_path):
    name = AUTHORS_FILES["weight"]
    fig = Figshare(srv, pub, md5_override={name: "0" * 32})
    found = hashlib.md5(pub.files[name]).hexdigest()
    with pytest.raises(RedrepError, match=f"{name}: md5 mismatch, expected {'0' * 32}, found {found}"):
        unknown = tuple(replace(f, size=None, md5=None) for f in pub.release.files)  # only the listing knows
        download_authors(fig.config(tmp_path), release=replace(pub.release, files=unknown), progress=False)
    assert not (tmp_path / AUTHORS_SUBDIR).exists()
    staging = tmp_path / STAGING_NAME
    assert not (staging / name).exists() and not part_path(staging / name).exists()


def test_listing_disagrees_with_the_package_table(fig, pub, tmp_path):
    name = AUTHORS_FILES["bias"]
    files = tuple(replace(f, md5="f" * 32) if f.name == name else f for f in pub.release.files)
    with pytest.raises(RedrepError, match=f"{name}: the listing gives md5 [0-9a-f]{{32}}, the package's table f{{32}}"):
        download_authors(fig.config(tmp_path), release=replace(pub.release, files=files), progress=False)
    assert assert_nothing_installed(tmp_path) == []


def test_zip_member_md5_differs_from_the_table(fig, pub, tmp_path):
    name = AUTHORS_FILES["bias"]
    files = tuple(replace(f, md5="f" * 32) if f.name == name else f for f in pub.release.files)
    with pytest.raises(RedrepError, match=f"{name}: md5 mismatch, expected f{{32}}, found .*deleted .*{ZIP_NAME}"):
        download_authors(fig.config(tmp_path, url=fig.zip_url), release=replace(pub.release, files=files))
    assert assert_nothing_installed(tmp_path) == []


@pytest.mark.parametrize("ranges", [True, False])
def test_dropped_file_resumes_on_next_run(fig, patched, tmp_path, ranges):
    name = AUTHORS_FILES["features_train"]
    route = fig.srv.routes[fig.route_of(name)]
    route.drop_after, route.ranges = [3000], ranges
    res = run(fig.cli(tmp_path, "--retries", "0", "-q"))
    assert res.exit_code == 2
    assert f"connection closed after 3000 of {len(patched.files[name])} bytes" in res.stderr
    assert "run again to resume" in res.stderr
    assert not (tmp_path / AUTHORS_SUBDIR).exists()
    part = part_path(tmp_path / STAGING_NAME / name)
    assert part.read_bytes() == patched.files[name][:3000]
    res = run(fig.cli(tmp_path, "--retries", "0", "-q"))
    assert res.exit_code == 0, res.output
    hits = fig.srv.hits(fig.route_of(name))
    assert [(h.range, h.status) for h in hits] == [(None, 200), ("bytes=3000-", 206 if ranges else 200)]
    manifest = json.loads((tmp_path / AUTHORS_SUBDIR / MANIFEST_NAME).read_text())
    assert manifest["files"][name]["sha256"] == hashlib.sha256(patched.files[name]).hexdigest()
    assert_installed(tmp_path, patched)


def test_dropped_zip_resumes_within_one_run(fig, pub, tmp_path):
    fig.srv.routes["/article.zip"].drop_after = [5000, 9000]
    result = download_authors(fig.config(tmp_path, url=fig.zip_url, retries=1), release=pub.release, progress=False)
    assert result.method == "zip"
    assert [h.range for h in fig.srv.hits("/article.zip")] == [None, "bytes=5000-", "bytes=14000-"]
    assert_installed(tmp_path, pub)


def test_file_404(fig, patched, tmp_path):
    name = AUTHORS_FILES["labels_test"]
    del fig.srv.routes[fig.route_of(name)]
    res = run(fig.cli(tmp_path, "-q"))
    assert res.exit_code == 2
    assert res.stderr.strip() == f"Error: {fig.srv.url(fig.route_of(name))}: HTTP 404 Not Found"
    assert not (tmp_path / AUTHORS_SUBDIR).exists()


def test_listing_and_zip_404(fig, patched, tmp_path):
    del fig.srv.routes["/api/files"], fig.srv.routes["/article.zip"]
    res = run(fig.cli(tmp_path))
    assert res.exit_code == 2
    assert res.stderr.splitlines()[-1] == f"Error: {fig.zip_url}: HTTP 404 Not Found"
    assert assert_nothing_installed(tmp_path) == []


def test_zip_500_after_retries(fig, pub, tmp_path):
    fig.srv.routes["/article.zip"] = Route(fail=[500] * 10)
    with pytest.raises(RedrepError, match=r"article.zip: HTTP 500 Internal Server Error \(2 attempts in a row"):
        download_authors(fig.config(tmp_path, url=fig.zip_url), release=pub.release, progress=False)
    assert len(fig.srv.hits("/article.zip")) == 2
    assert assert_nothing_installed(tmp_path) == []


def test_network_down(pub, tmp_path):
    port = closed_port()
    cfg = DownloadConfig(
        path=tmp_path / "d",
        files_url=f"http://127.0.0.1:{port}/api",
        zip_url=f"http://127.0.0.1:{port}/zip",
        retries=1,
        backoff=0.01,
    )
    notes = []
    with pytest.raises(RedrepError, match=r"/zip: network unreachable \(Connection refused\)"):
        download_authors(cfg, release=pub.release, progress=False, log=notes.append)
    assert any("/api: network unreachable" in n for n in notes)
    assert not (tmp_path / "d").exists()  # not even the empty data folder


# ----------------------------------------------------------------- zip errors
def test_corrupt_zip(fig, pub, tmp_path):
    fig.srv.routes["/article.zip"] = Route(body=pub.zip_bytes(corrupt=AUTHORS_FILES["weight"]))
    with pytest.raises(RedrepError, match=r"download_repr.zip: corrupt zip .*weights_.*deleted"):
        download_authors(fig.config(tmp_path, url=fig.zip_url), release=pub.release, progress=False)
    assert assert_nothing_installed(tmp_path) == []


def test_web_page_instead_of_zip(fig, patched, tmp_path):
    fig.srv.routes["/article.zip"] = Route(body=b"<!DOCTYPE html><html>please log in</html>")
    res = run(fig.cli(tmp_path, "--url", fig.zip_url, "-q"))
    assert res.exit_code == 2
    assert "corrupt zip (File is not a zip file; it looks like a web page" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert assert_nothing_installed(tmp_path) == []


def test_missing_member(fig, patched, tmp_path):
    name = AUTHORS_FILES["bias"]
    fig.srv.routes["/article.zip"] = Route(body=patched.zip_bytes(drop=[name]))
    res = run(fig.cli(tmp_path, "--url", fig.zip_url, "-q"))
    assert res.exit_code == 2
    assert f"download_repr.zip: missing member(s) {name}" in res.stderr
    assert assert_nothing_installed(tmp_path) == []


@pytest.mark.parametrize("evil", ["../evil.txt", "sub/../../evil.txt", "/tmp/redrep-evil.txt", "C:/evil.txt"])
def test_path_traversal_member_refused(fig, patched, tmp_path, evil):
    fig.srv.routes["/article.zip"] = Route(body=patched.zip_bytes(extra=[(evil, b"pwned")]))
    data = tmp_path / "d"
    res = run(fig.cli(data, "--url", fig.zip_url, "-q"))
    assert res.exit_code == 2
    assert f"unsafe member path {evil!r}" in res.stderr and "refusing the archive" in res.stderr
    assert assert_nothing_installed(data) == []
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/redrep-evil.txt").exists()


def test_symlink_member_refused(pub, tmp_path):
    z = tmp_path / "a.zip"
    z.write_bytes(pub.zip_bytes())
    with zipfile.ZipFile(z, "a") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(RedrepError, match="unsafe member path 'link'"):
        check_zip(z, pub.release)


def test_check_zip_finds_members_in_a_folder(pub, tmp_path):
    z = tmp_path / "a.zip"
    z.write_bytes(pub.zip_bytes(folder="x/", extra=[("x/README.txt", b"hi")]))
    assert check_zip(z, pub.release) == {n: "x/" + n for n in pub.files}


def test_from_zip_errors(patched, tmp_path):
    res = run(["download", "--path", str(tmp_path), "--from-zip", str(tmp_path / "nope.zip")])
    assert res.exit_code == 2 and "nope.zip: no such file (expected the article zip fetched by hand)" in res.stderr
    res = run(["download", "--path", str(tmp_path), "--from-zip", "a.zip", "--url", "http://127.0.0.1:1/"])
    assert res.exit_code == 2 and "expected at most one source, found both" in res.stderr
    z = tmp_path / "bad.zip"
    z.write_bytes(patched.zip_bytes(drop=[AUTHORS_ENSEMBLE_FILE]))
    res = run(["download", "--path", str(tmp_path / "d"), "--from-zip", str(z)])
    assert res.exit_code == 2 and f"missing member(s) {AUTHORS_ENSEMBLE_FILE}" in res.stderr
    assert z.is_file()  # never delete the user's own file


def test_wrong_tensor_shape_is_refused(pub, tmp_path):
    name = AUTHORS_FILES["features_test"]
    files = tuple(replace(f, shape=(10000, 512)) if f.name == name else f for f in pub.release.files)
    z = tmp_path / "a.zip"
    z.write_bytes(pub.zip_bytes())
    cfg = DownloadConfig(path=tmp_path / "d", from_zip=z)
    match = rf"a.zip: {name}: expected a tensor of shape \(10000, 512\) \(docs/method.md#inputs\), "
    match += rf"found \({N_TEST}, {WIDTH}\)"
    with pytest.raises(RedrepError, match=match):
        download_authors(cfg, release=replace(pub.release, files=files), progress=False)
    assert assert_nothing_installed(tmp_path / "d") == []


# ---------------------------------------------------------------- disk space
def test_not_enough_free_space(fig, pub, tmp_path, monkeypatch):
    class Usage:
        free = 1000

    monkeypatch.setattr(dl.shutil, "disk_usage", lambda p: Usage)
    with pytest.raises(RedrepError, match=r"^no space left on device: .* has 0.0 MB free, the download needs about"):
        download_authors(fig.config(tmp_path), release=pub.release, progress=False)
    assert assert_nothing_installed(tmp_path) == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_disk_full_while_writing(fig, patched, tmp_path):
    name = AUTHORS_FILES["features_train"]
    staging = tmp_path / STAGING_NAME
    staging.mkdir()
    part_path(staging / name).symlink_to("/dev/full")  # writes to the partial file fail with ENOSPC
    res = run(fig.cli(tmp_path, "-q"))
    assert res.exit_code == 2
    assert res.stderr.strip() == f"Error: no space left on device writing {part_path(staging / name)}"
    assert not (tmp_path / AUTHORS_SUBDIR).exists()


# ------------------------------------------------------------------- manifest
def test_verify_manifest_reports_each_problem(fig, pub, tmp_path):
    download_authors(fig.config(tmp_path), release=pub.release, progress=False)
    target = tmp_path / AUTHORS_SUBDIR
    (target / AUTHORS_FILES["bias"]).unlink()
    (target / AUTHORS_FILES["weight"]).write_bytes(b"short")
    wsize = len(pub.files[AUTHORS_FILES["weight"]])
    assert sorted(verify_manifest(target, pub.release)) == sorted(
        [f"{AUTHORS_FILES['weight']}: size 5 bytes, the manifest says {wsize}", f"{AUTHORS_FILES['bias']} missing"]
    )
    (target / MANIFEST_NAME).write_text("{not json")
    assert verify_manifest(target, pub.release)[0].startswith("manifest.json unreadable")


def test_default_table_matches_the_spec():
    rel = dl.AUTHORS_RELEASE
    assert rel.names == [*AUTHORS_FILES.values(), AUTHORS_ENSEMBLE_FILE]
    by_name = {f.name: f for f in rel.files}
    assert by_name[AUTHORS_FILES["features_train"]].shape == (50000, 512)
    assert by_name[AUTHORS_FILES["features_test"]].shape == (10000, 512)
    assert by_name[AUTHORS_FILES["weight"]].shape == (10, 512)
    # a float32 50000 x 512 tensor is 102.4 MB of payload
    assert by_name[AUTHORS_FILES["features_train"]].approx_size == pytest.approx(102.4e6, rel=1e-3)
    assert 120e6 < rel.total_approx_size() < 130e6


def test_config_validation(tmp_path):
    with pytest.raises(RedrepError, match="retries: expected an integer >= 0, found -1"):
        DownloadConfig(path=tmp_path, retries=-1)
    with pytest.raises(RedrepError, match="read_timeout: expected a number >= 0.001, found 0.0"):
        DownloadConfig(path=tmp_path, read_timeout=0.0)


def test_path_or_target_is_a_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    res = run(["download", "--path", str(f)])
    assert res.exit_code == 2 and "is a file" in res.stderr
    with pytest.raises(RedrepError, match="f: expected a data folder, found a file"):
        download_authors(DownloadConfig(path=f), progress=False)
    (tmp_path / AUTHORS_SUBDIR).write_text("x")
    with pytest.raises(RedrepError, match="download_repr: expected a folder for the authors' set, found a file"):
        download_authors(DownloadConfig(path=tmp_path), progress=False)


def test_sha256_of_installed_files_matches_fetch_helper(fig, pub, tmp_path):
    download_authors(fig.config(tmp_path), release=pub.release, progress=False)
    doc = json.loads((tmp_path / AUTHORS_SUBDIR / MANIFEST_NAME).read_text())
    for name, entry in doc["files"].items():
        assert file_sha256(tmp_path / AUTHORS_SUBDIR / name) == entry["sha256"]
    assert doc["source"] == {"method": "files", "url": fig.files_url}
    assert doc["config"]["files_url"] == fig.files_url


# ---------------------------------------------------------- bounds and safety
def _release_with_unknown_sizes(pub, approx=None):
    """The test set's table as the package has it: no exact sizes or md5s, estimates only."""
    return replace(
        pub.release,
        files=tuple(replace(f, size=None, md5=None, approx_size=approx or f.approx_size) for f in pub.release.files),
    )


def test_zip_member_larger_than_it_can_be_is_refused_unread(pub, tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "SIZE_SLACK", 1000)
    release = _release_with_unknown_sizes(pub)
    name = AUTHORS_FILES["features_train"]
    limit = next(f.max_size for f in release.files if f.name == name)
    bomb = b"\0" * (50 * limit)  # compresses to almost nothing
    buf = stdio.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for n, data in pub.files.items():
            zf.writestr(n, bomb if n == name else data)
    z = tmp_path / "a.zip"
    z.write_bytes(buf.getvalue())
    assert z.stat().st_size < limit
    with pytest.raises(RedrepError, match=rf"{name}: {len(bomb)} bytes uncompressed, more than the {limit} bytes"):
        check_zip(z, release)
    monkeypatch.setattr(dl, "AUTHORS_RELEASE", release)
    res = run(["download", "--path", str(tmp_path / "d"), "--from-zip", str(z), "-q"])
    assert res.exit_code == 2 and f"more than the {limit} bytes it can be" in res.output
    assert not (tmp_path / "d").exists()


def test_extraction_counts_bytes_whatever_the_header_says(pub, tmp_path):
    name = AUTHORS_FILES["weight"]
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr(name, pub.files[name])
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        with pytest.raises(RedrepError, match=rf"a.zip: {name}: expands past 100 bytes, more than it can be"):
            dl._extract_member(zf, name, tmp_path / "out", tmp_path / "a.zip", 100)


def test_endless_zip_body_is_cut_at_the_bound_and_deleted(srv, pub, tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "SIZE_SLACK", 1000)
    release = _release_with_unknown_sizes(pub)
    monkeypatch.setattr(dl, "AUTHORS_RELEASE", release)
    srv.routes["/big.zip"] = Route(body=b"PK" * (2 * release.max_zip_size()), send_length=False)
    res = run(["download", "--path", str(tmp_path), "--url", srv.url("/big.zip"), "--retries", "0", "-q"])
    assert res.exit_code == 2
    assert f"the body goes past {release.max_zip_size()} bytes" in res.output and res.output.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no .part kept "to resume"


def test_killed_extraction_is_cleaned_by_the_next_run(patched, tmp_path):
    z = tmp_path / "by_hand.zip"
    z.write_bytes(patched.zip_bytes())
    data = tmp_path / "d"
    r = procs.redrep("download", "--path", data, "--from-zip", z, "-q", REDREP_CRASH_AT="download:extracted")
    assert r.returncode == -signal.SIGKILL, r.stderr
    stale = [p.name for p in data.iterdir() if p.name.startswith(f".{AUTHORS_SUBDIR}.") and p.name.endswith(".tmp")]
    assert len(stale) == 1 and not (data / AUTHORS_SUBDIR).exists()
    res = run(["download", "--path", str(data), "--from-zip", str(z), "-q"])
    assert res.exit_code == 0, res.output
    assert_installed(data, patched)  # nothing beside the set: the killed run's folder is gone


def test_concurrent_download_exits_2_naming_the_first(patched, tmp_path):
    z = tmp_path / "by_hand.zip"
    z.write_bytes(patched.zip_bytes())
    with procs.lock_holder(tmp_path / "d" / AUTHORS_SUBDIR, what="download") as holder:
        res = run(["download", "--path", str(tmp_path / "d"), "--from-zip", str(z), "-q"])
    assert res.exit_code == 2
    assert f"locked by another download (pid {holder.pid} on " in res.output and res.output.count("\n") == 1


@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:70000/x", "http:///x.zip"])
def test_malformed_url_is_one_line(tmp_path, url):
    res = run(["download", "--path", str(tmp_path / "d"), "--url", url])
    assert res.exit_code == 2 and res.output.startswith(f"Error: url: {url}: expected ") and res.output.count("\n") == 1
    assert not (tmp_path / "d").exists()


def test_deeply_nested_manifest_is_a_problem_not_a_crash(fig, pub, tmp_path):
    download_authors(fig.config(tmp_path), release=pub.release, progress=False)
    (tmp_path / AUTHORS_SUBDIR / MANIFEST_NAME).write_text("[" * 100000 + "]" * 100000)
    problems = verify_manifest(tmp_path / AUTHORS_SUBDIR, pub.release)
    assert len(problems) == 1 and problems[0].startswith(f"{MANIFEST_NAME} unreadable (RecursionError")


# ------------------------------------------------------------ issue 19: stalls, bounds, zips, passwords
def test_trickling_mirror_gives_up_in_one_line(srv, patched, tmp_path):
    """The probe's server: 200, Content-Length 10000000, then a byte every 0.5 s; --timeout 2 --retries 1."""
    srv.routes["/trickle.zip"] = Route(body=b"PK" * 5_000_000, trickle=0.5)
    args = ["download", "--path", str(tmp_path), "--url", srv.url("/trickle.zip"), "--timeout", "2", "--retries", "1"]
    t0 = time.monotonic()
    res = run([*args, "--stall-timeout", "1.5", "--max-zip-mb", "20", "-q"])
    assert time.monotonic() - t0 < 9
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    assert re.match(
        r"Error: .*/trickle.zip: stalled after \d+ bytes .*below the minimum of 1000 B/s\) \(2 attempts", res.output
    )
    assert "run again to resume" in res.output
    assert [p.name for p in tmp_path.iterdir()] == [f"{ZIP_NAME}.part"]  # kept for the resume, nothing installed


def test_retries_beyond_ten_is_one_line(tmp_path):
    res = run(["download", "--path", str(tmp_path / "d"), "--retries", "11"])
    assert res.exit_code == 2 and res.output == "Error: retries: expected an integer <= 10, found 11\n"
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("flag, value, match", [
    ("--timeout", "0", "read_timeout: expected a number >= 0.001, found 0.0"),
    ("--stall-timeout", "0", "stall_timeout: expected a number >= 0.001, found 0.0"),
    ("--min-rate", "-5", "min_rate: expected a number >= 0.0, found -5.0"),
    ("--max-zip-mb", "0", "max_zip_mb: expected a number >= 1e-06, found 0.0"),
])  # fmt: skip
def test_bad_limits_are_one_line(tmp_path, flag, value, match):
    res = run(["download", "--path", str(tmp_path / "d"), flag, value])
    assert res.exit_code == 2 and res.output == f"Error: {match} [{flag}]\n"
    assert not (tmp_path / "d").exists()


def _zip64_end(count: int) -> bytes:
    """The end records of a zip whose central directory claims ``count`` entries (46 bytes each): a few
    dozen bytes standing for a zip that would cost zipfile a ZipInfo per entry before any check."""
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, 46 * count, 0)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, 0, 1)  # the zip64 record sits at offset 0
    return record + locator + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 2**32 - 1, 2**32 - 1, 0)


def test_three_million_entries_refused_before_zipfile_reads_them(patched, tmp_path, monkeypatch):
    z = tmp_path / "many.zip"
    z.write_bytes(_zip64_end(3_000_000))

    def never(*args, **kwargs):
        raise AssertionError("zipfile.ZipFile opened a zip with 3 million entries")

    monkeypatch.setattr(dl.zipfile, "ZipFile", never)
    res = run(["download", "--path", str(tmp_path / "d"), "--from-zip", str(z), "-q"])
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    assert "many.zip: 3000000 entries (138000000 bytes) in its central directory, more than the 1000" in res.output
    assert z.is_file() and not (tmp_path / "d").exists()


def test_too_many_real_entries_refused(pub, tmp_path):
    z = tmp_path / "a.zip"
    z.write_bytes(pub.zip_bytes(extra=[(f"junk/{i}", b"") for i in range(1200)]))
    with pytest.raises(RedrepError, match=r"a.zip: 1207 entries \(\d+ bytes\) in its central directory, more than"):
        check_zip(z, pub.release)
    with zipfile.ZipFile(z, "w") as zf:  # few entries yet a huge central directory (long names): refused too
        for i in range(300):
            zf.writestr(f"{i:04d}" + "x" * 4000, b"")
    with pytest.raises(RedrepError, match=r"a.zip: 300 entries \(\d+ bytes\) in its central directory"):
        check_zip(z, pub.release, max_bytes=10**9)


def test_from_zip_larger_than_the_limit_is_refused(patched, tmp_path):
    z = tmp_path / "by_hand.zip"
    z.write_bytes(patched.zip_bytes())
    size = z.stat().st_size
    res = run(["download", "--path", str(tmp_path / "d"), "--from-zip", str(z), "--max-zip-mb", "0.001", "-q"])
    assert res.exit_code == 2
    assert res.output == f"Error: {z}: {size} bytes, more than the 1000 bytes the article zip can be (--max-zip-mb)\n"
    assert z.is_file() and not (tmp_path / "d").exists()
    res = run(["download", "--path", str(tmp_path / "d"), "--from-zip", str(z), "--max-zip-mb", str(size / 1e6), "-q"])
    assert res.exit_code == 0, res.output  # at the limit: fine
    assert_installed(tmp_path / "d", patched)


def test_passwords_never_printed_or_recorded(fig, patched, tmp_path):
    fig.srv.routes["/mirror.zip"] = Route(body=patched.zip_bytes(), auth="user:s3cret")
    with_pw = fig.srv.url("/mirror.zip").replace("http://", "http://user:s3cret@")
    res = run(fig.cli(tmp_path, "--url", with_pw))
    assert res.exit_code == 0, res.output
    assert f"from http://***@127.0.0.1:{fig.srv.port}/mirror.zip (zip)" in res.stdout
    manifest = (tmp_path / AUTHORS_SUBDIR / MANIFEST_NAME).read_text()
    assert "***@" in manifest and "s3cret" not in manifest
    down = f"http://user:s3cret@127.0.0.1:{closed_port()}"
    res = run(["download", "--path", str(tmp_path / "e"), "--files-url", down + "/api", "--zip-url", down + "/zip",
               "--retries", "0"])  # fmt: skip
    assert res.exit_code == 2 and "files listing unavailable" in res.stderr and "***@" in res.stderr
    assert "s3cret" not in res.stdout + res.stderr
