"""Tiny MNIST files written by the tests themselves: the four IDX gzip files of the official layout."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np

NAMES = {
    ("train", "images"): "train-images-idx3-ubyte.gz",
    ("train", "labels"): "train-labels-idx1-ubyte.gz",
    ("test", "images"): "t10k-images-idx3-ubyte.gz",
    ("test", "labels"): "t10k-labels-idx1-ubyte.gz",
}


def idx_bytes(a: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: magic 0x0000 08 ndim, big-endian uint32 dimensions, the bytes."""
    a = np.ascontiguousarray(a, dtype=np.uint8)
    return bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def make_mnist(n_train: int = 40, n_test: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    """Random 28x28 uint8 images with a few bright strokes, and digit labels 0..9 (each digit present)."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = (rng.random((n, 28, 28)) < 0.1) * rng.integers(0, 256, (n, 28, 28))
        x[:, 10:18, 12:16] = rng.integers(100, 256, (n, 1, 1))  # a column of varying brightness: variance to fit
        out[f"x_{split}"] = x.astype(np.uint8)
        out[f"y_{split}"] = (np.arange(n) % 10).astype(np.uint8)
    return out


def write_mnist(folder, arrays: dict[str, np.ndarray] | None = None) -> dict[str, str]:
    """Write the four gzip IDX files into ``folder``; returns ``{file name: md5}``."""
    arrays = make_mnist() if arrays is None else arrays
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    md5s = {}
    for (split, kind), name in NAMES.items():
        a = arrays[f"{'x' if kind == 'images' else 'y'}_{split}"]
        data = gzip.compress(idx_bytes(a), mtime=0)
        (folder / name).write_bytes(data)
        md5s[name] = hashlib.md5(data).hexdigest()
    return md5s
