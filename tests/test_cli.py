"""`bnas-tf search` end to end on the offline CIFAR-10 copy, and resuming a search."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import bnas_tf as bn
from bnas_tf.search_run import SearchConfig, run_search

TINY = ["--space", "bats", "--layers", "3", "--channels", "4", "--nodes", "2",
        "--limit", "200", "--batch-size", "16"]


def bnas_tf_command() -> list[str]:
    script = Path(sys.executable).with_name("bnas-tf")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bnas_tf.cli"]


def run_cli(*args, timeout=600):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([*bnas_tf_command(), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def search_run(cifar10_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "RUN"
    done = run_cli("search", "--dataset", "cifar10", "--data-dir", str(cifar10_dir),
                   *TINY, "--epochs", "1", "--output", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done


def test_search_writes_genotype_history_logs_and_checkpoints(search_run):
    out, done = search_run
    genotype = bn.Genotype.load(out / "genotype.json")
    space = bn.SearchSpace.get("bats", nodes=2)
    assert genotype.op_names <= set(space.op_names)
    assert "none" not in genotype.op_names
    assert genotype.search_space == space
    history = json.loads((out / "history.json").read_text())
    assert history["op_names"] == list(space.op_names)
    (entry,) = history["epochs"]
    assert entry["epoch"] == 0
    for key in ("loss", "accuracy", "arch_loss", "entropy", "val_loss", "val_accuracy"):
        assert np.isfinite(entry["logs"][key]), key
    probs = np.asarray(entry["op_probabilities"]["normal"])
    assert probs.shape == (space.num_edges, space.num_ops)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert list((out / "logs" / "train").glob("events.out.tfevents.*"))
    # ArchitectureBoard: op-probability histograms and the cell diagrams
    tags = {v.tag for f in (out / "logs" / "architecture").glob("events.out.tfevents.*")
            for e in tf.compat.v1.train.summary_iterator(str(f)) for v in e.summary.value}
    assert {"op_probabilities/normal", "op_probabilities/reduce", "genotype"} <= tags
    assert (out / "checkpoints" / "checkpoint").exists()
    assert "genotype:" in done.stdout


def test_resume_extends_a_finished_search(search_run, tmp_path):
    out = tmp_path / "RUN"
    shutil.copytree(search_run[0], out)
    done = run_cli("search", "--output", str(out), "--epochs", "2", "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    epochs = json.loads((out / "history.json").read_text())["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1]
    first = json.loads((search_run[0] / "history.json").read_text())["epochs"][0]
    assert epochs[0] == first  # the finished epoch is kept as it was


def test_existing_run_without_resume_is_refused(search_run):
    done = run_cli("search", "--output", str(search_run[0]), *TINY, "--epochs", "1",
                   "--data-dir", "/nonexistent")
    assert done.returncode == 2
    assert "already holds a search" in done.stderr and "--resume" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_data_directory_is_a_clear_error(tmp_path):
    missing = tmp_path / "no-such-dir"
    done = run_cli("search", "--dataset", "cifar10", "--data-dir", str(missing), "--no-download",
                   *TINY, "--epochs", "1", "--output", str(tmp_path / "RUN"))
    assert done.returncode == 2
    assert str(missing) in done.stderr and "cifar-10-batches-py" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "RUN").exists()


class Interrupt(tf.keras.callbacks.Callback):
    """Record α and weights after epoch 0 (once checkpointed), then stop like Ctrl-C."""

    def on_epoch_end(self, epoch, logs=None):
        self.alphas = [a.numpy().copy() for a in self.model.arch_variables]
        self.weights = [w.numpy().copy() for w in self.model.weight_variables]
        raise KeyboardInterrupt


class RecordStart(tf.keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if not hasattr(self, "epoch"):
            self.epoch = epoch
            self.alphas = [a.numpy().copy() for a in self.model.arch_variables]
            self.weights = [w.numpy().copy() for w in self.model.weight_variables]


def test_interrupted_search_resumes_at_next_epoch_with_saved_state(cifar10_dir, tmp_path):
    config = SearchConfig(dataset="cifar10", data_dir=str(cifar10_dir), space="bats", nodes=2,
                          layers=3, channels=4, limit=200, batch_size=16, epochs=2)
    interrupt = Interrupt()
    with pytest.raises(KeyboardInterrupt):
        run_search(config, tmp_path / "RUN", extra_callbacks=[interrupt], verbose=0)
    assert [e["epoch"] for e in
            json.loads((tmp_path / "RUN" / "history.json").read_text())["epochs"]] == [0]

    start = RecordStart()
    result = run_search(config, tmp_path / "RUN", resume=True, extra_callbacks=[start],
                        verbose=0)
    assert start.epoch == 1
    for saved, restored in zip(interrupt.alphas, start.alphas, strict=True):
        np.testing.assert_array_equal(saved, restored)
    for saved, restored in zip(interrupt.weights, start.weights, strict=True):
        np.testing.assert_array_equal(saved, restored)
    assert [e["epoch"] for e in result.history["epochs"]] == [0, 1]


def test_train_command_writes_model_and_metrics(search_run, cifar10_dir, tmp_path):
    out = tmp_path / "TRAIN"
    done = run_cli("train", "--genotype", str(search_run[0] / "genotype.json"),
                   "--dataset", "cifar10", "--data-dir", str(cifar10_dir), "--limit", "200",
                   "--layers", "3", "--channels", "6", "--batch-size", "32",
                   "--epochs", "2,1", "--output", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    stage1, stage2 = metrics["stage1"], metrics["stage2"]
    assert [e["epoch"] for e in stage1["epochs"]] == [0, 1]
    assert [e["epoch"] for e in stage2["epochs"]] == [0]
    for entry in stage1["epochs"] + stage2["epochs"]:
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "ff_ratio", "c2i_ratio",
                    "learning_rate"):
            assert np.isfinite(entry[key]), key
        assert 0.0 <= entry["ff_ratio"] <= 1.0 and 0.0 <= entry["c2i_ratio"] <= 1.0
    assert stage1["epochs"][0]["c2i_ratio"] > 0  # latent signs moved during stage 1
    assert 0.0 <= stage1["test"]["accuracy"] <= 1.0 and 0.0 <= stage2["test"]["accuracy"] <= 1.0
    assert list((out / "logs" / "stage2" / "train").glob("events.out.tfevents.*"))
    # the run compared the trained model with its reloaded copy on a test batch
    assert metrics["reload_max_abs_diff"] == 0.0
    assert metrics["params"] == bn.count_params(bn.load_model(out / "model"))
    # the saved model reloads with identical predictions
    model = bn.load_model(out / "model")
    data = bn.data.load("cifar10", cifar10_dir, limit=200)
    x = bn.data.normalize(data.x_test[:16], data)
    reloaded = bn.load_model(out / "model")
    np.testing.assert_array_equal(model(x, training=False), reloaded(x, training=False))
    assert model.output_shape == (None, 10)


def test_train_with_a_bad_genotype_file_is_a_clear_error(search_run, tmp_path):
    bad = tmp_path / "genotype.json"
    text = (search_run[0] / "genotype.json").read_text()
    op = bn.Genotype.load(search_run[0] / "genotype.json").normal.nodes[0][0].ops[0][0]
    bad.write_text(text.replace(f'"{op}"', '"warp_drive"', 1))
    done = run_cli("train", "--genotype", str(bad), "--dataset", "synthetic",
                   "--output", str(tmp_path / "TRAIN"))
    assert done.returncode == 2
    assert "warp_drive" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "TRAIN").exists()


def test_train_command_trains_a_baseline_at_another_image_size(tmp_path):
    """`--baseline quicknet` (narrow), 32x32 synthetic images resized to 16x16; the saved
    stage-2 network converts with LCE, every binary conv to LceBconv2d."""
    out = tmp_path / "TRAIN"
    done = run_cli("train", "--baseline", "quicknet", "--width", "8", "--image-size", "16",
                   "--dataset", "synthetic", "--limit", "40", "--batch-size", "20",
                   "--epochs", "1,1", "--output", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["baseline"] == "quicknet" and metrics["genotype"] is None
    assert metrics["reload_max_abs_diff"] == 0.0
    for stage in ("stage1", "stage2"):
        assert np.isfinite(metrics[stage]["epochs"][0]["loss"])
    config = json.loads((out / "config.json").read_text())
    assert config["baseline"] == "quicknet" and config["image_size"] == 16
    model = bn.load_model(out / "model")
    assert model.input_shape == (None, 16, 16, 3) and model.output_shape == (None, 10)
    assert metrics["params"] == bn.count_params(model)
    pytest.importorskip("larq_compute_engine")
    report = bn.export.conversion_report(model, bn.export.convert(model), compare_float=False)
    assert report.all_converted and report.op_counts["LceBconv2d"] == 16


@pytest.mark.parametrize("args, message", [
    ([], "one of the arguments --genotype --baseline is required"),
    (["--genotype", "g.json", "--baseline", "quicknet"],
     "argument --baseline: not allowed with argument --genotype"),
    (["--baseline", "resnet"], "argument --baseline: invalid choice: 'resnet'"),
])
def test_train_needs_exactly_one_network(args, message, capsys):
    from bnas_tf.cli import build_parser

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["train", "--output", "o", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_run_training_checks_its_network_settings(tmp_path):
    from bnas_tf.train_run import TrainConfig, run_training

    with pytest.raises(ValueError, match="exactly one of a genotype file"):
        run_training(TrainConfig(), tmp_path / "TRAIN")
    with pytest.raises(ValueError, match="Unknown baseline 'resnet'"):
        run_training(TrainConfig(baseline="resnet"), tmp_path / "TRAIN")
    with pytest.raises(ValueError, match="width sets a baseline's channels"):
        run_training(TrainConfig(genotype="g.json", width=8), tmp_path / "TRAIN")
    assert not (tmp_path / "TRAIN").exists()
