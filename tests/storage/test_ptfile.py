"""The torch-free .pt reader against torch.load itself."""

from __future__ import annotations

import io
import pickle
import zipfile

import numpy as np
import pytest
import torch

from redrep.core.validation import RedrepError
from redrep.storage.ptfile import PtCorruptError, PtFormatError, load_pt
from redrep.storage.repset import _load_pt


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.randn(7, 5),
        lambda: torch.randn(6, 4).t(),  # a transposed (non-contiguous) view
        lambda: torch.arange(40, dtype=torch.float64).reshape(5, 8)[1:4, 2:7],  # offset into a larger storage
        lambda: torch.arange(10),
        lambda: torch.randint(0, 255, (3, 4), dtype=torch.uint8),
        lambda: torch.tensor([True, False]),
        lambda: torch.randn(3).half(),
        lambda: torch.tensor(3.5),  # 0-d
        lambda: torch.zeros(0, 4),
        lambda: torch.arange(6, dtype=torch.int32).reshape(1, 6, 1),
    ],
)
def test_matches_torch_load(tmp_path, make):
    t = make()
    torch.save(t, tmp_path / "t.pt")
    got = load_pt(tmp_path / "t.pt")
    expected = torch.load(tmp_path / "t.pt", weights_only=True).numpy()
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_contiguous_tensors_are_memory_mapped(tmp_path):
    torch.save(torch.randn(100, 8), tmp_path / "t.pt")
    arr = load_pt(tmp_path / "t.pt")
    assert isinstance(arr, np.memmap) and not arr.flags.writeable


@pytest.mark.parametrize(
    "obj, message",
    [
        ({"a": torch.zeros(2)}, "unsupported object|not a tensor"),
        (torch.zeros(2, dtype=torch.bfloat16), "unsupported object torch.BFloat16Storage"),
        ([1, 2], "not a tensor"),
    ],
)
def test_unsupported_content_raises(tmp_path, obj, message):
    torch.save(obj, tmp_path / "t.pt")
    with pytest.raises(PtFormatError, match=message):
        load_pt(tmp_path / "t.pt")


def test_fallback_to_torch(tmp_path):
    """Legacy serialisation and bfloat16 are still read, through torch."""
    t = torch.randn(4, 3)
    torch.save(t, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(PtFormatError):
        load_pt(tmp_path / "legacy.pt")
    np.testing.assert_array_equal(_load_pt(tmp_path / "legacy.pt"), t.numpy())
    torch.save(t.bfloat16(), tmp_path / "bf.pt")
    np.testing.assert_array_equal(_load_pt(tmp_path / "bf.pt"), t.bfloat16().float().numpy())


def test_corrupt_file_is_one_line_error(tmp_path):
    torch.save(torch.randn(50, 4), tmp_path / "t.pt")
    data = (tmp_path / "t.pt").read_bytes()
    (tmp_path / "t.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(RedrepError, match=r"t.pt: expected a torch tensor file, could not read it"):
        _load_pt(tmp_path / "t.pt")


# ------------------------------------------------------------- crafted files
_VIEW_7x5 = b"K\x00K\x07K\x05\x86q\x06K\x05K\x01\x86q\x07"  # offset 0, size (7, 5), stride (5, 1) in data.pkl


def _ints(*values) -> bytes:
    return b"".join(pickle.dumps(v, 2)[2:-1] for v in values)  # ints are never memoized


def crafted(path, offset=0, size=(7, 5), stride=(5, 1)):
    """A torch.save file of a 7 x 5 float tensor whose pickled view says ``offset``, ``size``, ``stride``."""
    buf = io.BytesIO()
    torch.save(torch.randn(7, 5), buf)
    view = _ints(offset) + _ints(*size) + b"\x86q\x06" + _ints(*stride) + b"\x86q\x07"
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                assert data.count(_VIEW_7x5) == 1
                data = data.replace(_VIEW_7x5, view)
            dst.writestr(info.filename, data)
    return path


@pytest.mark.parametrize(
    "kw, why",
    [
        (dict(size=(-7, 5)), r"negative size \(-7, 5\)"),
        (dict(size=(2**40, 2**40), stride=(0, 0)), r"size \(1099511627776, 1099511627776\) is too large"),
        (dict(size=(2**70, 5)), r"is too large"),
        (dict(stride=(-5, 1)), r"negative stride"),
        (dict(offset=-1), r"negative stride \(5, 1\) or offset -1"),
        (dict(offset=2**63), r"reaches outside its storage of 35 elements"),
        (dict(size=(8, 5)), r"reaches outside its storage of 35 elements"),
    ],
)
def test_impossible_views_are_one_line_errors(tmp_path, kw, why):
    f = crafted(tmp_path / "t.pt", **kw)
    with pytest.raises(PtCorruptError, match=why):
        load_pt(f)
    # through the set loader: a RedrepError naming the file, never a traceback nor a fallback to torch.load
    with pytest.raises(RedrepError, match=rf"^{f}: expected a torch tensor file, found a damaged one \("):
        _load_pt(f)


def test_the_crafting_itself_is_faithful(tmp_path):
    f = crafted(tmp_path / "t.pt", size=(5, 7), stride=(1, 5))  # a legal view: the transpose
    np.testing.assert_array_equal(load_pt(f), torch.load(f, weights_only=True).numpy())
