"""Search that decides: budget-aware schedule, decision margins, undecided/collapse warnings."""

import json
import logging
import math

import numpy as np
import pytest
import tensorflow as tf

import bnas_tf as bn
from bnas_tf.budget import BASE_ARCH_LEARNING_RATE, SearchBudget
from bnas_tf.decision import DECIDED_MARGIN, decision_summary, edge_margins, tf_edge_margins
from bnas_tf.search_run import SearchConfig, run_search, search_schedule

SPACE = bn.SearchSpace.get("lce", nodes=2)


def test_margins_are_chosen_minus_runner_up_over_the_candidate_ops():
    names = SPACE.op_names
    probs = np.full((SPACE.num_edges, SPACE.num_ops), 0.02)
    probs[:, names.index("none")] = 0.5  # not a candidate in lce: ignored
    probs[0, names.index("bin_conv_3x3")] = 0.4
    probs[0, names.index("skip_connect")] = 0.1
    margins = edge_margins(probs, SPACE)
    assert margins[0] == pytest.approx(0.3)
    np.testing.assert_allclose(margins[1:], 0.0)
    np.testing.assert_allclose(tf_edge_margins(tf.constant(probs), SPACE).numpy(), margins,
                               atol=1e-7)
    summary = decision_summary({"normal": probs, "reduce": probs}, SPACE)
    assert summary["decided"] == pytest.approx(2 / (2 * SPACE.num_edges))
    assert summary["normal"][0] == pytest.approx(0.3)
    assert summary["threshold"] == DECIDED_MARGIN


def test_genotype_from_zero_alpha_warns_naming_the_undecided_edges(caplog):
    net = bn.SuperNet(SPACE, num_classes=4, layers=3, channels=4, seed=0)
    net(tf.zeros([1, 8, 8, 3]))
    for alpha in net.arch_variables:
        alpha.assign(tf.zeros_like(alpha))
    with caplog.at_level(logging.WARNING, logger="bnas_tf.supernet"):
        genotype = net.genotype()
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "mostly undecided" in text and "10 of 10 edges" in text
    assert "normal 0->2" in text and "reduce 2->3" in text
    assert genotype.decision["decided"] == 0.0
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bnas_tf.supernet"):
        net.genotype(warn=False)
    assert not caplog.records


def test_decided_genotype_does_not_warn_and_collapse_does(caplog):
    net = bn.SuperNet(SPACE, num_classes=4, layers=3, channels=4, seed=0)
    net(tf.zeros([1, 8, 8, 3]))
    conv = SPACE.op_names.index("bin_conv_3x3")
    skip = SPACE.op_names.index("skip_connect")
    net.arch.alpha_normal.assign(tf.one_hot([conv] * SPACE.num_edges, SPACE.num_ops))
    net.arch.alpha_reduce.assign(tf.one_hot([conv] * SPACE.num_edges, SPACE.num_ops))
    with caplog.at_level(logging.WARNING, logger="bnas_tf.supernet"):
        genotype = net.genotype()
    assert genotype.decision["decided"] == 1.0 and not caplog.records
    net.arch.alpha_normal.assign(tf.one_hot([skip] * SPACE.num_edges, SPACE.num_ops))
    with caplog.at_level(logging.WARNING, logger="bnas_tf.supernet"):
        net.genotype()
    assert "parameter-free ops only (skip_connect)" in caplog.text
    assert "mostly undecided" not in caplog.text


def test_genotype_json_keeps_the_decision():
    probs = np.full((SPACE.num_edges, SPACE.num_ops), 1 / SPACE.num_ops)
    genotype = bn.derive_genotype(probs, probs, SPACE)
    again = bn.Genotype.from_json(genotype.to_json())
    assert again.decision == genotype.decision == json.loads(genotype.to_json())["decision"]
    assert again == genotype


def test_budget_rule_lets_alpha_over_temperature_move_by_the_decision():
    budget = SearchBudget(epochs=2, steps_per_epoch=40, warmup_fraction=0.25, decision=6.0)
    assert (budget.total_steps, budget.warmup_steps, budget.arch_steps) == (80, 20, 60)
    lr = budget.arch_learning_rate(temperature=0.2)
    assert lr * budget.arch_steps / 0.2 == pytest.approx(6.0)  # Adam: ≈ lr per step
    # a paper-sized search (50 epochs of 390 steps) keeps the paper's 3e-4
    paper = SearchBudget(epochs=50, steps_per_epoch=390)
    assert paper.arch_learning_rate(0.2) == BASE_ARCH_LEARNING_RATE
    assert paper.diversity_tau(7.7) == pytest.approx(7.7)
    assert budget.diversity_tau(7.7) == pytest.approx(7.7 * 2 / 50)
    assert SearchBudget(2, 40, decision=0).arch_learning_rate(0.2) == BASE_ARCH_LEARNING_RATE
    with pytest.raises(ValueError, match="warmup_fraction"):
        SearchBudget(2, 40, warmup_fraction=1.0)
    schedule = search_schedule(SearchConfig(epochs=2), steps_per_epoch=40)
    assert schedule["arch_learning_rate"] == pytest.approx(2 * lr)  # default decision 12
    assert search_schedule(SearchConfig(epochs=2, budget_schedule=False),
                           40)["arch_learning_rate"] == BASE_ARCH_LEARNING_RATE


def test_warmup_fraction_holds_alpha_for_that_share_of_the_steps():
    net = bn.SuperNet(SPACE, num_classes=4, layers=3, channels=4, seed=0)
    net.compile(arch_optimizer=tf.keras.optimizers.legacy.Adam(1e-2), warmup_fraction=0.5)
    data = bn.data.synthetic(48, 8, image_shape=(8, 8, 3), num_classes=4)
    pairs = bn.data.search_pairs(data, batch_size=8)  # 3 steps per epoch
    alphas = []

    class Record(tf.keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            alphas.append(net.arch.alpha_normal.numpy().copy())

    history = net.fit(pairs, epochs=2, verbose=0, callbacks=[Record()])
    moved = [not np.array_equal(a, b) for a, b in zip(alphas, alphas[1:], strict=False)]
    assert moved == [False, False, True, True, True]  # steps 0-2 warm up (0.5 x 6)
    assert {"decided", "margin"} <= set(history.history)


def test_short_search_with_the_defaults_decides(cifar10_dir, tmp_path):
    """A few minutes on real data: α leaves the uniform distribution clearly."""
    config = SearchConfig(dataset="cifar10", data_dir=str(cifar10_dir), limit=1000, layers=3,
                          channels=8, epochs=2, batch_size=32, seed=0)
    result = run_search(config, tmp_path / "RUN", verbose=0)
    logs = result.history["epochs"][-1]["logs"]
    uniform = math.log(bn.SearchSpace.get(config.space).num_ops)
    # α = 0 (or the papers' settings at this budget): entropy ln(ops), nothing decided
    assert logs["entropy"] < 0.85 * uniform  # softmax(α/T), what the mixed ops use
    assert logs["alpha_entropy"] < uniform - 0.01  # softmax(α)
    assert logs["decided"] > 0.2
    saved = json.loads((tmp_path / "RUN" / "genotype.json").read_text())
    assert saved["decision"]["decided"] == pytest.approx(logs["decided"], abs=1e-3)
    assert result.history["schedule"]["arch_learning_rate"] > BASE_ARCH_LEARNING_RATE
