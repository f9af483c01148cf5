import json

from click.testing import CliRunner

from redrep.cli import main
from results_factory import paper_like, write_results_dir


def test_report_default_location_without_plot(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = tmp_path / "run" / "results"
    res.mkdir(parents=True)
    write_results_dir(res, paper_like(width=128, w_star=16, error_inf=0.04), error_inf=0.04)
    r = CliRunner().invoke(main, ["report", "--path", "run"])
    assert r.exit_code == 0, r.output
    html = (res / "report.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in html and "critical chunk size w_c*" in html
    assert "wrote run/results/report.html" in r.output
    kept = json.loads((res / "results.json").read_text())["summaries"]
    assert kept["train_tolerance=1,fit_fraction=0.9,r2_kind=heldout,r2_min=0.95"]["w_c_star"] == 16
    assert not (tmp_path / "plots").exists()  # the report does not need `redrep plot`


def test_report_options(tmp_path):
    write_results_dir(tmp_path, paper_like(width=128, w_star=16, error_inf=0.04), error_inf=0.04)
    out = tmp_path / "x" / "page.html"
    args = ["report", "--results", str(tmp_path), "--out", str(out), "--title", "T<1>", "--train-error-max", "0.3"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    html = out.read_text(encoding="utf-8")
    assert "<title>T&lt;1&gt;</title>" in html
    # training error 0.6 * (1 - log2(w) / 4) + 0.01 is 0.16 at w = 4: allowed by 0.3; R^2 = 1 - 0.5 / w >= 0.95 from 16
    kept = json.loads((tmp_path / "results.json").read_text())["summaries"]
    assert kept["train_error_max=0.3,r2_kind=heldout,r2_min=0.95"]["w_c_star"] == 16
    assert not (tmp_path / "report.html").exists()


def test_report_errors_are_one_line_exit_2(tmp_path):
    r = CliRunner().invoke(main, ["report", "--results", str(tmp_path / "missing")])
    assert r.exit_code == 2 and r.stderr.startswith("Error: ") and "no such results folder" in r.stderr
    write_results_dir(tmp_path, paper_like(width=64, w_star=16))
    (tmp_path / "results.csv").write_text("metric,split\n")
    r = CliRunner().invoke(main, ["report", "--results", str(tmp_path)])
    assert r.exit_code == 2 and "expected the columns metric, split, chunk_size" in r.stderr
    assert r.stderr.count("\n") == 1
    assert not (tmp_path / "report.html").exists()


def test_end_to_end_example_analyze_plot_report(tmp_path):
    runner = CliRunner()
    s = tmp_path / "set"
    assert runner.invoke(main, ["example", "--out", str(s), "--n-train", "600", "--n-test", "300"]).exit_code == 0
    r = runner.invoke(main, ["analyze", "--device", "cpu", "--repr", str(s), "--acc-rep", "5", "--r2-rep", "3", "-q"])
    assert r.exit_code == 0, r.output
    stored = json.loads((s / "results" / "results.json").read_text())["summary"]
    r = runner.invoke(main, ["plot", "--results", str(s / "results"), "--out", str(tmp_path / "plots")])
    assert r.exit_code == 0, r.output
    # plot computes with the code and the criterion of analyze: the same summary, and says it
    assert json.loads((s / "results" / "results.json").read_text())["summary"] == stored
    assert f"w_c* = {stored['w_c_star']} (95 % bootstrap interval" in r.output
    r = runner.invoke(main, ["report", "--results", str(s / "results"), "--train-error-max", "0.1"])
    assert r.exit_code == 0, r.output
    doc = json.loads((s / "results" / "results.json").read_text())
    # analyze's summary (the default criterion) stays; the report's mean criterion is kept beside it
    assert doc["summary"]["criterion"]["mode"] == "fraction"
    key = "train_error_max=0.1,r2_kind=heldout,r2_min=0.95"
    assert list(doc["summaries"]) == [key]
    assert doc["summaries"][key]["criterion"]["train_error_max"] == 0.1
    assert doc["summaries"][key]["criterion"]["mode"] == "mean"
    assert (s / "results" / "report.html").stat().st_size > 20000
