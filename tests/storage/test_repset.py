"""Representation sets: construction, validation, the two on-disk layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from redrep.core.validation import RedrepError
from redrep.storage.repset import (
    AUTHORS_FILES,
    NATIVE_FILES,
    RepresentationSet,
    ensemble_file_error,
    update_meta,
)
from repsets import arrays, random_set, write_authors


def test_from_arrays_accepts_numpy_and_torch():
    a = arrays()
    rs = RepresentationSet.from_arrays(**a)
    rt = RepresentationSet.from_arrays(**{k: torch.from_numpy(np.asarray(v)) for k, v in a.items()})
    assert (rs.width, rs.n_classes, rs.n_train, rs.n_test) == (6, 3, 20, 10)
    np.testing.assert_array_equal(rs.features_train, rt.features_train)
    assert rt.labels_train.dtype == np.int64


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"features_train": np.zeros((20, 5), np.float32)},
            r"features_train.npy: expected 6 columns \(the readout's width\), found shape \(20, 5\)",
        ),
        (
            {"features_test": np.zeros((10, 7), np.float32)},
            r"features_test.npy: expected 6 columns \(the readout's width and the training features'\)",
        ),
        (
            {"labels_train": np.zeros(19, np.int64)},
            r"labels_train.npy: expected 20 labels \(one per row of features_train.npy\), found 19",
        ),
        ({"labels_test": np.zeros(11, np.int64)}, r"labels_test.npy: expected 10 labels"),
        (
            {"labels_train": np.full(20, 3)},
            r"labels_train.npy: expected class ids in \[0, 3\) \(the readout has 3 rows\), found values in \[3, 3\]",
        ),
        (
            {"labels_test": np.full(10, -1)},
            r"labels_test.npy: expected class ids in \[0, 3\).*found values in \[-1, -1\]",
        ),
        ({"labels_train": np.zeros(20, np.float32)}, r"labels_train.npy: expected integer class ids, found shape"),
        ({"bias": np.zeros(4, np.float32)}, r"readout_bias.npy: expected length 3, found shape \(4,\)"),
        ({"weight": np.zeros(6, np.float32)}, r"readout_weight.npy: expected a 2-D array, found shape \(6,\)"),
        # the probe's reproduction: a transposed weight used to be blamed on the bias file
        (
            {"weight": np.zeros((6, 3), np.float32)},
            r"^readout_weight.npy: expected the readout weight of shape \(C, W\) = \(3, 6\) \(C classes, one per bias "
            r"entry; W the features' columns\), found shape \(6, 3\): transposed\?$",
        ),
        ({"features_train": np.zeros((0, 6), np.float32)}, r"features_train.npy: expected a non-empty array"),
        ({"features_test": np.full((10, 6), "a")}, r"features_test.npy: expected a real numeric dtype"),
        ({"features_train": np.zeros((20, 6), np.complex64)}, r"features_train.npy: expected a real numeric dtype"),
        ({"weight": np.full((3, 6), np.inf, np.float32)}, r"readout_weight.npy: expected finite values, found inf"),
    ],
)
def test_validation_errors(change, message):
    a = {**arrays(), **change}
    with pytest.raises(RedrepError, match=message):
        RepresentationSet.from_arrays(**a, names=NATIVE_FILES)


def test_nan_in_memory_features_is_reported():
    a = arrays()
    a["features_test"][3, 2] = np.nan
    with pytest.raises(RedrepError, match=r"features_test: expected finite values, found nan at index \(3, 2\)"):
        RepresentationSet.from_arrays(**a)


def test_error_inf_range():
    with pytest.raises(RedrepError, match=r"error_inf: expected a number <= 1.0, found 3.0"):
        RepresentationSet.from_arrays(**arrays(), error_inf=3.0)


def test_native_round_trip_is_memory_mapped(tmp_path):
    rs = random_set(1)
    rs.meta["dataset"] = "toy"
    rs.save(tmp_path / "s")
    back = RepresentationSet.load(tmp_path / "s")
    assert isinstance(back.features_train, np.memmap) and isinstance(back.features_test, np.memmap)
    for key in NATIVE_FILES:
        np.testing.assert_array_equal(getattr(back, key), getattr(rs, key))
    assert back.error_inf == rs.error_inf and back.meta["dataset"] == "toy"
    doc = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert doc["width"] == rs.width and doc["format_version"] == 1
    # re-saving a memory-mapped set over another folder works block by block
    back.save(tmp_path / "t", batch_rows=7)
    np.testing.assert_array_equal(np.load(tmp_path / "t" / "features_train.npy"), rs.features_train)


def test_save_replaces_existing_set_atomically(tmp_path):
    random_set(1).save(tmp_path / "s")
    rs2 = random_set(2)
    rs2.save(tmp_path / "s")
    np.testing.assert_array_equal(np.load(tmp_path / "s" / "features_test.npy"), rs2.features_test)
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no temporary folder left


def test_saving_over_a_set_keeps_its_results(tmp_path):
    random_set(1).save(tmp_path / "s")
    (tmp_path / "s" / "results").mkdir()
    (tmp_path / "s" / "results" / "results.csv").write_text("kept")
    (tmp_path / "s" / "notes.txt").write_text("mine")
    rs2 = random_set(2)
    rs2.save(tmp_path / "s")
    assert (tmp_path / "s" / "results" / "results.csv").read_text() == "kept"
    assert (tmp_path / "s" / "notes.txt").read_text() == "mine"
    np.testing.assert_array_equal(np.load(tmp_path / "s" / "features_train.npy"), rs2.features_train)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_missing_native_files_are_all_named(tmp_path):
    random_set(1).save(tmp_path / "s")
    (tmp_path / "s" / "labels_test.npy").unlink()
    (tmp_path / "s" / "readout_bias.npy").unlink()
    with pytest.raises(RedrepError, match=r"missing 2 file\(s\): .*labels_test.npy, .*readout_bias.npy"):
        RepresentationSet.load(tmp_path / "s")


def test_corrupt_native_files(tmp_path):
    random_set(1).save(tmp_path / "s")
    (tmp_path / "s" / "meta.json").write_text("{not json")
    with pytest.raises(RedrepError, match=r"meta.json: expected a JSON object, could not parse it"):
        RepresentationSet.load(tmp_path / "s")
    random_set(1).save(tmp_path / "s")
    (tmp_path / "s" / "labels_train.npy").write_bytes(b"garbage")
    with pytest.raises(RedrepError, match=r"labels_train.npy: expected a readable .npy array"):
        RepresentationSet.load(tmp_path / "s")


def test_load_errors_for_wrong_paths(tmp_path):
    with pytest.raises(RedrepError, match=r"nope: no such folder"):
        RepresentationSet.load(tmp_path / "nope")
    (tmp_path / "f").write_text("x")
    with pytest.raises(RedrepError, match=r"expected a folder holding a representation set, found a file"):
        RepresentationSet.load(tmp_path / "f")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RedrepError, match=r"empty: no representation set found"):
        RepresentationSet.load(tmp_path / "empty")


def test_authors_layout(tmp_path):
    a = arrays(width=8, n_classes=10)
    write_authors(tmp_path / "download_repr", a, ensemble_acc=0.963)
    rs = RepresentationSet.load(tmp_path)  # finds download_repr/ below the data folder
    np.testing.assert_array_equal(rs.features_train, a["features_train"])
    np.testing.assert_array_equal(rs.labels_test, a["labels_test"])
    assert rs.error_inf == pytest.approx(0.037)
    assert rs.meta["layout"] == "authors" and rs.meta["arch"] == "wide_resnet28"


def test_authors_layout_missing_and_corrupt_files(tmp_path):
    a = arrays()
    write_authors(tmp_path, a)
    (tmp_path / AUTHORS_FILES["weight"]).unlink()
    (tmp_path / AUTHORS_FILES["labels_test"]).unlink()
    with pytest.raises(RedrepError, match=r"missing 2 file\(s\):.*cifar10_labels_test_set.pt.*weights_wide_resnet28"):
        RepresentationSet.load_authors(tmp_path)
    write_authors(tmp_path, a)
    (tmp_path / AUTHORS_FILES["features_test"]).write_bytes(b"\x00\x01garbage")
    with pytest.raises(RedrepError, match=r"features_wide_resnet28_512.*_test.pt: expected a torch tensor file"):
        RepresentationSet.load_authors(tmp_path)
    torch.save({"not": "a tensor"}, tmp_path / AUTHORS_FILES["features_test"])
    with pytest.raises(RedrepError, match=r"_test.pt: expected a torch tensor, found dict"):
        RepresentationSet.load_authors(tmp_path)


@pytest.mark.parametrize("value, expected", [(0.95, 0.05), (95.0, 0.05), (1.0, 0.0)])
def test_ensemble_file_in_fraction_or_percent(tmp_path, value, expected):
    np.save(tmp_path / "e.npy", np.array([value]))
    assert ensemble_file_error(tmp_path / "e.npy") == pytest.approx(expected)


def test_ensemble_file_errors(tmp_path):
    np.save(tmp_path / "e.npy", np.array([-5.0]))
    with pytest.raises(RedrepError, match=r"e.npy: expected an ensemble accuracy in \[0, 1\] or in percent"):
        ensemble_file_error(tmp_path / "e.npy")
    (tmp_path / "b.npy").write_bytes(b"nope")
    with pytest.raises(RedrepError, match=r"b.npy: expected a .npy array of ensemble accuracies"):
        ensemble_file_error(tmp_path / "b.npy")


def test_update_meta(tmp_path):
    random_set(1).save(tmp_path / "s")
    update_meta(tmp_path / "s", error_inf=0.125, ensemble_runs=["a", "b"])
    rs = RepresentationSet.load(tmp_path / "s")
    assert rs.error_inf == 0.125 and rs.meta["ensemble_runs"] == ["a", "b"]
    with pytest.raises(RedrepError, match=r"error_inf: expected a number >= 0.0, found -0.5"):
        update_meta(tmp_path / "s", error_inf=-0.5)


def test_meta_json_that_is_not_an_object_or_has_null_meta(tmp_path):
    random_set(1).save(tmp_path / "s")
    (tmp_path / "s" / "meta.json").write_text('{"error_inf": null, "meta": null}')
    assert RepresentationSet.load(tmp_path / "s").meta["layout"] == "native"
    (tmp_path / "s" / "meta.json").write_text('{"meta": [1, 2]}')
    with pytest.raises(RedrepError, match=r'meta.json: expected "meta" to be a JSON object, found list'):
        RepresentationSet.load(tmp_path / "s")
    (tmp_path / "s" / "meta.json").write_text("[1]")
    with pytest.raises(RedrepError, match=r"meta.json: expected a JSON object, found a JSON list"):
        RepresentationSet.load(tmp_path / "s")


def test_deeply_nested_meta_json_is_one_line(tmp_path):
    random_set(0, width=4, n_train=20, n_test=10).save(tmp_path / "s")
    meta = tmp_path / "s" / "meta.json"
    meta.write_text('{"meta": ' + "[" * 200000 + "]" * 200000 + "}")
    with pytest.raises(RedrepError, match=rf"^{meta}: expected a JSON object, found JSON nested too deeply to read$"):
        RepresentationSet.load(tmp_path / "s")
