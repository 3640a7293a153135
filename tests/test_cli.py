"""`bnas-tf search` and `train` end to end on the offline CIFAR-10 copy, resuming a search,
and bad input: every check before anything is written, one-line errors, no half-made run
directories, non-finite losses, `--resume` conflicts, quiet TensorFlow start-up."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import bnas_tf as bn
from bnas_tf import cli
from bnas_tf import search_run as runs
from bnas_tf.search_run import SearchConfig, run_search

TINY = ["--space", "bats", "--layers", "3", "--channels", "4", "--nodes", "2",
        "--limit", "200", "--batch-size", "16"]
SYNTHETIC = ["--dataset", "synthetic", "--limit", "64", "--layers", "1", "--channels", "4",
             "--nodes", "1", "--batch-size", "16", "--epochs", "1"]
ROOT = Path(__file__).resolve().parents[1]
# what TensorFlow prints at start-up on a CPU machine (absl records "I0000 00:00:... file.cc:N]")
TF_NOISE = re.compile(r"absl::InitializeLog|cuInit|cuda_platform|cudart_stub|oneDNN|"
                      r"cpu_feature_guard|^[IWE]\d{4} [\d:.]+\s+\d+ \S+:\d+\]", re.M)


def bnas_tf_command() -> list[str]:
    script = Path(sys.executable).with_name("bnas-tf")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bnas_tf.cli"]


def quiet_env() -> dict:
    """The environment of a user who did not set TF_CPP_MIN_LOG_LEVEL (bnas-tf's default)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def run_cli(*args, timeout=600):
    return subprocess.run([*bnas_tf_command(), *args], capture_output=True, text=True,
                          timeout=timeout, env=quiet_env())


def assert_no_tf_noise(stderr: str) -> None:
    assert not TF_NOISE.search(stderr), stderr[-3000:]


def run_main(*argv) -> int:
    """`bnas-tf ARGV` in this process; argparse's exit is returned as the code."""
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as exit_info:
        return exit_info.code


def error_line(capsys, command="search") -> str:
    """The one line of a failed command; no traceback before it."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith(f"bnas-tf {command}: error: "), err
    assert sum("error:" in line for line in lines) == 1 and "Traceback" not in err, err
    return lines[-1]


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
    config = json.loads((out / "config.json").read_text())
    assert config["validation_fraction"] == bn.data.DEFAULT_HOLDOUT_FRACTION
    assert_no_tf_noise(done.stderr)  # quiet by default: no TensorFlow start-up lines


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
    assert_no_tf_noise(done.stderr)


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
    assert_no_tf_noise(done.stderr)
    # val_* come from the held-out 10 % of the training images, test_* from the test split
    data = bn.data.load("cifar10", cifar10_dir, limit=200)
    train_part, held_out = bn.data.holdout(data, 0.1, seed=0)
    assert (metrics["train_images"], metrics["validation_images"], metrics["test_images"]) == (
        len(train_part.y_train), len(held_out.y_test), len(data.y_test)) == (180, 20, 40)
    trained = bn.load_model(out / "model.keras")
    trained.compile(loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=["accuracy"])
    val = trained.evaluate(bn.data.make_dataset(held_out, batch_size=128), verbose=0,
                           return_dict=True)
    test = trained.evaluate(bn.data.make_dataset(data, batch_size=128), verbose=0,
                            return_dict=True)
    assert metrics["val_accuracy"] == pytest.approx(val["accuracy"])
    assert metrics["test_accuracy"] == pytest.approx(test["accuracy"])
    assert metrics["test_accuracy"] == stage2["test"]["accuracy"]
    assert metrics["val_loss"] == pytest.approx(val["loss"], rel=1e-4)
    assert "val accuracy" in done.stdout and "test accuracy" in done.stdout
    assert list((out / "logs" / "stage2" / "train").glob("events.out.tfevents.*"))
    # the run compared the trained model with its reloaded copy on a test batch
    assert metrics["reload_max_abs_diff"] == 0.0
    assert metrics["params"] == bn.count_params(bn.load_model(out / "model.keras"))
    # the saved model reloads with identical predictions
    assert (out / "model.keras").is_file() and not (out / "model").exists()
    model = bn.load_model(out / "model.keras")
    data = bn.data.load("cifar10", cifar10_dir, limit=200)
    x = bn.data.normalize(data.x_test[:16], data)
    reloaded = bn.load_model(out / "model.keras")
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
    model = bn.load_model(out / "model.keras")
    assert model.input_shape == (None, 16, 16, 3) and model.output_shape == (None, 10)
    assert metrics["params"] == bn.count_params(model)
    cost = bn.cost.model_cost(model)  # the binary network's cost, in metrics.json and printed
    assert metrics["cost"] == cost.to_dict() and cost.binary_macs > 0
    assert f"cost per image: {cost.summary()}\n" in done.stdout
    pytest.importorskip("larq_compute_engine")
    report = bn.export.conversion_report(model, bn.export.convert(model), compare_float=False)
    assert report.all_converted and report.op_counts["LceBconv2d"] == 16
    assert report.cost == cost.to_dict() and report.to_dict()["cost"] == cost.to_dict()
    assert f"Cost (Keras model, per image): {cost.summary()}" in report.format_table()


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


# -- bad input: checked before anything is written ------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--temperature", "-1"], "Expected --temperature > 0, got -1."),
    (["--temperature", "nan"], "Expected --temperature to be a finite number, got nan."),
    (["--epochs", "0"], "Expected --epochs >= 1, got 0."),
    (["--lr", "inf"], "Expected --lr to be a finite number, got inf."),
    (["--arch-beta1", "1"], "Expected --arch-beta1 < 1, got 1."),
    (["--seed", "-1"], "Expected --seed in [0, 4294967295], got -1."),
    (["--mixing", "partial", "--partial-channels", "3"],
     "--partial-channels 3 must divide --channels 4"),
    (["--channels", "18"], "--partial-channels 4 must divide --channels 18 (each mixed op of "
                           "partial mixing runs on channels / K of them): choose --channels a "
                           "multiple of 4, another --partial-channels, or --mixing gumbel or all."),
    (["--warmup-epochs", "1"], "--warmup-epochs 1 leaves none of the 1 epochs (--epochs) to "
                               "train α"),
    (["--validation-fraction", "1"], "Expected --validation-fraction < 1, got 1."),
    (["--space", "nope"], "argument --space: invalid choice: 'nope'"),
    (["--dataset", "imagenet"], "argument --dataset: expected one of cifar10, "),
    (["--layers", "2.5"], "argument --layers: invalid int value: '2.5'"),
    # the data: split and batched before the run directory is made
    (["--batch-size", "64"], "fewer than batch_size=64"),
    (["--limit", "5"], "have a single training image"),
    # the supernet: built before the run directory is made
    (["--method", "hmnas", "--mixing", "gumbel"], "HM-NAS search supports mixing='all' only"),
])
def test_bad_search_input_fails_in_one_line_before_anything_is_written(args, message,
                                                                     tmp_path, capsys):
    out = tmp_path / "RUN"
    assert run_main("search", *SYNTHETIC, *args, "--output", out) == 2
    assert message in error_line(capsys)
    assert list(tmp_path.iterdir()) == []


TRAIN_BASELINE = ["train", "--baseline", "quicknet", "--width", "8", "--dataset", "synthetic",
                  "--limit", "64", "--batch-size", "32"]


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0,0"], "Expected at least one training epoch in --epochs, got 0,0"),
    (["--epochs", "2"], "argument --epochs: expected STAGE1,STAGE2 epochs"),
    (["--lr", "0"], "Expected --lr > 0, got 0."),
    (["--weight-decay=-1e-5"], "Expected --weight-decay >= 0, got -1e-05."),
    (["--image-size", "0"], "Expected --image-size >= 1, got 0."),
    (["--validation-fraction", "0"], "Expected --validation-fraction > 0, got 0."),
    (["--limit", "4"], "Expected limit >= 5"),
])
def test_bad_train_input_fails_in_one_line_before_anything_is_written(args, message, tmp_path,
                                                                    capsys):
    assert run_main(*TRAIN_BASELINE, *args, "--output", tmp_path / "TRAIN") == 2
    assert message in error_line(capsys, "train")
    assert list(tmp_path.iterdir()) == []


def test_dataset_accepts_tfds_names():
    args = cli.build_parser().parse_args(["search", "--output", "R", "--dataset", "tfds:mnist"])
    assert args.dataset == "tfds:mnist" and cli.search_config(args).dataset == "tfds:mnist"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["search", "--output", "R", "--dataset", "tfds:"])


def test_output_paths_are_checked_before_anything_is_written(tmp_path, capsys, monkeypatch):
    mine = tmp_path / "notes.txt"
    mine.write_text("mine")
    full = tmp_path / "full"
    full.mkdir()
    (full / "data.csv").write_text("mine")
    cases = [
        (mine, "--output {} is an existing file; give the path of a new or empty directory"),
        (full, "--output {} is a non-empty directory that holds no bnas-tf run (data.csv)"),
        (mine / "RUN", "Cannot create --output {}: " + f"{mine} is a file, not a directory."),
    ]
    for command in (["search", *SYNTHETIC], [*TRAIN_BASELINE]):
        for path, message in cases:
            assert run_main(*command, "--output", path) == 2
            line = error_line(capsys, command[0])
            assert message.format(path) in line and "Errno" not in line
    assert run_main("search", "--output", tmp_path / "none", "--resume") == 2
    assert f"--resume: {tmp_path / 'none'} does not exist, so there is no search" in \
        error_line(capsys)
    assert run_main("search", "--output", full, "--resume") == 2
    assert f"--resume: {full} holds no search (no config.json)" in error_line(capsys)
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)  # as for a non-root user
    assert run_main(*TRAIN_BASELINE, "--output", tmp_path / "new" / "TRAIN") == 2
    assert f"no permission to write in {tmp_path}." in error_line(capsys, "train")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "notes.txt"]
    assert mine.read_text() == "mine" and [p.name for p in full.iterdir()] == ["data.csv"]


# -- failures after the run directory exists: nothing is left behind ------------------------


def test_a_diverging_search_stops_at_once_and_leaves_an_empty_output_as_it_was(tmp_path,
                                                                              capsys):
    out = tmp_path / "RUN"
    out.mkdir()  # the user's empty directory: it stays, empty
    assert run_main("search", *SYNTHETIC, "--lr", "1e38", "--arch-lr", "1e38",
                    "--output", out) == 2
    line = error_line(capsys)
    assert "Training diverged at epoch 1, step 1 of 1: loss nan" in line
    assert "Likely causes: a learning rate too high" in line and "learning_rate=1e+38" in line
    assert list(out.iterdir()) == []  # no genotype.json, config.json, checkpoints or logs


def test_a_diverging_training_run_is_removed(tmp_path, capsys):
    out = tmp_path / "runs" / "TRAIN"
    assert run_main(*TRAIN_BASELINE, "--epochs", "1,1", "--lr", "1e38", "--output", out) == 2
    line = error_line(capsys, "train")
    assert re.search(r"Training diverged at stage 1, epoch 1, step \d of 2: loss nan", line)
    assert "learning_rate=1e+38" in line
    assert list(tmp_path.iterdir()) == []  # TRAIN and the runs/ it created are gone


def test_stop_on_non_finite_names_the_step_and_no_epoch_end_sees_it():
    from bnas_tf.training import StopOnNonFinite

    x = np.ones((8, 3), np.float32)
    x[5] = np.nan  # the third batch of 2
    model = tf.keras.Sequential([tf.keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    ends = []
    record = tf.keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: ends.append(epoch))
    with pytest.raises(bn.errors.NonFiniteError,
                       match=r"at stage 2, epoch 1, step 3 of 4: loss nan\. Stopped before "
                             r"anything was saved"):
        model.fit(x, np.zeros((8, 2)), batch_size=2, epochs=2, verbose=0, shuffle=False,
                  callbacks=[StopOnNonFinite(context="stage 2"), record])
    assert ends == []


def test_nothing_is_derived_or_saved_from_non_finite_values():
    space = bn.SearchSpace.get("lce", nodes=2)
    probs = np.full((space.num_edges, space.num_ops), 1 / space.num_ops)
    probs[3, 1] = np.nan
    with pytest.raises(bn.errors.GenotypeError, match="finite normal op probabilities"):
        bn.derive_genotype(probs, np.ones_like(probs) / space.num_ops, space)
    from bnas_tf.training import check_finite

    with pytest.raises(bn.errors.NonFiniteError, match=r"The trained weights hold NaN .*\(w:0\)"):
        check_finite([tf.Variable([1.0, np.inf], name="w")], "The trained weights")


# -- --resume: stored settings win ----------------------------------------------------------


def test_resume_with_other_settings_names_each_flag_and_changes_nothing(search_run, tmp_path,
                                                                       capsys):
    out = tmp_path / "RUN"
    shutil.copytree(search_run[0], out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # stored: bats, 3 layers, 4 channels; epochs 1
    assert run_main("search", "--output", out, "--resume", "--layers", "5", "--space", "lce",
                    "--channels", "4", "--no-augment") == 2
    line = error_line(capsys)
    assert (f"--resume: {out / 'config.json'} holds a search with other settings: "
            "--no-augment: stored True, given False; --layers: stored 3, given 5; --space: "
            "stored 'bats', given 'lce'. A resumed search keeps its stored settings") in line
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "epochs": 3}))
    before[out / "config.json"] = (out / "config.json").read_bytes()
    assert run_main("search", "--output", out, "--resume", "--epochs", "2") == 2
    assert ("--epochs: stored 3, given 2 (a resumed search may add epochs, not drop them)"
            in error_line(capsys))
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_resume_takes_the_stored_settings_and_only_what_may_change(search_run):
    out = search_run[0]
    argv = ["search", "--output", str(out), "--resume", "--layers", "3", "--space", "bats",
            "--data-dir", "/elsewhere"]
    config = cli.search_config(cli.build_parser().parse_args(argv))
    resumed = runs._resumed_config(out, config, cli.given_flags(argv))
    stored = SearchConfig.from_dict(json.loads((out / "config.json").read_text()))
    # same values as stored: no conflict; not given: stored (epochs 1, not the default 50)
    assert resumed.epochs == stored.epochs == 1 and resumed.layers == 3
    assert resumed.data_dir == "/elsewhere"  # the same data found elsewhere
    assert dataclasses_equal_except(resumed, stored, "data_dir")
    # the Python API: the settings that differ from the recipe's defaults, and epochs
    assert runs.given_settings(SearchConfig(epochs=2, layers=3)) == {"epochs", "layers"}
    assert runs._resumed_config(out, SearchConfig(epochs=4), None).epochs == 4
    with pytest.raises(runs.ResumeConflictError, match="space: stored 'bats', given 'bnas'"):
        runs._resumed_config(out, SearchConfig(space="bnas", epochs=1), None)


def dataclasses_equal_except(a, b, *names) -> bool:
    import dataclasses

    return all(getattr(a, f.name) == getattr(b, f.name) for f in dataclasses.fields(a)
               if f.name not in names)


# -- quiet by default -----------------------------------------------------------------------


def test_help_prints_no_tensorflow_start_up_lines():
    done = run_cli("search", "--help", timeout=120)
    assert done.returncode == 0 and "--validation-fraction" in done.stdout
    assert done.stderr == ""
    export = subprocess.run([sys.executable, str(ROOT / "export" / "to_tflite.py"), "--help"],
                            capture_output=True, text=True, timeout=120, env=quiet_env())
    assert export.returncode == 0 and export.stderr == ""


def test_verbose_shows_the_hidden_start_up_lines_and_the_traceback(tmp_path, capsys,
                                                                  monkeypatch):
    from bnas_tf import _startup

    monkeypatch.setattr(_startup, "_hidden", ["I0000 00:00:17.5   42 port.cc:153] oneDNN\n"])
    assert run_main("-v", "search", *SYNTHETIC, "--epochs", "0", "--output", tmp_path / "R") == 2
    err = capsys.readouterr().err
    assert err.startswith("I0000 00:00:17.5   42 port.cc:153] oneDNN\n")
    assert "Traceback" in err and err.rstrip().endswith("Expected --epochs >= 1, got 0.")


START_UP = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    "I0000 00:00:1796.2   7 cpu_feature_guard.cc:227] This TensorFlow binary is optimized\n",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild.\n",
    "/x/y.py:3: UserWarning: keep me\n",
    "  warnings.warn('keep me')\n",
    "E0000 00:00:1796.2   7 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n",
    "W0000 00:00:1796.2   7 gpu_device.cc:1] a warning\n",
    "E0000 00:00:1796.2   7 op_kernel.cc:1] a real error\n",
    "Traceback (most recent call last):\n",
]


@pytest.mark.parametrize("level, hidden", [
    (None, [0, 1, 2, 5, 6]),  # bnas_tf's default: errors only, and no CUDA probing errors
    ("2", [0, 1, 2, 6]),  # the user's level, applied to the start-up lines too
    ("0", []),  # the user wants everything
])
def test_start_up_filter_hides_noise_and_keeps_errors_and_python_output(level, hidden,
                                                                        monkeypatch):
    from bnas_tf import _startup

    if level is None:
        monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    else:
        monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", level)
    shown, dropped = _startup._filter("".join(START_UP), _startup._user_level())
    assert dropped == [START_UP[i] for i in hidden]
    assert shown == "".join(line for i, line in enumerate(START_UP) if i not in hidden)
