"""Training dynamics of redundancy: the chunk analysis of a run at every kept checkpoint.

For each kept epoch of a ``redrep train`` run, epoch 0 (the network at
initialization) included, the last hidden layer is extracted (eval mode, no
augmentation, as ``redrep extract``) and analysed with
:class:`~redrep.core.analysis.ChunkAnalysis`, with the same chunk draws (seed) at
every epoch. Epoch 0 is the null baseline: the redundancy that random
features already have before any training.

Layout of ``RUN_DIR/dynamics``::

    dynamics.csv        tidy: epoch, metric, split, chunk_size, mean, sem, n
    dynamics.json       w_c* and clones per epoch, the epoch of zero training error, parameters, seed
    epochs/epoch_NNNN/  the results folder of each epoch (results.csv, results.json with its summary)
    figures/            dynamics.{png,pdf}
    dynamics.html       one self-contained page

An epoch whose results folder was written with the same parameters from the
same checkpoint file is read back instead of recomputed, so an interrupted
call resumes. The claim it tests: ``docs/method.md#claim-regularization``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from ..core.analysis import ChunkAnalysis, check_reading_config
from ..core.summary import Criterion
from ..core.validation import RedrepError, check_int
from ..storage import io
from ..storage.results import csv_to_rows, rows_to_csv, summarize_folder, write_results

DYNAMICS_DIR = "dynamics"
DYNAMICS_CSV = "dynamics.csv"
DYNAMICS_JSON = "dynamics.json"
DYNAMICS_HTML = "dynamics.html"
DYNAMICS_COLUMNS = ("epoch", "metric", "split", "chunk_size", "mean", "sem", "n")


@dataclass
class DynamicsConfig:
    """How every checkpoint is analysed (see :class:`~redrep.core.analysis.ChunkAnalysis`).

    ``chunk_sizes`` None means W, W/2, ..., 1; ``seed`` is the seed of the
    chunk draws, the same at every epoch; ``device`` runs both the extraction
    and the chunk accuracies; ``data_dir`` None reads the data where the run
    was trained; ``criterion`` is the criterion of w_c* (:class:`redrep.core.summary.Criterion`);
    ``refine`` sizes are analysed between the size below w_c* and w_c* at each epoch (0: none).
    """

    acc_rep: int = 100
    r2_rep: int = 40
    chunk_sizes: tuple | None = None
    seed: int = 0
    device: str = "auto"
    data_dir: str | None = None
    batch_size: int = 256
    criterion: Criterion = field(default_factory=Criterion)
    refine: int = 0

    def validated(self) -> DynamicsConfig:
        check_reading_config(self)
        check_int(self.batch_size, "batch_size", min_value=1)
        return self

    def analysis_params(self) -> dict:
        """What an epoch's analysis depends on: an epoch analysed with the same is read back, not redone."""
        return {
            "acc_rep": self.acc_rep,
            "r2_rep": self.r2_rep,
            "chunk_sizes": None if self.chunk_sizes is None else [int(w) for w in self.chunk_sizes],
            "seed": self.seed,
            # the refined sizes depend on the criterion: a refined epoch is analysed again when it changes
            **({"refine": self.refine, "criterion": self.criterion.to_dict()} if self.refine else {}),
        }

    def params(self) -> dict:
        """The analysis parameters and the criterion of w_c*, which (without refinement) only the reading uses."""
        return {**self.analysis_params(), "criterion": self.criterion.to_dict()}

    def chunk_analysis(self, device: str) -> ChunkAnalysis:
        """The analysis of every epoch: the same chunk draws (seed), sizes, criterion and refinement."""
        return ChunkAnalysis(
            chunk_sizes=None if self.chunk_sizes is None else list(self.chunk_sizes),
            acc_rep=self.acc_rep,
            r2_rep=self.r2_rep,
            random_state=self.seed,
            progress=False,
            device=device,
            criterion=self.criterion,
            refine=self.refine,
        )


@dataclass(frozen=True)
class DynamicsResult:
    """What :func:`run_dynamics` wrote.

    Attributes
    ----------
    out : the dynamics folder
    epochs : list of dict, one per epoch (epoch, w_c_star, n_clones, errors of the whole layer, ...)
    rows : list of dict, the rows of dynamics.csv
    doc : dict, the content of dynamics.json
    page : path of dynamics.html
    figures : paths of the figure files
    """

    out: Path
    epochs: list
    rows: list
    doc: dict
    page: Path
    figures: list


