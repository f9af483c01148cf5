import json

import pytest
from click.testing import CliRunner

from redrep.cli import main
from results_factory import paper_like, write_results_dir


def _write(path, **kw):
    path.mkdir(parents=True, exist_ok=True)
    kw.setdefault("error_inf", 0.04)
    write_results_dir(path, paper_like(width=256, w_star=32, error_inf=kw["error_inf"]), **kw)
    return path


def test_plot_from_results_dir_all_formats(tmp_path):
    res = _write(tmp_path / "res", meta={"layout": "authors", "dataset": "cifar10"})
    before = json.loads((res / "results.json").read_text())
    out = tmp_path / "figs"
    r = CliRunner().invoke(
        main, ["plot", "--results", str(res), "--out", str(out), "--format", "png,pdf,svg", "--dpi", "40"]
    )
    assert r.exit_code == 0, r.output
    for ext in ("png", "pdf", "svg"):
        f = out / f"cifar10_wr28_plots.{ext}"
        assert f.stat().st_size > 3000
        assert f"wrote {f}" in r.output
    assert "w_c* = 32" in r.output and "exponent above w_c* = -0.500" in r.output
    after = json.loads((res / "results.json").read_text())
    # existing keys untouched; a folder without analyze's summary (an older one) gets this one, by its thresholds
    assert {k: after[k] for k in before} == before
    assert list(after["summaries"]) == ["train_tolerance=1,fit_fraction=0.9,r2_kind=heldout,r2_min=0.95"]
    s = after["summaries"]["train_tolerance=1,fit_fraction=0.9,r2_kind=heldout,r2_min=0.95"]
    assert s["w_c_star"] == 32 and s["n_clones"] == 8.0 and s["width"] == 256
    assert s["exponent"] == pytest.approx(-0.5) and s["exponent_se"] == pytest.approx(0.0, abs=1e-7)
    # the default criterion; these results have neither held-out R² nor values per chunk, and say so
    assert s["criterion"]["mode"] == "fraction" and s["criterion"]["r2_kind_used"] == "in-sample"
    assert "criterion: at least 90 % of random chunks misclassify at most 1 training sample" in r.output
    assert "note: held-out R² is absent from these results" in r.output


