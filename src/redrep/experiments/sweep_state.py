"""A sweep's state file (sweep.json) read as input: its layout version, its job records and the size of its plan.

sweep.json is written by redrep, but read back by every later ``redrep sweep``,
``redrep sweep-status`` and ``redrep compare``, so it is checked like any input:
a file edited by hand, copied from a newer redrep or crafted gets one line
naming the field and what was expected, never a traceback, and a plan too large
to make (``seeds: 1e9``) is refused before anything is planned. Torch-free:
``redrep sweep-status`` reads it without the training code.
"""

from __future__ import annotations

import math
import numbers
import re
from pathlib import Path

from ..core.validation import RedrepError
from ..storage import io

SWEEP_FILE = "sweep.json"
#: Layout version of sweep.json; a folder written with another one is refused.
SWEEP_VERSION = 2
#: Where submitit keeps its job folders, inside the sweep folder.
SLURM_DIR = "slurm"
#: At most this many seeds per width, and this many runs (widths x seeds) in one sweep: a plan of this size is made
#: in moments (a SLURM cluster may take fewer in one job array: its MaxArraySize is 1001 by default).
MAX_SEEDS = 1000
MAX_RUNS = 10_000
#: The widest layer a sweep may ask for (the paper's widest networks have 1024 neurons).
MAX_WIDTH = 65_536
#: Layout of the job id a SLURM run records: a job, or a task of a job array.
_JOB_ID = re.compile(r"\d{1,20}(_\d{1,10})?")
#: The id of a submission and of a sweep (hex).
_HEX_ID = re.compile(r"[0-9a-f]{1,32}")


def brief(value) -> str:
    """A value for a one-line message: long ones cut short, huge integers by their number of digits."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {int(value.bit_length() * math.log10(2)) + 1} digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def json_type(value) -> str:
    """What a JSON value is, in JSON's words (object, array, string, number, boolean, null)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, str):
        return f"the string {brief(value)}"
    if isinstance(value, numbers.Number):
        return f"the number {brief(value)}"
    return "null" if value is None else type(value).__name__


def _count(value, name: str, at: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise RedrepError(f"{at}{name}: expected an integer, found {brief(value)}")
    if value < low:
        raise RedrepError(f"{at}{name}: expected an integer >= {low}, found {brief(value)}")
    if value > high:
        raise RedrepError(f"{at}{name}: expected an integer <= {high}, found {brief(value)}")
    return int(value)


def check_plan(widths, seeds, *, where: str = "") -> tuple[tuple[int, ...], int]:
    """The sweep's widths (sorted, unique) and seeds, checked and bounded (:data:`MAX_WIDTH`, :data:`MAX_SEEDS`,
    :data:`MAX_RUNS`) before anything is planned; ``where`` prefixes the messages (a file)."""
    at = f"{where}: " if where else ""
    if not isinstance(widths, (list, tuple)):
        raise RedrepError(f"{at}widths: expected a list of integers, found {json_type(widths)}")
    if len(widths) > MAX_RUNS:
        raise RedrepError(f"{at}widths: expected at most {MAX_RUNS} widths, found {len(widths)}")
    ws = tuple(sorted({_count(w, "widths", at, 1, MAX_WIDTH) for w in widths}))
    n_seeds = _count(seeds, "seeds", at, 1, MAX_SEEDS)
    if len(ws) * n_seeds > MAX_RUNS:
        raise RedrepError(
            f"{at}seeds: expected at most {MAX_RUNS} runs (widths x seeds), found {len(ws)} x {n_seeds} = "
            f"{len(ws) * n_seeds}"
        )
    return ws, n_seeds


def plan_order(widths, seeds: int) -> list[tuple[int, int]]:
    """The (width, seed) runs of a sweep, widest first (the longest runs start first)."""
    return [(w, s) for w in sorted(widths, reverse=True) for s in range(seeds)]


def read_sweep_json(f, *, older: bool = False) -> dict:
    """sweep.json as a dict: one-line errors for unreadable JSON, integers too long to read, another layout version.

    ``older`` accepts the layouts of older redreps (``redrep compare`` reads them); a sweep is resumed only from
    its own.
    """
    f = Path(f)
    doc = io.read_json_object(f, "the JSON of a redrep sweep")  # refuses integers too long to read, too
    v = doc.get("version")
    if v is None or (isinstance(v, int) and not isinstance(v, bool) and v < SWEEP_VERSION):
        if older:
            return doc
        raise RedrepError(
            f"{f}: expected a redrep sweep of layout version {SWEEP_VERSION}, found version "
            f"{'none' if v is None else v} (written by an older redrep); re-run the sweep into a new folder"
        )
    if isinstance(v, bool) or not isinstance(v, int):
        raise RedrepError(
            f"{f}: expected a redrep sweep of layout version {SWEEP_VERSION}, found version {brief(v)} "
            f"(not a layout number: not written by redrep)"
        )
    if v > SWEEP_VERSION:
        raise RedrepError(
            f"{f}: expected a redrep sweep of layout version {SWEEP_VERSION}, found version {brief(v)} "
            f"(written by a newer redrep); upgrade redrep to read it"
        )
    return doc


def _check_text(h: dict, key: str, at: str) -> None:
    if h.get(key) is not None and not isinstance(h[key], str):
        raise RedrepError(f"{at}.{key}: expected a string or null, found {json_type(h[key])}")


def _check_job(name, h, f: Path) -> None:
    at = f"{f}: jobs.{brief(name)[1:-1] if isinstance(name, str) else brief(name)}"
    if not isinstance(h, dict):
        raise RedrepError(f"{at}: expected an object (job_id, log, executor, ...), found {json_type(h)}")
    jid = h.get("job_id")
    if jid is not None and not (isinstance(jid, str) and _JOB_ID.fullmatch(jid)):
        raise RedrepError(f'{at}.job_id: expected a SLURM job id such as "123_4" or null, found {json_type(jid)}')
    for key in ("log", "host", "executor"):
        _check_text(h, key, at)
    if h.get("executor") not in (None, "local", "slurm"):
        raise RedrepError(f"{at}.executor: expected local or slurm, found {json_type(h['executor'])}")
    t = h.get("submitted", 0)
    if isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(t):
        raise RedrepError(f"{at}.submitted: expected a time in seconds, found {json_type(t)}")
    pid = h.get("driver")
    if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid < 2**31):
        raise RedrepError(f"{at}.driver: expected a process id or null, found {json_type(pid)}")