def run_checkpoints(run_dir) -> tuple[dict, dict]:
    """The kept checkpoints of a run by epoch, and its last checkpoint's content; one-line errors otherwise.

    Every kept checkpoint is read and checked against the run's config
    (:func:`redrep.nets.train.check_checkpoint`) before any is analysed: one
    copied from another run, or damaged, stops the command in one line.
    """
    from ..nets.train import checkpoint_path, list_checkpoints, load_run_checkpoint, read_run_config

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RedrepError(f"{run_dir}: no such folder (expected a run directory of `redrep train`)")
    config = read_run_config(run_dir)  # one line when the folder is not a run
    kept = list_checkpoints(run_dir)
    if not kept:
        raise RedrepError(
            f"{run_dir}: no kept checkpoints (expected checkpoints/epoch_NNNN.pt, written by `redrep train` "
            "at its checkpoint epochs and its last epoch)"
        )
    for epoch, path in kept.items():
        ckpt = load_run_checkpoint(path, config)
        if ckpt["epoch"] != epoch:
            raise RedrepError(f"{path}: expected the checkpoint of epoch {epoch}, found epoch {ckpt['epoch']}")
    last = checkpoint_path(run_dir)
    last_ckpt = load_run_checkpoint(last if last.is_file() else kept[max(kept)], config)
    return kept, last_ckpt


def _model_at(path, epoch: int, last_ckpt: dict):
    """(model in eval mode, where it came from) at ``epoch``; epoch 0 without a checkpoint is rebuilt from the seed."""
    from ..nets.extract import model_of_checkpoint
    from ..nets.train import load_checkpoint

    if path is not None:
        ckpt = load_checkpoint(path)
        if int(ckpt["epoch"]) != epoch:
            raise RedrepError(f"{path}: expected the checkpoint of epoch {epoch}, found epoch {ckpt['epoch']}")
        source = "checkpoint"
    else:  # `redrep train` seeds everything, then builds the model: the same calls give its initial weights
        ckpt, source = last_ckpt, "rebuilt from the run's seed"
    _, model = model_of_checkpoint(ckpt, str(path or "the last checkpoint"), weights=path is not None)
    return model, source


def _stamp(path) -> dict | None:
    if path is None:
        return None
    st = Path(path).stat()
    return {"file": Path(path).name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _reusable(folder: Path, epoch: int, params: dict, stamp) -> bool:
    f = folder / "results.json"
    if not f.is_file() or not (folder / "results.csv").is_file():
        return False
    try:
        doc = io.read_json_object(f)
    except RedrepError:  # unreadable: analysed again
        return False
    d = doc.get("dynamics")
    return isinstance(d, dict) and d.get("epoch") == epoch and d.get("params") == params and d.get("stamp") == stamp


def _existing_analysis(out: Path) -> tuple[dict, str | None] | None:
    """(analysis parameters, run) of what a dynamics folder holds; None for a new or empty folder.

    Read from its dynamics.json, or, for a call interrupted before writing it, from its first epoch's results.
    Raises a one-line error for a folder holding something else.
    """
    if not out.exists():
        return None
    if not out.is_dir():
        raise RedrepError(f"{out}: expected a folder for the dynamics, found a file")
    try:
        doc = io.read_json_object(out / DYNAMICS_JSON)
        params = doc.get("params") if isinstance(doc.get("params"), dict) else {}
        return params, doc.get("run_dir")
    except RedrepError:  # no dynamics.json (or a damaged one): the epochs say what was analysed
        pass
    for f in sorted((out / "epochs").glob("epoch_*/results.json")):
        try:
            doc = io.read_json_object(f)
        except RedrepError:
            continue
        d = doc.get("dynamics") if isinstance(doc.get("dynamics"), dict) else {}
        run = doc.get("run")
        return (d.get("params") or {}), (None if run is None else str(Path(run).resolve()))
    if any(p.name not in ("epochs", "figures") for p in out.iterdir()):
        raise RedrepError(
            f"{out}: expected a new folder or a dynamics folder of `redrep dynamics`, found other files "
            f"(no {DYNAMICS_JSON}); choose another out folder"
        )
    return None


def check_replace(out, run_dir, config: DynamicsConfig, *, force: bool = False) -> None:
    """Refuse to replace a dynamics folder made from another run or with other analysis options, unless ``force``.

    The same options resume it or read it back (a run's own ``RUN_DIR/dynamics`` is its own wherever the run
    was moved); another criterion of w_c* only changes the reading and is always allowed. One line says what
    differs.
    """
    out = Path(out)
    found = _existing_analysis(out)
    if found is None or force:
        return
    old, old_run = found
    new = config.analysis_params()
    diffs = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in new.items() if old.get(k) != v]
    run = str(Path(run_dir).resolve())
    # a run's own dynamics folder belongs to it wherever the run was moved or copied
    own = out.resolve() == (Path(run_dir) / DYNAMICS_DIR).resolve()
    if old_run is not None and old_run != run and not own:
        diffs.insert(0, f"run: {old_run} -> {run}")
    if diffs:
        raise RedrepError(
            f"{out}: holds the dynamics of another analysis ({'; '.join(diffs)}); expected the same options to "
            "resume or read it back, or force (--force) to replace it"
        )


