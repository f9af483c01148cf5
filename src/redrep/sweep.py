"""Width sweeps: the paper's experiment end to end.

A sweep trains networks that differ only in width W (every hidden layer of an
MLP, or the widening factor k = W / 64 of a Wide-ResNet), several seeds each;
extracts their last hidden layer; takes ``error_inf`` from the ensemble of
the widest networks; runs the chunk analysis on every seed of the widest
network with chunk sizes equal to the sweep widths; and compares, width by
width, a full network of width W with chunks of W neurons of the widest one
(paper, Fig. 3a).

Layout of a sweep folder::

    sweep.json              config, per-run metrics, error_inf, summary
    sweep.csv               tidy: source (full | chunk), width, seed, test_error, train_error
    width_comparison.csv    per width: mean and sem over seeds of both sources
    runs/w<W>_s<seed>/      one training run each (config, log, checkpoints, representations/)
    analysis/seed<seed>/    chunk analysis of the widest network of that seed
    clones/w<W>_s<seed>/    chunk analysis of every run (chunk sizes W, W/2, ..., 1), with its summary
    clones.csv              tidy: width, seed, wc_star, clones, exponent, exponent_se (redrep.clones)
    figures/                width_comparison.{png,pdf}, chunks.{png,pdf}
    report.html             everything above, in one self-contained page

Runs already finished are skipped, so an interrupted sweep resumes where it
stopped.
"""

from __future__ import annotations

import csv
import io as _stdio
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from . import io
from .analysis import ChunkAnalysis
from .repset import NATIVE_META, RepresentationSet
from .results import load_results, write_results
from .summary import EXPONENT_UNRESOLVED_SE
from .validation import RedrepError, check_float, check_int

SWEEP_FILE = "sweep.json"
#: Architectures whose width a sweep can set, and how: option name and W -> value.
WIDTH_OPTIONS = {
    "mlp": ("width", lambda w: int(w)),
    "wide_resnet16": ("widening_factor", lambda w: w / 64),
    "wide_resnet22": ("widening_factor", lambda w: w / 64),
    "wide_resnet28": ("widening_factor", lambda w: w / 64),
    "wide_resnet40": ("widening_factor", lambda w: w / 64),
}
#: Fields of SweepConfig that may change when a sweep is resumed.
RESUME_FREE = ("jobs", "device", "amp", "data_dir", "acc_rep", "r2_rep", "analysis_seed", "progress")


