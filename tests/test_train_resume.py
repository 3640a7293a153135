"""`bnas-tf train --resume`: per-stage checkpoints, `kill -9` and Ctrl-C, resuming across the
stage boundary as if never interrupted, resume conflicts, and the `.keras` model file.

Tiny runs: a random 2-node `lce` genotype, 2 cells of 8 channels, synthetic images, batch 32.
"""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import bnas_tf as bn
from bnas_tf import cli, train_run
from bnas_tf.errors import NonFiniteError
from bnas_tf.flips import FlipFlopRatio
from bnas_tf.search_run import SearchConfig
from bnas_tf.train_checkpoints import TrainingCheckpoints
from bnas_tf.train_run import TrainConfig, run_training, save_model_atomically

ROOT = Path(__file__).resolve().parents[1]
NETWORK = ["--dataset", "synthetic", "--layers", "2", "--channels", "8", "--batch-size", "32"]


@pytest.fixture(scope="module")
def genotype(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("genotype") / "genotype.json"
    bn.random_genotype(bn.SearchSpace.get("lce", nodes=2), rng=0).save(path)
    return path


def tiny(genotype, **settings) -> TrainConfig:
    values = dict(genotype=str(genotype), dataset="synthetic", limit=64, layers=2, channels=8,
                  batch_size=32, epochs=(2, 2))
    return TrainConfig(**{**values, **settings})


class Record(tf.keras.callbacks.Callback):
    """Logs each fit's start (stage, optimizer step) and epochs; interrupts at `stop`."""

    def __init__(self, stage, log, stop=None, error=KeyboardInterrupt):
        super().__init__()
        self.stage, self.log, self.stop, self.error = stage, log, stop, error

    def on_train_begin(self, logs=None):
        self.log.append(("begin", self.stage, int(self.model.optimizer.iterations.numpy())))

    def on_epoch_begin(self, epoch, logs=None):
        self.log.append(("epoch", self.stage, epoch))
        if (self.stage, epoch) == self.stop:
            raise self.error()


def recording(log, stop=None, error=KeyboardInterrupt):
    return lambda stage: [Record(stage, log, stop, error)]


def snapshot(directory: Path) -> dict:
    """Every file below `directory`: size and modification time."""
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in directory.rglob("*") if p.is_file()}


def run_main(*argv) -> int:
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as exit_info:
        return exit_info.code


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("bnas-tf train: error: "), err
    assert sum("error:" in line for line in lines) == 1 and "Traceback" not in err, err
    return lines[-1]


@pytest.fixture(scope="module")
def reference(genotype, tmp_path_factory):
    """An uninterrupted run, epochs (2, 2)."""
    log = []
    out = tmp_path_factory.mktemp("reference") / "TRAIN"
    result = run_training(tiny(genotype), out, verbose=0, extra_callbacks=recording(log))
    return result, log


def steps_per_epoch(result) -> int:
    return math.ceil(result.metrics["train_images"] / 32)


