"""The summary of a results folder is the summary of the analysis in memory: chunks.npz, results.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

from redrep.core.analysis import ChunkAnalysis
from redrep.core.summary import ChunkCurves, Criterion, summarize
from redrep.core.validation import RedrepError
from redrep.storage.results import CHUNKS_NAME, Results, load_results, summarize_folder, write_results
from redrep.storage.synthetic import make_clone_set


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    rs = make_clone_set(
        n_train=400, n_test=200, n_latent=4, n_copies=8, n_classes=8, noise=1.0, separation=40.0, random_state=3,
        class_means="axes",
    )  # fmt: skip
    an = ChunkAnalysis(acc_rep=30, r2_rep=8, random_state=5, device="cpu").fit(rs)
    out = tmp_path_factory.mktemp("res") / "results"
    summary = an.summary()
    write_results(an, rs, out, extra={"summary": summary.to_dict()})
    return an, summary, out


def test_chunks_npz_holds_every_chunk(analysed):
    an, _, out = analysed
    sizes, values = load_results(out).chunk_values()
    np.testing.assert_array_equal(sizes, an.chunk_sizes_)
    assert set(values) == set(an.values_)
    for key, v in an.values_.items():
        np.testing.assert_array_equal(values[key], v)
    assert json.loads((out / "results.json").read_text())["files"]["chunks"] == CHUNKS_NAME


def test_the_folder_summary_is_the_summary_in_memory(analysed):
    an, summary, out = analysed
    stored = json.loads((out / "results.json").read_text())["summary"]
    again = summarize(ChunkCurves.from_results(load_results(out)), an.criterion).to_dict()
    assert again == stored == json.loads(json.dumps(summary.to_dict()))
    # the refinement is a fact of the analysis, read back with it
    assert stored["refinement"] == an.refinement_ and an.refinement_ is not None
    assert stored["refinement"]["sizes"] == [w for w in an.chunk_sizes_ if w in an.refinement_["sizes"]]


def test_a_folder_without_chunks_npz_is_summarized_from_its_means(analysed, tmp_path):
    _, summary, out = analysed
    import shutil

    old = tmp_path / "old"
    shutil.copytree(out, old)
    (old / CHUNKS_NAME).unlink()
    results, _, s = summarize_folder(old, Criterion())
    assert s.w_c_star_interval is None and any("no bootstrap interval" in n for n in s.notes)
    assert all(c.fit_fraction_is_bound for c in s.checks)
    # the bound can only move w_c* up
    assert s.w_c_star is None or summary.w_c_star <= s.w_c_star
    assert results.doc["summary"] == json.loads((old / "results.json").read_text())["summary"] == s.to_dict()


def test_a_corrupt_chunks_npz_is_one_line(analysed, tmp_path):
    _, _, out = analysed
    (tmp_path / CHUNKS_NAME).write_bytes(b"not a zip")
    res = Results(tmp_path, [], {})
    with pytest.raises(RedrepError, match=r"chunks.npz: could not read it as a .npz archive"):
        res.chunk_values()
    np.savez(tmp_path / CHUNKS_NAME, chunk_size=np.array([1.0, 2.0]), accuracy_train=np.zeros((3, 4)))
    with pytest.raises(RedrepError, match=r"expected accuracy_train of shape \(2, reps\), found \(3, 4\)"):
        res.chunk_values()
