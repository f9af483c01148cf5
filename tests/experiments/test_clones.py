"""Clones across widths: clones.csv against the per-run summaries it comes from, the growth fit, the figure."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from redrep.core.summary import ChunkCurves, Criterion, summarize
from redrep.core.validation import RedrepError
from redrep.experiments.clones import (
    CLONES_COLUMNS,
    CloneConfig,
    RunSet,
    analyse_runs,
    analyse_sweep,
    clone_growth,
    clones_figure,
    clones_reading,
    find_runs,
    read_clones_csv,
    write_clones_csv,
)
from redrep.storage.results import load_results
from redrep.storage.synthetic import make_clone_set
from results_factory import clone_rows


def _fake_sweep(root, widths=(8, 16, 32), seeds=(0, 1), n_latent=4):
    """A sweep folder whose runs are synthetic clone sets: W / n_latent copies of n_latent directions."""
    for w in widths:
        for s in seeds:
            rs = make_clone_set(
                n_train=240, n_test=160, n_latent=n_latent, n_copies=w // n_latent, n_classes=3, noise=0.15,
                separation=6.0, random_state=100 * w + s,
            )  # fmt: skip
            rs.save(root / "runs" / f"w{w:05d}_s{s}" / "representations")
    return root


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = _fake_sweep(tmp_path_factory.mktemp("clones"))
    res = analyse_sweep(root, config=CloneConfig(acc_rep=6, r2_rep=4, device="cpu"), error_inf=0.01, progress=False)
    return root, res


def test_clones_csv_agrees_with_the_per_run_summaries(swept):
    root, res = swept
    rows = read_clones_csv(root / "clones.csv")
    assert [(r["width"], r["seed"]) for r in rows] == [(w, s) for w in (8, 16, 32) for s in (0, 1)]
    for row in rows:
        results = load_results(root / "clones" / f"w{row['width']:05d}_s{row['seed']}")
        summ = results.doc["summary"]
        # the stored summary is the one summarize() gives on the stored curves
        assert summarize(ChunkCurves.from_results(results)).to_dict() == summ
        assert row["wc_star"] == summ["w_c_star"]
        for k, key in (("clones", "n_clones"), ("exponent", "exponent"), ("exponent_se", "exponent_se")):
            assert (row[k] is None and summ[key] is None) or row[k] == pytest.approx(summ[key], rel=1e-15)
        assert (
            results.doc["params"]["chunk_sizes"] == [row["width"] >> i for i in range(row["width"].bit_length())][::-1]
        )
        assert results.error_inf == 0.01
    # the clone structure is known: a chunk needs one copy of each of the 4 directions, so w_c* >= 4
    defined = [r for r in rows if r["wc_star"] is not None]
    assert len(defined) >= 4
    assert all(4 <= r["wc_star"] <= r["width"] and r["clones"] == r["width"] / r["wc_star"] for r in defined)
    assert (root / "figures" / "clones.png").stat().st_size > 0


def test_the_same_seed_gives_the_same_rows(swept, tmp_path):
    root, res = swept
    runs = [r for r in find_runs(root) if r.width == 16]
    again = analyse_runs(runs, tmp_path, config=CloneConfig(acc_rep=6, r2_rep=4, device="cpu"), error_inf=0.01)
    first = [r for r in res.rows if r["width"] == 16]
    assert [{k: r[k] for k in CLONES_COLUMNS} for r in again] == [{k: r[k] for k in CLONES_COLUMNS} for r in first]


def test_narrow_networks_take_their_own_repetitions(swept, tmp_path):
    root, _ = swept
    cfg = CloneConfig(acc_rep=6, r2_rep=4, narrow_below=16, narrow_acc_rep=2, narrow_r2_rep=3, device="cpu")
    analyse_runs([r for r in find_runs(root) if r.seed == 0 and r.width <= 16], tmp_path, config=cfg, progress=False)
    p8 = json.loads((tmp_path / "w00008_s0" / "results.json").read_text())["params"]
    p16 = json.loads((tmp_path / "w00016_s0" / "results.json").read_text())["params"]
    assert (p8["acc_rep"], p8["r2_rep"], p16["acc_rep"], p16["r2_rep"]) == (2, 3, 6, 4)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(acc_rep=0), "acc_rep: expected an integer >= 1"),
        (dict(narrow_acc_rep=3), "narrow_acc_rep: given without narrow_below"),
        (dict(criterion=Criterion(r2_min=2.0)), "r2_min: expected a number <= 1.0"),
        (dict(criterion={"r2_min": 0.9}), "criterion: expected a redrep.core.summary.Criterion, found dict"),
        (dict(refine=-1), "refine: expected an integer >= 0"),
    ],
)
def test_bad_clone_configs(kw, message):
    with pytest.raises(RedrepError, match=message):
        CloneConfig(**kw).validated()


def test_bad_folders_and_sets(tmp_path):
    with pytest.raises(RedrepError, match="expected a redrep sweep folder with runs/"):
        find_runs(tmp_path)
    (tmp_path / "runs" / "w00008_s0").mkdir(parents=True)
    with pytest.raises(RedrepError, match="expected extracted runs"):
        find_runs(tmp_path)
    make_clone_set(n_train=50, n_test=20, n_latent=2, n_copies=4).save(tmp_path / "set")
    with pytest.raises(RedrepError, match="expected a layer of width 16 .* found 8"):
        analyse_runs(
            [RunSet(16, 0, tmp_path / "set", "w00016_s0")],
            tmp_path / "out",
            config=CloneConfig(device="cpu"),
            progress=False,
        )


def test_csv_round_trip_keeps_undefined_values(tmp_path):
    rows = [
        dict(width=16, seed=0, wc_star=None, clones=None, exponent=None, exponent_se=None),
        dict(width=32, seed=1, wc_star=8, clones=4.0, exponent=-0.41, exponent_se=0.1 / 3),
    ]
    write_clones_csv(rows, tmp_path / "clones.csv")
    assert (tmp_path / "clones.csv").read_text().splitlines()[1] == "16,0,nan,nan,nan,nan"
    assert read_clones_csv(tmp_path / "clones.csv") == rows
    (tmp_path / "bad.csv").write_text("width,seed\n1,2\n")
    with pytest.raises(RedrepError, match="expected the columns width, seed, wc_star"):
        read_clones_csv(tmp_path / "bad.csv")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_growth_slope_against_a_direct_fit(seed):
    rng = np.random.default_rng(seed)
    ws = [16, 32, 64, 128, 256, 512]
    wc = {16: [None, 16], 32: [16, None]} | {w: list(rng.choice([8, 16, 32], size=3)) for w in ws[2:]}
    g = clone_growth(clone_rows(wc))
    assert g.onset == 64
    x = np.log(ws[2:])
    y = np.log([np.mean([w / v for v in wc[w]]) for w in ws[2:]])
    slope, intercept = np.polyfit(x, y, 1)
    se = math.sqrt(np.sum((y - intercept - slope * x) ** 2) / (len(x) - 2) / np.sum((x - x.mean()) ** 2))
    assert g.slope == pytest.approx(slope, rel=1e-10) and g.slope_se == pytest.approx(se, rel=1e-10)
    assert g.fit_widths == tuple(ws[2:])


def test_reading_known_answers():
    fixed = clone_growth(clone_rows({w: [16, 16] for w in (32, 64, 128, 256)}))
    assert fixed.slope == pytest.approx(1.0) and fixed.linear
    text = " ".join(clones_reading(clone_rows({w: [16, 16] for w in (32, 64, 128, 256)})))
    assert "From W = 32 on" in text and "consistent with the linear growth" in text
    flat = " ".join(clones_reading(clone_rows({w: [w // 4, w // 4, w // 4 + 1] for w in (32, 64, 128, 256)})))
    assert "slower than linear" in flat
    none = clones_reading(clone_rows({16: [None], 32: [32], 64: [None]}))
    assert "At W = 16, 64 no chunk size" in none[0] and none[-1].startswith("Clones across widths: not shown")
    one = clones_reading(clone_rows({16: [16], 32: [8, 32], 64: [16, 16]}))
    assert "Only W = 64 is redundant" in one[-1]
    two = clones_reading(clone_rows({16: [16], 32: [8, 8], 64: [8, 8]}))
    assert "two widths give no uncertainty" in two[-1] and "W^1.00" in two[-1] and "about as fast as" in two[-1]
    three = clones_reading(clone_rows({16: [16], 32: [8, 8], 64: [16, 8]}))
    assert "W^0.58" in three[-1] and "slower than the linear growth" in three[-1]


def test_figure_shows_the_rows():
    rows = clone_rows({16: [None, 16], 32: [16, 8], 64: [16, 16]})
    fig = clones_figure(rows)
    ax_a, ax_b = fig.axes[:2]
    pts_a = np.vstack([c.get_offsets() for c in ax_a.collections])
    pts_b = np.vstack([c.get_offsets() for c in ax_b.collections])
    defined = [r for r in rows if r["wc_star"] is not None]
    assert sorted(map(tuple, pts_a.tolist())) == sorted((r["width"], r["wc_star"]) for r in defined)
    assert sorted(map(tuple, pts_b.tolist())) == sorted((r["width"], r["clones"]) for r in defined)
    assert ax_a.get_xscale() == ax_b.get_yscale() == "log"
    assert any("no $w_c^*$ at W = 16" in t.get_text() for t in ax_a.texts)
