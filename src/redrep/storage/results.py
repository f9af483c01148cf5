"""Result files of ``redrep analyze`` and reading them back.

A results folder holds:

* one array per metric, ``<metric>_<split>.npy``, of shape (2, n_sizes), row 0
  the chunk sizes and row 1 the means (:func:`result_file_names`); for the
  authors' published set, the authors' names as well
  (:data:`AUTHORS_RESULT_FILES`), which their plotting script reads;
* ``results.csv``: tidy, one row per metric x split x chunk size with the
  columns of :data:`CSV_COLUMNS`;
* ``chunks.npz``: the value of every random chunk, one array of shape
  (n_sizes, reps) per metric (named ``<metric>_<split>``) and ``chunk_size``;
  the fraction of chunks that fit and the bootstrap of ``w_c*`` read them
  (docs/method.md#critical-chunk-size);
* ``results.json``: the input, parameters, seed, versions, timings, an
  ``analysis_id`` that names this analysis, and its ``summary`` (w_c* with its
  interval and criterion, the decay exponent, the number of clones:
  :class:`redrep.core.summary.Summary`). Later steps add keys to it under the
  folder's lock, and only to the analysis they read
  (:meth:`Results.update_json`): ``redrep plot`` and ``redrep report`` asked
  for another criterion keep their summaries under ``summaries``, one per
  criterion (:func:`criterion_key`).
"""

from __future__ import annotations

import contextlib
import csv
import io as _stdio
import math
import os
import platform
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import __version__
from ..core import metrics as _metrics
from ..core import summary as _summary
from ..core.validation import RedrepError
from . import io

#: (metric, split) -> the authors' file name, for the metrics that have one.
AUTHORS_RESULT_FILES = {m.key: m.authors_file for m in _metrics.METRICS if m.authors_file}
CSV_NAME = "results.csv"
JSON_NAME = "results.json"
CHUNKS_NAME = "chunks.npz"
CSV_COLUMNS = ("metric", "split", "chunk_size", "mean", "std", "sem", "n")


def package_versions() -> dict:
    """Versions of Python and of the packages behind the numbers."""
    out = {"python": platform.python_version(), "redrep": __version__}
    for mod in ("numpy", "scipy", "torch", "sklearn", "matplotlib"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = getattr(m, "__version__", "unknown")
    return out


def rows_to_csv(rows, columns=CSV_COLUMNS, *, missing: str = "") -> str:
    """A tidy CSV of ``rows`` (dicts) in ``columns``: every CSV redrep writes goes through here.

    Floats are written as ``repr`` (an exact round trip), NaN as ``nan``, a value
    that is None or absent as ``missing``; other keys of a row are ignored.
    """
    buf = _stdio.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_fmt(row.get(k), missing) for k in columns])
    return buf.getvalue()