@dataclass
class SweepConfig:
    """A family of training runs that differ in width and seed, and how they are analysed.

    Training fields mean what they mean in :class:`redrep.train.TrainConfig`;
    ``seeds`` is the number of seeds (0, 1, ..., seeds - 1); ``depth`` is the
    number of hidden layers of an MLP.
    """

    dataset: str = "parity-digits"
    arch: str = "mlp"
    widths: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024)
    seeds: int = 3
    depth: int | None = 3
    data_dir: str | None = "data"
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.05
    lr_min: float = 1e-5
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    train_subset: int | None = None
    device: str = "auto"
    amp: bool | None = None
    acc_rep: int = 100
    r2_rep: int = 40
    analysis_seed: int = 0
    jobs: int = 1
    progress: bool = field(default=True, compare=False)

    def validated(self) -> SweepConfig:
        if self.arch not in WIDTH_OPTIONS:
            raise RedrepError(
                f"arch: expected one of {', '.join(WIDTH_OPTIONS)} for a width sweep, found {self.arch!r}"
            )
        try:
            widths = sorted({check_int(w, "widths", min_value=1) for w in self.widths})
        except TypeError:
            raise RedrepError(f"widths: expected a list of integers, found {self.widths!r}") from None
        if len(widths) < 2:
            raise RedrepError(f"widths: expected at least two different widths, found {widths}")
        seeds = check_int(self.seeds, "seeds", min_value=1)
        jobs = check_int(self.jobs, "jobs", min_value=1, max_value=max(1, os.cpu_count() or 1))
        check_int(self.acc_rep, "acc_rep", min_value=1)
        check_int(self.r2_rep, "r2_rep", min_value=1)
        check_int(self.analysis_seed, "analysis_seed", min_value=0)
        check_float(self.lr, "lr", min_value=0.0)
        if self.arch != "mlp" and self.depth is not None:
            raise RedrepError(f"depth: only the mlp takes a depth; {self.arch} fixes its own, found {self.depth}")
        out = replace(self, widths=tuple(widths), seeds=seeds, jobs=jobs)
        for w in widths:  # every run config must be valid before anything is trained
            out.train_config(w, 0).validated()
        return out

    def train_config(self, width: int, seed: int):
        from .train import TrainConfig

        option, value = WIDTH_OPTIONS[self.arch]
        kw = {option: value(width)}
        if self.arch == "mlp":
            kw["depth"] = self.depth
        return TrainConfig(
            dataset=self.dataset,
            data_dir=self.data_dir,
            arch=self.arch,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            lr_min=self.lr_min,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            label_smoothing=self.label_smoothing,
            seed=seed,
            device=self.device,
            amp=self.amp,
            train_subset=self.train_subset,
            checkpoint_epochs=(),  # the last epoch only: a sweep holds many runs
            **kw,
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("progress")
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SweepConfig:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if "widths" in d:
            d["widths"] = tuple(d["widths"])
        return cls(**d)


def run_name(width: int, seed: int) -> str:
    return f"w{width:05d}_s{seed}"


def _train_and_extract(config_dict: dict, width: int, seed: int, run_dir: str, threads: int | None) -> dict:
    """One run: train (or resume, or skip if finished), then extract; returns its final metrics."""
    import torch

    from .extract import extract_run
    from .train import train

    if threads:
        torch.set_num_threads(threads)
    sweep = SweepConfig.from_dict(config_dict)
    cfg = sweep.train_config(width, seed)
    t0 = time.perf_counter()
    result = train(cfg, run_dir, progress=False)
    trained = result.resumed_from < cfg.epochs
    rep = Path(run_dir) / "representations"
    meta = _read_meta(rep)
    if meta is None or meta.get("epoch") != cfg.epochs:
        extract_run(run_dir, out=rep, device=cfg.device, progress=False)
        meta = _read_meta(rep)
    # errors of the extracted layer through the readout, in float32 like the chunks' (the
    # training loop's evaluation may run under autocast on a GPU)
    return {
        "width": width,
        "seed": seed,
        "run": str(Path(run_dir).name),
        "test_error": 1.0 - float(meta["test_accuracy"]),
        "train_error": 1.0 - float(meta["train_accuracy"]),
        "zero_train_error_epoch": result.zero_train_error_epoch,
        "epochs": result.epochs_done,
        "trained_now": trained,
        "seconds": time.perf_counter() - t0,
    }


def _read_meta(set_dir: Path) -> dict | None:
    f = set_dir / NATIVE_META
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text(encoding="utf-8")).get("meta", {})
    except (OSError, ValueError):
        return None


def _check_resume(out: Path, config: SweepConfig) -> None:
    f = out / SWEEP_FILE
    if not f.is_file():
        if out.exists() and any(p.name not in ("runs",) for p in out.iterdir()) and not (out / "runs").is_dir():
            raise RedrepError(
                f"{out}: expected a new or empty folder or a redrep sweep (with {SWEEP_FILE}), "
                f"found other files; choose another --out"
            )
        return
    doc = io.read_json_object(f, "the JSON of a redrep sweep")
    try:
        old = SweepConfig.from_dict(doc["config"])
    except (KeyError, TypeError, AttributeError) as exc:
        raise RedrepError(f"{f}: expected the JSON of a redrep sweep with its config, found none ({exc})") from None
    diffs = [
        f"{k.name}: {getattr(old, k.name)!r} -> {getattr(config, k.name)!r}"
        for k in fields(SweepConfig)
        if k.name not in RESUME_FREE and k.name != "widths" and getattr(old, k.name) != getattr(config, k.name)
    ]
    if diffs:
        raise RedrepError(
            f"{out}: holds a sweep with another config ({'; '.join(diffs)}); "
            f"expected the same options to resume it, or choose another --out"
        )


@dataclass
class SweepResult:
    """What :func:`run_sweep` produced.

    Attributes
    ----------
    out : the sweep folder
    runs : list of per-run dicts (width, seed, test_error, train_error, ...)
    error_inf : ensemble test error of the widest networks (None with one seed)
    table : list of per-width dicts (width, full_test_mean, full_test_sem, chunk_test_mean, ...)
    summary : dict (w_c*, exponent, number of clones) of the first seed's widest network
    report : path of report.html
    """

    out: Path
    runs: list
    error_inf: float | None
    table: list
    summary: dict
    report: Path
    figures: list = field(default_factory=list)