def test_resumes_across_the_stage_boundary_as_if_never_interrupted(reference, genotype,
                                                                   tmp_path):
    """Interrupted in stage 1, then in stage 2: the last resume does not train stage 1 again,
    stage 2 goes on at its optimizer step, and the run ends with the uninterrupted run's
    weights and metrics, bit for bit: the checkpoints restore weights, batch-norm statistics
    and Adam's moments and step (so the linear decay continues), and the images come in the
    uninterrupted run's order (one CPU process each; TensorFlow's CPU kernels are
    deterministic for a fixed input order and thread setting)."""
    expected, expected_log = reference
    steps = steps_per_epoch(expected)
    out, log = tmp_path / "TRAIN", []
    with pytest.raises(KeyboardInterrupt):
        run_training(tiny(genotype), out, verbose=0, extra_callbacks=recording(log, (1, 1)))
    checkpoints = TrainingCheckpoints(out / "checkpoints")
    assert (checkpoints.epochs_done(1), checkpoints.epochs_done(2)) == (1, 0)
    log.clear()
    with pytest.raises(KeyboardInterrupt):
        run_training(tiny(genotype), out, resume=True, verbose=0,
                     extra_callbacks=recording(log, (2, 1)))
    assert log == [("begin", 1, steps), ("epoch", 1, 1),
                   ("begin", 2, 0), ("epoch", 2, 0), ("epoch", 2, 1)]
    stage1_files = snapshot(out / "checkpoints" / "stage1")
    stage1_logs = snapshot(out / "logs" / "stage1")
    log.clear()
    result = run_training(tiny(genotype), out, resume=True, verbose=0,
                          extra_callbacks=recording(log))
    assert log == [("begin", 2, steps), ("epoch", 2, 1)]  # no stage-1 fit at all
    assert snapshot(out / "checkpoints" / "stage1") == stage1_files
    assert snapshot(out / "logs" / "stage1") == stage1_logs
    assert result.metrics == expected.metrics  # every epoch of both stages, test, val
    assert [e["epoch"] for e in result.metrics["stage1"]["epochs"]] == [0, 1]
    assert [e["epoch"] for e in result.metrics["stage2"]["epochs"]] == [0, 1]
    rates = [e["learning_rate"] for e in result.metrics["stage2"]["epochs"]]
    assert rates[0] > rates[1] == 0.0  # decayed linearly to 0 over the stage, not restarted
    for a, b in zip(result.model.get_weights(), expected.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert json.loads((out / "metrics.json").read_text()) == result.metrics
    assert expected_log[0] == ("begin", 1, 0)


def test_the_model_is_a_keras_file_that_reloads_identically(reference):
    result, _ = reference
    path = result.output_dir / "model.keras"
    assert result.model_path == path and path.is_file()
    assert not (result.output_dir / "model").exists()
    assert result.metrics["reload_max_abs_diff"] == 0.0
    x = tf.random.normal([4, 32, 32, 3], seed=1)
    np.testing.assert_array_equal(bn.load_model(path)(x, training=False),
                                  result.model(x, training=False))
    assert not [p for p in result.output_dir.iterdir() if p.name.startswith(".")]  # no temp
    with pytest.raises(ValueError, match=r"Expected a \.keras path"):
        save_model_atomically(result.model, result.output_dir / "model")


def test_a_resumed_run_may_add_epochs_and_keeps_its_files_when_it_diverges(reference,
                                                                            genotype, tmp_path):
    expected, _ = reference
    steps = steps_per_epoch(expected)
    out = tmp_path / "TRAIN"
    shutil.copytree(expected.output_dir, out)
    before = snapshot(out)
    longer, log = tiny(genotype, epochs=(2, 3)), []
    with pytest.raises(NonFiniteError, match="the run keeps its finished epochs"):
        run_training(longer, out, resume=True, verbose=0,
                     extra_callbacks=recording(log, (2, 2), NonFiniteError))
    assert set(snapshot(out)) >= set(before)  # nothing removed
    log.clear()
    result = run_training(longer, out, resume=True, verbose=0, extra_callbacks=recording(log))
    assert log == [("begin", 2, 2 * steps), ("epoch", 2, 2)]  # stage 1 is not trained again
    stage2 = result.metrics["stage2"]["epochs"]
    assert stage2[:2] == expected.metrics["stage2"]["epochs"]
    assert stage2[2]["epoch"] == 2 and stage2[2]["learning_rate"] == 0.0
    assert result.metrics["stage1"] == expected.metrics["stage1"]
    assert json.loads((out / "config.json").read_text())["epochs"] == [2, 3]


def test_resuming_a_finished_run_with_its_own_flags_trains_nothing(reference, genotype,
                                                                   tmp_path, capsys):
    expected, _ = reference
    out = tmp_path / "TRAIN"
    shutil.copytree(expected.output_dir, out)
    checkpoints = snapshot(out / "checkpoints")
    assert run_main("train", "--genotype", genotype, *NETWORK, "--limit", "64",
                    "--epochs", "2,2", "--output", out, "--resume") == 0
    assert snapshot(out / "checkpoints") == checkpoints
    assert json.loads((out / "metrics.json").read_text()) == expected.metrics
    assert f"model: {out / 'model.keras'}" in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    (["--layers", "3"], "--layers: stored 2, given 3"),
    (["--epochs", "1,2"], "--epochs: stored 2,2, given 1,2 (a resumed run may add epochs to a "
                          "stage, not drop them)"),
    (["--epochs", "3,2"], "--epochs: stored 2,2, given 3,2 (stage 2 has begun from the "
                          "finished stage 1, which can no longer grow)"),
    (["--baseline", "quicknet"], "--baseline: stored None, given 'quicknet'"),
    (["--seed", "1", "--no-augment"], "--no-augment: stored True, given False; --seed: stored "
                                      "0, given 1"),
])
def test_a_resume_conflict_names_the_flag_and_both_values_and_writes_nothing(
        reference, tmp_path, capsys, flags, message):
    out = tmp_path / "TRAIN"
    shutil.copytree(reference[0].output_dir, out)
    before = snapshot(out)
    assert run_main("train", "--output", out, "--resume", *flags) == 2
    line = error_line(capsys)
    assert f"--resume: {out / 'config.json'} holds a training run with other settings: " \
        f"{message}. A resumed run keeps its stored settings" in line
    assert snapshot(out) == before


