"""Representation sets: the input of every analysis.

A representation set holds the last-hidden-layer features of a trained
classifier on its training and test sets, the labels, and the trained linear
readout (weight ``C x W``, bias ``C``), plus an optional ``error_inf``: the test
error of a large ensemble of networks of the same kind.

Two on-disk layouts are read:

* the *native* layout, a folder of ``.npy`` files and ``meta.json``
  (see :data:`NATIVE_FILES`), opened memory-mapped so that a set larger than
  memory can be analysed;
* the *authors'* layout, the ``.pt`` files of the published WRN-28-8 / CIFAR-10
  representations (see :data:`AUTHORS_FILES`).

Sets are written in the native layout only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.validation import (
    RedrepError,
    check_files_exist,
    check_finite,
    check_float,
    check_labels,
    check_matrix,
    check_vector,
    exception_line,
)
from . import io

FORMAT_NAME = "redrep.representation_set"
FORMAT_VERSION = 1

#: File names of the native layout, by field.
NATIVE_FILES = {
    "features_train": "features_train.npy",
    "features_test": "features_test.npy",
    "labels_train": "labels_train.npy",
    "labels_test": "labels_test.npy",
    "weight": "readout_weight.npy",
    "bias": "readout_bias.npy",
}
NATIVE_META = "meta.json"

AUTHORS_TAG = "wide_resnet28_512_ep200_wd0.0005_label_smoothing0.0_seed12"
#: File names of the authors' published set (their spelling kept), by field.
AUTHORS_FILES = {
    "features_train": f"features_{AUTHORS_TAG}_train.pt",
    "features_test": f"features_{AUTHORS_TAG}_test.pt",
    "labels_train": "cifar10_labels_training_set.pt",
    "labels_test": "cifar10_labels_test_set.pt",
    "weight": f"weights_{AUTHORS_TAG}.pt",
    "bias": f"bias_{AUTHORS_TAG}.pt",
}
#: The ensemble file of the authors' set; element [0] is the ensemble test accuracy.
AUTHORS_ENSEMBLE_FILE = "ensamble_averages_wide_resnet28_512_ep200_wd0.0005_label_smoothing0.0_n20_20_nrep10.npy"
#: Folder below ``--path`` where the authors' scripts keep the set.
AUTHORS_SUBDIR = "download_repr"


@dataclass
class RepresentationSet:
    """Features, labels and trained readout of one network.

    Build it with :meth:`from_arrays`, :meth:`load`, :meth:`load_native` or
    :meth:`load_authors`; construction through these validates every field.

    Attributes
    ----------
    features_train : ndarray of shape (n_train, W)
    features_test : ndarray of shape (n_test, W)
    labels_train : ndarray of shape (n_train,), integer class ids in [0, C)
    labels_test : ndarray of shape (n_test,)
    weight : ndarray of shape (C, W), the readout weight
    bias : ndarray of shape (C,), the readout bias
    error_inf : float or None, the ensemble test error
    meta : dict, free metadata (dataset, arch, epoch, source path...)
    names : dict, what error messages call each field (its file, when loaded from disk)
    """

    features_train: np.ndarray
    features_test: np.ndarray
    labels_train: np.ndarray
    labels_test: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    error_inf: float | None = None
    meta: dict = field(default_factory=dict)
    names: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ shape
    @property
    def width(self) -> int:
        """W, the number of neurons of the layer."""
        return int(self.weight.shape[1])

    @property
    def n_classes(self) -> int:
        return int(self.weight.shape[0])

    @property
    def n_train(self) -> int:
        return int(self.features_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.features_test.shape[0])

    # ---------------------------------------------------------- construction
    @classmethod
    def from_arrays(
        cls,
        features_train,
        features_test,
        labels_train,
        labels_test,
        weight,
        bias,
        error_inf=None,
        meta=None,
        *,
        names=None,
    ) -> RepresentationSet:
        """Validate and wrap arrays (numpy, memory-mapped numpy or torch).

        ``names`` maps field names to what error messages call them (file
        names when loading from disk).

        Finiteness is checked here for in-memory arrays; memory-mapped features
        are checked batch by batch while they are analysed, so that opening a
        large set never reads it whole.
        """
        n = dict(names or {})
        for key in NATIVE_FILES:
            n.setdefault(key, key)
        weight = check_matrix(weight, n["weight"])
        bias = check_vector(bias, n["bias"])
        ftr = check_matrix(features_train, n["features_train"])
        fte = check_matrix(features_test, n["features_test"])
        if weight.shape[1] != ftr.shape[1] and weight.shape[0] == ftr.shape[1]:
            # (W, C) rather than (C, W): the weight is wrong, not the bias or the features
            raise RedrepError(
                f"{n['weight']}: expected the readout weight of shape (C, W) = ({bias.shape[0]}, {ftr.shape[1]}) "
                f"(C classes, one per bias entry; W the features' columns), found shape {weight.shape}: transposed?"
            )
        n_classes, width = weight.shape
        bias = check_vector(bias, n["bias"], length=n_classes)
        if ftr.shape[1] != width:
            raise RedrepError(
                f"{n['features_train']}: expected {width} columns (the readout's width), found shape {ftr.shape}"
            )
        if fte.shape[1] != width:
            raise RedrepError(
                f"{n['features_test']}: expected {width} columns (the readout's width and the "
                f"training features'), found shape {fte.shape}"
            )
        ltr = check_vector(labels_train, n["labels_train"], integer=True)
        lte = check_vector(labels_test, n["labels_test"], integer=True)
        if ltr.shape[0] != ftr.shape[0]:
            raise RedrepError(
                f"{n['labels_train']}: expected {ftr.shape[0]} labels (one per row of "
                f"{n['features_train']}), found {ltr.shape[0]}"
            )
        if lte.shape[0] != fte.shape[0]:
            raise RedrepError(
                f"{n['labels_test']}: expected {fte.shape[0]} labels (one per row of "
                f"{n['features_test']}), found {lte.shape[0]}"
            )
        ltr = np.asarray(ltr, dtype=np.int64)
        lte = np.asarray(lte, dtype=np.int64)
        check_labels(ltr, n_classes, n["labels_train"])
        check_labels(lte, n_classes, n["labels_test"])
        weight = np.asarray(weight, dtype=np.float32)
        bias = np.asarray(bias, dtype=np.float32)
        check_finite(weight, n["weight"])
        check_finite(bias, n["bias"])
        for arr, key in ((ftr, "features_train"), (fte, "features_test")):
            if not _file_backed(arr):  # those are checked block by block as the analysis reads them
                check_finite(arr, n[key])
        error_inf = check_float(error_inf, "error_inf", min_value=0.0, max_value=1.0, allow_none=True)
        return cls(ftr, fte, ltr, lte, weight, bias, error_inf, dict(meta or {}), n)

    @classmethod
    def load(cls, path) -> RepresentationSet:
        """Open a set from ``path``, whichever layout it is in.

        ``path`` may be a native set folder, a folder holding the authors'
        files, or a folder whose ``download_repr/`` holds them.
        """
        path = Path(path)
        if not path.exists():
            raise RedrepError(f"{path}: no such folder (expected a representation set)")
        if not path.is_dir():
            raise RedrepError(f"{path}: expected a folder holding a representation set, found a file")
        if (path / NATIVE_META).exists():
            return cls.load_native(path)
        if (path / AUTHORS_SUBDIR).is_dir():
            return cls.load_authors(path / AUTHORS_SUBDIR)
        if any((path / f).exists() for f in AUTHORS_FILES.values()):
            return cls.load_authors(path)
        if any((path / f).exists() for f in NATIVE_FILES.values()):
            return cls.load_native(path)
        raise RedrepError(
            f"{path}: no representation set found (expected {NATIVE_META} and .npy files, "
            f"the authors' .pt files, or a {AUTHORS_SUBDIR}/ folder holding them)"
        )

    @classmethod
    def load_native(cls, path, *, mmap: bool = True) -> RepresentationSet:
        """Open a native set; features are memory-mapped unless ``mmap=False``."""
        path = Path(path)
        files = {k: path / v for k, v in NATIVE_FILES.items()}
        check_files_exist([*files.values(), path / NATIVE_META], f"representation set {path}")
        meta_doc = _read_meta_doc(path / NATIVE_META)
        arrays = {}
        for key, f in files.items():
            mode = "r" if (mmap and key.startswith("features")) else None
            arrays[key] = _load_npy(f, mmap_mode=mode)
        names = {k: str(v) for k, v in files.items()}
        meta = dict(meta_doc.get("meta", {}))
        meta.setdefault("source", str(path))
        meta.setdefault("layout", "native")
        return cls.from_arrays(**arrays, error_inf=meta_doc.get("error_inf"), meta=meta, names=names)

    @classmethod
    def load_authors(cls, path) -> RepresentationSet:
        """Open the authors' published set (their ``.pt`` files) from ``path``."""
        path = Path(path)
        files = {k: path / v for k, v in AUTHORS_FILES.items()}
        check_files_exist(files.values(), f"authors' representation set in {path}")
        arrays = {k: _load_pt(f) for k, f in files.items()}
        error_inf = None
        ens = path / AUTHORS_ENSEMBLE_FILE
        if ens.is_file():
            error_inf = ensemble_file_error(ens)
        names = {k: str(v) for k, v in files.items()}
        meta = {
            "source": str(path),
            "layout": "authors",
            "dataset": "cifar10",
            "arch": "wide_resnet28",
            "widening_factor": 8,
            "epochs": 200,
            "weight_decay": 5e-4,
            "label_smoothing": 0.0,
            "seed": 12,
        }
        return cls.from_arrays(**arrays, error_inf=error_inf, meta=meta, names=names)

    # ----------------------------------------------------------------- saving
    def save(self, path, *, batch_rows: int = 65536) -> Path:
        """Write the set in the native layout, atomically (a temporary folder, then a rename).

        Over an existing set, files that are not part of the set (such as the
        ``results/`` that ``redrep analyze --repr`` writes there) are kept.

        Features are copied in blocks of ``batch_rows`` rows, so that a
        memory-mapped set can be re-saved without reading it whole.
        """
        path = Path(path)
        owned = {*NATIVE_FILES.values(), NATIVE_META}
        try:
            with io.folder_lock(path, what="save"):
                self._save_into(path, owned, batch_rows)
        except OSError as exc:
            raise io.write_error(exc, path) from None
        return path

    def _save_into(self, path: Path, owned: set, batch_rows: int) -> None:
        # other entries (results/ of `redrep analyze`, say) stay in the folder
        with io.atomic_dir(path, keep=lambda name: name not in owned) as tmp:
            for key in ("features_train", "features_test"):
                _save_blocks(tmp / NATIVE_FILES[key], getattr(self, key), batch_rows)
            for key in ("labels_train", "labels_test", "weight", "bias"):
                np.save(tmp / NATIVE_FILES[key], np.asarray(getattr(self, key)), allow_pickle=False)
            meta_doc = {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "n_train": self.n_train,
                "n_test": self.n_test,
                "width": self.width,
                "n_classes": self.n_classes,
                "error_inf": self.error_inf,
                "meta": {k: v for k, v in self.meta.items() if k not in ("source", "layout")},
            }
            io.write_json(tmp / NATIVE_META, meta_doc)

    def describe(self) -> dict:
        """A JSON-ready summary: sizes, error_inf and metadata."""
        return {
            "n_train": self.n_train,
            "n_test": self.n_test,
            "width": self.width,
            "n_classes": self.n_classes,
            "error_inf": self.error_inf,
            "meta": dict(self.meta),
        }


