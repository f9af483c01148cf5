"""Tiny CIFAR-format archives built on the spot (the official python-version layout)."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from redrep.nets.data import CIFAR


def write_cifar_archive(path, name="cifar10", n_train=64, n_test=32, seed=0, protocol=2):
    """Write a CIFAR archive in the official python format (pickled dicts with bytes keys), tiny.

    Returns (x_train, y_train, x_test, y_test) as written: uint8 (n, 3072) rows and int labels.
    """
    info = CIFAR[name]
    rng = np.random.default_rng(seed)
    x_tr = rng.integers(0, 256, size=(n_train, 3072), dtype=np.uint8)
    y_tr = rng.integers(0, info.num_classes, size=n_train)
    x_te = rng.integers(0, 256, size=(n_test, 3072), dtype=np.uint8)
    y_te = rng.integers(0, info.num_classes, size=n_test)
    key = info.label_key.encode()
    members = {}
    parts = np.array_split(np.arange(n_train), len(info.train_files))
    for f, idx in zip(info.train_files, parts):
        members[f] = {b"data": x_tr[idx], key: [int(v) for v in y_tr[idx]], b"batch_label": b"training"}
    members[info.test_files[0]] = {b"data": x_te, key: [int(v) for v in y_te], b"batch_label": b"testing"}
    members["batches.meta" if name == "cifar10" else "meta"] = {b"num_cases_per_batch": 10000}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for f, obj in members.items():
            data = pickle.dumps(obj, protocol=protocol)
            ti = tarfile.TarInfo(f"{info.folder}/{f}")
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    return x_tr, y_tr, x_te, y_te


def make_cifar_dir(tmp_path_factory):
    """A data folder holding a tiny cifar-10-python.tar.gz (64 train / 32 test images), and its arrays."""
    d = tmp_path_factory.mktemp("cifar")
    arrays = write_cifar_archive(d / CIFAR["cifar10"].archive)
    return d, arrays
