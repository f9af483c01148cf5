import gzip
import pickle
import tarfile

import numpy as np
import pytest
import torch

from cifar_archive import make_cifar_dir, write_cifar_archive
from redrep.core.validation import RedrepError
from redrep.nets.config import DATASET_CLASSES
from redrep.nets.data import (
    CIFAR,
    DATASETS,
    MNIST1D_CACHE,
    augment_batch,
    load_dataset,
    load_mnist1d,
    write_mnist1d_cache,
)


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    return make_cifar_dir(tmp_path_factory)


def _augment_oracle(x, seed, padding=4):
    """One image at a time with numpy: the same random draws as augment_batch, in the same order."""
    g = torch.Generator().manual_seed(seed)
    n, _, h, w = x.shape
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=g).numpy()
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=g).numpy()
    flip = (torch.rand(n, generator=g) < 0.5).numpy()
    out = np.empty_like(x)
    for i in range(n):
        img = np.pad(x[i], ((0, 0), (padding, padding), (padding, padding)), mode="reflect")
        img = img[:, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = img[:, :, ::-1] if flip[i] else img
    return out, flip, dy, dx


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_augment_batch_matches_per_image_crop_and_flip(seed):
    x = np.random.default_rng(seed).normal(size=(40, 3, 12, 10)).astype(np.float32)
    got = augment_batch(torch.from_numpy(x), generator=torch.Generator().manual_seed(seed)).numpy()
    want, flip, dy, dx = _augment_oracle(x, seed)
    np.testing.assert_array_equal(got, want)
    # the draws cover both flips and the offset range
    assert flip.any() and (~flip).any() and dy.min() >= 0 and dy.max() <= 8


def test_augment_identity_offset_without_flip_is_the_image():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    # with padding 0 there is only one offset: the output is the image or its mirror
    out = augment_batch(x, padding=0, generator=torch.Generator().manual_seed(0))
    for i in range(2):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))


@pytest.mark.parametrize("protocol", [2, 4])
def test_load_cifar10_from_archive(tmp_path, protocol):
    x_tr, y_tr, x_te, y_te = write_cifar_archive(
        tmp_path / "cifar-10-python.tar.gz", n_train=23, n_test=7, seed=protocol, protocol=protocol
    )
    ds = load_dataset("cifar10", tmp_path)
    assert ds.x_train.dtype == torch.uint8 and ds.in_shape == (3, 32, 32) and ds.num_classes == 10
    np.testing.assert_array_equal(ds.x_train.numpy().reshape(23, -1), x_tr)  # batches concatenated in order
    np.testing.assert_array_equal(ds.y_train.numpy(), y_tr)
    np.testing.assert_array_equal(ds.x_test.numpy().reshape(7, -1), x_te)
    np.testing.assert_array_equal(ds.y_test.numpy(), y_te)
    # the archive path itself works as --data-dir too
    assert torch.equal(load_dataset("cifar10", tmp_path / "cifar-10-python.tar.gz").x_test, ds.x_test)


def test_load_cifar100_from_unpacked_folder(tmp_path):
    arc = tmp_path / "cifar-100-python.tar.gz"
    x_tr, y_tr, _, y_te = write_cifar_archive(arc, "cifar100", n_train=30, n_test=10)
    with tarfile.open(arc) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    arc.unlink()
    ds = load_dataset("cifar100", tmp_path / "unpacked")
    assert ds.num_classes == 100 and ds.n_train == 30
    np.testing.assert_array_equal(ds.y_train.numpy(), y_tr)
    np.testing.assert_array_equal(ds.y_test.numpy(), y_te)
    np.testing.assert_array_equal(ds.x_train.numpy().reshape(30, -1), x_tr)


def test_cifar_normalisation_uses_the_spec_constants(cifar_dir):
    d, _ = cifar_dir
    ds = load_dataset("cifar10", d)
    x = ds.x_test[:4]
    got = ds.prepare(x)
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.247, 0.243, 0.261]).view(1, 3, 1, 1)
    torch.testing.assert_close(got, (x.float() / 255 - mean) / std)
    assert ds.prepare(x, augment=True, generator=torch.Generator().manual_seed(0)).shape == got.shape


def _one_line_error(fn, match):
    with pytest.raises(RedrepError, match=match) as e:
        fn()
    assert "\n" not in str(e.value)


def test_cifar_errors(tmp_path):
    _one_line_error(
        lambda: load_dataset("cifar10", tmp_path / "nowhere"), r"no cifar10 data found .*redrep data cifar10"
    )
    bad = tmp_path / "bad" / "cifar-10-python.tar.gz"
    bad.parent.mkdir()
    bad.write_bytes(b"\x1f\x8b" + b"not really a gzip stream" * 10)
    _one_line_error(lambda: load_dataset("cifar10", bad.parent), r"expected the official cifar10 python archive")
    # a truncated archive
    good = tmp_path / "trunc" / "cifar-10-python.tar.gz"
    write_cifar_archive(good, n_train=10, n_test=5)
    good.write_bytes(good.read_bytes()[:200])
    _one_line_error(lambda: load_dataset("cifar10", good.parent), r"expected the official cifar10 python archive")
    # a tar without the batches
    empty = tmp_path / "empty" / "cifar-10-python.tar.gz"
    empty.parent.mkdir()
    with tarfile.open(empty, "w:gz"):
        pass
    _one_line_error(lambda: load_dataset("cifar10", empty.parent), r"found no data_batch_1, .*test_batch in it")


def test_cifar_refuses_pickles_that_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for f in (*CIFAR["cifar10"].train_files, "test_batch"):
        (d / f).write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}))
    _one_line_error(lambda: load_dataset("cifar10", tmp_path), r"refusing to load builtins.print")


