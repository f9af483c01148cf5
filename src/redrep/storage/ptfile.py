"""Read tensors saved by ``torch.save`` without importing torch.

The published representations are ``.pt`` files. In the zip layout that
``torch.save`` writes by default, a tensor is a small pickle (``data.pkl``)
describing each storage (dtype, key, number of elements) plus one uncompressed
archive member per storage. This module maps those members straight into
memory (``numpy.memmap``), so opening a file costs neither a copy nor the
second or so of importing torch. Anything it does not recognise raises
:class:`PtFormatError`, and :func:`redrep.storage.repset` then falls back to
``torch.load``.
"""

from __future__ import annotations

import collections
import math
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

#: torch's legacy storage classes, as named in the pickle, by numpy dtype.
STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class PtFormatError(Exception):
    """The file is not a plain-tensor ``torch.save`` zip this reader understands."""


class PtCorruptError(Exception):
    """The file is in ``torch.save``'s layout but describes an impossible tensor (a crafted or damaged file).

    Not a :class:`PtFormatError`: no other reader should be tried on it.
    """


class _StorageType:
    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


class _Storage:
    def __init__(self, dtype, key, numel):
        self.dtype, self.key, self.numel = np.dtype(dtype), key, numel


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return ("tensor", storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise PtFormatError(f"unsupported object {module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise PtFormatError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise PtFormatError(f"unsupported storage type {storage_type!r}")
        return _Storage(storage_type.dtype, str(key), int(numel))


def _member_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """Byte offset of an uncompressed member's data in the archive file."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise PtFormatError(f"bad local header for {info.filename}")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len


#: The most bytes a tensor (as numpy sees it) can span.
_MAX_BYTES = np.iinfo(np.intp).max


def _check_view(storage: _Storage, offset: int, size: tuple, stride: tuple) -> int:
    """The number of elements of the view, after checking it against its storage (Python ints: no overflow)."""
    if len(size) != len(stride):
        raise PtCorruptError(f"size {size} and stride {stride} differ in length")
    if any(n < 0 for n in size):
        raise PtCorruptError(f"negative size {size}")
    if any(st < 0 for st in stride) or offset < 0:
        raise PtCorruptError(f"negative stride {stride} or offset {offset}")
    numel = math.prod(size)
    if numel * storage.dtype.itemsize > _MAX_BYTES:
        raise PtCorruptError(f"size {size} is too large ({numel} elements)")
    if numel == 0:
        return 0
    last = offset + sum((n - 1) * st for n, st in zip(size, stride))
    if last >= storage.numel:
        raise PtCorruptError(
            f"the view (offset {offset}, size {size}, stride {stride}) reaches outside its storage "
            f"of {storage.numel} elements"
        )
    return numel


def load_pt(path) -> np.ndarray:
    """The tensor of a ``torch.save`` file as a read-only, memory-mapped numpy array.

    Raises
    ------
    PtFormatError
        When the file is not a zip-format ``.pt`` holding one plain tensor of a
        numpy-representable dtype, in little-endian byte order.
    PtCorruptError
        When it is, but its sizes, strides or offset do not fit its storage.
    OSError
        When the file cannot be read.
    """
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise PtFormatError(f"not a zip archive ({exc})") from None
    with zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise PtFormatError("no data.pkl in the archive")
        prefix = pkl[0][: -len("data.pkl")]
        if prefix + "byteorder" in names and zf.read(prefix + "byteorder").strip() != b"little":
            raise PtFormatError("big-endian data")
        try:
            obj = _Unpickler(zf.open(pkl[0])).load()
        except PtFormatError:
            raise
        except Exception as exc:  # a corrupt pickle raises many types
            raise PtFormatError(f"unreadable data.pkl ({type(exc).__name__}: {exc})") from None
        if not (isinstance(obj, tuple) and len(obj) == 5 and obj[0] == "tensor"):
            raise PtFormatError(f"the file holds a {type(obj).__name__}, not a tensor")
        _, storage, offset, size, stride = obj
        if not isinstance(storage, _Storage):
            raise PtFormatError(f"unsupported storage {type(storage).__name__}")
        try:
            info = zf.getinfo(f"{prefix}data/{storage.key}")
        except KeyError:
            raise PtFormatError(f"storage {storage.key} missing from the archive") from None
        if info.compress_type != zipfile.ZIP_STORED:
            raise PtFormatError("compressed storage")
        itemsize = storage.dtype.itemsize
        if info.file_size != storage.numel * itemsize:
            raise PtFormatError(
                f"storage {storage.key} holds {info.file_size} bytes, expected {storage.numel * itemsize}"
            )
        data_offset = _member_offset(path, info)
    numel = _check_view(storage, offset, size, stride)
    if numel == 0:
        return np.zeros(size, dtype=storage.dtype)
    contiguous = tuple(math.prod(size[i + 1 :]) for i in range(len(size)))
    if all(st == c or n == 1 for st, c, n in zip(stride, contiguous, size)):
        return np.memmap(path, dtype=storage.dtype, mode="r", offset=data_offset + offset * itemsize, shape=size)
    flat = np.memmap(path, dtype=storage.dtype, mode="r", offset=data_offset, shape=(storage.numel,))
    return np.lib.stride_tricks.as_strided(
        flat[offset:], shape=size, strides=tuple(s * itemsize for s in stride), writeable=False
    )