def run_dynamics(
    run_dir, *, config: DynamicsConfig | None = None, out=None, progress: bool = True, force: bool = False
) -> DynamicsResult:
    """Analyse every kept checkpoint of ``run_dir`` (epoch 0 included) and write ``out`` (default RUN_DIR/dynamics).

    Parameters
    ----------
    run_dir : a run directory of ``redrep train``
    config : DynamicsConfig (default: its defaults)
    out : the dynamics folder; one that holds the dynamics of another run or of other analysis options
        (:meth:`DynamicsConfig.analysis_params`) is refused unless ``force``
    progress : a progress bar over epochs
    force : replace such a folder (its epochs are analysed again; epochs no longer kept are removed)

    Returns
    -------
    DynamicsResult
    """
    from tqdm.auto import tqdm

    from ..core.device import resolve_device
    from ..nets.extract import extract_representations
    from ..nets.train import TrainConfig, load_run_data

    config = (config or DynamicsConfig()).validated()
    run_dir = Path(run_dir)
    kept, last_ckpt = run_checkpoints(run_dir)
    out = Path(out) if out is not None else run_dir / DYNAMICS_DIR
    check_replace(out, run_dir, config, force=force)
    train_cfg = TrainConfig.from_dict(last_ckpt["config"], where=str(run_dir)).validated()
    epochs = sorted(set(kept) | {0})
    epoch0 = "checkpoint" if 0 in kept else "rebuilt from the run's seed"
    params, analysis_params = config.params(), config.analysis_params()
    error_inf = _run_error_inf(run_dir)
    dataset = None
    dev = resolve_device(config.device)
    per_epoch, rows = [], []
    for epoch in tqdm(epochs, desc="dynamics: epochs", unit="epoch", disable=not progress, dynamic_ncols=True):
        folder = out / "epochs" / f"epoch_{epoch:04d}"
        path = kept.get(epoch)
        stamp = _stamp(path)
        if not _reusable(folder, epoch, analysis_params, stamp):
            if dataset is None:
                dataset = load_run_data(train_cfg, config.data_dir)
            model, source = _model_at(path, epoch, last_ckpt)
            rs = extract_representations(
                model,
                (dataset.x_train, dataset.y_train),
                (dataset.x_test, dataset.y_test),
                device=dev,
                transform=dataset.prepare,
                batch_size=config.batch_size,
                meta={"dataset": train_cfg.dataset, "arch": train_cfg.arch, "epoch": epoch, "model": source},
            )
            rs.error_inf = error_inf
            an = config.chunk_analysis(dev).fit(rs)
            extra = {"dynamics": {"epoch": epoch, "params": analysis_params, "stamp": stamp, "model": source}}
            write_results(an, rs, folder, extra={**extra, "run": str(run_dir)})
        results, curves, summ = summarize_folder(folder, config.criterion)
        for r in results.rows:
            rows.append({"epoch": epoch, **{k: r[k] for k in DYNAMICS_COLUMNS[1:]}})
        per_epoch.append(_epoch_entry(epoch, results, curves, summ, str(folder.relative_to(out))))
    _remove_stale_epochs(out, epochs)
    zero = last_ckpt.get("zero_train_error_epoch")
    doc = {
        "tool": "redrep dynamics",
        "run_dir": str(run_dir.resolve()),
        "dataset": train_cfg.dataset,
        "arch": train_cfg.arch,
        "width": per_epoch[-1]["width"],
        "epochs_trained": int(last_ckpt["epoch"]),
        "epochs": epochs,
        "epoch0": epoch0,
        "zero_train_error_epoch": zero,
        "error_inf": error_inf,
        "w_c_star": {str(e["epoch"]): e["w_c_star"] for e in per_epoch},
        "n_clones": {str(e["epoch"]): e["n_clones"] for e in per_epoch},
        "per_epoch": per_epoch,
        "params": params,
        "seed": config.seed,
        "reading": dynamics_reading(per_epoch, zero, config),
    }
    figures, page = _write_outputs(out, rows, per_epoch, doc)
    return DynamicsResult(out, per_epoch, rows, doc, page, figures)


