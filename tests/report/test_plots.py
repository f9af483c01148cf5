import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure

from redrep.core.summary import ChunkCurves, Curve
from redrep.core.validation import RedrepError
from redrep.report.figures import (
    DEFAULT_STEM,
    SYMLOG_LINTHRESH,
    check_formats,
    figure_bytes,
    save_figure,
    three_panel_figure,
)
from redrep.storage.results import load_results
from results_factory import paper_like, write_results_dir


def _results(tmp_path, width=512, w_star=64, error_inf=0.04, **kw):
    c = paper_like(width=width, w_star=w_star, error_inf=error_inf)
    write_results_dir(tmp_path, c, error_inf=error_inf, **kw)
    return c, load_results(tmp_path)


def _line(ax, label_part):
    found = [ln for ln in ax.get_lines() if label_part in ln.get_label()]
    assert len(found) == 1, [ln.get_label() for ln in ax.get_lines()]
    return found[0]


def _span_x0(ax):
    spans = [p for p in ax.patches if "w_c^*" in p.get_label()]
    if not spans:
        return None
    (p,) = spans
    return float(p.get_patch_transform().transform(p.get_path().vertices)[:, 0].min())


def test_three_panels_scales_and_points(tmp_path):
    c, res = _results(tmp_path)
    fig = three_panel_figure(res)
    assert isinstance(fig, Figure)
    ax_a, ax_b, ax_c = fig.axes[:3]
    assert [ax.get_title(loc="left") for ax in (ax_a, ax_b, ax_c)] == ["(a)", "(b)", "(c)"]
    # (a): log-log, chunk sizes >= 16 only, test error - error_inf
    assert (ax_a.get_xscale(), ax_a.get_yscale()) == ("log", "log")
    pts = _line(ax_a, "chunks")
    sel = c["sizes"] >= 16
    np.testing.assert_array_equal(pts.get_xdata(), c["sizes"][sel])
    np.testing.assert_allclose(pts.get_ydata(), c["test_err"][sel] - 0.04, rtol=1e-9)
    # not the authors' set: no 0.12 guide of the paper's CIFAR-10 fit, a slope -1/2 through the point at w_c* = 64
    assert not any("guide" in ln.get_label() for ln in ax_a.get_lines())
    guide = _line(ax_a, "slope $-1/2$ (the paper's decay) through $w_c$ = 64")
    y64 = c["test_err"][c["sizes"] == 64][0] - 0.04
    np.testing.assert_allclose(guide.get_ydata(), y64 * (np.asarray(guide.get_xdata()) / 64) ** -0.5)
    fit = _line(ax_a, "fit")
    assert "-0.50" in fit.get_label()
    # right axis of (a) in absolute test error: the secondary axis adds error_inf
    (sec,) = ax_a.child_axes
    assert sec.get_ylabel() == "absolute test error"
    fwd = sec._functions[0]
    assert fwd(0.01) == pytest.approx(0.05)
    # (b): symlog training error, every chunk size
    assert ax_b.get_xscale() == "log" and ax_b.get_yscale() == "symlog"
    assert ax_b.yaxis.get_transform().linthresh == SYMLOG_LINTHRESH
    tr = _line(ax_b, "training error")
    np.testing.assert_allclose(tr.get_ydata(), c["train_err"], atol=1e-15)
    # (c): R^2 on a log x axis, both mean-correlation variants on the twin right axis
    assert ax_c.get_xscale() == "log" and ax_c.get_yscale() == "linear"
    np.testing.assert_allclose(_line(ax_c, "R² (left)").get_ydata(), c["r2"])
    twin = [ax for ax in fig.axes[3:] if ax.get_shared_x_axes().joined(ax, ax_c)]
    assert len(twin) == 1
    assert len(_line(twin[0], "all pairs").get_xdata()) == c["sizes"].size
    # no outside pairs at w_c = W: that point is left out
    assert len(_line(twin[0], "outside chunk").get_xdata()) == c["sizes"].size - 1
    # shaded region w_c >= w_c* on every panel; the bands are there (one per curve)
    for ax in (ax_a, ax_b, ax_c):
        assert _span_x0(ax) == pytest.approx(64)
    assert len(ax_b.collections) == 1 and len(twin[0].collections) == 2
    assert "w_c^* = 64" in fig._suptitle.get_text()