def test_resume_without_a_training_run_is_a_clear_error(tmp_path, capsys):
    missing, empty, search = tmp_path / "missing", tmp_path / "empty", tmp_path / "RUN"
    empty.mkdir()
    search.mkdir()
    (search / "config.json").write_text(json.dumps(SearchConfig().__dict__))
    assert run_main("train", "--output", missing, "--resume") == 2
    assert f"--resume: {missing} does not exist, so there is no training run to continue. " \
        "Run without --resume to start one." in error_line(capsys)
    assert run_main("train", "--output", empty, "--resume") == 2
    assert f"--resume: {empty} holds no training run (no config.json)." in error_line(capsys)
    assert run_main("train", "--output", search, "--resume") == 2
    assert f"--resume: {search} holds no training run ({search / 'config.json'} has settings " \
        "a training run does not have: anneal_from, arch_beta_1, arch_beta_2, ...)" in \
        error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["RUN", "empty"]
    assert list(empty.iterdir()) == [] and [p.name for p in search.iterdir()] == ["config.json"]
    # without --resume, a network is still required; with it, a run is no longer overwritten
    assert run_main("train", "--output", empty) == 2
    assert "one of the arguments --genotype --baseline is required" in capsys.readouterr().err


def test_a_crash_after_a_checkpoint_keeps_the_run_and_a_crash_before_one_removes_it(
        reference, genotype, tmp_path):
    """Any failure but divergence (out of memory, a full disk, a bug) after an epoch was
    stored keeps the run for `--resume`; one before the first checkpoint leaves nothing."""
    expected, _ = reference
    out = tmp_path / "TRAIN"
    with pytest.raises(RuntimeError):
        run_training(tiny(genotype), out, verbose=0,
                     extra_callbacks=recording([], (1, 0), error=RuntimeError))
    assert not out.exists()
    with pytest.raises(RuntimeError):
        run_training(tiny(genotype), out, verbose=0,
                     extra_callbacks=recording([], (2, 0), error=RuntimeError))
    checkpoints = TrainingCheckpoints(out / "checkpoints")
    assert (checkpoints.epochs_done(1), checkpoints.epochs_done(2)) == (2, 0)
    result = run_training(tiny(genotype), out, resume=True, verbose=0)
    assert result.metrics == expected.metrics


