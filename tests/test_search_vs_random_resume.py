"""`benchmarks/search_vs_random.py` continues an interrupted run (`progress.json`).

The benchmark takes hours; a run killed half-way must not start over. The
bookkeeping is tested with stand-ins for the search and the training (a fake
`run_search` writing a random genotype, a fake `train_once` returning a row),
so nothing heavy runs: an interrupted run started again runs only the steps
that had not finished and ends with the same results as an uninterrupted one;
other settings stop it naming them. One real test checks what makes rows
independent of their order: `train_once` gives a network the same accuracy
whatever was trained before it in the process.
"""

from __future__ import annotations

import bnas_tf as bn  # first: selects Keras 2 before TensorFlow is imported

# isort: split
import argparse
import json
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnas_tf.search_run import SearchResult

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import run_progress  # noqa: E402
import search_vs_random  # noqa: E402

TINY = ["--train-images", "64", "--test-images", "32", "--searches", "2", "--randoms", "2",
        "--search-layers", "2", "--search-channels", "8", "--layers", "2", "--channels", "8",
        "--epochs", "1,1", "--curves", "quicknet", "--curve-widths", "0.5,1"]


class StandIns:
    """Fake search and training recording their calls; `interrupt_at` raises Ctrl-C."""

    def __init__(self, monkeypatch, *, interrupt_search: int | None = None,
                 interrupt_train: int | None = None):
        self.searches, self.trained = [], []
        self.interrupt_search, self.interrupt_train = interrupt_search, interrupt_train
        data = bn.data.synthetic(64, 32, seed=0)
        monkeypatch.setattr(search_vs_random.bn.data, "load", lambda *a, **k: data)
        monkeypatch.setattr(search_vs_random, "run_search", self.run_search)
        monkeypatch.setattr(search_vs_random, "train_once", self.train_once)

    def run_search(self, config, output_dir, *, resume=False, verbose=2):
        self.searches.append((config.seed, resume))
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.json").write_text("{}")
        if self.interrupt_search == len(self.searches):
            raise KeyboardInterrupt
        genotype = bn.random_genotype(bn.SearchSpace.get(config.space), config.seed)
        genotype.save(output_dir / "genotype.json")
        logs = {"decided": 0.5, "margin": 0.1, "entropy": 0.9, "accuracy": 0.3,
                "val_accuracy": 0.25 + config.seed / 100}
        return SearchResult(genotype, {"epochs": [{"logs": logs}]}, output_dir, 1.0)

    def train_once(self, name, group, build, kernel_quantizer, cost, data, test_ds, args,
                   **extra):
        self.trained.append(name)
        if self.interrupt_train == len(self.trained):
            raise KeyboardInterrupt
        accuracy = 0.3 + (sum(map(ord, name)) % 17) / 100  # a fixed number per network
        return {"model": name, "group": group, **extra, "params": 100, "binary_params": 90,
                "cost": cost.to_dict(), "train_s": 1.0, "stage1_acc": accuracy,
                "stage2_acc": accuracy}


def _rows(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "results.json").read_text())["rows"]


def test_an_interrupted_run_trains_only_what_is_left_and_ends_as_an_uninterrupted_one(
        tmp_path, monkeypatch):
    whole = StandIns(monkeypatch)
    assert search_vs_random.main([*TINY, "--output", str(tmp_path / "whole")]) == 0
    assert len(whole.trained) == 6  # 2 searched, 2 random, the baseline, 1 more curve width

    run = str(tmp_path / "run")
    first = StandIns(monkeypatch, interrupt_train=4)
    with pytest.raises(KeyboardInterrupt):
        search_vs_random.main([*TINY, "--output", run])
    again = StandIns(monkeypatch)
    assert search_vs_random.main([*TINY, "--output", run]) == 0
    assert again.searches == []  # both searches were recorded before the interruption
    assert again.trained == whole.trained[3:]  # the 4th network was interrupted
    assert first.trained[:3] == whole.trained[:3]
    assert _rows(tmp_path / "run") == _rows(tmp_path / "whole")
    progress = json.loads((tmp_path / "run" / run_progress.PROGRESS_NAME).read_text())
    assert len(progress["steps"]) == 2 + 6