@pytest.mark.parametrize("prefactor", [0.12, 0.3])
def test_the_cifar_guide_is_drawn_for_the_authors_set_only(tmp_path, prefactor):
    """0.12 w_c^(-1/2) is the paper's fit on CIFAR-10: drawn for the authors' set, never on another set."""
    c = paper_like(width=256, w_star=32, error_inf=0.02, prefactor=prefactor)
    write_results_dir(tmp_path / "a", c, error_inf=0.02, meta={"layout": "authors", "dataset": "cifar10"})
    write_results_dir(tmp_path / "p", c, error_inf=0.02, meta={"layout": "native", "dataset": "parity-digits"})
    ax = three_panel_figure(load_results(tmp_path / "a")).axes[0]
    guide = _line(ax, "guide 0.12")
    np.testing.assert_allclose(guide.get_ydata(), 0.12 * np.asarray(guide.get_xdata()) ** -0.5)
    assert not any("slope $-1/2$" in ln.get_label() for ln in ax.get_lines())
    ax = three_panel_figure(load_results(tmp_path / "p")).axes[0]
    assert not any("0.12" in ln.get_label() for ln in ax.get_lines())
    anchored = _line(ax, "through $w_c$ = 32")  # through the data at w_c*: prefactor * 32^(-1/2)
    x = np.asarray(anchored.get_xdata())
    np.testing.assert_allclose(anchored.get_ydata(), prefactor * x**-0.5, rtol=1e-9)
    # the same curves given without their folder: not the authors' set unless said so
    curves = ChunkCurves.from_results(load_results(tmp_path / "a"))
    assert any("guide 0.12" in ln.get_label() for ln in three_panel_figure(curves, authors_set=True).axes[0].lines)
    assert not any("guide" in ln.get_label() for ln in three_panel_figure(curves).axes[0].lines)


def _right_axis_ticks(fig):
    """The labelled ticks of panel (a)'s right axis, in absolute test error, within its view, after drawing."""
    figure_bytes(fig, "png", dpi=30)
    (sec,) = fig.axes[0].child_axes
    lo, hi = sorted(sec.yaxis.get_view_interval())
    return [t for t in sec.yaxis.get_majorticklocs() if lo <= t <= hi], (lo, hi)


def test_right_axis_of_panel_a_has_readable_ticks_over_its_whole_range(tmp_path):
    """The demo's case: error_inf 0.0134, chunk test errors from 0.38 down to 0.0173; the ticks used to be
    0.1 ... 0.5 only, leaving the lower two decades of the left axis without an absolute value."""
    einf = 0.0134
    c = paper_like(width=1024, w_star=256, error_inf=einf, prefactor=1.4, exponent=-0.9)
    write_results_dir(tmp_path, c, error_inf=einf)
    ticks, (lo, hi) = _right_axis_ticks(three_panel_figure(load_results(tmp_path)))
    assert len(ticks) >= 4
    d = np.log10(np.array(ticks) - einf)
    span = np.log10(hi - einf) - np.log10(lo - einf)
    # spread over the whole log range of the excess: a tick in its lowest and in its highest third
    assert d.min() <= np.log10(lo - einf) + span / 3 and d.max() >= np.log10(hi - einf) - span / 3
    # plain decimals, at most 3 significant digits, as labelled
    for t in ticks:
        assert float(f"{t:.3g}") == pytest.approx(t, rel=1e-9), ticks
    assert min(ticks) < 0.05  # the lowest decade gets an absolute value


@pytest.mark.parametrize("einf", [0.0, 0.005, 0.04, 0.3])
def test_offset_log_locator_ticks_lie_in_the_view_and_are_ordered(einf):
    from redrep.report.figures import OffsetLogLocator

    loc = OffsetLogLocator(einf)
    for lo_d, hi_d in ((1e-4, 0.5), (0.01, 0.02), (1e-3, 1e-2)):
        ticks = loc.tick_values(einf + lo_d, einf + hi_d)
        assert ticks == sorted(ticks) and len(ticks) >= 2, (lo_d, hi_d, ticks)
        assert all(einf + lo_d - 1e-12 <= t <= einf + hi_d + 1e-12 for t in ticks), (lo_d, hi_d, ticks)


def test_without_error_inf_plots_absolute_test_error(tmp_path):
    c, res = _results(tmp_path, error_inf=None)
    fig = three_panel_figure(res)
    ax_a = fig.axes[0]
    np.testing.assert_allclose(_line(ax_a, "absolute test error").get_ydata(), c["test_err"][c["sizes"] >= 16])
    assert ax_a.child_axes == []  # no right axis: nothing to add
    assert not any("guide" in ln.get_label() or "fit" in ln.get_label() for ln in ax_a.get_lines())
    assert any("absent" in t.get_text() for t in ax_a.texts)
    assert ax_a.get_ylabel() == "test error"


def test_no_critical_chunk_size_is_stated_and_nothing_shaded(tmp_path):
    c = paper_like()
    c["train_err"] = c["train_err"] + 0.03
    write_results_dir(tmp_path, c, error_inf=0.04)
    fig = three_panel_figure(load_results(tmp_path))
    assert all(_span_x0(ax) is None for ax in fig.axes[:3])
    assert "no critical chunk size" in fig._suptitle.get_text()
    # with a looser threshold the same results do have one
    fig = three_panel_figure(load_results(tmp_path), train_error_max=0.05)
    assert _span_x0(fig.axes[1]) == pytest.approx(64)


