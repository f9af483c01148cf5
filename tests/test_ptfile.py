"""The torch-free .pt reader against torch.load itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from redrep.ptfile import PtFormatError, load_pt
from redrep.repset import _load_pt
from redrep.validation import RedrepError


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