def test_cifar_bad_shapes(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for f in (*CIFAR["cifar10"].train_files, "test_batch"):
        (d / f).write_bytes(pickle.dumps({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}))
    _one_line_error(lambda: load_dataset("cifar10", tmp_path), r"expected data of shape \(n, 3072\)")


def test_unknown_dataset():
    _one_line_error(
        lambda: load_dataset("imagenet"), r"dataset: expected one of cifar10, .*synthetic, found 'imagenet'"
    )


def test_digits_split_is_fixed_stratified_and_standardised():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert (a.n_train, a.n_test, a.in_shape, a.num_classes) == (1198, 599, (1, 8, 8), 10)
    counts_tr = np.bincount(a.y_train.numpy(), minlength=10)
    counts_te = np.bincount(a.y_test.numpy(), minlength=10)
    np.testing.assert_allclose(counts_te / counts_tr, 0.5, atol=0.03)  # each class split 2:1
    assert abs(a.x_train.mean().item()) < 1e-5 and a.x_train.std().item() == pytest.approx(1, abs=1e-3)


def test_parity_digits():
    d, p = load_dataset("digits"), load_dataset("parity-digits")
    assert p.in_shape == (10,) and p.num_classes == 2
    np.testing.assert_array_equal(p.y_train.numpy(), d.y_train.numpy() % 2)
    np.testing.assert_array_equal(p.y_test.numpy(), d.y_test.numpy() % 2)
    # PCA fitted on the training split: centred, uncorrelated components of decreasing variance there
    x = p.x_train.numpy().astype(np.float64)
    assert np.abs(x.mean(0)).max() < 1e-5
    cov = np.cov(x, rowvar=False)
    off = cov - np.diag(np.diag(cov))
    assert np.abs(off).max() < 1e-4 * np.diag(cov).max()
    assert np.all(np.diff(np.diag(cov)) < 0)
    assert np.abs(p.x_test.numpy().mean(0)).max() > 1e-3  # the test split was not used to centre


@pytest.fixture(scope="module")
def mnist1d_generated():
    return load_mnist1d()


def test_mnist1d_generated_offline_keeps_global_rng(mnist1d_generated, tmp_path):
    ds = mnist1d_generated
    assert (ds.n_train, ds.n_test, ds.in_shape, ds.num_classes) == (4000, 1000, (40,), 10)
    assert set(np.unique(ds.y_train.numpy())) == set(range(10))
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    path = write_mnist1d_cache(tmp_path)
    assert np.random.random() == before  # generation does not reseed the caller's generator
    assert path == tmp_path / MNIST1D_CACHE
    cached = load_mnist1d(tmp_path)
    assert cached.source == str(path)
    assert torch.equal(cached.x_train, ds.x_train) and torch.equal(cached.y_test, ds.y_test)
    path.write_bytes(b"junk")
    _one_line_error(lambda: load_mnist1d(tmp_path), r"mnist1d.npz: expected a cached MNIST-1D")


@pytest.mark.parametrize("seed", [0, 1])
def test_subset_train_is_fixed_and_independent_of_the_training_seed(seed):
    ds = load_dataset("synthetic")
    a = ds.subset_train(100, seed=seed)
    b = ds.subset_train(100, seed=seed)
    assert torch.equal(a.x_train, b.x_train) and a.n_train == 100 and a.n_test == ds.n_test
    rows = {tuple(r) for r in ds.x_train.numpy().round(6)}
    assert all(tuple(r) in rows for r in a.x_train.numpy().round(6))
    with pytest.raises(RedrepError, match=r"train_subset: expected an integer <= 512"):
        ds.subset_train(10_000)


def test_every_dataset_name_is_loadable_or_says_what_it_needs(tmp_path):
    for name in DATASETS:
        if name in CIFAR:
            _one_line_error(lambda n=name: load_dataset(n, tmp_path), rf"no {name} data found")
        elif name in ("mnist", "parity-mnist"):  # read from files in test_mnist
            _one_line_error(lambda n=name: load_dataset(n, tmp_path), r"no MNIST files found")
        elif name != "mnist1d":  # generated in its own test
            ds = load_dataset(name)
            assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
            assert ds.y_train.max() < ds.num_classes
            # the table of names (redrep.nets.config, no torch) says what the loader gives
            assert DATASET_CLASSES[name] == ds.num_classes


def test_gzip_module_used_by_fixture_is_real(tmp_path):
    # guards the corrupt-archive test: the tiny archives are gzip-compressed tar files
    p = tmp_path / "a.tar.gz"
    write_cifar_archive(p, n_train=5, n_test=5)
    with gzip.open(p) as f:
        assert len(f.read()) > 5 * 3072


def test_an_epochs_augmentation_draws_made_at_once_are_those_of_its_batches():
    """(CPU) _epoch_draws makes each batch's draws in order, so training is the same as drawing batch by batch."""
    import torch

    from redrep.nets.data import Dataset, augment_draws
    from redrep.nets.train import _epoch_draws

    n, batch = 37, 8
    x = torch.zeros((n, 3, 4, 4), dtype=torch.uint8)
    y = torch.zeros(n, dtype=torch.int64)
    data = Dataset("t", x, y, x[:2], y[:2], 10, augment=True)
    at_once = _epoch_draws(data, 5, batch, torch.Generator().manual_seed(3), "cpu")
    g = torch.Generator().manual_seed(3)
    for b in range(5):
        expected = augment_draws(min(batch, n - b * batch), generator=g)
        for got, want in zip(at_once, expected):
            assert torch.equal(got[b * batch : (b + 1) * batch], want)
    assert _epoch_draws(Dataset("t", x, x[:, 0, 0, 0], x[:2], x[:2, 0, 0, 0], 10), 5, batch, g, "cpu") is None
