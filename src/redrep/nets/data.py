"""Datasets as tensors, augmented in batches on the training device.

Every dataset is held whole in memory (CIFAR-10 is 150 MB as uint8) and cut
into batches by index, so that a GPU run never waits for a loader and a CPU
run has no worker processes. Image augmentation (random crop with 4-pixel
reflect padding, horizontal flip) is a handful of tensor operations on the
whole batch.

Datasets
--------
``cifar10``, ``cifar100``
    The official "python version" archives (``cifar-10-python.tar.gz``,
    ``cifar-100-python.tar.gz``), read without unpacking, or their unpacked
    folders. Images stay uint8 (N, 3, 32, 32) until a batch is normalised.
``digits``
    scikit-learn's bundled 8x8 digits, (N, 1, 8, 8), a fixed stratified split
    (1198 train / 599 test).
``parity-digits``
    The digits projected on their first 10 principal components (fitted on
    the training split only), label = parity: the offline analogue of the
    paper's parity MNIST.
``mnist``
    The official MNIST files (four IDX gzip files, ``redrep data mnist``
    fetches them into ``DATA_DIR/mnist/``): 60000 train / 10000 test 28x28
    uint8 images, (N, 1, 28, 28), normalised with the usual mean and std.
``parity-mnist``
    The paper's parity MNIST: the first 10 principal components of the
    training images (fitted on the 60000 training images only), each
    standardised with its training mean and std, label = digit parity; the
    test images projected with the same fit. Cached beside the IDX files
    (``parity-mnist-<key>.npz``, keyed by the files' md5).
``mnist1d``
    MNIST-1D (4000 train / 1000 test sequences of length 40, 10 classes),
    generated procedurally by the ``mnist1d`` package.
``synthetic``
    A Gaussian mixture (4 classes in 16 dimensions), for tests.
"""

from __future__ import annotations

import gzip
import hashlib
import io as _io
import math
import pickle
import struct
import tarfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.validation import RedrepError, check_int, exception_line
from ..storage import io
from .config import DATASETS  # noqa: F401  (the names, with the number of classes, are in config)

# ------------------------------------------------------------------- CIFAR
CIFAR_URL_BASE = "https://www.cs.toronto.edu/~kriz/"


@dataclass(frozen=True)
class CifarInfo:
    """Facts of one official CIFAR archive."""

    archive: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    num_classes: int
    md5: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def url(self) -> str:
        return CIFAR_URL_BASE + self.archive


CIFAR = {
    "cifar10": CifarInfo(
        archive="cifar-10-python.tar.gz",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        label_key="labels",
        num_classes=10,
        md5="c58f30108f718f92721af3b95e74349a",
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.247, 0.243, 0.261),
    ),
    "cifar100": CifarInfo(
        archive="cifar-100-python.tar.gz",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        label_key="fine_labels",
        num_classes=100,
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
}

#: Cache of the generated MNIST-1D arrays inside a data folder.
MNIST1D_CACHE = "mnist1d.npz"