def csv_to_rows(path, columns, convert, expected: str, *, text: str | None = None) -> list:
    """Read a CSV written by :func:`rows_to_csv` back: ``convert(row)`` of every row, in order.

    One-line :class:`RedrepError` when a column of ``columns`` is missing, when
    ``convert`` raises TypeError or ValueError on a row (``expected`` says what
    that row should hold, and the line is named) or when the file cannot be
    read as CSV. ``text``, when given, is the file's content already read
    (``path`` then only names it).
    """
    path = Path(path)
    rows = []
    try:
        with open(path, newline="", encoding="utf-8") if text is None else _stdio.StringIO(text, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not set(columns) <= set(reader.fieldnames):
                raise RedrepError(f"{path}: expected the columns {', '.join(columns)}, found {reader.fieldnames}")
            for lineno, r in enumerate(reader, start=2):
                try:
                    rows.append(convert(r))
                except (TypeError, ValueError):
                    raise RedrepError(f"{path}, line {lineno}: expected {expected}, found {dict(r)}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RedrepError(f"{path}: could not read it as CSV ({exc})") from None
    return rows


def _fmt(v, missing=""):
    if v is None:
        return missing
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return "nan" if math.isnan(v) else repr(v)
    return v


def result_file_names(metric, *, authors: bool) -> list[str]:
    """The ``.npy`` names of a :class:`~redrep.core.metrics.Metric`: the neutral one, then the authors' when asked."""
    names = [metric.file_name]
    if authors and metric.authors_file:
        names.append(metric.authors_file)
    return names


def is_authors_layout(repset) -> bool:
    """Whether ``repset`` is the authors' published set (its results keep the authors' file names too)."""
    return getattr(repset, "meta", {}).get("layout") == "authors"


def read_result_array(path, name: str, split: str = "test") -> np.ndarray:
    """The (2, n_sizes) array of one metric in a results folder, under its neutral or its authors' name.

    Raises :class:`RedrepError` when neither file exists or the array is not of that shape.
    """
    path = Path(path)
    m = _metrics.by_key().get((name, split))
    candidates = result_file_names(m, authors=True) if m is not None else [f"{name}_{split}.npy"]
    for cand in candidates:
        f = path / cand
        if f.is_file():
            try:
                arr = np.load(f, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise RedrepError(f"{f}: could not read it as a .npy array ({exc})") from None
            if arr.ndim != 2 or arr.shape[0] != 2:
                raise RedrepError(f"{f}: expected an array of shape (2, n_sizes), found shape {arr.shape}")
            return arr
    raise RedrepError(f"{path}: expected {' or '.join(candidates)} for metric {name!r} on {split}, found neither")


def write_results(analysis, repset, out_dir, *, extra: dict | None = None) -> dict:
    """Write the result files of a fitted :class:`~redrep.core.analysis.ChunkAnalysis`.

    The whole folder is built aside and swapped in at once (entries that are
    not result files, such as figures and a report, are kept), under the
    folder's lock (:func:`redrep.storage.io.folder_lock`): a concurrent writer fails
    at once, and a reader never sees files of two analyses side by side.
    Returns the JSON document written.
    """
    out_dir = Path(out_dir)
    # every name a result file can have, so that none of an earlier analysis survives beside the new ones
    owned = {CSV_NAME, JSON_NAME, CHUNKS_NAME}
    for m in _metrics.METRICS:
        owned.update(result_file_names(m, authors=True))
    sizes = np.asarray(analysis.chunk_sizes_, dtype=np.float64)
    authors = is_authors_layout(repset)
    arrays = {}
    files = {}
    for m in _metrics.METRICS:
        if m.key not in analysis.values_:
            continue
        curve = np.stack([sizes, analysis.mean(*m.key)])
        for name in result_file_names(m, authors=authors):
            arrays[name] = curve
        files[f"{m.name}_{m.split}"] = m.file_name
    doc = {
        "tool": "redrep",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        # names this analysis: a later step adds keys to the folder only while it still holds this one
        "analysis_id": uuid.uuid4().hex,
        "input": repset.describe(),
        "error_inf": repset.error_inf,
        "params": {
            "chunk_sizes": [int(w) for w in analysis.chunk_sizes_],
            "acc_rep": int(analysis.acc_rep),
            "r2_rep": int(analysis.r2_rep),
            "alpha": float(analysis.alpha),
            "seed": analysis.random_state,
            "block_rows": int(analysis.block_rows),
            "device": getattr(analysis, "device_", "cpu"),
            "refine": getattr(analysis, "refine", None),
        },
        # the sizes a refinement added between the size below w_c* and w_c* (docs/method.md#refined-chunk-sizes)
        "refinement": getattr(analysis, "refinement_", None),
        # the device and why: as asked, or auto's cost model with both estimates (docs/method.md)
        "device_choice": getattr(analysis, "device_choice_", None),
        # the last bits of R^2 depend on the block size and on how many threads the BLAS sums over
        "threads": {**thread_info(), "workers": getattr(analysis, "n_workers_", 1)},
        # the counts are the same whichever pass decided them (docs/method.md, "Chunk accuracies: one pass, exact")
        "accuracy_pass": getattr(analysis, "accuracy_pass_", None),
        "versions": package_versions(),
        "timings_s": {k: round(v, 4) for k, v in analysis.timings_.items()},
        "files": {**files, "csv": CSV_NAME, "chunks": CHUNKS_NAME},
    }
    if extra:
        doc.update(extra)
    rows = analysis.to_rows()
    # the summary at the default thresholds; `redrep plot` and `report` keep others beside it, under "summaries"
    if "summary" not in (extra or {}):  # computed from every chunk's values, with the analysis' criterion
        doc["summary"] = analysis.summary().to_dict()
    with io.folder_lock(out_dir, what="analyze"):
        try:
            with io.atomic_dir(out_dir, keep=lambda name: name not in owned) as tmp:
                for name, arr in arrays.items():
                    np.save(tmp / name, arr, allow_pickle=False)
                (tmp / CSV_NAME).write_text(rows_to_csv(rows), encoding="utf-8")
                chunk_values = {f"{name}_{split}": v for (name, split), v in analysis.values_.items()}
                np.savez_compressed(tmp / CHUNKS_NAME, chunk_size=sizes, **chunk_values)
                io.crash_point("results:half-written")
                io.write_json(tmp / JSON_NAME, clean_nan(doc))
                io.crash_point("results:before-swap")
        except OSError as exc:
            raise io.write_error(exc, out_dir) from None
    return doc


def thread_info() -> dict:
    """Thread counts behind the numbers: each BLAS/OpenMP pool (threadpoolctl) and torch's, if loaded."""
    out: dict = {}
    from threadpoolctl import threadpool_info

    out["pools"] = [
        {"api": d.get("internal_api"), "num_threads": d.get("num_threads"), "version": d.get("version")}
        for d in threadpool_info()
    ]
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch"] = int(torch.get_num_threads())
    return out


def clean_nan(obj):
    """``obj`` with every non-finite float, in dicts and lists at any depth, replaced by None (for JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: clean_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_nan(v) for v in obj]
    return obj


class Results:
    """A results folder read back: the tidy table and the JSON document.

    Attributes
    ----------
    path : Path
    rows : list of dict with the :data:`CSV_COLUMNS` keys (numbers as float/int)
    doc : dict, the content of ``results.json``
    identity : tuple or None, what names the analysis read: the folder's inode (a new analysis is a new folder)
        and the document's ``analysis_id`` (its creation time and timings in folders written before the id);
        None for results not read from disk. :meth:`update_json` writes only while the folder still holds it.
    """

    def __init__(self, path, rows, doc, identity=None):
        self.path = Path(path)
        self.rows = rows
        self.doc = doc
        self.identity = identity

    @property
    def error_inf(self):
        return self.doc.get("error_inf")

    def has(self, metric: str, split: str = "test") -> bool:
        """Whether the table holds rows of this metric and split (older folders lack newer metrics)."""
        return any(r["metric"] == metric and r["split"] == split for r in self.rows)

    def series(self, metric: str, split: str = "test"):
        """Arrays (chunk_size, mean, std, sem, n) for one metric and split, by chunk size."""
        sel = sorted(
            (r for r in self.rows if r["metric"] == metric and r["split"] == split), key=lambda r: r["chunk_size"]
        )
        if not sel:
            raise RedrepError(f"{self.path / CSV_NAME}: expected rows for metric {metric!r} on {split}, found none")
        cols = {k: np.array([r[k] for r in sel], dtype=np.float64) for k in ("chunk_size", "mean", "std", "sem", "n")}
        return cols

    @contextlib.contextmanager
    def locked(self, what: str):
        """Hold the folder's lock while the folder still holds the analysis read; yields ``results.json`` as it is now.

        Raises
        ------
        RedrepError
            When another process writes the folder (``redrep analyze``, say), or when the folder was replaced
            by another analysis since it was read: one line, and nothing written.
        """
        with io.folder_lock(self.path, what=what):
            doc, _, now = _read_folder(self.path, csv=False)
            if self.identity is not None and now != self.identity:
                raise RedrepError(
                    f"{self.path}: replaced by another analysis (created {doc.get('created')}) since it was read "
                    f"(created {self.doc.get('created')}); expected the analysis that was read: run the command "
                    "again to read the new one"
                )
            yield doc

    def chunk_values(self):
        """``(chunk sizes, {(metric, split): array of shape (n_sizes, reps)})`` from ``chunks.npz``, or None.

        None when the folder has no ``chunks.npz`` (written by an older redrep); a one-line error when
        it is not one this module wrote.
        """
        f = self.path / CHUNKS_NAME
        if not f.is_file():
            return None
        try:
            with np.load(f, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as exc:
            raise RedrepError(f"{f}: could not read it as a .npz archive ({exc})") from None
        sizes = arrays.pop("chunk_size", None)
        if sizes is None or sizes.ndim != 1:
            raise RedrepError(f"{f}: expected a 1-D array chunk_size, found {'none' if sizes is None else sizes.shape}")
        values = {}
        for m in _metrics.METRICS:
            v = arrays.get(f"{m.name}_{m.split}")
            if v is None:
                continue
            if v.ndim != 2 or v.shape[0] != sizes.size:
                raise RedrepError(f"{f}: expected {m.name}_{m.split} of shape ({sizes.size}, reps), found {v.shape}")
            values[m.key] = v
        return sizes, values

    def update_json(self, **keys) -> None:
        """Set top-level keys of ``results.json``, atomically and under the folder's lock; the others stay.

        The file is read again under the lock and only ``keys`` change, so keys
        another step added meanwhile stay; a folder replaced since it was read
        (by a new ``redrep analyze``) is refused in one line (:meth:`locked`).
        """
        with self.locked("update results.json") as doc:
            doc.update(keys)
            io.write_json(self.path / JSON_NAME, clean_nan(doc))
        self.doc.update(keys)

    def add_summary(self, summary: dict) -> None:
        """Keep a summary (:meth:`redrep.core.summary.Summary.to_dict`) under ``summaries``, by its criterion.

        The ``summary`` that ``redrep analyze`` stored stays; nothing is
        written when it, or the one kept for this criterion, already is
        this summary.
        """
        key = criterion_key(summary["criterion"])
        summary = clean_nan(summary)
        if summary in (self.doc.get("summary"), (self.doc.get("summaries") or {}).get(key)):
            return
        with self.locked("update results.json") as doc:
            kept = doc.get("summaries") if isinstance(doc.get("summaries"), dict) else {}
            doc["summaries"] = {**kept, key: summary}
            io.write_json(self.path / JSON_NAME, clean_nan(doc))
        self.doc["summaries"] = doc["summaries"]


def criterion_key(criterion: dict) -> str:
    """The key of a summary under ``summaries`` in results.json: its criterion (``summary["criterion"]``).

    E.g. ``"train_tolerance=1,fit_fraction=0.9,r2_kind=heldout,r2_min=0.95"``, or
    ``"train_error_max=0.0,r2_kind=in-sample,r2_min=0.95"`` for the mean criterion.
    """
    if criterion.get("train_error_max") is not None:
        names = ("train_error_max", "r2_kind", "r2_min")
    else:
        names = ("train_tolerance", "fit_fraction", "r2_kind", "r2_min")
    return ",".join(
        f"{k}={criterion[k]!r}" if not isinstance(criterion[k], str) else f"{k}={criterion[k]}" for k in names
    )


def _read_folder(path: Path, *, csv: bool = True) -> tuple:
    """``(doc, csv text or None, identity)`` of a results folder, every file read from one and the same folder.

    The files are opened through a descriptor of the folder, so a new
    analysis swapped in meanwhile (:func:`redrep.storage.io.atomic_dir`) does
    not mix its files with those of the one read; a folder replaced between
    opening it and its files is read again.
    """
    names = (JSON_NAME, CSV_NAME) if csv else (JSON_NAME,)
    for attempt in range(_READ_ATTEMPTS):
        try:
            dfd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except FileNotFoundError:
            raise RedrepError(f"{path}: no such results folder (expected the output of `redrep analyze`)") from None
        except OSError as exc:
            raise RedrepError(f"{path}: cannot open the results folder ({exc.strerror or exc})") from None
        try:
            st = os.fstat(dfd)
            texts = [_read_at(dfd, path, name) for name in names]
            break
        except FileNotFoundError as exc:
            if attempt + 1 < _READ_ATTEMPTS and _replaced(path, st):
                continue  # the folder was swapped (and the old one removed) while it was opened: read the new one
            raise RedrepError(f"{path}: missing result file {exc.filename} (run `redrep analyze` first)") from None
        finally:
            os.close(dfd)
    doc = io.read_json_object(path / JSON_NAME, text=texts[0])
    ident = doc.get("analysis_id") or repr((doc.get("created"), doc.get("timings_s")))
    return doc, texts[1] if csv else None, (st.st_dev, st.st_ino, ident)


#: Reads of a results folder that another process may swap meanwhile, before giving up.
_READ_ATTEMPTS = 5


def _replaced(path: Path, st: os.stat_result) -> bool:
    try:
        now = os.stat(path)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino)


def _read_at(dfd: int, path: Path, name: str) -> str:
    """The text of the file ``name`` in the folder open as ``dfd``; FileNotFoundError (naming it) when absent."""
    try:
        fd = os.open(name, os.O_RDONLY, dir_fd=dfd)
    except FileNotFoundError:
        raise FileNotFoundError(2, "No such file", str(path / name)) from None
    except OSError as exc:
        raise RedrepError(f"{path / name}: could not read it ({exc.strerror or exc})") from None
    try:
        with open(fd, encoding="utf-8", newline="") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise RedrepError(f"{path / name}: could not read it ({exc})") from None


def load_results(path) -> Results:
    """Read a results folder written by :func:`write_results`; one-line errors on missing or corrupt files.

    The table and the document are read from one folder even while ``redrep
    analyze`` swaps a new one in, so they always belong to one analysis.
    """
    path = Path(path)
    if not path.is_dir():
        raise RedrepError(f"{path}: no such results folder (expected the output of `redrep analyze`)")
    csv_path, json_path = path / CSV_NAME, path / JSON_NAME
    missing = [str(p) for p in (csv_path, json_path) if not p.is_file()]
    if missing:
        raise RedrepError(f"{path}: missing result file(s) {', '.join(missing)} (run `redrep analyze` first)")
    doc, text, identity = _read_folder(path)
    rows = csv_to_rows(
        csv_path,
        CSV_COLUMNS,
        lambda r: {
            "metric": r["metric"],
            "split": r["split"],
            "chunk_size": int(r["chunk_size"]),
            "mean": float(r["mean"]),
            "std": float(r["std"]),
            "sem": float(r["sem"]),
            "n": int(r["n"]),
        },
        "numbers in chunk_size, mean, std, sem and n",
        text=text,
    )
    if not rows:
        raise RedrepError(f"{csv_path}: expected result rows, found none")
    return Results(path, rows, doc, identity)


def summarize_folder(folder, criterion=None, **kw) -> tuple:
    """Summarize a results folder and store the summary in its ``results.json``.

    Parameters
    ----------
    folder : a results folder
    criterion, **kw : as for :func:`redrep.core.summary.summarize`

    Returns
    -------
    (Results, ChunkCurves, Summary)
    """
    results = load_results(folder)
    curves = _summary.ChunkCurves.from_results(results)
    summ = _summary.summarize(curves, criterion, **kw)
    results.update_json(summary=summ.to_dict())
    return results, curves, summ