def _epoch_entry(epoch: int, results, curves, summ, folder: str) -> dict:
    """The row of one epoch in dynamics.json (w_c*, clones, errors of the whole layer, where its results are)."""
    return {
        "epoch": epoch,
        "w_c_star": summ.w_c_star,
        "n_clones": summ.n_clones,
        "width": summ.width,
        "train_error": float(curves.train_error.mean[-1]),
        "test_error": float(curves.test_error.mean[-1]),
        "largest_chunk": int(curves.train_error.chunk_size[-1]),
        "model": results.doc.get("dynamics", {}).get("model"),
        "results": folder,
    }


def _write_outputs(out: Path, rows, per_epoch, doc) -> tuple[list, Path]:
    """dynamics.csv, dynamics.json, the figures, dynamics.html and the method page beside it."""
    from ..report.figures import save_figure
    from ..report.pages import write_method_page

    io.write_text(out / DYNAMICS_CSV, rows_to_csv(rows, DYNAMICS_COLUMNS))
    io.write_json(out / DYNAMICS_JSON, doc)
    title = f"{doc['dataset']}, {doc['arch']}: W = {doc['width']}"
    fig = dynamics_figure(rows, per_epoch, doc["zero_train_error_epoch"], title=title)
    figures = save_figure(fig, out / "figures", stem="dynamics")
    page = out / DYNAMICS_HTML
    io.write_text(page, render_dynamics_page(doc, fig))
    write_method_page(out)
    return figures, page


def _remove_stale_epochs(out: Path, epochs) -> None:
    """Remove the results folders of epochs that are not analysed now (left by a replaced analysis)."""
    import shutil

    keep = {f"epoch_{e:04d}" for e in epochs}
    for p in (out / "epochs").glob("epoch_*"):
        if p.is_dir() and p.name not in keep:
            shutil.rmtree(p)


def _run_error_inf(run_dir: Path):
    """error_inf stored in the run's extracted set by `redrep ensemble`, if any."""
    f = run_dir / "representations" / "meta.json"
    try:
        v = io.read_json_object(f).get("error_inf")
    except RedrepError:  # no extracted set, or an unreadable one: no error_inf
        return None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 else None


def read_dynamics_csv(path) -> list[dict]:
    """dynamics.csv read back, numbers as int and float."""
    return csv_to_rows(
        path,
        DYNAMICS_COLUMNS,
        lambda r: {
            "epoch": int(r["epoch"]),
            "metric": r["metric"],
            "split": r["split"],
            "chunk_size": int(r["chunk_size"]),
            "mean": float(r["mean"]),
            "sem": float(r["sem"]),
            "n": int(r["n"]),
        },
        "numbers in epoch, chunk_size, mean, sem and n",
    )


# --------------------------------------------------------------------------- reading, figure, page
def dynamics_reading(per_epoch, zero_epoch, config: DynamicsConfig) -> list[str]:
    """Plain sentences: the null baseline at epoch 0, when w_c* appears, and how it moves."""
    out = []
    first, last = per_epoch[0], per_epoch[-1]
    W = last["width"]
    crit = config.criterion.describe()
    base = f"At initialization (epoch 0, {first['model']}), the null baseline of random features: "
    if first["w_c_star"] is None:
        base += (
            f"no chunk size meets the criterion ({crit}); the whole layer has training error "
            f"{first['train_error']:.4g}."
        )
    else:
        base += (
            f"w_c* = {first['w_c_star']} ({first['n_clones']:.3g} clones) already, with training error "
            f"{first['train_error']:.4g} for the whole layer: that much redundancy needs no training."
        )
    out.append(base)
    out.append(
        f"Training error of the network reaches 0 at epoch {zero_epoch}."
        if zero_epoch is not None
        else "The network never reached zero training error in the epochs trained."
    )
    defined = [e for e in per_epoch if e["w_c_star"] is not None and e["epoch"] > 0]
    below = [e for e in defined if e["w_c_star"] < W]
    if defined:
        e0 = defined[0]
        msg = f"A chunk size first meets the criterion at epoch {e0['epoch']} (w_c* = {e0['w_c_star']})"
        if below:
            e1 = below[0]
            msg += (
                f"; w_c* first falls below W at epoch {e1['epoch']} (w_c* = {e1['w_c_star']}, "
                f"{e1['n_clones']:.3g} clones)"
            )
        else:
            msg += f"; w_c* never falls below W = {W}: one clone, no redundancy"
        msg += f". At the last epoch ({last['epoch']}) w_c* = " + (
            f"{last['w_c_star']} ({last['n_clones']:.3g} clones)." if last["w_c_star"] is not None else "none."
        )
        out.append(msg)
    else:
        out.append(
            f"At no trained epoch does a chunk size meet the criterion ({crit}): the layer shows no redundancy "
            f"by this measure (whole-layer training error at the last epoch: {last['train_error']:.4g})."
        )
    return out


