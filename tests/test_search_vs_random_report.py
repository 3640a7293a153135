"""`benchmarks/search_vs_random.py --report`: statistics of a finished run, clear errors.

The benchmark itself trains for an hour and lives in `benchmarks/`; these
tests cover its reporting path on small hand-made `results.json` files: the
statistics match scipy's, and any file it did not write ends in one line
naming the file instead of a traceback. Costs (#24): a run of today's format
prints each row's OPs and MACs, interpolates the baseline curves at the
searched OPs and writes `accuracy_vs_ops.png`; an older run gets its costs
from its genotype files and baseline widths (or "n/a"); random draws match a
target OPs within the tolerance, reproducibly; the baseline width by OPs is
the nearest one. Nothing is trained.
"""

from __future__ import annotations

import bnas_tf as bn  # first: selects Keras 2 before TensorFlow is imported

# isort: split
import functools
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import cost_matching  # noqa: E402
import plot_accuracy_vs_ops  # noqa: E402
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
    with pytest.raises(SystemExit, match=f"no results.json or progress.json in {tmp_path}"):
        search_vs_random.main(["--report", str(tmp_path)])


def test_report_of_an_unfinished_run_prints_what_it_has_finished(tmp_path, capsys):
    """A run still training (or interrupted): its progress.json gives the finished searches
    and networks, with the same statistics, marked as unfinished."""
    from scipy import stats

    space = bn.SearchSpace.get("lce")
    finished = _results([0.48, 0.482], [0.441, 0.446])
    steps = {}
    for search, seed in zip(finished["searches"], (0, 1), strict=True):
        (tmp_path / f"search_{seed}").mkdir()
        bn.random_genotype(space, rng=seed).save(tmp_path / f"search_{seed}" / "genotype.json")
        steps[f"search {seed}"] = search
    for row in finished["rows"][:4]:  # QuickNet not trained yet
        steps[f"row {row['model']}"] = row
    (tmp_path / "progress.json").write_text(json.dumps(
        {"settings": {"space": "lce", "match": "ops", "tolerance": 0.1}, "steps": steps,
         "seconds": 99.0}))
    assert search_vs_random.main(["--report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert ("UNFINISHED RUN (progress.json): 2 searches and 4 networks finished so far; "
            "the same command continues it") in out
    expected = stats.ttest_ind([0.48, 0.482], [0.441, 0.446], equal_var=False)
    assert f"Welch t = {expected.statistic:.2f}, two-sided p = {expected.pvalue:.3f}" in out
    assert "| random 1 | random |" in out and "hand-designed" not in out
    assert "draws" not in out  # the draws are recorded only when a run finishes
    assert "total 99 s" in out
    assert not (tmp_path / "results.json").exists()
    (tmp_path / "search_1" / "genotype.json").unlink()  # a run folder copied in part
    with pytest.raises(SystemExit, match=r"progress.json is not a progress.json this script "
                                         r"wrote, or its run folder is incomplete \("
                                         r"GenotypeError: Cannot read genotype file"):
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


# --------------------------------------------------------------------------- costs (#24 part 4)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SMALL = {"layers": 2, "channels": 8}  # trained-network size of the draws below


def _cost(ops_m: float, float_m: float = 0.5) -> dict:
    """A `ModelCost.to_dict()` with `ops_m` M OPs, `float_m` M of them float MACs."""
    binary = round((ops_m - float_m) * 1e6 * 64)
    return bn.cost.ModelCost(binary_macs=binary, float_macs=round(float_m * 1e6),
                             binary_params=9000, float_params=1000,
                             memory_bits=9000 + 32_000).to_dict()


def _new_results() -> dict:
    """A results.json of today's format: costs per row, curves, one unmatched random draw."""
    results = _results([0.48, 0.482, 0.487], [0.441, 0.446, 0.46])
    rows = results["rows"]
    for row, ops in zip(rows[:6], (5.0, 6.0, 7.0, 5.5, 6.5, 9.0), strict=True):
        row["cost"] = _cost(ops)
    baseline = rows[6]
    baseline.update(model="quicknet (width 36)", curve="quicknet", width=36, stage2_acc=0.47,
                    cost=_cost(5.8))
    rows += [{**_row(f"{name} (width {w})", "curve", acc), "curve": name, "width": w,
              "cost": _cost(ops)}
             for name, w, ops, acc in (("quicknet", 16, 1.3, 0.40), ("quicknet", 56, 13.0, 0.50),
                                       ("birealnet", 16, 1.4, 0.39),
                                       ("birealnet", 36, 5.9, 0.45))]
    results.update(
        args={"space": "lce", "tolerance": 0.1, "baseline": "quicknet", "layers": 5,
              "channels": 16, "epochs": [2, 2], "train_images": 5000, "test_images": 5000},
        match="ops", match_target=6e6, baseline_width=36,
        random_matches=[{"model": f"random {i}", "target": t * 1e6, "value": v * 1e6,
                         "draws": d, "matched": ok}
                        for i, (t, v, d, ok) in enumerate(((5.0, 5.5, 3, True),
                                                           (6.0, 6.5, 1, True),
                                                           (7.0, 9.0, 2000, False)))])
    return results


def test_report_of_a_new_run_prints_the_costs_and_writes_the_plot(tmp_path, capsys):
    (tmp_path / "results.json").write_text(json.dumps(_new_results()))
    assert search_vs_random.main(["--report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| model | group | OPs (M) | binary MACs (M) | float MACs (M) | params |" in out
    assert "| searched (seed 1) | searched | 6.00 | 352.0 | 0.50 | 1,000 | 900 |" in out
    assert "| birealnet (width 16) | curve | 1.40 |" in out
    assert "random genotypes matched by OPs within ±10% of searched network i's (2004 draws)" \
        in out
    assert "random 2: no draw within ±10% in 2000 draws; took the closest, 9.00 M OPs" in out
    assert "| curve |" not in out.split("| group | n |")[1]  # curves are no statistics group
    # the searched mean, 6 M OPs, lies between quicknet widths 36 (5.8 M) and 56 (13 M)
    share = (np.log(6.0) - np.log(5.8)) / (np.log(13.0) - np.log(5.8))
    expected = 0.47 + share * (0.50 - 0.47)
    assert (f"searched vs quicknet at equal OPs (INTERPOLATED, log-linear in OPs between width "
            f"36: 5.80 M OPs, 0.4700 and width 56: 13.00 M OPs, 0.5000): quicknet at the "
            f"searched mean 6.00 M OPs ≈ {expected:.4f}") in out
    assert "searched mean 6.00 M OPs lies outside birealnet's widths (1.40–5.90 M OPs)" in out
    png = (tmp_path / "accuracy_vs_ops.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 1000
    assert not list(tmp_path.glob(".tmp-*"))  # written atomically, nothing left behind


def test_report_of_an_older_run_computes_costs_from_its_genotype_files(tmp_path, capsys):
    results = _results([0.48, 0.482], [0.441])
    results["args"].update(SMALL, tolerance=0.1)
    space = bn.SearchSpace.get("lce")
    searched, random = bn.random_genotype(space, rng=1), bn.random_genotype(space, rng=2)
    (tmp_path / "search_0").mkdir()
    searched.save(tmp_path / "search_0" / "genotype.json")  # seed 1's genotype is missing
    random.save(tmp_path / "random_0.genotype.json")
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert search_vs_random.main(["--report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name, genotype in (("searched (seed 0)", searched), ("random 0", random)):
        ops = bn.cost.genotype_cost(genotype, **SMALL, binary_weights=True).ops
        assert f"| {name} | {name.split()[0]} | {ops / 1e6:.2f} |" in out
    assert "| searched (seed 1) | searched | n/a | n/a | n/a | 1,000 |" in out
    model = bn.training.binarize_weights(
        bn.baselines.get("quicknet", num_classes=10, input_shape=(32, 32, 3), width=4))
    assert f"| quicknet (width 4) | hand-designed | {bn.cost.model_cost(model).ops / 1e6:.2f} |" \
        in out
    assert "3 costs recomputed from the run's genotype files and baseline widths" in out
    assert "random genotypes matched by parameters within ±10% (a run before --match)" in out
    assert (tmp_path / "accuracy_vs_ops.png").read_bytes().startswith(PNG_MAGIC)


def test_report_of_an_old_run_without_any_cost_plots_nothing(tmp_path, capsys):
    results = _results([0.48, 0.482], [0.441])
    results["rows"] = results["rows"][:-1]  # no baseline either
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert search_vs_random.main(["--report", str(tmp_path)]) == 0
    assert "no row records a cost; nothing plotted" in capsys.readouterr().out
    assert not (tmp_path / "accuracy_vs_ops.png").exists()


def _small_ops(genotype: bn.Genotype) -> float:
    return cost_matching.deployed_cost(genotype, **SMALL).ops


@functools.cache
def _ops_range() -> tuple[float, float]:
    """The cheapest and dearest OPs of the lce space at SMALL, as 200 seeded draws find them."""
    rng = np.random.default_rng(1234)
    ops = [_small_ops(bn.random_genotype(bn.SearchSpace.get("lce"), rng)) for _ in range(200)]
    return min(ops), max(ops)


@settings(deadline=None, derandomize=True, database=None, max_examples=8)
@given(share=st.floats(0, 1), seed=st.integers(0, 2**16))
def test_random_draws_match_any_target_within_the_tolerance_deterministically(share, seed):
    lo, hi = _ops_range()
    target = lo + share * (hi - lo)
    space = bn.SearchSpace.get("lce")

    def draw():
        return search_vs_random.draw_matching(space, target, _small_ops,
                                              np.random.default_rng(seed), tolerance=0.1,
                                              max_draws=300)

    first = draw()
    assert first.matched and 1 <= first.draws <= 300
    assert abs(first.value - target) <= 0.1 * target
    assert first.value == _small_ops(first.genotype)  # the recorded cost is the genotype's
    again = draw()
    assert again.genotype == first.genotype and again.draws == first.draws


def test_random_draws_that_never_match_take_the_closest():
    space, target = bn.SearchSpace.get("lce"), 10 * _ops_range()[1]
    draw = search_vs_random.draw_matching(space, target, _small_ops, np.random.default_rng(3),
                                          tolerance=0.1, max_draws=20)
    assert not draw.matched and draw.draws == 20
    rng = np.random.default_rng(3)
    values = [_small_ops(bn.random_genotype(space, rng)) for _ in range(20)]
    assert draw.value == max(values)  # all are below the target: the dearest is the closest


@SETTINGS
@given(target=st.floats(0, 2e6), offset=st.integers(0, 1000))
def test_the_baseline_width_by_ops_is_the_nearest(target, offset):
    calls = []

    def ops_of(width: int) -> float:  # grows with the width, as a baseline's OPs do
        calls.append(width)
        return 7.0 * width ** 2 + 300.0 * width + offset

    width, value = search_vs_random.nearest_width(ops_of, target)
    best = min(cost_matching.WIDTHS, key=lambda w: (abs(ops_of(w) - target), w))
    assert (width, value) == (best, ops_of(best))
    calls.clear()
    search_vs_random.nearest_width(ops_of, target)
    assert len(set(calls)) <= 2 * 7 + 2  # doubling, then bisection: a few widths built
    assert max(calls) <= max(2 * best + 4, 8) or best == cost_matching.WIDTHS[-1]


def test_curve_widths_are_rounded_multiples_of_four():
    assert cost_matching.curve_widths(36, (0.5, 1, 1.5)) == [20, 36, 56]
    assert cost_matching.curve_widths(4, (0.5, 1, 2)) == [4, 8]


def test_interpolation_is_log_linear_and_never_extrapolates():
    points = [(1e6, 0.40), (4e6, 0.44), (16e6, 0.50)]
    acc, i = plot_accuracy_vs_ops.interpolate_log_linear(points, 8e6)
    assert i == 1 and acc == pytest.approx(0.47)
    assert plot_accuracy_vs_ops.interpolate_log_linear(points, 0.5e6) is None
    assert plot_accuracy_vs_ops.interpolate_log_linear(points, 20e6) is None
