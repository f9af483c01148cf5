"""`redrep data` against a local HTTP server."""

import hashlib

import pytest
from click.testing import CliRunner

import redrep.nets.data as data_mod
from cifar_archive import write_cifar_archive
from localhttp import LocalServer, Route
from mnist_files import make_mnist, write_mnist
from redrep.cli import main
from redrep.nets.data import CIFAR, load_dataset


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def srv():
    with LocalServer() as s:
        yield s


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    p = tmp_path_factory.mktemp("src") / "cifar-10-python.tar.gz"
    write_cifar_archive(p, n_train=40, n_test=12, seed=5)
    data = p.read_bytes()
    return data, hashlib.md5(data).hexdigest()


def test_download_verify_resume_and_reuse(srv, archive, tmp_path):
    data, md5 = archive
    srv.routes["/c10.tgz"] = Route(body=data, drop_after=[len(data) // 3])  # the first transfer breaks off
    d = tmp_path / "data"
    r = invoke("data", "cifar10", "--data-dir", d, "--url", srv.url("/c10.tgz"), "--md5", md5, "-q")
    assert r.exit_code == 0, r.output
    assert "cifar10: downloaded" in r.output and "40 train / 12 test images" in r.output
    assert (d / "cifar-10-python.tar.gz").read_bytes() == data
    assert [h.range for h in srv.hits("/c10.tgz")] == [None, f"bytes={len(data) // 3}-"]  # resumed, not restarted
    # a verified archive is not fetched again
    r = invoke("data", "cifar10", "--data-dir", d, "--url", srv.url("/c10.tgz"), "--md5", md5, "-q")
    assert "already present" in r.output and len(srv.hits("/c10.tgz")) == 2
    assert load_dataset("cifar10", d).n_train == 40


def test_md5_mismatch_is_refused_and_nothing_is_left(srv, archive, tmp_path):
    data, _ = archive
    srv.routes["/c10.tgz"] = Route(body=data)
    d = tmp_path / "data"
    r = invoke("data", "cifar10", "--data-dir", d, "--url", srv.url("/c10.tgz"), "-q")  # the official md5
    assert r.exit_code == 2
    err = r.stderr.strip()
    assert err.startswith("Error: ") and "\n" not in err and "md5" in err, err
    assert CIFAR["cifar10"].md5 in err
    assert not (d / "cifar-10-python.tar.gz").exists()


def test_archive_that_does_not_read_is_an_error(srv, tmp_path):
    junk = b"\x1f\x8b" + bytes(range(200))
    srv.routes["/c100.tgz"] = Route(body=junk)
    md5 = hashlib.md5(junk).hexdigest()
    r = invoke("data", "cifar100", "--data-dir", tmp_path, "--url", srv.url("/c100.tgz"), "--md5", md5, "-q")
    assert r.exit_code == 2 and "expected the official cifar100 python archive" in r.stderr


def test_server_error_and_bad_names(srv, tmp_path):
    r = invoke("data", "cifar10", "--data-dir", tmp_path, "--url", srv.url("/missing"), "-q")
    assert r.exit_code == 2 and "HTTP 404" in r.stderr
    r = invoke("data", "imagenet", "--data-dir", tmp_path)
    assert r.exit_code == 2 and "dataset: expected one of cifar10" in r.stderr
    r = invoke("data", "digits", "--url", "http://127.0.0.1:1/x")
    assert r.exit_code == 2 and "--url: expected a dataset to download (cifar10, cifar100, mnist), found digits" in (
        r.stderr
    )


def test_bundled_and_generated_datasets(tmp_path):
    r = invoke("data", "parity-digits", "--data-dir", tmp_path)
    assert r.exit_code == 0 and "nothing to fetch: 1198 train / 599 test" in r.output
    r = invoke("data", "mnist1d", "--data-dir", tmp_path)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "mnist1d.npz").is_file() and "4000 train / 1000 test" in r.output


# ------------------------------------------------------------------- MNIST
@pytest.fixture
def mnist_served(srv, tmp_path, monkeypatch):
    """The four tiny MNIST files on the local server, their md5s standing for the official ones."""
    arrays = make_mnist(seed=2)
    md5s = write_mnist(tmp_path / "src", arrays)
    monkeypatch.setattr(data_mod, "MNIST_FILES", md5s)
    for name in md5s:
        srv.routes[f"/m/{name}"] = Route(body=(tmp_path / "src" / name).read_bytes())
    return arrays, md5s


def test_mnist_download_verify_resume_and_reuse(srv, mnist_served, tmp_path):
    arrays, md5s = mnist_served
    big = "train-images-idx3-ubyte.gz"
    cut = len(srv.routes[f"/m/{big}"].body) // 2
    srv.routes[f"/m/{big}"].drop_after = [cut]  # the first transfer breaks off
    d = tmp_path / "data"
    r = invoke("data", "mnist", "--data-dir", d, "--url", srv.url("/m/"), "-q")
    assert r.exit_code == 0, r.output
    assert "mnist: downloaded 4 of 4 files" in r.output and "40 train / 12 test images" in r.output
    assert [h.range for h in srv.hits(f"/m/{big}")] == [None, f"bytes={cut}-"]  # resumed, not restarted
    for name in md5s:
        assert (d / "mnist" / name).read_bytes() == (tmp_path / "src" / name).read_bytes()
    n_requests = len(srv.requests)
    # verified files are not fetched again; parity-mnist computes its components and caches them beside them
    r = invoke("data", "parity-mnist", "--data-dir", d, "--url", srv.url("/m/"), "-q")
    assert r.exit_code == 0, r.output
    assert "the 4 files already in" in r.output and len(srv.requests) == n_requests
    assert len(list((d / "mnist").glob("parity-mnist-*.npz"))) == 1
    ds = load_dataset("parity-mnist", d)
    assert ds.n_train == 40 and ds.in_shape == (10,) and ds.y_train.tolist() == list(arrays["y_train"] % 2)


def test_mnist_file_with_the_wrong_md5_is_refused_and_nothing_is_left(srv, mnist_served, tmp_path):
    name = "t10k-labels-idx1-ubyte.gz"
    body = bytearray(srv.routes[f"/m/{name}"].body)
    body[-3] ^= 0xFF  # one corrupt byte
    srv.routes[f"/m/{name}"] = Route(body=bytes(body))
    d = tmp_path / "data"
    r = invoke("data", "mnist", "--data-dir", d, "--url", srv.url("/m/"), "-q")
    assert r.exit_code == 2
    err = r.stderr.strip()
    assert err.startswith("Error: ") and "\n" not in err and "md5" in err and mnist_served[1][name] in err, err
    assert not (d / "mnist" / name).exists() and not list((d / "mnist").glob(f"{name}*"))
    r = invoke("data", "mnist", "--data-dir", d, "--md5", "0" * 32)
    assert r.exit_code == 2 and "--md5: expected a CIFAR dataset, found mnist" in r.stderr