def test_points_below_error_inf_are_counted_not_plotted(tmp_path):
    c = paper_like(width=256, w_star=32, error_inf=0.04)
    c["test_err"][-1] = 0.039  # the full layer beats the ensemble
    write_results_dir(tmp_path, c, error_inf=0.04)
    fig = three_panel_figure(load_results(tmp_path))
    ax_a = fig.axes[0]
    assert len(_line(ax_a, "chunks").get_xdata()) == int((c["sizes"] >= 16).sum()) - 1
    assert any("1 point(s) at or below" in t.get_text() for t in ax_a.texts)


def test_figure_from_plain_arrays():
    w = np.array([1, 2, 4, 8, 16, 32, 64])
    curves = ChunkCurves(
        train_error=Curve.from_arrays(w, np.maximum(0, 0.3 - 0.1 * np.log2(w))),
        test_error=Curve.from_arrays(w, 0.1 + 0.2 / np.sqrt(w), 0.01 * np.ones(w.size)),
        r2=Curve.from_arrays(w, 1 - 0.3 / w),
        mean_corr=Curve.from_arrays(w, 0.1 / w),
        error_inf=0.1,
    )
    fig = three_panel_figure(curves, min_chunk_size=4, title="toy")
    assert fig._suptitle.get_text() == "toy"
    assert list(_line(fig.axes[0], "chunks").get_xdata()) == [4, 8, 16, 32, 64]
    assert curves.width == 64  # the largest chunk when the width is not given
    # training error 0 from w_c = 8 on, where R^2 = 1 - 0.3 / 8 = 0.9625 >= 0.95
    assert _span_x0(fig.axes[1]) == pytest.approx(8)


def test_save_figure_writes_every_format(tmp_path):
    _, res = _results(tmp_path / "res")
    fig = three_panel_figure(res)
    paths = save_figure(fig, tmp_path / "plots", formats="png,pdf,svg")
    assert [p.name for p in paths] == [f"{DEFAULT_STEM}.{e}" for e in ("png", "pdf", "svg")]
    heads = {p.suffix: p.read_bytes()[:200] for p in paths}
    assert heads[".png"].startswith(b"\x89PNG") and heads[".pdf"].startswith(b"%PDF")
    assert b"<svg" in heads[".svg"] or heads[".svg"].startswith(b"<?xml")
    assert all(p.stat().st_size > 5000 for p in paths)
    assert sorted(x.name for x in (tmp_path / "plots").iterdir()) == sorted(p.name for p in paths)  # no temp files
    # without dates in the metadata and with fixed ids, the vector formats are reproducible
    for fmt in ("svg", "pdf"):
        assert figure_bytes(three_panel_figure(res), fmt) == figure_bytes(three_panel_figure(res), fmt)


def test_save_figure_bad_format_leaves_existing_files(tmp_path):
    fig = Figure()
    fig.subplots()
    old = tmp_path / f"{DEFAULT_STEM}.png"
    old.write_bytes(b"old")
    with pytest.raises(RedrepError, match=r"^formats: expected a comma-separated list of png, pdf, svg"):
        save_figure(fig, tmp_path, formats="png,jpg")
    assert old.read_bytes() == b"old"
    with pytest.raises(RedrepError, match="^stem: expected a file name"):
        save_figure(fig, tmp_path, stem="a/b")
    assert sorted(x.name for x in tmp_path.iterdir()) == [old.name]


def test_check_formats():
    assert check_formats("PNG, .svg,png") == ("png", "svg")
    assert check_formats(["pdf"]) == ("pdf",)
    for bad in ("", "gif", ",,"):
        with pytest.raises(RedrepError, match="^formats: expected"):
            check_formats(bad)
    with pytest.raises(RedrepError, match="^--format: expected"):
        check_formats("gif", name="--format")


def test_plots_module_stays_headless():
    # building and saving a figure must not pull in pyplot (no GUI backend, no global state)
    code = (
        "import sys, numpy as np\n"
        "from redrep.report.figures import three_panel_figure, figure_bytes\n"
        "from redrep.core.summary import ChunkCurves, Curve\n"
        "w = np.array([16, 32, 64]); c = Curve.from_arrays(w, [0.2, 0.1, 0.0])\n"
        "fig = three_panel_figure(ChunkCurves(c, c, Curve.from_arrays(w, [0.9, 0.96, 1]), c))\n"
        "assert figure_bytes(fig, 'png').startswith(b'\\x89PNG')\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
    )
    env = {"PYTHONPATH": ":".join(sys.path), "MPLBACKEND": "TkAgg", "DISPLAY": ""}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