def _check_submitting(mark, f: Path) -> None:
    ok = (
        isinstance(mark, dict)
        and isinstance(mark.get("id"), str)
        and _HEX_ID.fullmatch(mark["id"]) is not None
        and mark.get("executor") in ("local", "slurm")
        and isinstance(mark.get("time", 0), (int, float))
        and math.isfinite(mark.get("time", 0))
        and isinstance(mark.get("runs"), list)
        and len(mark["runs"]) <= MAX_RUNS
        and all(isinstance(r, str) for r in mark["runs"])
    )
    if not ok:
        raise RedrepError(
            f"{f}: submitting: expected the submission under way (id, executor, runs), found {json_type(mark)}"
        )


def check_state(doc: dict, f) -> dict:
    """Check the parts of a sweep's state that are read back: the job records, the submission under way, the ids.

    The config is checked where it is used (:func:`check_plan`, the training config's own checks).
    """
    f = Path(f)
    jobs = doc.setdefault("jobs", {})
    if not isinstance(jobs, dict):
        raise RedrepError(f"{f}: jobs: expected an object (run name -> job), found {json_type(jobs)}")
    for name, h in jobs.items():
        _check_job(name, h, f)
    if doc.get("submitting") is not None:
        _check_submitting(doc["submitting"], f)
    stale = doc.get("abandoned", [])
    if not isinstance(stale, list) or not all(
        isinstance(a, dict) and isinstance(a.get("id"), str) and isinstance(a.get("time"), (int, float)) for a in stale
    ):
        raise RedrepError(f"{f}: abandoned: expected a list of submissions (id, time), found {json_type(stale)}")
    sid = doc.get("id")
    if sid is not None and not (isinstance(sid, str) and _HEX_ID.fullmatch(sid)):
        raise RedrepError(f"{f}: id: expected the sweep's id (hexadecimal), found {json_type(sid)}")
    if not isinstance(doc.get("status", ""), str):
        raise RedrepError(f"{f}: status: expected a string, found {json_type(doc['status'])}")
    return doc


def _own_temp(name: str) -> bool:
    # storage.io's temporary name for sweep.json, left by a driver killed while writing it
    return re.fullmatch(rf"\.{re.escape(SWEEP_FILE)}\.[A-Za-z0-9_]{{8}}\.tmp", name) is not None


def check_new_folder(out) -> None:
    """Refuse a folder without sweep.json that holds more than a sweep's own leftovers.

    A sweep's own: ``runs/`` (runs kept from a lost state file), ``slurm/`` (submitit's files of an interrupted
    first submission) and the temporary file of an interrupted write of sweep.json.
    """
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise RedrepError(f"{out}: expected a folder for the sweep, found a file")
    if (out / "runs").is_dir():
        return
    other = sorted(p.name for p in out.iterdir() if p.name not in ("runs", SLURM_DIR) and not _own_temp(p.name))
    if other:
        shown = ", ".join(brief(n) for n in other[:3]) + (f" and {len(other) - 3} more" if len(other) > 3 else "")
        raise RedrepError(
            f"{out}: expected a new or empty folder or a redrep sweep (with {SWEEP_FILE}), found other files "
            f"({shown}); choose another output folder"
        )