def run_sweep(config: SweepConfig, out, *, log=print) -> SweepResult:
    """Train, extract, ensemble, analyse, plot and report a width sweep into ``out``."""
    config = config.validated()
    out = Path(out)
    _check_resume(out, config)
    out.mkdir(parents=True, exist_ok=True)
    io.write_json(out / SWEEP_FILE, {"config": config.to_dict(), "status": "training"})
    t_start = time.perf_counter()
    tasks = [(w, s) for w in sorted(config.widths, reverse=True) for s in range(config.seeds)]
    threads = max(1, (os.cpu_count() or 1) // config.jobs) if config.jobs > 1 else None
    runs = []
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), desc="training runs", unit="run", disable=not config.progress, dynamic_ncols=True)
    try:
        args = [(config.to_dict(), w, s, str(out / "runs" / run_name(w, s)), threads) for w, s in tasks]
        if config.jobs == 1:
            for a in args:
                runs.append(_train_and_extract(*a))
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=config.jobs) as pool:
                futures = [pool.submit(_train_and_extract, *a) for a in args]
                for fut in as_completed(futures):
                    runs.append(fut.result())
                    bar.update(1)
    finally:
        bar.close()
    runs.sort(key=lambda r: (r["width"], r["seed"]))
    t_train = time.perf_counter() - t_start
    n_new = sum(r["trained_now"] for r in runs)
    log(f"{len(runs)} runs ready ({n_new} trained now, {len(runs) - n_new} already finished) in {t_train:.0f} s")

    widest = max(config.widths)
    sets = {s: out / "runs" / run_name(widest, s) / "representations" for s in range(config.seeds)}
    error_inf, ensemble = None, None
    if config.seeds >= 2:
        from .ensemble import ensemble_error, store_error_inf

        ens = ensemble_error([sets[s] for s in range(config.seeds)])
        for s in sets:
            store_error_inf(sets[s], ens)
        error_inf, ensemble = ens.error_inf, ens.to_dict()
        log(f"ensemble of the {config.seeds} widest networks (W = {widest}): error_inf = {error_inf:.4f}")
    else:
        log("one seed: no ensemble, error_inf unknown")

    t0 = time.perf_counter()
    chunk_rows = []
    analyses = {}
    for s in range(config.seeds):
        rs = RepresentationSet.load(sets[s])
        an = ChunkAnalysis(
            chunk_sizes=list(config.widths),
            acc_rep=config.acc_rep,
            r2_rep=config.r2_rep,
            random_state=config.analysis_seed,
            progress=False,
            device=config.device,
        ).fit(rs)
        adir = out / "analysis" / f"seed{s}"
        write_results(an, rs, adir, extra={"sweep": str(out), "seed": s})
        analyses[s] = adir
        test = an.mean("accuracy", "test")
        train = an.mean("accuracy", "train")
        for i, w in enumerate(an.chunk_sizes_):
            chunk_rows.append(
                {"source": "chunk", "width": int(w), "seed": s, "test_error": 1 - test[i], "train_error": 1 - train[i]}
            )
    t_analysis = time.perf_counter() - t0

    tidy = [
        {
            "source": "full",
            "width": r["width"],
            "seed": r["seed"],
            "test_error": r["test_error"],
            "train_error": r["train_error"],
        }
        for r in runs
    ] + chunk_rows
    table = width_table(tidy, config.widths)
    io.write_text(out / "sweep.csv", _csv(tidy, ("source", "width", "seed", "test_error", "train_error")))
    io.write_text(out / "width_comparison.csv", _csv(table, tuple(table[0])))

    from .plots import save_figure, three_panel_figure, width_figure
    from .report import write_sweep_report
    from .summary import ChunkCurves, summarize

    main_results = load_results(analyses[0])
    curves = ChunkCurves.from_results(main_results)
    summ = summarize(curves)
    summary = summ.to_dict()
    main_results.update_json(summary=summary)
    col = {k: np.array([row[k] for row in table], dtype=float) for k in table[0]}
    label = f"{config.dataset}, {config.arch}" + (f" depth {config.depth}" if config.arch == "mlp" else "")
    fig_w = width_figure(
        col["width"],
        (col["full_test_mean"], col["full_test_sem"]),
        (col["chunk_test_mean"], col["chunk_test_sem"]),
        full_train=(col["full_train_mean"], col["full_train_sem"]),
        chunk_train=(col["chunk_train_mean"], col["chunk_train_sem"]),
        error_inf=error_inf,
        widest=widest,
        title=f"{label}: full networks of width W against chunks of W neurons of the W = {widest} network "
        f"({config.seeds} seed{'s' if config.seeds > 1 else ''})",
    )
    fig_c = three_panel_figure(main_results, summ)
    figures = save_figure(fig_w, out / "figures", stem="width_comparison")
    figures += save_figure(fig_c, out / "figures", stem="chunks")

    # -- clones across widths (redrep.clones): every run analysed with chunk sizes W, W/2, ..., 1
    from .clones import CloneConfig, RunSet, analyse_sweep, section_html

    t0 = time.perf_counter()
    clone_runs = [RunSet(r["width"], r["seed"], out / "runs" / r["run"] / "representations", r["run"]) for r in runs]
    clone_cfg = CloneConfig(
        acc_rep=config.acc_rep, r2_rep=config.r2_rep, seed=config.analysis_seed, device=config.device
    )
    clones = analyse_sweep(
        out,
        config=clone_cfg,
        error_inf=error_inf,
        runs=clone_runs,
        title=f"{label}: clones across widths",
        progress=config.progress,
    )
    figures += clones.figures
    t_clones = time.perf_counter() - t0
    # -- end clones

    reading = sweep_reading(table, error_inf, summary, widest) + clones.reading[-1:]
    doc = {
        "config": config.to_dict(),
        "status": "done",
        "runs": runs,
        "error_inf": error_inf,
        "ensemble": ensemble,
        "width_comparison": table,
        "summary": summary,
        "reading": reading,
        "analysis": {str(s): str(p.relative_to(out)) for s, p in analyses.items()},
        "clones": {
            "csv": str(clones.csv.relative_to(out)),
            "reading": clones.reading,
            "onset_width": clones.growth.onset,
            "slope": clones.growth.slope,
            "slope_se": clones.growth.slope_se,
            "fit_widths": list(clones.growth.fit_widths),
        },
        "timings_s": {
            "training": round(t_train, 2),
            "analysis": round(t_analysis, 2),
            "clones": round(t_clones, 2),
            "total": round(time.perf_counter() - t_start, 2),
        },
    }
    io.write_json(out / SWEEP_FILE, doc)
    report = write_sweep_report(
        main_results,
        out / "report.html",
        sweep_reading=reading,
        width_table=table,
        widest=widest,
        runs=runs,
        config=config.to_dict(),
        curves=curves,
        summary=summ,
        figures=[
            (
                f"Full networks of width W against chunks of W neurons of the W = {widest} network "
                f"(mean and sem over seeds). Dashed: error of the ensemble of the widest networks.",
                fig_w,
            )
        ],
        extra_figures=[(f"Chunk analysis of the W = {widest} network, seed 0.", fig_c)],
        lead_sections=[("Clones across widths", section_html(clones))],
        title=f"redrep sweep: {label}",
    )
    return SweepResult(out, runs, error_inf, table, summary, report, figures)


