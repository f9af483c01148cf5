"""Results folders with known curves, written in the format of ``redrep analyze``, and small shared helpers.

Shared by the plot, report, summary, sweep, clones, compare, dynamics and page tests (imported as a plain module).
"""

from __future__ import annotations

import csv
from dataclasses import fields

import numpy as np

from redrep.storage import io
from redrep.storage.results import CSV_NAME, JSON_NAME, rows_to_csv


def paper_like(width=512, w_star=64, error_inf=0.04, prefactor=0.12, exponent=-0.5):
    """Curves with a known answer: w_c* = ``w_star`` and test error - error_inf = prefactor * w**exponent.

    Training error reaches exactly 0 at ``w_star`` and R^2 crosses 0.95 below it.
    """
    sizes = np.array([width >> i for i in range(width.bit_length())][::-1], dtype=float)
    train_err = np.where(sizes >= w_star, 0.0, 0.6 * (1 - np.log2(sizes) / np.log2(w_star)) + 0.01)
    test_err = (error_inf if error_inf is not None else 0.0) + prefactor * sizes**exponent
    r2 = 1 - 0.5 / sizes
    mean_corr = 0.2 * (1 - sizes / width) ** 2 / np.sqrt(sizes)
    outside = np.where(sizes < width, 0.2 / np.sqrt(sizes), np.nan)
    return {
        "sizes": sizes,
        "train_err": train_err,
        "test_err": test_err,
        "r2": r2,
        "mean_corr": mean_corr,
        "mean_corr_outside": outside,
    }


def write_results_dir(path, curves, *, width=None, error_inf=None, sem=0.002, n=20, meta=None, drop=()):
    """Write results.csv and results.json for ``curves`` (as from :func:`paper_like`) into ``path``."""
    sizes = curves["sizes"]
    width = int(sizes.max()) if width is None else width
    series = {
        ("accuracy", "train"): 1 - curves["train_err"],
        ("accuracy", "test"): 1 - curves["test_err"],
        ("r2", "test"): curves["r2"],
        ("mean_corr", "test"): curves["mean_corr"],
        ("mean_corr_outside", "test"): curves["mean_corr_outside"],
    }
    rows = []
    for (metric, split), vals in series.items():
        if metric in drop:
            continue
        for w, v in zip(sizes, vals):
            finite = bool(np.isfinite(v))
            rows.append(
                {
                    "metric": metric,
                    "split": split,
                    "chunk_size": int(w),
                    "mean": float(v),
                    "std": sem * np.sqrt(n) if finite else float("nan"),
                    "sem": sem if finite else float("nan"),
                    "n": n if finite else 0,
                }
            )
    io.write_text(path / CSV_NAME, rows_to_csv(rows))
    doc = {
        "tool": "redrep",
        "input": {"n_train": 1000, "n_test": 500, "width": width, "error_inf": error_inf, "meta": meta or {}},
        "error_inf": error_inf,
        "params": {"chunk_sizes": [int(w) for w in sizes], "acc_rep": n, "r2_rep": n, "seed": 0},
    }
    io.write_json(path / JSON_NAME, doc)
    return path


def read_csv(path) -> list[dict]:
    """The rows of a CSV file with a header, as dicts of strings."""
    with open(path) as f:
        return list(csv.DictReader(f))


def clone_rows(wc) -> list[dict]:
    """clones.csv rows from {width: [w_c* per seed]}."""
    return [
        dict(width=w, seed=s, wc_star=v, clones=None if v is None else w / v, exponent=None, exponent_se=None)
        for w, vs in wc.items()
        for s, v in enumerate(vs)
    ]


def tiny(**kw):
    """A small sweep (synthetic data, MLPs of widths 8 and 16, two seeds, three epochs); ``kw`` overrides any
    field of the sweep or of its training template."""
    from redrep.experiments.sweep import SweepConfig
    from redrep.nets.train import TrainConfig

    train_fields = {f.name for f in fields(TrainConfig)}
    train = dict(
        dataset="synthetic", arch="mlp", depth=2, epochs=3, lr=0.05, data_dir=None, checkpoint_epochs=(), device="cpu"
    )
    train.update({k: kw.pop(k) for k in list(kw) if k in train_fields})
    base = dict(widths=(8, 16), seeds=2, acc_rep=4, r2_rep=3, jobs=1, progress=False)
    base.update(kw)
    return SweepConfig(train=TrainConfig(**train), **base)