def dynamics_figure(rows, per_epoch, zero_epoch, *, title: str | None = None) -> Figure:
    """(a) chunk training error, (b) chunk test error, (c) R², one line per chunk size, and (d) w_c*, against epoch.

    The epoch axis is symlog (linear below 1), so that epoch 0 shows; the dashed
    vertical line is the epoch of zero training error.
    """
    import matplotlib

    from ..report.figures import SYMLOG_LINTHRESH

    epochs = np.array([e["epoch"] for e in per_epoch], dtype=float)
    sizes = sorted({r["chunk_size"] for r in rows})
    cmap = matplotlib.colormaps["viridis"]
    colors = {w: cmap(i / max(1, len(sizes) - 1)) for i, w in enumerate(sizes)}
    fig = Figure(figsize=(11.5, 8.4), layout="constrained")
    axes = fig.subplots(2, 2)
    panels = (
        (axes[0, 0], ("accuracy", "train"), "chunk training error", True),
        (axes[0, 1], ("accuracy", "test"), "chunk test error", True),
        (axes[1, 0], ("r2", "test"), "R² of the whole layer from the chunk", False),
    )
    for ax, (metric, split), ylabel, is_error in panels:
        for w in sizes:
            sel = sorted((r for r in rows if r["metric"] == metric and r["split"] == split and r["chunk_size"] == w),
                         key=lambda r: r["epoch"])  # fmt: skip
            x = np.array([r["epoch"] for r in sel], dtype=float)
            y = np.array([r["mean"] for r in sel], dtype=float)
            ax.plot(x, 1 - y if is_error else y, color=colors[w], marker="o", ms=3, lw=1.3, label=f"$w_c$ = {w}")
        if is_error:
            ax.set_yscale("symlog", linthresh=SYMLOG_LINTHRESH)
            ax.set_ylim(-SYMLOG_LINTHRESH / 5, 1.05)
        ax.set_ylabel(ylabel)
    ax_d = axes[1, 1]
    wcs = np.array([np.nan if e["w_c_star"] is None else e["w_c_star"] for e in per_epoch], dtype=float)
    ok = np.isfinite(wcs)
    W = per_epoch[-1]["width"]
    ax_d.axhline(W, color="0.6", ls=":", lw=1.2, label=f"W = {W} (one clone)")
    if ok.any():
        ax_d.plot(epochs[ok], wcs[ok], color="#1f5fa8", marker="o", ms=5, lw=1.6, label="$w_c^*$")
    if (~ok).any():
        ax_d.plot(epochs[~ok], np.full((~ok).sum(), W), ls="none", marker="x", ms=8, color="#8a1c00",
                  label="no $w_c^*$ at this epoch")  # fmt: skip
    ax_d.set_yscale("log", base=2)
    ax_d.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax_d.set_ylabel("critical chunk size $w_c^*$")
    top = max(1.0, float(epochs.max()))
    ticks = [0] + [m * 10**e for e in range(6) for m in (1, 2, 5) if m * 10**e <= top]
    for ax, letter in zip(axes.ravel(), "abcd"):
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(-0.2, top * 1.15)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
        if zero_epoch is not None:
            ax.axvline(zero_epoch, color="0.3", ls="--", lw=1, label=f"zero training error (epoch {zero_epoch})")
        ax.set_xlabel("epoch (0 = initialization; symlog axis)")
        ax.grid(True, alpha=0.3)
        ax.set_title(f"({letter})", loc="left", fontweight="bold")
    axes[0, 0].legend(fontsize=7, ncol=2, loc="best")
    ax_d.legend(fontsize=8, loc="best")
    fig.suptitle(title or "Redundancy during training")
    return fig


def render_dynamics_page(doc: dict, fig: Figure) -> str:
    from ..report.pages import render_page

    return render_page(
        "dynamics.html",
        doc=doc,
        table=doc["per_epoch"],
        figure=fig,
        csv_name=DYNAMICS_CSV,
        json_name=DYNAMICS_JSON,
        params=[(k, "default (W, W/2, ..., 1)" if v is None else v) for k, v in doc["params"].items()],
    )
