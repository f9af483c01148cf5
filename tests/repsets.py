"""Small representation sets built in the test, never downloaded (a plain helper module for the tests)."""

from __future__ import annotations

import numpy as np

from redrep.storage.repset import AUTHORS_ENSEMBLE_FILE, AUTHORS_FILES, RepresentationSet


def random_set(seed=0, n_train=300, n_test=200, width=24, n_classes=4, latent=6, noise=0.5, offset=3.0):
    """A set with low-dimensional structure plus noise, a least-squares readout and a mean offset."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(latent, width))
    means = rng.normal(size=(n_classes, latent)) * 2

    def sample(n):
        y = rng.integers(0, n_classes, n)
        z = means[y] + rng.normal(size=(n, latent))
        return (z @ mix + noise * rng.normal(size=(n, width)) + offset).astype(np.float32), y

    xtr, ytr = sample(n_train)
    xte, yte = sample(n_test)
    X = np.hstack([xtr, np.ones((n_train, 1), np.float32)]).astype(np.float64)
    coef = np.linalg.lstsq(X, np.eye(n_classes)[ytr], rcond=None)[0]
    return RepresentationSet.from_arrays(
        xtr, xte, ytr, yte, coef[:-1].T.astype(np.float32), coef[-1].astype(np.float32), error_inf=0.05
    )


def arrays(n_train=20, n_test=10, width=6, n_classes=3, seed=0):
    """The arrays of a small random set, by their names in RepresentationSet.from_arrays."""
    rng = np.random.default_rng(seed)
    return dict(
        features_train=rng.normal(size=(n_train, width)).astype(np.float32),
        features_test=rng.normal(size=(n_test, width)).astype(np.float32),
        labels_train=rng.integers(0, n_classes, n_train),
        labels_test=rng.integers(0, n_classes, n_test),
        weight=rng.normal(size=(n_classes, width)).astype(np.float32),
        bias=rng.normal(size=n_classes).astype(np.float32),
    )


def write_authors(folder, a, ensemble_acc=None):
    """The arrays ``a`` in the authors' layout (torch .pt files and the ensemble .npy)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    for key, name in AUTHORS_FILES.items():
        torch.save(torch.from_numpy(np.asarray(a[key])), folder / name)
    if ensemble_acc is not None:
        np.save(folder / AUTHORS_ENSEMBLE_FILE, np.array([ensemble_acc, 0.0]))
