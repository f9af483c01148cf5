"""MNIST and parity-mnist from tiny IDX files written here: parsing, the projection, the cache (CPU)."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

import redrep.nets.data as data_mod
from mnist_files import NAMES, idx_bytes, make_mnist, write_mnist
from redrep.core.validation import RedrepError
from redrep.nets.config import DATASET_CLASSES
from redrep.nets.data import (
    MNIST_DIR,
    load_dataset,
    parity_mnist_cache,
    parity_projection,
    read_idx,
    read_mnist,
)


def one_line(fn, match):
    with pytest.raises(RedrepError, match=match) as e:
        fn()
    assert "\n" not in str(e.value)


def direct_read(path, header_bytes):
    """The IDX payload read directly: decompress, skip the header, bytes as uint8."""
    return np.frombuffer(gzip.decompress(path.read_bytes())[header_bytes:], dtype=np.uint8)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_four_files_read_as_written(tmp_path, seed):
    arrays = make_mnist(n_train=30, n_test=20, seed=seed)
    write_mnist(tmp_path / MNIST_DIR, arrays)
    got = read_mnist(tmp_path)
    for split, n in (("train", 30), ("test", 20)):
        x, y = got[f"x_{split}"], got[f"y_{split}"]
        assert x.shape == (n, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
        assert np.array_equal(x, arrays[f"x_{split}"]) and np.array_equal(y, arrays[f"y_{split}"])
        # against a direct read of the bytes after the 16-byte (images) and 8-byte (labels) headers
        folder = tmp_path / MNIST_DIR
        assert np.array_equal(x.ravel(), direct_read(folder / NAMES[(split, "images")], 16))
        assert np.array_equal(y, direct_read(folder / NAMES[(split, "labels")], 8))
    ds = load_dataset("mnist", tmp_path)
    assert ds.in_shape == (1, 28, 28) and ds.num_classes == 10 and ds.n_train == 30
    # the files may also sit in the data folder itself
    write_mnist(tmp_path / "flat", arrays)
    assert np.array_equal(read_mnist(tmp_path / "flat")["x_test"], arrays["x_test"])


@pytest.mark.parametrize(
    "payload, match",
    [
        (b"\x00\x00\x08", r"expected an IDX file of 3 dimensions \(gzip\), found the magic number 000008"),
        (bytes([0, 0, 0x08, 1]) + struct.pack(">I", 5) + bytes(5), r"found the magic number 00000801"),
        (bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2, 28, 28) + bytes(100), r"found it cut short \(100 of 1568"),
        (idx_bytes(np.zeros((2, 28, 28))) + b"\x01", r"of shape \(2, 28, 28\), found more data after it"),
        (bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2**31, 2**31, 4), r"of at most 2,147,483,648 bytes, found"),
    ],
)
def test_damaged_idx_files_are_one_line_errors(tmp_path, payload, match):
    f = tmp_path / "x.gz"
    f.write_bytes(gzip.compress(payload))
    one_line(lambda: read_idx(f, ndim=3), match)


def test_a_file_that_is_not_gzip_and_missing_files(tmp_path):
    f = tmp_path / "x.gz"
    f.write_bytes(b"not gzip at all")
    one_line(lambda: read_idx(f, ndim=1), r"x.gz: expected an IDX file of 1 dimension \(gzip\), could not read it")
    one_line(lambda: read_mnist(tmp_path), r"no MNIST files found .*run `redrep data mnist --data-dir")
    arrays = make_mnist()
    arrays["y_test"] = arrays["y_test"][:5]
    write_mnist(tmp_path / MNIST_DIR, arrays)
    one_line(lambda: read_mnist(tmp_path), r"expected as many test labels as images, found 5 labels and 12 images")


def direct_projection(xtr, xte, k=10):
    """The definition with an SVD: centred training pixels, their top right singular vectors (sign: largest entry
    positive), the projections standardised with the training projections' mean and std."""
    a = xtr.reshape(len(xtr), -1) / 255.0
    b = xte.reshape(len(xte), -1) / 255.0
    mean = a.mean(0)
    _, _, vt = np.linalg.svd(a - mean, full_matrices=False)
    v = vt[:k].T
    v = v * np.sign(v[np.abs(v).argmax(0), np.arange(k)])
    pa, pb = (a - mean) @ v, (b - mean) @ v
    return (pa - pa.mean(0)) / pa.std(0), (pb - pa.mean(0)) / pa.std(0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_projection_against_a_direct_svd(seed):
    arrays = make_mnist(n_train=60, n_test=25, seed=seed)
    ztr, zte = parity_projection(arrays["x_train"], arrays["x_test"])
    dtr, dte = direct_projection(arrays["x_train"], arrays["x_test"])
    assert ztr.shape == (60, 10) and zte.shape == (25, 10) and ztr.dtype == np.float32
    np.testing.assert_allclose(ztr, dtr, atol=2e-4)
    np.testing.assert_allclose(zte, dte, atol=2e-4)
    # standardised with the training statistics: unit variance on train, the test set as it falls
    np.testing.assert_allclose(ztr.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(ztr.std(0), 1, atol=1e-5)
    # deterministic, and fitted on the training images alone (other test images change nothing of the fit)
    again, other = parity_projection(arrays["x_train"], arrays["x_test"][::-1])
    assert np.array_equal(again, ztr) and np.array_equal(other, zte[::-1])


def test_parity_mnist_is_computed_once_and_cached_by_the_files_md5(tmp_path, monkeypatch):
    arrays = make_mnist(seed=3)
    write_mnist(tmp_path / MNIST_DIR, arrays)
    ds = load_dataset("parity-mnist", tmp_path)
    assert ds.in_shape == (10,) and ds.num_classes == 2 == DATASET_CLASSES["parity-mnist"]
    assert torch.equal(ds.y_train, torch.from_numpy(arrays["y_train"] % 2).long())
    ztr, zte = parity_projection(arrays["x_train"], arrays["x_test"])
    assert np.array_equal(ds.x_train.numpy(), ztr) and np.array_equal(ds.x_test.numpy(), zte)
    cache = parity_mnist_cache(tmp_path)
    assert cache.is_file() and cache.parent == tmp_path / MNIST_DIR and cache.name.startswith("parity-mnist-")

    def refuse(*_a, **_k):
        raise AssertionError("computed again")

    monkeypatch.setattr(data_mod, "parity_projection", refuse)
    assert torch.equal(load_dataset("parity-mnist", tmp_path).x_train, ds.x_train)  # from the cache
    monkeypatch.undo()
    # other files (another md5) get another cache; the old one is left alone
    write_mnist(tmp_path / MNIST_DIR, make_mnist(seed=4))
    other = load_dataset("parity-mnist", tmp_path)
    assert parity_mnist_cache(tmp_path) != cache and cache.is_file()
    assert not torch.equal(other.x_train, ds.x_train)
    # a damaged cache is computed again
    parity_mnist_cache(tmp_path).write_bytes(b"junk")
    assert torch.equal(load_dataset("parity-mnist", tmp_path).x_train, other.x_train)