@dataclass
class Dataset:
    """A classification dataset held as tensors.

    Attributes
    ----------
    name : str
    x_train : Tensor of shape (n_train, *in_shape); uint8 images when ``mean`` is set, else float32
    y_train : int64 Tensor of shape (n_train,)
    x_test : Tensor of shape (n_test, *in_shape)
    y_test : int64 Tensor of shape (n_test,)
    num_classes : int
    mean, std : per-channel normalisation of uint8 images (pixel values scaled to [0, 1] first), or None
    augment : whether training batches get random crops and flips
    source : where the data came from
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    augment: bool = False
    source: str = ""

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    def to(self, device) -> Dataset:
        """The same dataset with its tensors on ``device``."""
        return replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )

    def subset_train(self, n: int, seed: int = 0) -> Dataset:
        """The first ``n`` training samples of a fixed random order (``seed``), test set unchanged."""
        n = check_int(n, "train_subset", min_value=1, max_value=self.n_train)
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(self.n_train, generator=g)[:n].sort().values.to(self.x_train.device)
        return replace(self, x_train=self.x_train[idx], y_train=self.y_train[idx])

    def prepare(self, x: torch.Tensor, *, augment: bool = False, generator: torch.Generator | None = None, draws=None):
        """Turn a batch of stored samples into network input (float32, normalised, optionally augmented).

        Parameters
        ----------
        x : Tensor of shape (n, *in_shape), as stored
        augment : apply the random crop and flip (only if the dataset augments)
        generator : CPU generator of the augmentation randomness
        draws : the batch's :func:`augment_draws`, already made (and on ``x``'s device), instead of ``generator``

        Returns
        -------
        float32 Tensor of shape (n, *in_shape) on ``x``'s device
        """
        if self.mean is not None:
            mean, std = _normalisation(self.mean, self.std, x.device)
            x = (x.float() / 255.0 - mean) / std
        else:
            x = x.float()
        if augment and self.augment:
            x = augment_batch(x, generator=generator, draws=draws)
        return x

    def describe(self) -> dict:
        return {
            "name": self.name,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "in_shape": list(self.in_shape),
            "num_classes": self.num_classes,
            "augment": self.augment,
            "source": self.source,
        }


_NORMALISATION: dict = {}


def _normalisation(mean, std, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel mean and std as tensors on ``device``, made once (a new one per batch waits on the GPU)."""
    key = (tuple(mean), tuple(std), str(device))
    if key not in _NORMALISATION:
        m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1).to(device)
        s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1).to(device)
        _NORMALISATION[key] = (m, s)
    return _NORMALISATION[key]


def augment_draws(n: int, *, padding: int = 4, generator: torch.Generator | None = None):
    """The random draws of :func:`augment_batch` for ``n`` images, on the CPU: offsets ``dy``, ``dx`` and flips.

    A training epoch makes those of all its batches at its start, in the order the batches use them, and moves
    them to the device at once: the same numbers as drawn batch by batch, without a wait on the GPU per batch.
    """
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    return dy, dx, flip


