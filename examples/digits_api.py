"""redrep's Python API end to end, in about 30 s on 2 CPU cores, with no download.

1. Train three small MLPs (3 hidden layers of 512 ReLU units, seeds 0, 1, 2) on
   parity-digits: scikit-learn's bundled 8x8 digits on their first 10
   principal components, label = parity of the digit (the demo's data).
2. Extract each network's last hidden layer and trained readout (a
   representation set), and take error_inf, the test error of the three
   networks' averaged softmax.
3. Analyse the first network's layer: ``ChunkAnalysis(...).fit(rs)``.
4. Its summary, ``an.summary()``: the critical chunk size w_c* with its
   bootstrap interval, the number of clones W / w_c*, the decay exponent of
   test error - error_inf above w_c*, any near miss.
5. The figures: the three-panel figure of the analysis (PNG), and a report
   page (report.html, with method.html beside it).

Run it from the repository root (``make demo`` or ``make test`` installs what it needs):

    .venv/bin/python examples/digits_api.py --out digits_api_output

It prints the summary as lines ``name: value`` and, last, as one line of JSON
(``summary-json: {...}``); everything it writes is under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def train_and_extract(out: Path, *, width: int, epochs: int, seeds: int) -> list[Path]:
    """Train one MLP per seed with redrep's training API and extract its representation set; the sets' folders."""
    from redrep.nets.extract import extract_run
    from redrep.nets.train import TrainConfig, train

    sets = []
    for seed in range(seeds):
        config = TrainConfig(
            dataset="parity-digits",
            data_dir=None,  # bundled with scikit-learn: no files
            arch="mlp",
            width=width,
            depth=3,
            epochs=epochs,
            lr=0.05,
            seed=seed,
            device="cpu",
            checkpoint_epochs=(),  # keep the last epoch only
        )
        run = out / "runs" / f"seed{seed}"
        result = train(config, run, progress=False)
        path, _ = extract_run(run, device="cpu", progress=False)
        print(f"trained seed {seed}: test error {1 - result.final['test_acc']:.4f} ({epochs} epochs)")
        sets.append(path)
    return sets


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("digits_api_output"), help="output folder")
    parser.add_argument("--width", type=int, default=512, help="width W of the hidden layers")
    parser.add_argument("--epochs", type=int, default=60, help="training epochs of each network")
    parser.add_argument("--seeds", type=int, default=3, help="networks trained (the ensemble that gives error_inf)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    import torch

    # products of a few hundred columns: one thread is as fast, and does not spin against other processes
    torch.set_num_threads(1)

    from redrep import ChunkAnalysis, RepresentationSet
    from redrep.core.summary import ChunkCurves
    from redrep.nets.ensemble import ensemble_error
    from redrep.report.figures import save_figure, three_panel_figure
    from redrep.report.pages import write_report
    from redrep.storage.results import load_results, write_results

    # 1-2. networks and their representation sets; error_inf from their ensemble
    sets = train_and_extract(args.out, width=args.width, epochs=args.epochs, seeds=args.seeds)
    rs = RepresentationSet.load(sets[0])
    if len(sets) >= 2:
        rs.error_inf = ensemble_error(sets, device="cpu").error_inf

    # 3. the chunk analysis of the first network's last hidden layer
    an = ChunkAnalysis(acc_rep=100, r2_rep=40, random_state=0, device="cpu").fit(rs)

    # 4. its summary, in memory: no results folder needed
    summary = an.summary()
    d = summary.to_dict()
    for key in ("width", "w_c_star", "w_c_star_interval", "n_clones", "exponent", "exponent_se", "error_inf"):
        print(f"{key}: {d.get(key)}")
    for note in summary.notes:
        print(f"note: {note}")

    # 5. the figures: the three-panel figure, and the report page (which needs the results on disk)
    curves = ChunkCurves.from_analysis(an)
    fig = three_panel_figure(curves, summary, title=f"parity-digits, MLP 3 x {args.width}, seed 0")
    for path in save_figure(fig, args.out / "figures", stem="digits_api", formats=("png",)):
        print(f"figure: {path}")
    write_results(an, rs, args.out / "results")
    page = write_report(load_results(args.out / "results"), curves=curves, summary=summary)
    print(f"report: {page}")
    print(f"done in {time.perf_counter() - t0:.0f} s")
    print("summary-json: " + json.dumps(d, sort_keys=True))
    return d


if __name__ == "__main__":
    main()