def test_ctrl_c_keeps_the_checkpoints_and_says_that_resume_continues(genotype, tmp_path,
                                                                      capsys, monkeypatch):
    class CtrlC(FlipFlopRatio):
        def on_epoch_begin(self, epoch, logs=None):
            super().on_epoch_begin(epoch, logs)
            if epoch == 1:
                # what Python makes of the terminal's SIGINT; raised here, not through
                # signal.raise_signal, whose handler runs at the next bytecode check and
                # can land in a finalizer that swallows it (the test failed so under load)
                raise KeyboardInterrupt

    out = tmp_path / "TRAIN"
    command = ["train", "--genotype", genotype, *NETWORK, "--limit", "64", "--epochs", "2,1",
               "--output", out]
    with monkeypatch.context() as patch:
        patch.setattr(train_run, "FlipFlopRatio", CtrlC)
        assert run_main(*command) == 130
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == ("bnas-tf train: interrupted; finished epochs are saved "
                                    "(continue with --resume)")
    assert TrainingCheckpoints(out / "checkpoints").epochs_done(1) == 1
    assert run_main(*command) == 2
    assert "already holds a training run. Pass --resume to continue it" in error_line(capsys)
    assert run_main("train", "--output", out, "--resume") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [len(metrics[s]["epochs"]) for s in ("stage1", "stage2")] == [2, 1]


def bnas_tf_command() -> list[str]:
    script = Path(sys.executable).with_name("bnas-tf")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bnas_tf.cli"]


def test_kill_9_loses_at_most_one_epoch(genotype, tmp_path):
    """SIGKILL after the first checkpoint (no handler runs), then `--resume`: the run goes on
    at the epoch after its newest checkpoint and metrics.json has every epoch."""
    out = tmp_path / "TRAIN"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [*bnas_tf_command(), "train", "--genotype", str(genotype), *NETWORK,
               "--limit", "192", "--epochs", "3,1", "--output", str(out)]
    state = out / "checkpoints" / "stage1" / "checkpoint"
    with open(tmp_path / "first.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 300
        while not state.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL, (tmp_path / "first.log").read_text()
    assert not (out / "metrics.json").exists(), "the run finished before it was killed"
    done = TrainingCheckpoints(out / "checkpoints").epochs_done(1)
    assert 1 <= done < 3, "the run got to the end of stage 1 before it was killed"
    kept = json.loads((out / "checkpoints" / "stage1" / "history.json").read_text())["epochs"]
    resumed = subprocess.run([*bnas_tf_command(), "train", "--output", str(out), "--resume"],
                             capture_output=True, text=True, timeout=600, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert re.search(rf"Resuming stage 1 at epoch {done + 1} of 3 \(", resumed.stderr)
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["stage1"]["epochs"]] == [0, 1, 2]
    assert [e["epoch"] for e in metrics["stage2"]["epochs"]] == [0]
    assert metrics["stage1"]["epochs"][:done] == kept[:done]  # the finished epochs are kept
    assert (out / "model.keras").is_file()


def test_resume_builds_the_stored_genotype_when_the_search_rewrote_its_file(tmp_path):
    """A resumed `bnas-tf search` rewrites RUN/genotype.json; a training run resumed after
    that still builds the network its checkpoints hold (its own TRAIN/genotype.json)."""
    space = bn.SearchSpace.get("lce", nodes=2)
    first, other = (bn.random_genotype(space, rng=seed) for seed in (0, 3))
    assert first.to_dict() != other.to_dict()
    searched = tmp_path / "RUN" / "genotype.json"
    searched.parent.mkdir()
    first.save(searched)
    out = tmp_path / "TRAIN"
    with pytest.raises(KeyboardInterrupt):
        run_training(tiny(searched), out, verbose=0, extra_callbacks=recording([], stop=(1, 1)))
    assert bn.Genotype.load(out / train_run.GENOTYPE_FILE).to_dict() == first.to_dict()
    other.save(searched)  # the search goes on and derives another genotype
    result = run_training(tiny(searched), out, resume=True, verbose=0)
    expected = bn.build_network(first, num_classes=10, layers=2, channels=8,
                                input_shape=(32, 32, 3))
    assert bn.count_params(result.model) == bn.count_params(expected)
    assert [w.shape for w in result.model.weights] == [w.shape for w in expected.weights]
    assert [len(result.metrics[s]["epochs"]) for s in ("stage1", "stage2")] == [2, 2]