def augment_batch(
    x: torch.Tensor, *, padding: int = 4, generator: torch.Generator | None = None, draws=None
) -> torch.Tensor:
    """Random crop (reflect padding ``padding``) and random horizontal flip of a batch of images.

    Each image gets its own offset in [0, 2 * padding] along each axis and a
    flip with probability 1/2. The random draws use ``generator`` on the CPU
    (so a run reproduces on any device), or are given (``draws``, from
    :func:`augment_draws`), and the work happens on ``x``'s device.

    Parameters
    ----------
    x : float Tensor of shape (n, c, h, w)

    Returns
    -------
    Tensor of shape (n, c, h, w)
    """
    n, _, h, w = x.shape
    if draws is None:
        draws = augment_draws(n, padding=padding, generator=generator)
    dy, dx, flip = (d.to(x.device) for d in draws)
    padded = F.pad(x, (padding, padding, padding, padding), mode="reflect")
    rows = (dy[:, None] + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = torch.arange(w, device=x.device).expand(n, w)
    # a flipped image reads its crop's columns right to left
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + dx[:, None]
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chans = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return padded[batch, chans, rows, cols.view(n, 1, 1, w)]


# --------------------------------------------------------------- loading
def load_dataset(name: str, data_dir=None) -> Dataset:
    """Load dataset ``name`` (one of :data:`DATASETS`) on the CPU.

    ``data_dir`` is where the CIFAR archives (or their unpacked folders), the
    MNIST files (in ``mnist/``) and the MNIST-1D cache live; the other
    datasets need no files.
    """
    if name not in DATASETS:
        raise RedrepError(f"dataset: expected one of {', '.join(DATASETS)}, found {name!r}")
    if name in CIFAR:
        return load_cifar(name, data_dir)
    if name == "digits":
        return load_digits()
    if name == "parity-digits":
        return load_parity_digits()
    if name == "mnist1d":
        return load_mnist1d(data_dir)
    if name == "mnist":
        return load_mnist(data_dir)
    if name == "parity-mnist":
        return load_parity_mnist(data_dir)
    return make_synthetic()


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts of numpy arrays and nothing else: a tampered archive cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle(data: bytes) -> dict:
    obj = _ArrayUnpickler(_io.BytesIO(data), encoding="bytes").load()
    if not isinstance(obj, dict):
        raise pickle.UnpicklingError(f"expected a dict, found {type(obj).__name__}")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def find_cifar(name: str, data_dir) -> Path:
    """The archive or unpacked folder of CIFAR dataset ``name`` under (or at) ``data_dir``."""
    info = CIFAR[name]
    if data_dir is None:
        raise RedrepError(f"{name}: expected a data folder (data_dir) holding {info.archive}, found none")
    d = Path(data_dir)
    if d.is_file():
        return d
    for cand in (d / info.archive, d / info.folder):
        if cand.exists():
            return cand
    if (d / info.test_files[0]).is_file():  # the unpacked folder itself
        return d
    raise RedrepError(
        f"{d}: no {name} data found (expected {info.archive} or {info.folder}/ there): "
        f"run `redrep data {name} --data-dir {d}`"
    )


def read_cifar_source(name: str, path) -> dict[str, bytes]:
    """The raw pickled batches of CIFAR dataset ``name`` from an archive or a folder, by file name."""
    info = CIFAR[name]
    path = Path(path)
    wanted = (*info.train_files, *info.test_files)
    out: dict[str, bytes] = {}
    try:
        if path.is_dir():
            for f in wanted:
                out[f] = (path / f).read_bytes()
        else:
            with tarfile.open(path, "r:gz") as tar:
                members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
                missing = [f for f in wanted if f not in members]
                if missing:
                    raise RedrepError(
                        f"{path}: expected the official {name} python archive ({info.archive}), "
                        f"found no {', '.join(missing)} in it"
                    )
                for f in wanted:
                    out[f] = tar.extractfile(members[f]).read()
    except RedrepError:
        raise
    except (tarfile.TarError, OSError, EOFError, ValueError, zlib.error) as exc:
        raise RedrepError(
            f"{path}: expected the official {name} python archive ({info.archive}), could not read it "
            f"({type(exc).__name__}: {exception_line(exc)})"
        ) from None
    return out


def fetch_cifar(name: str, data_dir, *, url: str | None = None, md5: str | None = None, progress: bool = True):
    """Download the official archive of CIFAR dataset ``name`` into ``data_dir``, verified by md5.

    An archive already there with the right md5 is kept without any request;
    one with another md5 is replaced once the new download is complete. An
    interrupted download resumes from its ``.part`` file.

    Parameters
    ----------
    url : where to download from (default: the official address)
    md5 : expected hex md5 (default: the official archive's)

    Returns
    -------
    (path of the archive, whether it was downloaded now)
    """
    from ..fetch.http import download_file, file_md5

    if name not in CIFAR:
        raise RedrepError(f"dataset: expected one of {', '.join(CIFAR)} to download, found {name!r}")
    info = CIFAR[name]
    md5 = (md5 or info.md5).lower()
    dest = Path(data_dir) / info.archive
    if dest.is_file() and file_md5(dest) == md5:
        return dest, False
    download_file(url or info.url, dest, md5=md5, progress=progress, desc=info.archive)
    return dest, True


def load_cifar(name: str, data_dir) -> Dataset:
    """CIFAR-10 or CIFAR-100 as uint8 (N, 3, 32, 32) images and int64 labels."""
    info = CIFAR[name]
    src = find_cifar(name, data_dir)
    raw = read_cifar_source(name, src)

    def stack(files):
        xs, ys = [], []
        for f in files:
            try:
                d = _unpickle(raw[f])
                x = np.asarray(d["data"], dtype=np.uint8)
                y = np.asarray(d[info.label_key], dtype=np.int64)
            except (pickle.UnpicklingError, KeyError, EOFError, ValueError, TypeError, AttributeError) as exc:
                raise RedrepError(
                    f"{src}: batch {f}: expected a pickled dict with 'data' and '{info.label_key}', "
                    f"could not read it ({type(exc).__name__}: {exception_line(exc)})"
                ) from None
            if x.ndim != 2 or x.shape[1] != 3072 or y.shape != (x.shape[0],):
                raise RedrepError(
                    f"{src}: batch {f}: expected data of shape (n, 3072) and n labels, "
                    f"found data {x.shape} and labels {y.shape}"
                )
            if y.size and (y.min() < 0 or y.max() >= info.num_classes):
                raise RedrepError(
                    f"{src}: batch {f}: expected labels in [0, {info.num_classes}), found [{y.min()}, {y.max()}]"
                )
            xs.append(x)
            ys.append(y)
        x = np.concatenate(xs).reshape(-1, 3, 32, 32)
        return torch.from_numpy(x), torch.from_numpy(np.concatenate(ys))

    xtr, ytr = stack(info.train_files)
    xte, yte = stack(info.test_files)
    return Dataset(name, xtr, ytr, xte, yte, info.num_classes, info.mean, info.std, augment=True, source=str(src))


def _digits_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    return train_test_split(x, d.target.astype(np.int64), test_size=1 / 3, stratify=d.target, random_state=0)


def load_digits() -> Dataset:
    """scikit-learn's 8x8 digits, (N, 1, 8, 8), standardised with the training split's mean and std."""
    xtr, xte, ytr, yte = _digits_split()
    mu, sd = xtr.mean(), xtr.std()
    xtr, xte = ((a - mu) / sd for a in (xtr, xte))
    return Dataset(
        "digits",
        torch.from_numpy(xtr.reshape(-1, 1, 8, 8).copy()),
        torch.from_numpy(ytr),
        torch.from_numpy(xte.reshape(-1, 1, 8, 8).copy()),
        torch.from_numpy(yte),
        10,
        source="sklearn.datasets.load_digits",
    )


def load_parity_digits(n_components: int = 10) -> Dataset:
    """Digits projected on their first principal components (fitted on train), label = digit parity.

    The projections are divided by one scalar (their RMS on the training
    split), which keeps the components' relative variances.
    """
    from sklearn.decomposition import PCA

    xtr, xte, ytr, yte = _digits_split()
    pca = PCA(n_components=n_components, svd_solver="full").fit(xtr)
    ptr, pte = pca.transform(xtr), pca.transform(xte)
    scale = np.sqrt(np.mean(ptr**2))
    return Dataset(
        "parity-digits",
        torch.from_numpy((ptr / scale).astype(np.float32)),
        torch.from_numpy(ytr % 2),
        torch.from_numpy((pte / scale).astype(np.float32)),
        torch.from_numpy(yte % 2),
        2,
        source=f"sklearn.datasets.load_digits, PCA({n_components}) on train",
    )


def generate_mnist1d() -> dict[str, np.ndarray]:
    """Generate MNIST-1D offline with the package's default arguments (about 2 s)."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:
        raise RedrepError(f"mnist1d: expected the mnist1d package to be installed, found none ({exc})") from None
    state = np.random.get_state()  # make_dataset reseeds numpy's global generator
    try:
        d = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(state)
    return {
        "x_train": np.asarray(d["x"], dtype=np.float32),
        "y_train": np.asarray(d["y"], dtype=np.int64),
        "x_test": np.asarray(d["x_test"], dtype=np.float32),
        "y_test": np.asarray(d["y_test"], dtype=np.int64),
    }


def write_mnist1d_cache(data_dir) -> Path:
    """Generate MNIST-1D and store it as ``data_dir/mnist1d.npz`` (atomically)."""
    arrays = generate_mnist1d()
    path = Path(data_dir) / MNIST1D_CACHE
    with io.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return path


def load_mnist1d(data_dir=None) -> Dataset:
    """MNIST-1D from ``data_dir/mnist1d.npz`` when present, else generated on the spot."""
    cache = Path(data_dir) / MNIST1D_CACHE if data_dir is not None else None
    if cache is not None and cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                a = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise RedrepError(
                f"{cache}: expected a cached MNIST-1D (.npz), could not read it ({exception_line(exc)})"
            ) from None
        if a["x_train"].shape != (4000, 40) or a["x_test"].shape != (1000, 40):
            raise RedrepError(
                f"{cache}: expected MNIST-1D arrays of shape (4000, 40) and (1000, 40), "
                f"found {a['x_train'].shape} and {a['x_test'].shape}"
            )
        source = str(cache)
    else:
        a = generate_mnist1d()
        source = "mnist1d.data.make_dataset(get_dataset_args())"
    return Dataset(
        "mnist1d",
        torch.from_numpy(a["x_train"].astype(np.float32)),
        torch.from_numpy(a["y_train"].astype(np.int64)),
        torch.from_numpy(a["x_test"].astype(np.float32)),
        torch.from_numpy(a["y_test"].astype(np.int64)),
        10,
        source=source,
    )


# ------------------------------------------------------------------- MNIST
#: Where the MNIST files are downloaded from: the mirror PyTorch uses, which serves the official files (the
#: original site, http://yann.lecun.com/exdb/mnist/, now refuses most automated downloads); --url sets another.
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
#: The four official files and their md5.
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
#: The folder of the MNIST files inside a data folder.
MNIST_DIR = "mnist"
#: Mean and std of the MNIST training pixels (scaled to [0, 1]).
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
#: Principal components kept by parity-mnist.
PARITY_COMPONENTS = 10
#: IDX element type (the third byte of the magic number) to numpy dtype; MNIST uses 0x08, unsigned bytes.
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
#: Most bytes an IDX file may hold (the MNIST training images are 47 MB): a header asking more is refused.
_IDX_MAX_BYTES = 2**31


def fetch_mnist(data_dir, *, url: str | None = None, progress: bool = True) -> tuple[Path, list[str]]:
    """Download the four official MNIST files into ``data_dir/mnist/``, each verified by its md5.

    A file already there with the right md5 is kept without any request; an
    interrupted download resumes from its ``.part`` file; a download whose md5
    is wrong is deleted and refused in one line.

    Parameters
    ----------
    url : the folder the four files are downloaded from (default :data:`MNIST_URL`), e.g. a mirror's

    Returns
    -------
    (the folder of the files, the names downloaded now)
    """
    from ..fetch.http import download_file, file_md5

    base = (url or MNIST_URL).rstrip("/") + "/"
    folder = Path(data_dir) / MNIST_DIR
    fetched = []
    for name, md5 in MNIST_FILES.items():
        dest = folder / name
        if dest.is_file() and file_md5(dest) == md5:
            continue
        download_file(base + name, dest, md5=md5, progress=progress, desc=name)
        fetched.append(name)
    return folder, fetched


def find_mnist(data_dir) -> Path:
    """The folder holding the four MNIST files: ``data_dir/mnist/``, or ``data_dir`` itself."""
    if data_dir is None:
        raise RedrepError("mnist: expected a data folder (data_dir) holding the MNIST files, found none")
    d = Path(data_dir)
    for cand in (d / MNIST_DIR, d):
        if all((cand / f).is_file() for f in MNIST_FILES):
            return cand
    missing = [f for f in MNIST_FILES if not (d / MNIST_DIR / f).is_file()]
    raise RedrepError(
        f"{d}: no MNIST files found (expected {', '.join(missing)} in {d / MNIST_DIR}): "
        f"run `redrep data mnist --data-dir {d}`"
    )


def read_idx(path, *, ndim: int) -> np.ndarray:
    """The array in a gzip-compressed IDX file (the MNIST format), checked against its header.

    The header is a magic number (two zero bytes, the element type, the
    number of dimensions) and the big-endian uint32 size of each dimension;
    the data follow, exactly that many elements. Only the bytes the header
    announces are decompressed, so a file that claims more than
    :data:`_IDX_MAX_BYTES` or hides more data is refused without reading it all.

    Parameters
    ----------
    path : a ``.gz`` IDX file
    ndim : the number of dimensions expected (3 for images, 1 for labels)

    Returns
    -------
    ndarray of the header's shape and type (native byte order)
    """
    path = Path(path)
    what = f"an IDX file of {ndim} dimension{'s' if ndim > 1 else ''} (gzip)"
    try:
        with gzip.open(path, "rb") as f:
            head = f.read(4)
            if len(head) != 4 or head[:2] != b"\0\0" or head[2] not in _IDX_TYPES or head[3] != ndim:
                raise RedrepError(f"{path}: expected {what}, found the magic number {head.hex() or 'none'}")
            dims = struct.unpack(f">{ndim}I", _read_exact(f, 4 * ndim, path, what))
            dtype = np.dtype(_IDX_TYPES[head[2]])
            size = math.prod(dims) * dtype.itemsize
            if size > _IDX_MAX_BYTES:
                raise RedrepError(
                    f"{path}: expected {what} of at most {_IDX_MAX_BYTES:,} bytes, found {dims} in its header"
                )
            data = _read_exact(f, size, path, what)
            if f.read(1):
                raise RedrepError(f"{path}: expected {what} of shape {dims}, found more data after it")
    except (OSError, EOFError, zlib.error) as exc:
        raise RedrepError(f"{path}: expected {what}, could not read it ({exception_line(exc)})") from None
    return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _read_exact(f, n: int, path: Path, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise RedrepError(f"{path}: expected {what}, found it cut short ({len(data)} of {n} bytes)")
    return data


def read_mnist(data_dir) -> dict[str, np.ndarray]:
    """The four MNIST arrays: ``x_train`` (60000, 28, 28) uint8, ``y_train`` (60000,) int64, and the test ones."""
    folder = find_mnist(data_dir)
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz", ndim=3)
        y = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", ndim=1).astype(np.int64)
        if x.shape[0] != y.shape[0]:
            raise RedrepError(
                f"{folder}: expected as many {split} labels as images, "
                f"found {y.shape[0]} labels and {x.shape[0]} images"
            )
        if y.size and (y.min() < 0 or y.max() > 9):
            raise RedrepError(f"{folder}: expected {split} labels in [0, 9], found [{y.min()}, {y.max()}]")
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    return out


def load_mnist(data_dir) -> Dataset:
    """MNIST as uint8 (N, 1, 28, 28) images and int64 labels, normalised in batches with its mean and std."""
    a = read_mnist(data_dir)
    return Dataset(
        "mnist",
        torch.from_numpy(a["x_train"][:, None].copy()),
        torch.from_numpy(a["y_train"]),
        torch.from_numpy(a["x_test"][:, None].copy()),
        torch.from_numpy(a["y_test"]),
        10,
        MNIST_MEAN,
        MNIST_STD,
        source=str(find_mnist(data_dir)),
    )


def parity_projection(x_train: np.ndarray, x_test: np.ndarray, n_components: int = PARITY_COMPONENTS):
    """The first principal components of the training images, standardised; the test images projected alike.

    The PCA is fitted on ``x_train`` alone (images flattened, scaled to
    [0, 1], float64): the mean image is removed and the data projected on the
    top ``n_components`` eigenvectors of the training covariance, each
    eigenvector's sign fixed so that its entry of largest magnitude is
    positive (scikit-learn's convention). Each component is then standardised
    with its mean and standard deviation over the training images.

    Parameters
    ----------
    x_train : ndarray of shape (n_train, ...), pixel values 0..255
    x_test : ndarray of shape (n_test, ...)

    Returns
    -------
    (z_train, z_test) : float32 ndarrays of shape (n_train, n_components) and (n_test, n_components)
    """
    a = x_train.reshape(x_train.shape[0], -1).astype(np.float64) / 255.0
    b = x_test.reshape(x_test.shape[0], -1).astype(np.float64) / 255.0
    if not 1 <= n_components <= min(a.shape):
        raise RedrepError(f"n_components: expected 1 to {min(a.shape)} for {a.shape[0]} images, found {n_components}")
    mean = a.mean(axis=0)
    a -= mean
    b -= mean
    # the covariance's eigenvectors: the same components as the SVD of the centred data, at a fraction of its cost
    vals, vecs = np.linalg.eigh(a.T @ a)
    comps = vecs[:, np.argsort(vals)[::-1][:n_components]]  # (d, k), largest variance first
    signs = np.sign(comps[np.abs(comps).argmax(axis=0), np.arange(n_components)])
    comps = comps * signs
    pa, pb = a @ comps, b @ comps
    mu, sd = pa.mean(axis=0), pa.std(axis=0)
    return ((pa - mu) / sd).astype(np.float32), ((pb - mu) / sd).astype(np.float32)


def parity_mnist_cache(data_dir) -> Path:
    """The cache file of parity-mnist for the MNIST files in ``data_dir``: named by a digest of their md5s."""
    from ..fetch.http import file_md5

    folder = find_mnist(data_dir)
    key = hashlib.md5("".join(file_md5(folder / f) for f in MNIST_FILES).encode()).hexdigest()[:16]
    return folder / f"parity-mnist-{key}.npz"


def load_parity_mnist(data_dir) -> Dataset:
    """Parity MNIST (:func:`parity_projection` of MNIST, label = digit parity), from its cache or computed
    and cached."""
    cache = parity_mnist_cache(data_dir)
    keys = ("x_train", "y_train", "x_test", "y_test")
    a = None
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                a = {k: z[k] for k in keys}
        except (OSError, ValueError, KeyError, EOFError):
            a = None  # a damaged cache is computed again
    if a is None:
        raw = read_mnist(data_dir)
        ztr, zte = parity_projection(raw["x_train"], raw["x_test"])
        a = {"x_train": ztr, "y_train": raw["y_train"] % 2, "x_test": zte, "y_test": raw["y_test"] % 2}
        with io.atomic_path(cache) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **a)
    return Dataset(
        "parity-mnist",
        torch.from_numpy(a["x_train"].astype(np.float32)),
        torch.from_numpy(a["y_train"].astype(np.int64)),
        torch.from_numpy(a["x_test"].astype(np.float32)),
        torch.from_numpy(a["y_test"].astype(np.int64)),
        2,
        source=f"{cache} (MNIST, PCA({PARITY_COMPONENTS}) on train, standardised)",
    )


def make_synthetic(
    n_train: int = 512, n_test: int = 256, dim: int = 16, n_classes: int = 4, separation: float = 3.0, seed: int = 0
) -> Dataset:
    """A mixture of ``n_classes`` unit Gaussians in ``dim`` dimensions, class means of norm ``separation``."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(n_classes, dim))
    means *= separation / np.linalg.norm(means, axis=1, keepdims=True)

    def sample(n):
        y = rng.integers(0, n_classes, size=n)
        return (means[y] + rng.normal(size=(n, dim))).astype(np.float32), y.astype(np.int64)

    xtr, ytr = sample(n_train)
    xte, yte = sample(n_test)
    return Dataset(
        "synthetic",
        torch.from_numpy(xtr),
        torch.from_numpy(ytr),
        torch.from_numpy(xte),
        torch.from_numpy(yte),
        n_classes,
        source=f"gaussian mixture, seed {seed}",
    )
