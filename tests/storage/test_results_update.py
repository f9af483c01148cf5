"""results.json is updated only for the analysis that was read: plot, report and summaries beside `redrep analyze`.

CPU only (device="cpu" analyses, no GPU). The processes are real: a reader that
loaded a folder, then waits, while `redrep analyze` replaces that folder.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

import procs
from redrep.cli import main
from redrep.core.summary import Criterion
from redrep.core.validation import RedrepError
from redrep.storage import io
from redrep.storage import results as results_mod
from redrep.storage.results import CSV_NAME, JSON_NAME, criterion_key, load_results
from repsets import random_set


def analyze(native, out, acc_rep, *extra):
    r = procs.redrep(
        "analyze", "--device", "cpu", "--repr", native, "--out", out, "--acc-rep", acc_rep, "--r2-rep", 2, "-q", *extra
    )
    assert r.returncode == 0, r.stderr
    return json.loads((out / JSON_NAME).read_text())


def consistent(out):
    """Whether results.json and results.csv are of one analysis: the JSON's acc_rep is the CSV's count per chunk."""
    doc = json.loads((out / JSON_NAME).read_text())
    rows = [r for r in load_results(out).rows if r["metric"] == "accuracy" and r["split"] == "test"]
    return all(r["n"] == doc["params"]["acc_rep"] for r in rows), doc


@pytest.fixture
def native(tmp_path):
    random_set(0, width=8, n_train=120, n_test=80).save(tmp_path / "set")
    return tmp_path / "set"


class Reader:
    """A child process that runs ``code`` up to a pause (``pause()``), waits for the test, then finishes."""

    def __init__(self, code: str):
        prelude = "import sys\ndef pause():\n    print('paused', flush=True)\n    sys.stdin.readline()\n"
        self.p = subprocess.Popen(
            [sys.executable, "-c", prelude + code],
            env=procs.env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.p.stdout.readline().strip() == "paused", self.p.stderr.read()

    def finish(self):
        out, err = self.p.communicate("go\n", timeout=120)
        return self.p.returncode, out, err


def test_python_update_after_a_new_analysis_is_refused(native, tmp_path):
    """load_results, then `redrep analyze` into the folder, then update_json: refused, the new analysis kept."""
    out = tmp_path / "res"
    analyze(native, out, 3, "--device", "cpu")
    reader = Reader(
        "from redrep.storage.results import load_results\n"
        f"res = load_results({str(out)!r})\n"
        "pause()\n"
        "res.update_json(note='from the old analysis')\n"
    )
    new = analyze(native, out, 5, "--device", "cpu")
    rc, _, err = reader.finish()
    assert rc != 0 and "RedrepError" in err
    assert f"{out}: replaced by another analysis (created {new['created']}) since it was read" in err
    ok, doc = consistent(out)
    assert ok and doc == new  # byte for byte what analyze wrote: no key of the old document came back


@pytest.mark.parametrize("command", ["plot", "report"])
def test_plot_and_report_beside_analyze_never_mix_two_analyses(native, tmp_path, command):
    """The probe's reproduction, made deterministic: the command reads the folder, analyze replaces it, the
    command goes on (its figure is paused until then). Before the fix: rc 0, acc_rep of the old run beside the
    new run's results.csv."""
    out = tmp_path / "res"
    analyze(native, out, 3, "--device", "cpu")
    reader = Reader(
        "import redrep.cli.plot as p\nfrom redrep.cli import main\n"
        "real = p.load_and_summarize\n"
        "def slow(*a, **k):\n    got = real(*a, **k)\n    pause()\n    return got\n"
        "p.load_and_summarize = slow\n"
        f"main([{command!r}, '--results', {str(out)!r}, '--train-error-max', '0.5', '--out', "
        f"{str(tmp_path / ('figs' if command == 'plot' else 'res/report.html'))!r}])\n"
    )
    new = analyze(native, out, 5, "--device", "cpu")
    rc, _, err = reader.finish()
    assert rc == 2 and err.startswith(f"Error: {out}: replaced by another analysis") and err.count("\n") == 1
    ok, doc = consistent(out)
    assert ok and doc == new
    assert not (out / "report.html").exists() and not (tmp_path / "figs").exists()  # nothing written


