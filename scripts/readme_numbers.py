"""Regenerate every number the README quotes, from the commands the README shows.

Each *stage* runs commands the README shows (the demo, ``redrep dynamics``,
a benchmark, ...) in a work folder and keeps what they wrote (sweep.json,
clones.csv, dynamics.json, the benchmarks' ``--json``) as a small JSON file,
``docs/readme_numbers.json``, committed with the README. The README's numbers
sit between markers::

    <!-- numbers:demo-table -->
    | W | 16 | ...
    <!-- /numbers -->

or inline in a sentence (never at the start of a line, which Markdown would
read as an HTML block); each block's key names its renderer (:data:`BLOCKS`),
a function of that JSON. Timings are stated with their command and machine and
are never compared by the tests; everything else is: ``tests/scripts`` checks
that the README holds the rendering of the committed JSON (a hand edit fails)
and, for the quick demo's blocks, the rendering of a live ``redrep demo
--quick``.

    python scripts/readme_numbers.py                    # every stage, then the README (make readme-numbers)
    python scripts/readme_numbers.py --stages quick,demo
    python scripts/readme_numbers.py --render-only      # the README from docs/readme_numbers.json
    python scripts/readme_numbers.py --check            # exit 1 if the README is not its rendering

The stages run one after the other, each on a fresh folder under ``--work``
(default ``readme_numbers_work/``); ``dynamics`` and ``train-dynamics`` read
the ``demo`` stage's folder, so they run after it (in the same work folder).
The demo's figures are copied to ``docs/`` as the README shows them.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NUMBERS = ROOT / "docs" / "readme_numbers.json"
WORK = ROOT / "readme_numbers_work"
#: One block: ``<!-- numbers:KEY -->TEXT<!-- /numbers -->``.
BLOCK_RE = re.compile(r"<!-- numbers:([\w-]+) -->(.*?)<!-- /numbers -->", re.S)
WIDTHS = "16,32,64,128,256,512,1024"


# =========================================================================== running the commands
def redrep(*args) -> list[str]:
    """The command line of ``redrep ARGS`` run with this Python (the README writes it ``redrep ARGS``)."""
    return [sys.executable, "-m", "redrep", *map(str, args)]


def machine() -> dict:
    """Where a stage ran: CPU model and count, load average at its start, versions, commit."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()  # fmt: skip
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                    capture_output=True, text=True).stdout.strip())  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "load_average": round(os.getloadavg()[0], 1),
        "python": platform.python_version(),
        "commit": commit,
        "dirty": dirty,
    }


