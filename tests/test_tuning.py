"""keras-tuner hypermodels: arguments, search space, local tuners, distributed chief + workers.

The distributed run starts `tests/tuning_script.py` three times (chief oracle
and two workers) on 127.0.0.1 with a free port; every process has a timeout
and is killed when the test ends.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import tensorflow as tf

import bnas_tf as bn
from bnas_tf import tuning
from bnas_tf.search_run import SearchConfig, build_supernet, search_schedule

kt = pytest.importorskip("keras_tuner")

from test_distribute import free_ports, run_processes, script_env  # noqa: E402

SCRIPT = Path(__file__).with_name("tuning_script.py")
IMAGE = (8, 8, 3)
OPS = ["none", "skip_connect", "bin_conv_3x3"]
TIMEOUT = 420


def tiny_data():
    """32 training images, 8 held out for validation (the tuners' objectives), 16 test."""
    data = bn.data.synthetic(40, 16, image_shape=IMAGE, num_classes=4, seed=0)
    train, held_out = bn.data.holdout(data, 0.2, seed=0)
    return train, held_out


def tiny_pairs():
    train, held_out = tiny_data()
    return (bn.data.search_pairs(train, batch_size=8, seed=0),
            bn.data.make_dataset(held_out, batch_size=16))


def tiny_train_val():
    train, held_out = tiny_data()
    return (bn.data.make_dataset(train, batch_size=16, training=True, seed=0),
            bn.data.make_dataset(held_out, batch_size=16))


def tiny_genotype():
    return bn.SuperNet(bn.SearchSpace(OPS, nodes=2), num_classes=4, layers=2, channels=4,
                       seed=0).genotype()


def test_missing_keras_tuner_gives_install_hint(monkeypatch):
    monkeypatch.setattr(tuning, "_kt", None)
    with pytest.raises(ImportError, match=r"pip install bnas_tf\[tuner\]"):
        tuning.SearchHyperModel("bats")
    with pytest.raises(ImportError, match="keras-tuner#1039"):
        tuning.TrainHyperModel(tiny_genotype())


@pytest.mark.parametrize("kwargs, match", [
    ({"channels": []}, "channels"),
    ({"layers": [0]}, "layers"),
    ({"derived_epochs": (1,)}, "derived_epochs"),
    ({"derived_epochs": (1, -1)}, "derived_epochs"),
])
def test_bad_search_hypermodel_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tuning.SearchHyperModel(bn.SearchSpace(OPS, nodes=2), **kwargs)


def test_search_hypermodel_declares_the_search_hyperparameters():
    hypermodel = tuning.SearchHyperModel(bn.SearchSpace(OPS, nodes=2), num_classes=4,
                                         channels=(4, 8), layers=3)
    hp = kt.HyperParameters()
    net = hypermodel.build(hp)
    assert isinstance(net, bn.SuperNet) and net.arch_optimizer is not None
    assert set(hp.values) == {"layers", "channels", "temperature", "diversity", "tau",
                              "learning_rate", "arch_learning_rate"}
    assert (net.num_layers, net.channels) == (3, 4)  # fixed depth; first width choice
    assert net.temperature == pytest.approx(0.2)
    assert float(net.optimizer.learning_rate) == pytest.approx(1e-3)
    assert float(net.arch_optimizer.learning_rate) == pytest.approx(3e-4)
    assert hypermodel.objective().name == tuning.DERIVED_OBJECTIVE
    assert hypermodel.objective().direction == "max"


def test_hypermodels_read_the_recipe():
    hypermodel = tuning.SearchHyperModel(recipe="hmnas", num_classes=4, channels=4, layers=1)
    hp = kt.HyperParameters()
    net = hypermodel.build(hp)
    assert isinstance(net, bn.HMNASSuperNet) and net.cell_skip is False
    assert hp.values["temperature"] == 1.0 and hp.values["diversity"] == 0.0
    assert hypermodel.space.name == "lce"
    bnas = tuning.SearchHyperModel(recipe="bnas", num_classes=4, channels=4, layers=1)
    assert bnas.space.name == "bnas" and bnas.space.binary_search_weights
    assert tuning.SearchHyperModel(num_classes=4).space.name == "lce"  # no recipe: deployable
    train = tuning.TrainHyperModel(tiny_genotype(), recipe="adambnn", num_classes=4,
                                   input_shape=IMAGE, channels=4, layers=2)
    assert train.kernel_quantizer == "magnitude_aware_sign"


def fake_two_stage(model, train_ds, val_ds, *, test_ds, **kwargs):
    score = {"accuracy": 0.5, "loss": 1.0}
    return bn.TwoStageResult(model, model, {}, {"stage1": score, "stage2": score})


@pytest.mark.parametrize("recipe, mixing", [(None, "partial"), ("bats", "all"),
                                            ("hmnas", "all")])
def test_search_trial_builds_the_supernet_bnas_tf_search_builds(recipe, mixing):
    """A trial's supernet is `search_run.build_supernet`'s for the same SearchConfig: the
    recipe's mixing (bnas_tf.recipes.DEFAULTS: partial) and every other search setting."""
    space = bn.SearchSpace(OPS, nodes=2)
    hypermodel = tuning.SearchHyperModel(space, recipe=recipe, num_classes=4, channels=4,
                                         layers=2)
    hp = kt.HyperParameters()
    net = hypermodel.build(hp)
    config = hypermodel.search_config(hp)
    defaults = bn.recipes.get(recipe)
    assert net.mixing == config.mixing == mixing
    assert (config.mixing, config.warmup_fraction, config.budget_schedule) == (
        defaults.mixing, defaults.warmup_fraction, defaults.budget_schedule)
    reference = build_supernet(SearchConfig(recipe=recipe, channels=4, layers=2), 4,
                               space=space)
    assert type(net) is type(reference)
    assert {**net.get_config(), "name": None} == {**reference.get_config(), "name": None}
    for setting in ("warmup_fraction", "warmup_epochs", "arch_weight_decay", "second_order"):
        assert getattr(net, setting) == getattr(reference, setting), setting
    assert net.arch_optimizer.get_config() == reference.arch_optimizer.get_config()
    assert (bn.regularizers.serialize(net.arch_regularizer)
            if net.arch_regularizer else None) == (
        bn.regularizers.serialize(reference.arch_regularizer)
        if reference.arch_regularizer else None)


def test_search_trial_gets_the_budget_schedule_of_run_search(monkeypatch):
    """`fit` knows the steps per epoch and epochs: the trial's α learning rate, diversity τ and
    warm-up are those `run_search` would use for a search of that size."""
    monkeypatch.setattr(tuning, "train_two_stage", fake_two_stage)
    pairs, val = tiny_pairs()
    steps, epochs = int(pairs.cardinality()), 2
    schedule = search_schedule(SearchConfig(epochs=epochs, channels=4, layers=2), steps)
    assert schedule["arch_learning_rate"] > 3e-4 and schedule["tau"] < 7.7  # scaled
    hypermodel = tuning.SearchHyperModel(bn.SearchSpace(OPS, nodes=2), num_classes=4,
                                         channels=4, layers=2, search_epochs=5)
    hp = kt.HyperParameters()
    net = hypermodel.build(hp)
    arch_steps = []

    class Record(tf.keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            arch_steps.append(net._arch_enabled)

    hypermodel.fit(hp, net, pairs, validation_data=val, epochs=epochs, callbacks=[Record()])
    assert float(net.arch_optimizer.learning_rate) == pytest.approx(
        schedule["arch_learning_rate"])
    (diversity,) = [r for r in getattr(net.arch_regularizer, "regularizers",
                                       [net.arch_regularizer])
                    if isinstance(r, bn.regularizers.Diversity)]
    assert diversity.tau == pytest.approx(schedule["tau"])
    assert len(arch_steps) == schedule["total_steps"]
    assert arch_steps.count(False) == schedule["warmup_steps"] >= 1  # weight steps first


def test_search_hypermodel_honours_search_settings():
    hypermodel = tuning.SearchHyperModel(
        bn.SearchSpace(OPS, nodes=2), num_classes=4, channels=4, layers=2, name="tuned",
        mixing="gumbel", gumbel_temperature=(5.0, 0.5), budget_schedule=False,
        warmup_fraction=0.0, temperature_regularizer=0.5)
    hp = kt.HyperParameters()
    net = hypermodel.build(hp)
    assert hypermodel.name == "tuned"
    assert (net.mixing, net.gumbel_temperature, net.warmup_fraction) == ("gumbel", (5.0, 0.5),
                                                                         0.0)
    assert any(isinstance(r, bn.regularizers.Temperature)
               for r in net.arch_regularizer.regularizers)
    config = hypermodel.search_config(hp, epochs=2)
    assert search_schedule(config, 2)["arch_learning_rate"] == hp.get("arch_learning_rate")
    partial = tuning.SearchHyperModel(num_classes=4, channels=(4, 8), layers=2,
                                      partial_channels=2, nodes=2)
    net = partial.build(kt.HyperParameters())
    assert (net.mixing, net.partial_channels, net.space.nodes) == ("partial", 2, 2)
    assert partial.space.nodes == 2


def test_a_cost_targeted_trial_builds_the_cost_regularized_supernet_of_bnas_tf_search():
    """With `input_shape`, `cost="ops"` gives a trial the ExpectedCost term `bnas-tf search
    --cost ops` gives its supernet."""
    space = bn.SearchSpace(OPS, nodes=2)
    hypermodel = tuning.SearchHyperModel(space, num_classes=4, channels=4, layers=2,
                                         input_shape=IMAGE, cost="ops", cost_target=2e5)
    net = hypermodel.build(kt.HyperParameters())
    reference = build_supernet(SearchConfig(channels=4, layers=2, cost="ops", cost_target=2e5),
                               4, space=space, input_shape=IMAGE)
    costs = [[r for r in getattr(n.arch_regularizer, "regularizers", [n.arch_regularizer])
              if isinstance(r, bn.regularizers.ExpectedCost)] for n in (net, reference)]
    assert len(costs[0]) == len(costs[1]) == 1
    assert (bn.regularizers.serialize(costs[0][0])
            == bn.regularizers.serialize(costs[1][0]))


@pytest.mark.parametrize("kwargs, match", [
    ({"temperature": 0.5}, r"hp\.Fixed\('temperature'"),
    ({"epochs": 3}, "Unknown search setting 'epochs'"),
    ({"mixng": "all"}, "Unknown search setting 'mixng'"),
    ({"channels": 6}, "partial_channels"),  # partial mixing: 4 must divide every width
    ({"space": bn.SearchSpace(OPS, nodes=2), "nodes": 3}, "named space"),
    ({"cost": "ops", "cost_target": 1e6}, r"needs the images' shape: pass input_shape="),
])
def test_bad_search_settings_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tuning.SearchHyperModel(**{"num_classes": 4, "layers": 2, **kwargs})


def test_search_hypermodel_with_random_search_scores_the_derived_network(tmp_path):
    pairs, val = tiny_pairs()
    hypermodel = tuning.SearchHyperModel(bn.SearchSpace(OPS, nodes=2), num_classes=4,
                                         channels=4, layers=3, search_epochs=1,
                                         derived_epochs=(1, 0))
    tuner = kt.RandomSearch(hypermodel, objective=hypermodel.objective(), max_trials=1, seed=0,
                            directory=tmp_path, project_name="search")
    tuner.search(pairs, validation_data=val, verbose=0)
    (trial,) = tuner.oracle.trials.values()
    assert trial.status == "COMPLETED", trial.message
    assert 0.0 <= trial.score <= 1.0
    assert trial.metrics.exists("search_val_accuracy")  # the supernet's own, reported apart
    best = tuner.get_best_hyperparameters()[0]
    assert best.values["layers"] == 3 and 0.05 <= best.values["temperature"] <= 1.0


def test_train_hypermodel_with_hyperband(tmp_path):
    train, val = tiny_train_val()
    hypermodel = tuning.TrainHyperModel(tiny_genotype(), num_classes=4, input_shape=IMAGE,
                                        channels=4, layers=2)
    tuner = kt.Hyperband(hypermodel, objective="val_accuracy", max_epochs=2, factor=2,
                         hyperband_iterations=1, seed=0, directory=tmp_path,
                         project_name="train")
    tuner.search(train, validation_data=val, verbose=0)
    trials = list(tuner.oracle.trials.values())
    assert len(trials) >= 2
    assert all(t.status == "COMPLETED" for t in trials), [t.message for t in trials]
    # Hyperband's second round continues from the first round's saved weights
    assert any("tuner/trial_id" in t.hyperparameters.values for t in trials)
    assert set(tuner.get_best_hyperparameters()[0].values) >= {"learning_rate", "weight_decay"}


def test_train_hypermodel_with_bayesian_optimization(tmp_path):
    pytest.importorskip("scipy", reason="BayesianOptimization needs keras-tuner[bayesian]")
    train, val = tiny_train_val()
    hypermodel = tuning.TrainHyperModel(tiny_genotype(), num_classes=4, input_shape=IMAGE,
                                        channels=4, layers=2, epochs=(1, 0))
    tuner = kt.BayesianOptimization(hypermodel, objective="val_accuracy", max_trials=2,
                                    num_initial_points=1, seed=0, directory=tmp_path,
                                    project_name="bayes")
    tuner.search(train, validation_data=val, verbose=0)
    trials = list(tuner.oracle.trials.values())
    assert len(trials) == 2 and all(t.status == "COMPLETED" for t in trials)
    assert all(0.0 <= t.score <= 1.0 for t in trials)


@pytest.mark.parametrize("kind", ["search", "train"])
def test_hypermodels_select_on_the_validation_data_only(kind, monkeypatch):
    """Both objectives come from `validation_data` (the held-out split): the derived or tuned
    network trains on the training part and is scored, per epoch and at the end, on it."""
    seen = {}

    def fake_two_stage(model, train_ds, val_ds, *, test_ds, **kwargs):
        seen.update(train=train_ds, val=val_ds, test=test_ds)
        score = {"accuracy": 0.5, "loss": 1.0}
        return bn.TwoStageResult(model, model, {}, {"stage1": score, "stage2": score})

    monkeypatch.setattr(tuning, "train_two_stage", fake_two_stage)
    hp = kt.HyperParameters()
    if kind == "search":
        pairs, val = tiny_pairs()
        hypermodel = tuning.SearchHyperModel(bn.SearchSpace(OPS, nodes=2), num_classes=4,
                                             channels=4, layers=2, search_epochs=1)
        logs = hypermodel.fit(hp, hypermodel.build(hp), pairs, validation_data=val)
        assert logs[tuning.DERIVED_OBJECTIVE] == 0.5
        assert seen["train"].element_spec == pairs.element_spec[0]  # training halves only
    else:
        train, val = tiny_train_val()
        hypermodel = tuning.TrainHyperModel(tiny_genotype(), num_classes=4, input_shape=IMAGE,
                                            channels=4, layers=2)
        assert hypermodel.fit(hp, hypermodel.build(hp), train, validation_data=val) == {
            "val_accuracy": 0.5, "val_loss": 1.0}
        assert seen["train"] is train
    assert seen["val"] is val and seen["test"] is val


def test_train_hypermodel_rejects_missing_validation_data():
    hypermodel = tuning.TrainHyperModel(tiny_genotype(), num_classes=4, input_shape=IMAGE,
                                        channels=4, layers=2)
    hp = kt.HyperParameters()
    model = hypermodel.build(hp)
    with pytest.raises(ValueError, match="validation_data"):
        hypermodel.fit(hp, model, tf.data.Dataset.from_tensors((tf.zeros((1, *IMAGE)), [0])))


def test_distributed_keras_tuner_chief_and_two_workers(tmp_path):
    (port,) = free_ports(1)
    common = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)}
    ids = ("chief", "tuner0", "tuner1")
    results = run_processes([[sys.executable, str(SCRIPT), str(tmp_path / "tune")]] * 3,
                            [script_env(KERASTUNER_TUNER_ID=i, **common) for i in ids],
                            tmp_path / "logs", timeout=TIMEOUT)
    chief, *workers = results
    assert chief["statuses"] == ["COMPLETED"] * 3
    assert sum(w["trials_run"] for w in workers) == 3
    assert set(chief["best_hyperparameters"]) >= {"learning_rate", "weight_decay", "channels"}
    assert chief["best_score"] == max(chief["scores"])
    assert os.path.isdir(tmp_path / "tune" / "distributed")
