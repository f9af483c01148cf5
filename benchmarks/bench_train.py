"""Seconds per training epoch on this machine for the small offline tasks.

    python benchmarks/bench_train.py [--epochs 3] [--device auto] [--json FILE]

Runs `redrep.nets.train.train` on: an MLP 3 x 512 on mnist1d, the same on
parity-digits, and WRN-16-1 on a 1000-image CIFAR-format sample (random
pixels written as an official-format archive: speed does not depend on
content). Prints the median over epochs 2.. of the training time and of the
whole epoch (training plus evaluation of the train and test sets).
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import statistics
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

from redrep.nets.train import TrainConfig, resolve_device, train


def write_sample_cifar(path: Path, n_train: int, n_test: int) -> None:
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        parts = np.array_split(np.arange(n_train), 5)
        files = {f"data_batch_{i + 1}": len(p) for i, p in enumerate(parts)} | {"test_batch": n_test}
        for name, n in files.items():
            d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
            data = pickle.dumps(d, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path, default=None, help="also write the printed figures to this JSON file")
    args = ap.parse_args()
    figures = {"device": None, "threads": torch.get_num_threads(), "tasks": {}}
    dev = resolve_device(args.device)
    print(f"device {dev}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_sample_cifar(tmp / "cifar-10-python.tar.gz", 1000, 1000)
        tasks = {
            "mlp 3x512 mnist1d (4000 train)": dict(dataset="mnist1d", arch="mlp", width=512, depth=3, lr=0.05),
            "mlp 3x512 parity-digits (1198 train)": dict(
                dataset="parity-digits", arch="mlp", width=512, depth=3, lr=0.05
            ),
            "mlp 3x1024 parity-digits (1198 train)": dict(
                dataset="parity-digits", arch="mlp", width=1024, depth=3, lr=0.05
            ),
            "wrn-16-1 cifar-format (1000 train)": dict(
                dataset="cifar10", data_dir=str(tmp), arch="wide_resnet16", widening_factor=1
            ),
        }
        for name, kw in tasks.items():
            cfg = TrainConfig(epochs=args.epochs, device=args.device, checkpoint_epochs=(), **kw)
            res = train(cfg, tmp / name.replace(" ", "_"), progress=False)
            tr = statistics.median(m["train_seconds"] for m in res.history[1:])
            tot = statistics.median(m["seconds"] for m in res.history[1:])
            print(f"{name:40s} train {tr:7.3f} s/epoch, with evaluation {tot:7.3f} s/epoch")
            figures["tasks"][name] = {"train_s_per_epoch": tr, "epoch_s": tot}
    if args.json is not None:  # the figures printed above, for scripts/readme_numbers.py
        figures["device"] = dev
        args.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