def update_meta(path, *, error_inf=..., **meta) -> None:
    """Rewrite a native set's ``meta.json`` atomically with new values.

    ``error_inf`` sets the ensemble error; other keywords go into ``meta``.
    """
    path = Path(path)
    f = path / NATIVE_META
    check_files_exist([f], f"representation set {path}")
    doc = _read_meta_doc(f)
    if error_inf is not ...:
        doc["error_inf"] = check_float(error_inf, "error_inf", min_value=0.0, max_value=1.0, allow_none=True)
    doc.setdefault("meta", {}).update(meta)
    io.write_json(f, doc)


def _read_meta_doc(f: Path) -> dict:
    """A set's meta.json, checked: a JSON object whose ``meta`` (if any) is an object too."""
    doc = io.read_json_object(f)
    if doc.get("meta") is None:
        doc["meta"] = {}
    if not isinstance(doc["meta"], dict):
        raise RedrepError(f'{f}: expected "meta" to be a JSON object, found {type(doc["meta"]).__name__}')
    return doc


def ensemble_file_error(path) -> float:
    """error_inf from the authors' ensemble file: 1 - accuracy, accuracy in [0, 1] or in percent."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise RedrepError(f"{path}: expected a .npy array of ensemble accuracies, could not read it ({exc})") from None
    arr = np.ravel(arr)
    if arr.size == 0 or not np.isfinite(arr[0]):
        raise RedrepError(f"{path}: expected a finite ensemble accuracy at [0], found {arr[:1]}")
    acc = float(arr[0])
    if 1.0 < acc <= 100.0:  # stored in percent
        acc /= 100.0
    if not 0.0 <= acc <= 1.0:
        raise RedrepError(f"{path}: expected an ensemble accuracy in [0, 1] or in percent, found {arr[0]}")
    return 1.0 - acc


def _load_npy(path: Path, mmap_mode=None) -> np.ndarray:
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise RedrepError(f"{path}: expected a readable .npy array, could not read it ({exc})") from None


def _load_pt(path: Path) -> np.ndarray:
    """A tensor saved by torch: memory-mapped without torch when possible, else through ``torch.load``."""
    from .ptfile import PtCorruptError, PtFormatError, load_pt

    try:
        return load_pt(path)
    except PtFormatError:
        pass  # another layout (legacy, compressed, bfloat16...): let torch read it
    except PtCorruptError as exc:
        raise RedrepError(f"{path}: expected a torch tensor file, found a damaged one ({exc})") from None
    except OSError as exc:
        raise RedrepError(f"{path}: expected a torch tensor file, could not read it ({exc})") from None
    import torch

    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            # legacy (non-zip) serialisation cannot be memory-mapped
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        reason = f"{type(exc).__name__}: {exception_line(exc)}"
        raise RedrepError(f"{path}: expected a torch tensor file, could not read it ({reason})") from None
    if isinstance(obj, np.ndarray):
        return obj
    if not isinstance(obj, torch.Tensor):
        raise RedrepError(f"{path}: expected a torch tensor, found {type(obj).__name__}")
    if obj.dtype == torch.bfloat16:
        obj = obj.float()
    return obj.detach().cpu().numpy()


def _file_backed(arr) -> bool:
    """Whether ``arr`` is a memory-mapped file or a view of one (``as_strided`` views included)."""
    for _ in range(64):  # a chain of views; the bound only guards against a cycle
        if isinstance(arr, np.memmap):
            return True
        arr = getattr(arr, "base", None)
        if arr is None:
            return False
    return False


def _save_blocks(path: Path, arr: np.ndarray, batch_rows: int) -> None:
    if not isinstance(arr, np.memmap) and type(arr) is np.ndarray:
        np.save(path, arr, allow_pickle=False)
        return
    out = np.lib.format.open_memmap(path, mode="w+", dtype=arr.dtype, shape=arr.shape)
    for start in range(0, arr.shape[0], batch_rows):
        out[start : start + batch_rows] = arr[start : start + batch_rows]
    out.flush()
    del out