def width_table(tidy, widths) -> list[dict]:
    """Per width: mean, sem and count over seeds of the test and training error of both sources."""
    table = []
    for w in sorted(widths):
        row = {"width": int(w)}
        for source in ("full", "chunk"):
            sel = [r for r in tidy if r["source"] == source and r["width"] == w]
            for metric, key in (("test_error", "test"), ("train_error", "train")):
                v = np.array([r[metric] for r in sel], dtype=float)
                row[f"{source}_{key}_mean"] = float(v.mean()) if v.size else math.nan
                row[f"{source}_{key}_sem"] = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan
            row[f"{source}_n"] = len(sel)
        table.append(row)
    return table


def sweep_reading(table, error_inf, summary, widest) -> list[str]:
    """Plain sentences on what the sweep shows, with the numbers; says so when a signature is absent."""
    out = []
    full = {r["width"]: r for r in table}
    ws = sorted(full)
    first, last = full[ws[0]], full[ws[-1]]
    out.append(
        f"Full-network test error goes from {first['full_test_mean']:.4f} at W = {ws[0]} to "
        f"{last['full_test_mean']:.4f} at W = {ws[-1]}"
        + (
            " (wider is better)."
            if last["full_test_mean"] < first["full_test_mean"]
            else " (widening did not help here)."
        )
    )
    if error_inf is not None:
        out.append(f"The ensemble of the widest networks reaches error_inf = {error_inf:.4f}.")
    zero = [w for w in ws if full[w]["full_train_mean"] == 0]
    out.append(
        f"Full networks fit the training set (training error 0 on every seed) from W = {zero[0]} on."
        if zero
        else "No full network reached zero training error on every seed: the training budget may be short."
    )
    czero = [w for w in ws if full[w]["chunk_train_mean"] == 0]
    out.append(
        f"Chunks of the W = {widest} network fit the training set (on every seed) from w_c = {czero[0]} on."
        if czero
        else f"No chunk smaller than the whole W = {widest} layer fits the training set."
    )
    close = [
        w
        for w in ws
        if w < widest
        and abs(full[w]["chunk_test_mean"] - full[w]["full_test_mean"])
        <= 2 * max(_nz(full[w]["chunk_test_sem"]) + _nz(full[w]["full_test_sem"]), 1e-3)
    ]
    if close:
        out.append(
            "Chunks of w_c neurons of the widest network match full networks of width W = w_c "
            f"(within two standard errors) at W = {', '.join(map(str, close))}."
        )
    else:
        out.append(
            "At no width below the widest do chunks match full networks of that width within two standard errors."
        )
    wcs = summary.get("w_c_star") if summary else None
    if wcs:
        msg = f"The critical chunk size is w_c* = {wcs}, so the widest layer holds about {widest / wcs:g} clones"
        exp, se = summary.get("exponent"), summary.get("exponent_se")
        if exp is not None and se is not None and se < EXPONENT_UNRESOLVED_SE:
            msg += f"; above it, test error - error_inf decays like w_c^({exp:.2f} ± {se:.2f}) (the paper: -1/2)."
        elif exp is not None:
            msg += (
                f"; the decay of test error - error_inf above it is not resolved at this budget (fitted exponent "
                f"{exp:.2f}" + (f" ± {se:.2f}" if se is not None else ", from two points") + "; the paper: -1/2)."
            )
        else:
            msg += "; too few chunk sizes above it to fit the decay of test error - error_inf."
        out.append(msg)
    else:
        out.append(
            "No chunk size meets the w_c* thresholds (training error 0 and R² >= 0.95): the redundancy "
            "signature does not show at this budget."
        )
    return out


