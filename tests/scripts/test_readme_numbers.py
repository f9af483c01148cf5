"""The README's numbers are generated (scripts/readme_numbers.py), not typed: the README holds the rendering of
docs/readme_numbers.json, and the quick demo's blocks are those of a live `redrep demo --quick` (CPU)."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location("readme_numbers", ROOT / "scripts" / "readme_numbers.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["readme_numbers"] = mod
    spec.loader.exec_module(mod)
    return mod


rn = _module()


def _readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_readme_is_the_rendering_of_its_numbers():
    """Every block of the README equals its rendering from the committed JSON: a hand edit fails here."""
    text, numbers = _readme(), rn.load_numbers()
    keys = [k for k, _, _ in rn.blocks_of(text)]
    assert len(keys) >= 20 and set(keys) <= set(rn.BLOCKS)
    assert set(rn.BLOCKS) <= set(keys), set(rn.BLOCKS) - set(keys)  # every renderer has its place
    assert rn.differences(text, numbers) == []
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_numbers.py"), "--check"], capture_output=True,
                       text=True)  # fmt: skip
    assert (r.returncode, r.stdout) == (0, "")


def test_a_hand_edit_is_found():
    text, numbers = _readme(), rn.load_numbers()
    (key, content, at) = next(b for b in rn.blocks_of(text) if b[0] == "demo-table")
    edited = text[:at] + text[at:].replace(content, content.replace("| 0", "| 9", 1), 1)
    assert edited != text and rn.differences(edited, numbers) == ["demo-table"]
    # and rendering puts it back, leaving everything outside the blocks as it was
    assert rn.render_readme(edited, numbers) == text


def test_the_quick_demo_blocks_come_from_a_live_quick_demo_cpu(tmp_path):
    """`redrep demo --quick` is deterministic: run now, it gives the numbers the README shows (timings aside)."""
    pytest.importorskip("sklearn", reason="parity-digits needs scikit-learn (redrep[train])")
    committed = rn.load_numbers()
    live = copy.deepcopy(committed)
    live["quick"] = rn.run_stage(rn.STAGES["quick"], tmp_path)
    keys = {k for k, b in rn.BLOCKS.items() if b.stages == ("quick",) and not b.timing}
    assert keys == {"quick-config", "quick-table"}
    assert rn.differences(_readme(), live, keys=keys) == []
    # what those blocks are rendered from (the summary and the reading follow the code's wording: not pinned here)
    for part in ("config", "table", "error_inf"):
        assert live["quick"]["data"][part] == committed["quick"]["data"][part], part


def test_timings_are_blocks_of_their_own_and_never_compared():
    timing = {k for k, b in rn.BLOCKS.items() if b.timing}
    assert {"quick-duration", "demo-duration", "demo-timing", "dynamics-timing", "tests-duration"} <= timing
    assert not timing & {"quick-config", "quick-table", "demo-table", "demo-wcstar", "demo-clones"}
    # a timing states its machine and commit
    text = rn.render_block("quick-duration", rn.load_numbers())
    assert "CPU cores" in text and "load average" in text


@pytest.mark.parametrize(
    ("v", "text"),
    [(0.0284, "0.0284"), (0.02, "0.0200"), (6e-6, "6e-6"), (0, "0"), (0.09996, "0.100"), (0.381, "0.381"),
     (None, "n/a"), (0.00417, "0.00417")],
)  # fmt: skip
def test_number_format(v, text):
    assert rn.num(v) == text


def _sweep(widths, chunk_train, **kw):
    table = [{"width": w, "chunk_train_mean": c, "full_test_mean": 0.02, "chunk_test_mean": 0.02,
              "full_train_mean": 0.0} for w, c in zip(widths, chunk_train)]  # fmt: skip
    return {"data": {"table": table, "n_train": 1198, "config": {"seeds": 3, "acc_rep": 100}, **kw}}


def test_chunk_fit_known_answers():
    n = {"demo": _sweep([128, 256, 512, 1024], [0.0022, 6e-6, 0.0, 0.0])}
    # 6e-6 x 1198 training images x 300 chunks = 2.2: two misclassified images in all
    assert rn.demo_chunk_fit(n) == (
        "training error 6e-6 at 256, 2 misclassified training images over 300 chunks, and exactly 0 from 512 on"
    )
    n = {"demo": _sweep([128, 256], [0.01, 0.002])}
    assert rn.demo_chunk_fit(n).startswith("no chunk has training error exactly 0, not even the whole layer")


def test_dynamics_text_known_answer():
    eps = [
        {"epoch": 0, "w_c_star": None, "n_clones": None, "train_error": 0.53},
        {"epoch": 10, "w_c_star": None, "n_clones": None, "train_error": 0.01},
        {"epoch": 20, "w_c_star": 512, "n_clones": 2.0, "train_error": 0.0},
        {"epoch": 50, "w_c_star": 512, "n_clones": 2.0, "train_error": 0.0},
        {"epoch": 100, "w_c_star": 256, "n_clones": 4.0, "train_error": 0.0},
    ]
    text = rn.dynamics_text({"per_epoch": eps, "zero_train_error_epoch": 15})
    assert text == (
        "At initialization (epoch 0, the null baseline of random features) no chunk size meets the criterion, not "
        "even the whole layer (training error 0.530). The network reaches zero training error at epoch 15. From "
        "epoch 20, w_c* = 512, W / w_c* = 2 clones; from epoch 100, w_c* = 256, W / w_c* = 4 clones (to epoch 100)."
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a <!-- numbers:nope -->1<!-- /numbers --> b", "unknown block 'nope'"),
        ("a <!-- numbers:demo-wcstar -->1 b", "without its <!-- /numbers -->"),
        ("a\n<!-- numbers:demo-wcstar -->1<!-- /numbers --> b", "starts a line"),
        ("a\n   <!-- numbers:demo-wcstar -->1<!-- /numbers --> b", "starts a line"),
    ],
)
def test_malformed_blocks_are_refused(text, message):
    with pytest.raises(rn.ReadmeError, match=message):
        rn.render_readme(text, rn.load_numbers())


def test_a_block_without_its_stage_says_which_to_run():
    numbers = {k: v for k, v in rn.load_numbers().items() if k != "dynamics"}
    with pytest.raises(rn.ReadmeError, match=r"block dynamics-reading: no numbers of stage\(s\) dynamics"):
        rn.render_block("dynamics-reading", numbers)


def test_the_numbers_file_is_json_the_script_wrote():
    doc = json.loads((ROOT / "docs" / "readme_numbers.json").read_text())
    for name, record in doc.items():
        assert name in rn.STAGES
        assert set(record) >= {"commands", "seconds", "data"}
        assert record.get("typed") or record["machine"]["cpus"] >= 1
