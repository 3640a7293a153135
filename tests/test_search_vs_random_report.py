"""`benchmarks/search_vs_random.py --report`: statistics of a finished run, clear errors.

The benchmark itself trains for an hour and lives in `benchmarks/`; these
tests cover its reporting path on small hand-made `results.json` files: the
statistics match scipy's, and any file it did not write ends in one line
naming the file instead of a traceback.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import search_vs_random  # noqa: E402

SETTINGS = settings(deadline=None, derandomize=True, database=None, max_examples=40)


def _row(name: str, group: str, accuracy: float) -> dict:
    return {"model": name, "group": group, "params": 1000, "binary_params": 900,
            "stage1_acc": accuracy, "stage2_acc": accuracy, "train_s": 1.0}


def _results(searched: list[float], random: list[float]) -> dict:
    rows = ([_row(f"searched (seed {i})", "searched", a) for i, a in enumerate(searched)]
            + [_row(f"random {i}", "random", a) for i, a in enumerate(random)]
            + [_row("quicknet (width 4)", "hand-designed", 0.3)])
    return {"args": {"space": "lce"}, "rows": rows, "agreement": 0.5,
            "searches": [{"seed": i, "seconds": 1.0, "decided": 0.5, "accuracy": 0.3,
                          "val_accuracy": 0.3} for i in range(len(searched))],
            "search_seconds": 3.0, "train_seconds": 7.0, "total_seconds": 10.0}


def test_report_recomputes_welch_and_the_detectable_difference(tmp_path, capsys):
    from scipy import stats

    searched, random = [0.48, 0.482, 0.487], [0.441, 0.446, 0.46]
    (tmp_path / "results.json").write_text(json.dumps(_results(searched, random)))
    assert search_vs_random.main(["--report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    expected = stats.ttest_ind(searched, random, equal_var=False)
    assert f"Welch t = {expected.statistic:.2f}, two-sided p = {expected.pvalue:.3f}" in out
    # the detectable difference is where Welch's p crosses 0.1 at these spreads
    d = search_vs_random.detectable_difference(searched, random)
    shifted = [a - (sum(searched) / 3 - sum(random) / 3) + d for a in searched]
    assert stats.ttest_ind(shifted, random, equal_var=False).pvalue == pytest.approx(0.1)
    assert "random choice: about 14%" in out  # chance from the lce space: 7 ops besides none


def test_report_without_a_results_file_names_the_folder(tmp_path):
    with pytest.raises(SystemExit, match=f"no results.json in {tmp_path}"):
        search_vs_random.main(["--report", str(tmp_path)])


def test_neither_output_nor_report_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        search_vs_random.main([])
    assert "--output RUN_DIR is required" in capsys.readouterr().err


JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["rows", "searches", "args", "group", "stage2_acc", "seed", "x"]),
        inner, max_size=4),
    max_leaves=12)


@SETTINGS
@given(content=JSON.map(json.dumps) | st.text(max_size=30))
def test_any_foreign_results_file_ends_in_one_line_naming_it(content):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "results.json"
        path.write_text(content)
        try:
            code = search_vs_random.main(["--report", tmp])
        except SystemExit as exit_:
            message = str(exit_.code)
            assert message.startswith(f"error: {path} is not a results.json"), message
            assert "\n" not in message
        else:  # only a file with every field this script writes can be reported
            assert code == 0