def test_an_interrupted_search_continues_with_resume(tmp_path, monkeypatch):
    run = str(tmp_path / "run")
    first = StandIns(monkeypatch, interrupt_search=2)
    with pytest.raises(KeyboardInterrupt):
        search_vs_random.main([*TINY, "--output", run])
    assert first.searches == [(0, False), (1, False)] and first.trained == []
    again = StandIns(monkeypatch)
    assert search_vs_random.main([*TINY, "--output", run]) == 0
    assert again.searches == [(1, True)]  # seed 0 was finished; seed 1 continues
    searches = json.loads((tmp_path / "run" / "results.json").read_text())["searches"]
    assert [(s["seed"], s["resumed"]) for s in searches] == [(0, False), (1, True)]


def test_other_settings_stop_before_anything_runs(tmp_path, monkeypatch, capsys):
    run = str(tmp_path / "run")
    StandIns(monkeypatch, interrupt_train=1)
    with pytest.raises(KeyboardInterrupt):
        search_vs_random.main([*TINY, "--output", run])
    again = StandIns(monkeypatch)
    with pytest.raises(SystemExit, match=r"epochs: \[1, 1\] there, \[2, 1\] now"):
        search_vs_random.main([*TINY, "--epochs", "2,1", "--output", run])
    assert again.searches == [] and again.trained == []
    # the data may be somewhere else now
    assert search_vs_random.main([*TINY, "--data-dir", "elsewhere", "--output", run]) == 0


def test_a_finished_run_without_progress_or_a_damaged_file_is_refused(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(run_progress.SettingsMismatchError, match="--report"):
        run_progress.Progress.open(tmp_path, {"seed": 0})
    (tmp_path / run_progress.PROGRESS_NAME).write_text("[1, 2")
    with pytest.raises(run_progress.SettingsMismatchError, match="not a progress file"):
        run_progress.Progress.open(tmp_path, {"seed": 0})


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5)
                    | st.floats(allow_nan=False, allow_infinity=False),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)


@settings(deadline=None, derandomize=True, database=None, max_examples=40)
@given(settings_=st.dictionaries(st.text(min_size=1, max_size=6), JSON, max_size=4),
       steps=st.dictionaries(st.text(min_size=1, max_size=8), JSON, max_size=4))
def test_progress_reads_back_what_it_recorded(tmp_path_factory, settings_, steps):
    run_dir = tmp_path_factory.mktemp("run")
    progress = run_progress.Progress.open(run_dir, settings_)
    for name, result in steps.items():
        progress.put(name, result)
    reopened = run_progress.Progress.open(run_dir, settings_)
    assert reopened.steps == steps
    assert reopened.seconds() >= 0
    changed = {**settings_, "__other__": 1}
    with pytest.raises(run_progress.SettingsMismatchError, match="__other__"):
        run_progress.Progress.open(run_dir, changed)


def test_a_network_trains_the_same_whatever_ran_before_it():
    data = bn.data.synthetic(128, 64, seed=1)
    test_ds = bn.data.make_dataset(data.x_test, data.y_test, batch_size=64, normalization=data)
    args = argparse.Namespace(seed=0, epochs=(1, 1), batch_size=32)
    cost = bn.cost.ModelCost(binary_macs=64, float_macs=1)

    def quicknet(width):
        return search_vs_random.baseline_builder("quicknet", width, data)

    def train(width):
        row = search_vs_random.train_once(f"quicknet {width}", "curve", quicknet(width),
                                          bn.baselines.kernel_quantizer("quicknet"), cost,
                                          data, test_ds, args)
        return row["stage1_acc"], row["stage2_acc"]

    first = train(8)
    train(12)
    assert train(8) == first