def run_timed(cmd: list[str], *, cwd=ROOT, env=None) -> float:
    """Run ``cmd`` (its output passed through); seconds of wall time. A failure stops the script."""
    print("+ " + " ".join(str(c) for c in cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True)
    return round(time.perf_counter() - t0, 1)


@dataclass(frozen=True)
class Stage:
    """Commands that the README shows, and what to keep of what they wrote.

    ``commands(work)`` gives ``(as the README shows it, as run here)`` pairs; ``collect(work)`` the numbers;
    ``folders`` the work folders the stage writes (removed first, so that every run is a fresh one).
    """

    name: str
    commands: object
    collect: object
    folders: tuple = ()


def run_stage(stage: Stage, work: Path) -> dict:
    """Run a stage in ``work``: its record (commands, seconds of each, machine, the numbers)."""
    for f in stage.folders:
        shutil.rmtree(work / f, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    where = machine()
    shown, seconds = [], []
    for readme_cmd, cmd in stage.commands(work):
        seconds.append(run_timed(cmd))
        shown.append(readme_cmd)
    return {"commands": shown, "seconds": seconds, "machine": where, "data": stage.collect(work)}


# =========================================================================== collecting
def _floats(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        try:
            out[k] = int(v) if str(v).lstrip("-").isdigit() else float(v)
        except (TypeError, ValueError):
            out[k] = v
        if isinstance(out[k], float) and math.isnan(out[k]):
            out[k] = None
    return out


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [_floats(r) for r in csv.DictReader(f)]


def collect_sweep(folder: Path) -> dict:
    """What a sweep folder says: config, width table, error_inf, summary, reading, clones, timings."""
    doc = json.loads((folder / "sweep.json").read_text())
    cfg, train = doc["config"], doc["config"]["train"]
    summary = doc.get("summary") or {}
    analysis = json.loads(next((folder / "analysis").glob("seed*/results.json")).read_text())
    clones = doc.get("clones") or {}
    return {
        "config": {
            "dataset": train["dataset"],
            "arch": train["arch"],
            "depth": train.get("depth"),
            "epochs": train["epochs"],
            "lr": train["lr"],
            "weight_decay": train["weight_decay"],
            "widths": cfg["widths"],
            "seeds": cfg["seeds"],
            "acc_rep": cfg["acc_rep"],
            "r2_rep": cfg["r2_rep"],
        },
        "n_train": analysis.get("input", {}).get("n_train"),
        "error_inf": doc.get("error_inf"),
        "table": doc["width_comparison"],
        "summary": {k: summary.get(k) for k in ("w_c_star", "n_clones", "exponent", "exponent_se", "width")},
        "reading": doc.get("reading", []),
        "clones": read_csv(folder / "clones.csv") if (folder / "clones.csv").is_file() else [],
        "growth": {k: clones.get(k) for k in ("onset_width", "slope", "slope_se", "fit_widths")},
        "timings_s": doc.get("timings_s", {}),
    }


def collect_dynamics(folder: Path) -> dict:
    doc = json.loads((folder / "dynamics.json").read_text())
    keep = ("epoch", "w_c_star", "n_clones", "train_error", "test_error")
    return {
        "width": doc["width"],
        "zero_train_error_epoch": doc.get("zero_train_error_epoch"),
        "per_epoch": [{k: e.get(k) for k in keep} for e in doc["per_epoch"]],
    }


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# =========================================================================== the stages
def _demo(work):
    return [("redrep demo --out demo_output", redrep("demo", "--out", work / "demo_output", "-q"))]


def _collect_demo(work):
    out = work / "demo_output"
    data = collect_sweep(out)
    widest = max(data["config"]["widths"])
    ckpts = sorted((out / "runs" / f"w{widest:05d}_s0" / "checkpoints").glob("epoch_*.pt"))
    data["checkpoints"] = {"count": len(ckpts), "mb_each": round(ckpts[-1].stat().st_size / 1e6, 2)}
    data["folder_gb"] = round(folder_bytes(out) / 1e9, 2)
    for name in ("width_comparison", "clones", "chunks"):  # the README's figures
        shutil.copyfile(out / "figures" / f"{name}.png", ROOT / "docs" / f"demo_{name}.png")
    return data


def _quick(work):
    return [("redrep demo --quick", redrep("demo", "--quick", "--out", work / "quick_output", "-q"))]


def _widest_run(work) -> Path:
    cfg = json.loads((work / "demo_output" / "sweep.json").read_text())["config"]
    return work / "demo_output" / "runs" / f"w{max(cfg['widths']):05d}_s0"


def _dynamics(work):
    run = _widest_run(work)
    shutil.rmtree(run / "dynamics", ignore_errors=True)  # a fresh analysis of every checkpoint, timed
    return [(f"redrep dynamics demo_output/runs/{run.name}", redrep("dynamics", run, "-q"))]


def _collect_dynamics(work):
    return collect_dynamics(_widest_run(work) / "dynamics")


def _like_demo(work, out: Path, **change) -> tuple[str, list[str]]:
    """The demo's sweep with some options changed (``dataset``, ``epochs``, ``weight_decay``): (shown, run)."""
    doc = json.loads((work / "demo_output" / "sweep.json").read_text())["config"]
    t = {**doc["train"], **{k: v for k, v in change.items() if k != "dataset"}, "dataset": change.get("dataset")}
    t["dataset"] = t["dataset"] or doc["train"]["dataset"]
    opts = [("--dataset", t["dataset"]), ("--arch", t["arch"])]
    opts += [("--depth", t["depth"])] if t.get("depth") is not None else []
    opts += [("--epochs", t["epochs"]), ("--lr", f"{t['lr']:g}"), ("--weight-decay", f"{t['weight_decay']:g}"),
             ("--batch-size", t["batch_size"]), ("--widths", ",".join(map(str, doc["widths"]))),
             ("--seeds", doc["seeds"]), ("--acc-rep", doc["acc_rep"]), ("--r2-rep", doc["r2_rep"])]  # fmt: skip
    flat = [str(x) for kv in opts for x in kv]
    return f"redrep sweep {' '.join(flat)} --out sweeps/{out.name}", redrep("sweep", *flat, "--out", out, "-q")


def _compare(work):
    wd0 = work / "sweeps" / "pd-wd0"
    return [
        _like_demo(work, wd0, weight_decay=0.0),
        ("redrep compare demo_output sweeps/pd-wd0 --out compare/wd",
         redrep("compare", work / "demo_output", wd0, "--out", work / "compare" / "wd")),
    ]  # fmt: skip


def _collect_compare(work):
    doc = json.loads((work / "compare" / "wd" / "compare.json").read_text())
    wd, wd0 = collect_sweep(work / "demo_output"), collect_sweep(work / "sweeps" / "pd-wd0")
    keep = ("config", "error_inf", "table", "clones")
    return {"wd": {k: wd[k] for k in keep}, "wd0": {k: wd0[k] for k in keep}, "reading": doc["reading"]}


def _train_dynamics(work):
    """One network of the demo's recipe at W = 512, seed 0, trained on its own with the paper's checkpoint epochs."""
    t = json.loads((work / "demo_output" / "sweep.json").read_text())["config"]["train"]
    run = work / "runs" / "pd512"
    args = ["--dataset", t["dataset"], "--arch", t["arch"], "--width", 512, "--depth", t["depth"], "--epochs",
            t["epochs"], "--lr", f"{t['lr']:g}", "--weight-decay", f"{t['weight_decay']:g}",
            "--batch-size", t["batch_size"], "--seed", 0]  # fmt: skip
    shown = "redrep train " + " ".join(map(str, args)) + " --out runs/pd512"
    return [
        (shown, redrep("train", *args, "--out", run, "-q")),
        ("redrep dynamics runs/pd512", redrep("dynamics", run, "-q")),
    ]


def _collect_train_dynamics(work):
    data = collect_dynamics(work / "runs" / "pd512" / "dynamics")
    epochs = sorted((work / "runs" / "pd512" / "dynamics" / "epochs").iterdir())
    mine, demo = epochs[-1] / "results.csv", work / "demo_output" / "clones" / "w00512_s0" / "results.csv"
    data["equals_demo_run"] = demo.is_file() and mine.read_text() == demo.read_text()
    return data


#: The other offline tasks the demo's sweep was tried on, and their epochs.
OTHER_TASKS = (("mnist1d", 60), ("digits", 200))


def _other_tasks(work):
    return [_like_demo(work, work / "sweeps" / task, dataset=task, epochs=ep) for task, ep in OTHER_TASKS]


def _collect_other_tasks(work):
    return {task: collect_sweep(work / "sweeps" / task) for task, _ in OTHER_TASKS}


BENCH = ROOT / "benchmarks" / "bench_analyze.py"
#: The speed runs of the README's table: (width, native kernels).
SPEED_RUNS = ((512, False), (512, True), (1024, False), (1024, True), (2048, False), (2048, True))


def _bench_speed(work):
    out = []
    for width, native in SPEED_RUNS:
        flags = ["--width", str(width), "--skip-memory"] + (["--native-blas"] if native else [])
        shown = "python benchmarks/bench_analyze.py " + " ".join(flags)
        out.append(
            (shown, [sys.executable, str(BENCH), *flags, "--json", str(work / f"speed_{width}_{native:d}.json")])
        )
    return out


def _collect_bench_speed(work):
    runs = []
    for width, native in SPEED_RUNS:
        doc = json.loads((work / f"speed_{width}_{native:d}.json").read_text())
        runs.append({"native": native, "blas": doc["blas"], **doc["speed"]})
    return {"runs": runs}


def _bench_memory(work):
    cmd = [sys.executable, str(BENCH), "--skip-speed", "--json", str(work / "memory.json")]
    return [("python benchmarks/bench_analyze.py --skip-speed", cmd)]


def _bench_scaling(work):
    cmd = [sys.executable, str(BENCH), "--scaling", "--json", str(work / "scaling.json")]
    return [("python benchmarks/bench_analyze.py --scaling", cmd)]


def _bench_train(work):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--json", str(work / "train.json")]
    return [("python benchmarks/bench_train.py", cmd)]


def _json_of(name, key=None):
    def collect(work):
        doc = json.loads((work / name).read_text())
        return doc if key is None else doc[key]

    return collect


def _tests(work):
    return [("make test", ["make", "test"])]


def _build(work):
    """The compiled fast pass built from scratch (what an install does once per platform)."""
    cmd = [sys.executable, "setup.py", "-q", "build_ext", "--force", "--build-lib", str(work / "build" / "lib"),
           "--build-temp", str(work / "build" / "tmp")]  # fmt: skip
    return [("python setup.py build_ext --force", cmd)]


STAGES = {
    s.name: s
    for s in (
        Stage("quick", _quick, lambda w: collect_sweep(w / "quick_output"), ("quick_output",)),
        Stage("demo", _demo, _collect_demo, ("demo_output",)),
        Stage("dynamics", _dynamics, _collect_dynamics),
        Stage("compare", _compare, _collect_compare, ("sweeps/pd-wd0", "compare")),
        Stage("train-dynamics", _train_dynamics, _collect_train_dynamics, ("runs/pd512",)),
        Stage("other-tasks", _other_tasks, _collect_other_tasks, ("sweeps/mnist1d", "sweeps/digits")),
        Stage("bench-train", _bench_train, _json_of("train.json")),
        Stage("bench-speed", _bench_speed, _collect_bench_speed),
        Stage("bench-memory", _bench_memory, _json_of("memory.json", "memory")),
        Stage("bench-scaling", _bench_scaling, _json_of("scaling.json", "scaling")),
        Stage("build", _build, lambda w: {}, ("build",)),
        Stage("tests", _tests, lambda w: {}),
    )
}


# =========================================================================== rendering
def num(v, digits: int = 3) -> str:
    """A number as the README writes it: 0 as 0, tiny values as 6e-6, others with ``digits`` significant digits."""
    if v is None:
        return "n/a"
    if v == 0:
        return "0"
    if abs(v) < 1e-3:
        m, e = f"{v:.0e}".split("e")
        return f"{m}e{int(e)}"
    r = float(f"{v:.{digits}g}")  # rounded first: 0.09996 is 0.100, three digits
    return f"{r:.{max(0, digits - 1 - math.floor(math.log10(abs(r))))}f}"


def g3(v) -> str:
    """A count or ratio: 4, 2.67 (three significant digits, no trailing zeros)."""
    return "n/a" if v is None else f"{v:.3g}"


def seconds(s) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s:.0f} s (about {round(s / 60)} minutes)"


def where(record) -> str:
    """The machine of a stage, for a timing: CPU, cores, load average at the start, commit."""
    if record.get("typed"):  # numbers carried over from the README before they were generated
        return f"{record['typed']} (typed in the README before it was generated; `make readme-numbers` measures again)"
    m = record["machine"]
    cpu = re.sub(r"\((R|TM)\)|\bCPU\b|\bProcessor\b", "", m["cpu"]).split("@")[0]
    commit = f", commit {m['commit']}" + (" with local changes" if m.get("dirty") else "") if m.get("commit") else ""
    return f"{m['cpus']} CPU cores ({' '.join(cpu.split())}), load average {m['load_average']}{commit}"


def width_table(data, digits=3) -> str:
    """The Fig. 3a numbers of a sweep: full networks and chunks of the widest one, by width."""
    t = sorted(data["table"], key=lambda r: r["width"])
    widest = max(r["width"] for r in t)
    lines = [
        "| W | " + " | ".join(str(r["width"]) for r in t) + " |",
        "|---|" + "---|" * len(t),
        "| full network, test error | " + " | ".join(num(r["full_test_mean"], digits) for r in t) + " |",
        "| full network, training error | " + " | ".join(num(r["full_train_mean"], digits) for r in t) + " |",
        f"| chunk of W neurons of the {widest} net, test error | "
        + " | ".join(num(r["chunk_test_mean"], digits) for r in t) + " |",
        "| chunk, training error | " + " | ".join(num(r["chunk_train_mean"], digits) for r in t) + " |",
    ]  # fmt: skip
    return "\n" + "\n".join(lines) + "\n"


def _widths_phrase(ws) -> str:
    ws = list(ws)
    return f"{ws[0]} to {ws[-1]}" if len(ws) > 2 else " and ".join(map(str, ws))


def demo_config(n) -> str:
    c = n["demo"]["data"]["config"]
    ws = c["widths"]
    widths = ", ".join(map(str, ws)) if len(ws) <= 4 else f"{ws[0]}, {ws[1]}, ..., {ws[-1]}"
    return (
        f"{c['depth']} hidden layers all of width W = {widths}, {c['seeds']} seeds each, {c['epochs']} epochs "
        f"(lr {c['lr']:g}, weight decay {c['weight_decay']:g})"
    )


def quick_config(n) -> str:
    c = n["quick"]["data"]["config"]
    return f"widths {_widths_phrase(c['widths'])}, {c['seeds']} seeds, {c['epochs']} epochs"


def quick_duration(n) -> str:
    r = n["quick"]
    return f"{seconds(sum(r['seconds']))} on {where(r)}"


def demo_duration(n) -> str:
    r = n["demo"]
    return f"{seconds(sum(r['seconds']))} on {where(r)}"


def demo_timing(n) -> str:
    r = n["demo"]
    runs = r["data"]["timings_s"].get("runs")
    return (
        f"`{r['commands'][0]}` (what `make demo` runs) took {seconds(sum(r['seconds']))}, "
        + (f"{runs:.0f} s of it training, " if runs is not None else "")
        + f"on {where(r)}; the numbers are the same every run"
    )


def demo_chunk_fit(n) -> str:
    """Where chunks of the widest network fit the training set, with the misclassified images just below."""
    d = n["demo"]["data"]
    t = sorted(d["table"], key=lambda r: r["width"])
    zero_from = None
    for r in reversed(t):
        if r["chunk_train_mean"] != 0:
            break
        zero_from = r["width"]
    if zero_from is None:
        return f"no chunk has training error exactly 0, not even the whole layer ({num(t[-1]['chunk_train_mean'])})"
    below = [r for r in t if r["width"] < zero_from]
    if not below:
        return f"every chunk size fits it exactly (training error 0 from {zero_from} on)"
    b = below[-1]
    chunks = d["config"]["seeds"] * d["config"]["acc_rep"]
    wrong = round(b["chunk_train_mean"] * (d["n_train"] or 0) * chunks)
    return (
        f"training error {num(b['chunk_train_mean'])} at {b['width']}, {wrong} misclassified training images over "
        f"{chunks} chunks, and exactly 0 from {zero_from} on"
    )


def _sentence(sentences, start: str) -> str:
    hits = [s for s in sentences if s.startswith(start)]
    return hits[0] if hits else "(no such sentence in this run's reading)"


def demo_match(n) -> str:
    return _sentence(n["demo"]["data"]["reading"], "Chunks of w_c neurons of the widest network")


def wc_star_phrase(summary) -> str:
    if summary.get("w_c_star") is None:
        return "no critical chunk size (no chunk size meets the criterion)"
    clones = summary["n_clones"]
    return f"w_c* = {summary['w_c_star']}, W / w_c* = {g3(clones)} clone" + ("" if clones == 1 else "s")


def demo_wcstar(n) -> str:
    return wc_star_phrase(n["demo"]["data"]["summary"])


def demo_exponent(n) -> str:
    s = n["demo"]["data"]["summary"]
    if s.get("exponent") is None:
        return "none: too few chunk sizes above w_c*"
    se = s.get("exponent_se")
    return f"{s['exponent']:.2f}" + (f" ± {se:.2f}" if se is not None else ", from two points")


def clones_by_width(rows) -> str:
    by = {}
    for r in sorted(rows, key=lambda r: (r["width"], r["seed"])):
        by.setdefault(r["width"], []).append("none" if r["wc_star"] is None else str(int(r["wc_star"])))
    return "; ".join(f"W = {w}: {', '.join(v)}" for w, v in by.items())


def demo_clones(n) -> str:
    """The clones across widths of the demo: w_c* of every seed, from which width all are redundant, the growth."""
    d = n["demo"]["data"]
    rows, g = d["clones"], d["growth"]
    out = f"w_c* of every seed by width (none: no chunk size meets the criterion): {clones_by_width(rows)}. "
    if g.get("onset_width") is None:
        out += "At no width up to the widest does every seed have w_c* < W: clones across widths are not shown."
    else:
        means = {}
        for r in rows:
            if r["width"] >= g["onset_width"] and r["clones"] is not None:
                means.setdefault(r["width"], []).append(r["clones"])
        counts = ", ".join(f"{g3(sum(v) / len(v))} at W = {w}" for w, v in sorted(means.items()))
        out += f"Every seed has w_c* < W from W = {g['onset_width']} on (W / w_c* = {counts}, mean over seeds)"
        if g.get("slope") is not None:
            se = f" ± {g['slope_se']:.2f}" if g.get("slope_se") is not None else ""
            out += f"; over those widths the clone count grows like W^{g['slope']:.2f}{se} (linear growth: W^1)"
        out += "."
    exps = [r for r in rows if r["exponent"] is not None]
    if exps:
        lo, hi = min(r["exponent"] for r in exps), max(r["exponent"] for r in exps)
        with_se = sum(r["exponent_se"] is not None for r in exps)
        out += (
            f" Decay exponents of the runs that have one ({len(exps)} of {len(rows)}): between {lo:.2f} and "
            f"{hi:.2f}, {with_se} with a standard error (three or more chunk sizes at or above w_c*)."
        )
    return out


def demo_clones_timing(n) -> str:
    r = n["demo"]
    t = r["data"]["timings_s"]
    return (
        f"the analysis of every run took {t.get('clones', float('nan')):.0f} s of the demo and that of the widest "
        f"networks {t.get('analysis', float('nan')):.0f} s, on {where(r)}"
    )


def demo_checkpoints(n) -> str:
    d = n["demo"]["data"]
    w = max(d["config"]["widths"])
    return (
        f"{d['checkpoints']['count']} checkpoints, the network alone, {d['checkpoints']['mb_each']:.1f} MB each at "
        f"W = {w}; the demo's folder holds {d['folder_gb']:.2f} GB"
    )


def dynamics_text(data) -> str:
    """Epoch 0, the epoch of zero training error and every change of w_c*, from a dynamics.json."""
    eps = data["per_epoch"]
    first = eps[0]
    if first["w_c_star"] is None:
        out = (
            "At initialization (epoch 0, the null baseline of random features) no chunk size meets the criterion, "
            f"not even the whole layer (training error {num(first['train_error'])})."
        )
    else:
        out = f"At initialization (epoch 0) already {wc_star_phrase(first)}."
    z = data.get("zero_train_error_epoch")
    out += f" The network reaches zero training error at epoch {z}." if z is not None else " It never reaches 0."
    changes, last = [], first["w_c_star"]
    for e in eps[1:]:
        if e["w_c_star"] != last:
            what = "no w_c*" if e["w_c_star"] is None else wc_star_phrase(e)
            changes.append(f"from epoch {e['epoch']}, {what}")
            last = e["w_c_star"]
    if changes:
        text = "; ".join(changes)
        out += f" {text[0].upper()}{text[1:]} (to epoch {eps[-1]['epoch']})."
    return out


def dynamics_reading(n) -> str:
    return dynamics_text(n["dynamics"]["data"])


def dynamics_timing(n) -> str:
    r = n["dynamics"]
    return f"`{r['commands'][0]}` took {seconds(sum(r['seconds']))} on {where(r)}, " + (
        f"{len(r['data']['per_epoch'])} epochs analysed (every kept checkpoint and epoch 0)"
    )


def train_dynamics(n) -> str:
    r = n["train-dynamics"]
    d = r["data"]
    same = "equal, digit for digit," if d.get("equals_demo_run") else "differ from"
    return (
        f"`{r['commands'][0]}`, then `{r['commands'][1]}`. "
        + dynamics_text(d)
        + (
            f" The last epoch's numbers {same} those of the demo's run of the same width and seed "
            "(`demo_output/clones/w00512_s0`)."
        )
    )


def _at(data, width, key):
    return next((r[key] for r in data["table"] if r["width"] == width), None)


def compare_text(n) -> str:
    a, b = n["compare"]["data"]["wd"], n["compare"]["data"]["wd0"]
    widest = max(a["config"]["widths"])
    cmds = n["compare"]["commands"]
    return (
        f"`{cmds[0]}`, then `{cmds[1]}`. "
        f"With the demo's weight decay ({a['config']['weight_decay']:g}), w_c* of every seed by width: "
        f"{clones_by_width([r for r in a['clones'] if r['width'] >= widest // 2])}; without it: "
        f"{clones_by_width([r for r in b['clones'] if r['width'] >= widest // 2])}. error_inf is "
        f"{num(a['error_inf'])} with it and {num(b['error_inf'])} without, the W = {widest} test error "
        f"{num(_at(a, widest, 'full_test_mean'))} and {num(_at(b, widest, 'full_test_mean'))}. "
        + n["compare"]["data"]["reading"][-1]
        + f" (On {where(n['compare'])}.)"
    )


def other_tasks(n) -> str:
    r = n["other-tasks"]
    parts = []
    for (task, _), cmd, secs in zip(OTHER_TASKS, r["commands"], r["seconds"]):
        d = r["data"][task]
        t = sorted(d["table"], key=lambda x: x["width"])
        half = t[-2]
        parts.append(
            f"`{cmd}` ({secs:.0f} s): full-network test error {num(t[0]['full_test_mean'])} at W = {t[0]['width']}, "
            f"{num(t[-1]['full_test_mean'])} at W = {t[-1]['width']}; chunks of {half['width']} neurons of the widest "
            f"network have training error {num(half['chunk_train_mean'])}; {wc_star_phrase(d['summary'])}."
        )
    return "\n\n" + "\n\n".join(parts) + f"\n\n(On {where(r)}.)\n"


def bench_train(n) -> str:
    r = n["bench-train"]
    tasks = r["data"]["tasks"]
    items = "; ".join(f"{k}: {v['train_s_per_epoch']:.3f} ({v['epoch_s']:.3f})" for k, v in tasks.items())
    return f"{items}; on {where(r)}, device {r['data']['device']}, {r['data']['threads']} torch threads"


def _speed_run(n, width, native):
    return next(x for x in n["bench-speed"]["data"]["runs"] if x["width"] == width and x["native"] == native)


def bench_speed_table(n) -> str:
    rows = ["| W | kernels | redrep analyze | accuracies (train + test) | Gram (test + train) | regression | rest "
            "| baseline |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for x in n["bench-speed"]["data"]["runs"]:
        t = x["timings_s"]
        arch = re.search(r"(\w+) kernels", x.get("blas", ""))
        kernels = f"{arch.group(1) + ' ' if arch else ''}({'native' if x['native'] else 'pinned'})"
        base = f"{x['baseline_s']:.1f} s: {x['speedup']:.1f}x" if x.get("baseline_s") else ""
        rows.append(
            f"| {x['width']} | {kernels} | {x['analyze_s']:.2f} s "
            f"| {t.get('accuracy_train', 0):.2f} + {t.get('accuracy_test', 0):.2f} s "
            f"| {t.get('gram_test', 0):.2f} + {t.get('gram_train', 0):.2f} s | {t.get('regression_test', 0):.2f} s "
            f"| {x['rest_s']:.2f} s | {base} |"
        )
    return "\n" + "\n".join(rows) + f"\n\nOn {where(n['bench-speed'])}.\n"


def bench_speed_verdict(n) -> str:
    p, q = _speed_run(n, 512, False), _speed_run(n, 512, True)
    w2p, w2n = _speed_run(n, 2048, False), _speed_run(n, 2048, True)
    met = "met" if min(p.get("speedup", 0), q.get("speedup", 0)) >= 50 else "not met"
    return (
        f"The 50x target is {met} at W = 512: {p.get('speedup', float('nan')):.1f}x with the pinned kernels, "
        f"{q.get('speedup', float('nan')):.1f}x with the native ones. W = 2048 takes {w2p['analyze_s']:.1f} s "
        f"(pinned) and {w2n['analyze_s']:.1f} s (native), against the 15 s target"
    )


def bench_peaks(n) -> str:
    p, q = _speed_run(n, 512, False)["peak_gfma_s"], _speed_run(n, 512, True)["peak_gfma_s"]
    return (
        f"float32 products about {q['float32']:.0f} against {p['float32']:.0f} GFMA/s, float64 {q['float64']:.0f} "
        f"against {p['float64']:.0f}"
    )


def bench_cost(n) -> str:
    x = _speed_run(n, 512, False)
    c, t, pk = x["cost_gfma"], x["timings_s"], x["peak_gfma_s"]
    compiled = str(x.get("accuracy_pass", "")).startswith("compiled")
    acc = c["accuracies_compiled" if compiled else "accuracies_numpy"]
    acc_t = t.get("accuracy_train", 0) + t.get("accuracy_test", 0)
    return (
        f"\n- accuracies ({x.get('accuracy_pass')} pass): {acc:.1f} G float32 multiply-adds, "
        f"{acc / pk['float32']:.2f} s at numpy's measured {pk['float32']:.0f} GFMA/s, {acc_t:.2f} s measured;"
        f"\n- Gram matrices: {c['gram']:.1f} G float64 multiply-adds for the test set, "
        f"{c['gram'] / pk['float64']:.2f} s at the measured {pk['float64']:.0f} GFMA/s, "
        f"{t.get('gram_test', 0):.2f} s measured, and "
        f"{t.get('gram_train', 0):.2f} s for the training set's (held-out R²);"
        f"\n- regression: {c['regression']:.1f} G float64 multiply-adds, {c['regression'] / pk['float64']:.2f} s at "
        f"the measured peak, {t.get('regression_test', 0):.2f} s measured."
        f"\n\n(`python benchmarks/bench_analyze.py --skip-memory`, W = 512, pinned kernels, on "
        f"{where(n['bench-speed'])}.)\n"
    )


def bench_memory(n) -> str:
    r = n["bench-memory"]
    d = r["data"]
    return (
        f"{d['peak_gb_all']:.2f} GB; the main process's own peak RSS {d['peak_gb_main']:.2f} GB (target < 1.5 GB; "
        f"`{r['commands'][0]}` on {where(r)})"
    )


def bench_scaling(n) -> str:
    r = n["bench-scaling"]
    head = [
        "| grows | N | W | C | acc-rep | r2-rep | total s | accuracies s | regression s | peak memory GB "
        "| accuracy G FMA | accuracy % of float32 peak |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [
        f"| {x['axis']} | {x['n']:,} | {x['width']} | {x['classes']} | {x['acc_rep']} | {x['r2_rep']} "
        f"| {x['total_s']:.1f} | {x['accuracies_s']:.1f} | {x['regression_s']:.1f} | {x['peak_gb']:.2f} "
        f"| {x['accuracy_gfma']:.0f} | {x['accuracy_pct_of_peak']:.0f}% |"
        for x in r["data"]["rows"]
    ]
    pk = r["data"]["peak_gfma_s"]
    return (
        "\n" + "\n".join(head + rows) + f"\n\n`{r['commands'][0]}` on {where(r)}; float32 products at "
        f"{pk['float32']:.0f} GFMA/s, float64 at {pk['float64']:.0f}.\n"
    )


def tests_duration(n) -> str:
    r = n["tests"]
    return f"{seconds(sum(r['seconds']))} on {where(r)}"


def build_duration(n) -> str:
    r = n["build"]
    return f"{seconds(sum(r['seconds']))} on {where(r)}"


@dataclass(frozen=True)
class Block:
    """A README block: the stages it reads, its renderer, and whether it is a timing (never compared by tests)."""

    stages: tuple
    render: object
    timing: bool = False


BLOCKS = {
    "quick-config": Block(("quick",), quick_config),
    "quick-table": Block(("quick",), lambda n: width_table(n["quick"]["data"])),
    "quick-duration": Block(("quick",), quick_duration, timing=True),
    "demo-duration": Block(("demo",), demo_duration, timing=True),
    "demo-timing": Block(("demo",), demo_timing, timing=True),
    "demo-config": Block(("demo",), demo_config),
    "demo-table": Block(("demo",), lambda n: width_table(n["demo"]["data"])),
    "demo-chunk-fit": Block(("demo",), demo_chunk_fit),
    "demo-match": Block(("demo",), demo_match),
    "demo-wcstar": Block(("demo",), demo_wcstar),
    "demo-exponent": Block(("demo",), demo_exponent),
    "demo-clones": Block(("demo",), demo_clones),
    "demo-clones-timing": Block(("demo",), demo_clones_timing, timing=True),
    "demo-checkpoints": Block(("demo",), demo_checkpoints),
    "dynamics-timing": Block(("dynamics",), dynamics_timing, timing=True),
    "dynamics-reading": Block(("dynamics",), dynamics_reading),
    "train-dynamics": Block(("train-dynamics",), train_dynamics),
    "compare": Block(("compare",), compare_text),
    "other-tasks": Block(("other-tasks",), other_tasks, timing=True),
    "bench-train": Block(("bench-train",), bench_train, timing=True),
    "bench-speed-table": Block(("bench-speed",), bench_speed_table, timing=True),
    "bench-speed-verdict": Block(("bench-speed",), bench_speed_verdict, timing=True),
    "bench-peaks": Block(("bench-speed",), bench_peaks, timing=True),
    "bench-cost": Block(("bench-speed",), bench_cost, timing=True),
    "bench-memory": Block(("bench-memory",), bench_memory, timing=True),
    "bench-scaling": Block(("bench-scaling",), bench_scaling, timing=True),
    "tests-duration": Block(("tests",), tests_duration, timing=True),
    "build-duration": Block(("build",), build_duration, timing=True),
}


# =========================================================================== the README
class ReadmeError(Exception):
    """A README block that cannot be rendered: unknown key, missing stage, a marker at a line start."""


def blocks_of(text: str) -> list[tuple[str, str, int]]:
    """(key, content, offset) of every block of ``text``; an inline block must not start a line."""
    out = []
    for m in BLOCK_RE.finditer(text):
        key, content = m.group(1), m.group(2)
        inline = not content.startswith("\n")
        line_start = text.rfind("\n", 0, m.start()) + 1
        if inline and not text[line_start : m.start()].strip():
            line = text.count("\n", 0, m.start()) + 1
            raise ReadmeError(f"README.md:{line}: the inline block {key} starts a line (Markdown reads an HTML block)")
        out.append((key, content, m.start()))
    if text.count("<!-- numbers:") != len(out):
        raise ReadmeError("README.md: a <!-- numbers:KEY --> marker without its <!-- /numbers -->")
    return out


def render_block(key: str, numbers: dict) -> str:
    block = BLOCKS.get(key)
    if block is None:
        raise ReadmeError(f"README.md: unknown block {key!r} (expected one of {', '.join(BLOCKS)})")
    missing = [s for s in block.stages if s not in numbers]
    if missing:
        raise ReadmeError(f"block {key}: no numbers of stage(s) {', '.join(missing)} in {NUMBERS.name}; run them")
    return block.render(numbers)


def render_readme(text: str, numbers: dict, *, keys=None) -> str:
    """``text`` with every block (or those of ``keys``) rendered from ``numbers``."""
    blocks_of(text)  # the structural checks

    def sub(m):
        if keys is not None and m.group(1) not in keys:
            return m.group(0)
        return f"<!-- numbers:{m.group(1)} -->{render_block(m.group(1), numbers)}<!-- /numbers -->"

    return BLOCK_RE.sub(sub, text)


def differences(text: str, numbers: dict, *, keys=None) -> list[str]:
    """The blocks of ``text`` (or of ``keys``) whose content is not the rendering of ``numbers``."""
    return [
        key
        for key, content, _ in blocks_of(text)
        if (keys is None or key in keys) and content != render_block(key, numbers)
    ]


def load_numbers(path: Path = NUMBERS) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def save_numbers(numbers: dict, path: Path = NUMBERS) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(numbers, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    tmp.replace(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of: {', '.join(STAGES)}")
    p.add_argument("--render-only", action="store_true", help=f"run nothing: render the README from {NUMBERS.name}")
    p.add_argument("--check", action="store_true", help="run nothing: exit 1 if the README is not its rendering")
    p.add_argument("--work", type=Path, default=WORK, help="folder the stages run in")
    args = p.parse_args(argv)
    numbers, text = load_numbers(), README.read_text(encoding="utf-8")
    if args.check:
        diff = differences(text, numbers)
        for key in diff:
            print(f"README.md: block {key} is not the rendering of {NUMBERS.relative_to(ROOT)}")
        return 1 if diff else 0
    if not args.render_only:
        names = [s.strip() for s in args.stages.split(",") if s.strip()]
        unknown = [s for s in names if s not in STAGES]
        if unknown:
            p.error(f"unknown stage(s) {', '.join(unknown)}; expected some of {', '.join(STAGES)}")
        for name in names:
            numbers[name] = run_stage(STAGES[name], args.work)
            save_numbers(numbers)  # each stage kept as soon as it is done,
            text = write_readme(text, numbers)  # and the README follows (the tests stage reads it)
    else:
        write_readme(text, numbers)
    return 0


def write_readme(text: str, numbers: dict) -> str:
    """Render the README's blocks whose stages have numbers (the others are left as they are); the new text."""
    keys = [k for k, _, _ in blocks_of(text) if k in BLOCKS and all(s in numbers for s in BLOCKS[k].stages)]
    new = render_readme(text, numbers, keys=set(keys))
    if new != text:
        README.write_text(new, encoding="utf-8")
        print(f"README.md: {len(differences(text, numbers, keys=set(keys)))} block(s) rewritten", flush=True)
    return new


if __name__ == "__main__":
    sys.exit(main())
