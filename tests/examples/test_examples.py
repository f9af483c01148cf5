"""The example scripts run as a user runs them (a subprocess, CPU only), and print what a direct computation gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.special import softmax

from redrep.core.analysis import ChunkAnalysis
from redrep.core.summary import ChunkCurves
from redrep.storage.repset import RepresentationSet
from redrep.storage.results import load_results

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run_example(name: str, *args, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, str(EXAMPLES / name), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def test_digits_api_example_cpu(tmp_path):
    """examples/digits_api.py: trains three MLPs, analyses one, prints its summary and writes the figures.

    Its printed summary is checked against what this process computes from the files it left: the ensemble
    error from the three sets' logits, the whole layer's errors from its readout, and the summary of a fresh
    analysis of the same set with the same parameters."""
    pytest.importorskip("sklearn", reason="parity-digits needs scikit-learn (redrep[train])")
    r = _run_example("digits_api.py", "--out", tmp_path, "--width", 256, "--epochs", 40)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    (js,) = [ln for ln in lines if ln.startswith("summary-json: ")]
    printed = json.loads(js.removeprefix("summary-json: "))
    sets = [RepresentationSet.load(tmp_path / "runs" / f"seed{s}" / "representations") for s in range(3)]
    rs = sets[0]

    # error_inf: the test error of the averaged softmax of the three networks' logits
    probs = np.mean([softmax(s.features_test @ s.weight.T + s.bias, axis=1) for s in sets], axis=0)
    assert printed["error_inf"] == pytest.approx(float(np.mean(probs.argmax(1) != rs.labels_test)), abs=1e-12)
    assert f"error_inf: {printed['error_inf']}" in lines

    # the analysis again, in this process, from the set on disk: the same rows, the same summary
    rs.error_inf = printed["error_inf"]
    an = ChunkAnalysis(acc_rep=100, r2_rep=40, random_state=0, device="cpu").fit(rs)
    curves = ChunkCurves.from_analysis(an)
    direct = an.summary().to_dict()
    assert printed == json.loads(json.dumps(direct, sort_keys=True))
    # the whole layer (w_c = W) through the trained readout: its own training and test errors
    logits_tr = rs.features_train @ rs.weight.T + rs.bias
    logits_te = rs.features_test @ rs.weight.T + rs.bias
    assert curves.train_error.mean[-1] == pytest.approx(float(np.mean(logits_tr.argmax(1) != rs.labels_train)))
    assert curves.test_error.mean[-1] == pytest.approx(float(np.mean(logits_te.argmax(1) != rs.labels_test)))
    # a summary that means something: W = 256, a w_c* among the sizes analysed, W / w_c* clones
    assert printed["width"] == 256
    if printed["w_c_star"] is not None:
        assert printed["w_c_star"] in an.chunk_sizes_
        assert printed["n_clones"] == pytest.approx(256 / printed["w_c_star"])

    # the figures and the report page, with the method beside it
    png = tmp_path / "figures" / "digits_api.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 20000
    assert (tmp_path / "results" / "report.html").is_file() and (tmp_path / "results" / "method.html").is_file()
    # the results folder it wrote for the report holds this same analysis
    written = {(r["metric"], r["split"], r["chunk_size"]): r["mean"] for r in load_results(tmp_path / "results").rows}
    mine = {(r["metric"], r["split"], r["chunk_size"]): r["mean"] for r in an.to_rows()}
    assert written.keys() == mine.keys()
    assert all(written[k] == pytest.approx(v, rel=1e-12, nan_ok=True) for k, v in mine.items())