def test_plot_and_report_while_analyze_runs(native, tmp_path):
    """While analyze holds the folder: a figure at the stored thresholds is made (nothing to store); a summary at
    other thresholds, or a report inside the folder, stops in one line, results.json untouched."""
    out = tmp_path / "res"
    analyze(native, out, 3, "--device", "cpu")
    before = (out / JSON_NAME).read_bytes()
    with procs.lock_holder(out, what="analyze") as holder:
        r = CliRunner().invoke(main, ["plot", "--results", str(out), "--out", str(tmp_path / "a"), "-q"])
        assert r.exit_code == 0, r.output
        for args in (["plot", "--out", str(tmp_path / "b"), "--r2-min", "0.5"], ["report"]):
            r = CliRunner().invoke(main, [*args, "--results", str(out)])
            assert r.exit_code == 2 and f"locked by another analyze (pid {holder.pid}" in r.stderr
        assert not (tmp_path / "b").exists() and not (out / "report.html").exists()
    assert (out / JSON_NAME).read_bytes() == before


def test_analyze_summary_stays_and_other_thresholds_are_kept_beside_it(native, tmp_path):
    """plot and report no longer rewrite the stored summary with the last thresholds they were given."""
    out = tmp_path / "res"
    doc = analyze(native, out, 3, "--device", "cpu")
    stored = doc["summary"]
    assert stored["criterion"] == {**Criterion().to_dict(), "r2_kind_used": "heldout"}
    # the same as plot computes from the files at those thresholds
    r = CliRunner().invoke(main, ["plot", "--results", str(out), "--out", str(tmp_path / "f"), "--format", "svg"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / JSON_NAME).read_text()) == doc  # nothing new to store
    runner = CliRunner()
    assert runner.invoke(main, ["report", "--results", str(out), "--r2-min", "0.5", "-q"]).exit_code == 0
    args = ["plot", "--results", str(out), "--out", str(tmp_path / "g"), "--r2-min", "0.9"]
    assert runner.invoke(main, args).exit_code == 0
    after = json.loads((out / JSON_NAME).read_text())
    assert after["summary"] == stored
    keys = [criterion_key(Criterion(r2_min=0.5).to_dict()), criterion_key(Criterion(r2_min=0.9).to_dict())]
    assert sorted(after["summaries"]) == keys
    assert keys[0] == "train_tolerance=1,fit_fraction=0.9,r2_kind=heldout,r2_min=0.5"
    assert after["summaries"][keys[0]]["criterion"]["r2_min"] == 0.5
    assert {k: after[k] for k in doc} == doc


def test_update_json_merges_only_its_own_keys(native, tmp_path):
    """Two readers of one analysis: the second update keeps the first's key (it re-reads under the lock)."""
    out = tmp_path / "res"
    analyze(native, out, 3, "--device", "cpu")
    a, b = load_results(out), load_results(out)
    a.update_json(first=1)
    b.update_json(second=2)
    doc = json.loads((out / JSON_NAME).read_text())
    assert doc["first"] == 1 and doc["second"] == 2


def test_load_reads_both_files_from_one_analysis(native, tmp_path, monkeypatch):
    """A new analysis swapped in between the reads of results.json and results.csv does not mix into the table."""
    out = tmp_path / "res"
    analyze(native, out, 3, "--device", "cpu")
    real = io.read_json_object

    def read_then_swap(*args, **kw):
        got = real(*args, **kw)
        monkeypatch.setattr(results_mod.io, "read_json_object", real)
        with io.atomic_dir(out) as tmp:  # what analyze does: a whole new folder, swapped in at once
            (tmp / JSON_NAME).write_text(json.dumps({"params": {"acc_rep": 9}}))
            (tmp / CSV_NAME).write_text("metric,split,chunk_size,mean,std,sem,n\naccuracy,test,8,0.5,0,0,9\n")
        return got

    monkeypatch.setattr(results_mod.io, "read_json_object", read_then_swap)
    res = load_results(out)
    assert res.doc["params"]["acc_rep"] == 3
    assert {r["n"] for r in res.rows if r["metric"] == "accuracy"} == {3}
    with pytest.raises(RedrepError, match=rf"^{out}: replaced by another analysis \(created None\) since it was read"):
        res.update_json(x=1)