def _nz(v):
    return 0.0 if v is None or not math.isfinite(v) else v


def _csv(rows, cols) -> str:
    buf = _stdio.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("nan" if isinstance(r.get(k), float) and math.isnan(r[k]) else r.get(k)) for k in cols})
    return buf.getvalue()


def demo_config(
    *, quick: bool = False, data_dir: str | None = "data", jobs: int | None = None, progress: bool = True
) -> SweepConfig:
    """The sweep `redrep demo` runs: bundled offline data, about 3 minutes on 2 CPU cores.

    Parity-digits (scikit-learn's digits on their first 10 principal components,
    label = parity) with 3-hidden-layer MLPs of widths 16 ... 1024 is where the
    paper's signatures showed on this budget: chunks of the widest network fit
    the training set from 256 neurons on and match full networks of the same
    width. MNIST-1D and digits at the same cost showed no chunk below the full
    layer fitting the training set (see the README).
    """
    if jobs is None:
        jobs = min(2, os.cpu_count() or 1)
    full = SweepConfig(
        dataset="parity-digits",
        arch="mlp",
        depth=3,
        widths=(16, 32, 64, 128, 256, 512, 1024),
        seeds=3,
        epochs=200,
        lr=0.05,
        acc_rep=100,
        r2_rep=40,
        data_dir=data_dir,
        jobs=jobs,
        progress=progress,
    )
    if quick:
        return replace(full, widths=(16, 32, 64, 128), seeds=2, epochs=30, acc_rep=20, r2_rep=10)
    return full