def test_plot_default_paths_and_thresholds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "data" / "results", error_inf=None, meta={"layout": "authors"})
    r = CliRunner().invoke(main, ["plot", "--r2-min", "0.999", "-q", "--dpi", "40"])
    assert r.exit_code == 0, r.output
    assert r.output == ""
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "cifar10_wr28_plots.pdf",
        "cifar10_wr28_plots.png",
    ]
    s = json.loads((tmp_path / "data" / "results" / "results.json").read_text())["summaries"][
        "train_tolerance=1,fit_fraction=0.9,r2_kind=heldout,r2_min=0.999"
    ]
    # R^2 = 1 - 0.5 / w reaches 0.999 only at w = 500 and above
    assert s["w_c_star"] is None and s["criterion"]["r2_min"] == 0.999
    assert s["exponent"] is None
    _write(tmp_path / "other" / "results")
    r = CliRunner().invoke(main, ["plot", "--path", "other", "--out", "o", "--format", "svg", "--name", "fig"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "fig.svg").is_file()


@pytest.mark.parametrize(
    ("meta", "stem"),
    [
        ({"layout": "authors", "dataset": "cifar10", "arch": "wide_resnet28"}, "cifar10_wr28_plots"),
        ({"layout": "native", "dataset": "parity-digits", "arch": "mlp"}, "parity-digits_mlp_w256_plots"),
        ({"dataset": "synthetic-clones"}, "synthetic-clones_w256_plots"),
        ({}, "my set_plots"),
    ],
)
def test_plot_names_the_figure_after_the_set(tmp_path, meta, stem):
    """The authors' set keeps the authors' file name; any other set gets its own, not cifar10_wr28_plots."""
    res = _write(tmp_path / "my set" / "results", meta=meta)
    r = CliRunner().invoke(main, ["plot", "--results", str(res), "--out", str(tmp_path / "p"), "--format", "svg"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [f"{stem.replace(' ', '-')}.svg"]


def test_plot_says_when_no_critical_chunk_size(tmp_path):
    c = paper_like(width=64, w_star=16)
    c["train_err"] = c["train_err"] + 0.01
    write_results_dir(tmp_path, c, error_inf=0.04)
    r = CliRunner().invoke(main, ["plot", "--results", str(tmp_path), "--out", str(tmp_path / "p"), "--dpi", "40"])
    assert r.exit_code == 0, r.output
    assert "w_c*: none" in r.output and "no chunk size meets the criterion" in r.output


@pytest.mark.parametrize(
    "setup, args, message",
    [
        ("none", [], "no such results folder"),
        ("no_csv", [], "missing result file(s)"),
        ("bad_json", [], "expected a JSON object, could not parse it"),
        ("bad_csv", [], "expected numbers in chunk_size"),
        ("no_r2", [], "expected rows for metric 'r2'"),
        ("ok", ["--format", "png,gif"], "--format: expected a comma-separated list of png, pdf, svg"),
        ("ok", ["--r2-min", "2"], "--r2-min: expected a number <= 1.0"),
        ("ok", ["--train-error-max", "-1"], "--train-error-max: expected a number >= 0.0"),
        ("ok", ["--train-tolerance", "-1"], "--train-tolerance: expected an integer >= 0, found -1"),
        ("ok", ["--fit-fraction", "0"], "--fit-fraction: expected a fraction in (0, 1], found 0.0"),
        ("ok", ["--min-chunk-size", "nan"], "--min-chunk-size: expected a finite number, found nan"),
        ("ok", ["--min-chunk-size", "inf"], "--min-chunk-size: expected a finite number, found inf"),
        ("ok", ["--min-chunk-size", "-2"], "--min-chunk-size: expected a number >= 0.0"),
        ("ok", ["--r2-min", "nan"], "--r2-min: expected a finite number, found nan"),
        ("ok", ["--train-error-max", "-inf"], "--train-error-max: expected a finite number, found -inf"),
        ("ok", ["--name", "a/b"], "--name: expected a file name without folder"),
    ],
)
def test_plot_errors_are_one_line_exit_2(tmp_path, setup, args, message):
    res = tmp_path / "res"
    if setup != "none":
        _write(res, drop=("r2",) if setup == "no_r2" else ())
    if setup == "no_csv":
        (res / "results.csv").unlink()
    elif setup == "bad_json":
        (res / "results.json").write_text("{not json")
    elif setup == "bad_csv":
        lines = (res / "results.csv").read_text().splitlines()
        lines[3] = "accuracy,train,4,zero,0,0,20"
        (res / "results.csv").write_text("\n".join(lines) + "\n")
    before = (res / "results.json").read_text() if (res / "results.json").exists() else None
    r = CliRunner().invoke(main, ["plot", "--results", str(res), "--out", str(tmp_path / "plots"), *args])
    assert r.exit_code == 2
    assert r.stderr.startswith("Error: ") and message in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "plots").exists()
    if before is not None:
        assert (res / "results.json").read_text() == before


def test_plot_quiet_prints_nothing_even_without_a_labelled_curve(tmp_path):
    """The probe's reproduction: `plot -q` printed matplotlib's "No artists with labels" warning for a panel whose
    every point is hidden (a width-2 layer, no error_inf, test error 0, no correlations)."""
    import procs

    c = paper_like(width=2, w_star=2, error_inf=None, prefactor=0.0)
    write_results_dir(tmp_path / "res", c, error_inf=None, drop=("mean_corr", "mean_corr_outside"))
    args = ["--results", tmp_path / "res", "--out", tmp_path / "p", "--format", "svg", "--min-chunk-size", "1"]
    r = procs.redrep("plot", *args, "-q")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert (tmp_path / "p" / "res_plots.svg").stat().st_size > 3000  # named after the set's folder
