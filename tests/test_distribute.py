"""tf.distribute: strategy names, replica scaling, MirroredStrategy equivalence, multi-worker.

The multi-device tests run `tests/distribute_script.py` in subprocesses: two
logical CPU devices must be configured before TensorFlow initializes its
devices (this process already has), and each multi-worker task is its own
process with its own `TF_CONFIG`. All servers bind to 127.0.0.1, every
subprocess has a timeout and is killed when a test ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import bnas_tf as bn
from bnas_tf import distribute
from bnas_tf.cli import build_parser

SCRIPT = Path(__file__).with_name("distribute_script.py")
ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 420  # seconds per subprocess; the machine may be shared


def free_ports(n: int) -> list[int]:
    """`n` distinct free TCP ports on 127.0.0.1 (bound, read, released together)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def script_env(**extra) -> dict:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "2",
           "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def run_processes(commands: list[list[str]], envs: list[dict], logs: Path,
                  timeout: float = TIMEOUT) -> list[dict]:
    """Start all, wait for all (killing all on timeout or error); parse each RESULT line.

    Output goes to files, not pipes: a process blocked on a full pipe while
    its peers wait for it in a collective would deadlock the run.
    """
    logs.mkdir(parents=True, exist_ok=True)
    processes, files, results = [], [], []
    try:
        for i, (command, env) in enumerate(zip(commands, envs, strict=True)):
            out, err = open(logs / f"{i}.out", "w+"), open(logs / f"{i}.err", "w+")
            files += [out, err]
            processes.append(subprocess.Popen(command, env=env, stdout=out, stderr=err))
        for i, p in enumerate(processes):
            p.wait(timeout=timeout)
            output = (logs / f"{i}.out").read_text()
            lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
            assert p.returncode == 0 and lines, \
                f"process {i} exit {p.returncode}:\n{(logs / f'{i}.err').read_text()[-4000:]}"
            results.append(json.loads(lines[-1][len("RESULT "):]))
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in files:
            f.close()
    return results


def run_scripts(args_list: list[list], envs: list[dict], logs: Path) -> list[dict]:
    return run_processes([[sys.executable, str(SCRIPT), *map(str, args)] for args in args_list],
                         envs, logs)


# -- unit tests (this process, no replicas) ------------------------------------------------

@pytest.mark.parametrize("name", ["", "gpu", "Mirrored", "tpu", 3])
def test_unknown_strategy_names_are_rejected(name):
    with pytest.raises(ValueError, match="default, mirrored, multi_worker"):
        distribute.get_strategy(name)


def test_default_strategy_and_passthrough():
    default = distribute.get_strategy("default")
    assert default is tf.distribute.get_strategy() and default.num_replicas_in_sync == 1
    assert distribute.get_strategy(None) is default
    assert distribute.get_strategy(default) is default


def test_devices_only_with_mirrored():
    with pytest.raises(ValueError, match="'mirrored' strategy only"):
        distribute.get_strategy("default", devices=["/cpu:0"])


@pytest.mark.parametrize("tf_config, match", [
    ("not json", "Expected TF_CONFIG to be JSON"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}}', "Expected TF_CONFIG"),
])
def test_malformed_tf_config_is_rejected_before_tensorflow_reads_it(monkeypatch, tf_config,
                                                                     match):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=match):
        distribute.get_strategy("multi_worker")


@pytest.mark.parametrize("cluster, task, chief", [
    (None, None, True),
    ({"worker": ["a:1", "b:2"]}, {"type": "worker", "index": 0}, True),
    ({"worker": ["a:1", "b:2"]}, {"type": "worker", "index": 1}, False),
    ({"chief": ["c:0"], "worker": ["a:1"]}, {"type": "worker", "index": 0}, False),
    ({"chief": ["c:0"], "worker": ["a:1"]}, {"type": "chief", "index": 0}, True),
])
def test_is_chief_follows_keras_convention(monkeypatch, tmp_path, cluster, task, chief):
    if cluster is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
    assert distribute.is_chief() is chief
    write = distribute.worker_dir(tmp_path / "out")
    assert (write == tmp_path / "out") is chief
    distribute.cleanup_worker_dir(write, tmp_path / "out")
    assert chief or not write.exists()


def test_regularization_is_divided_among_replicas_only_in_replica_context():
    loss = tf.constant(6.0)
    assert float(distribute.scale_for_replicas(loss)) == 6.0
    assert distribute.num_replicas() == 1 and not distribute.sync_batch_norm()


def test_sync_batch_norm_option_is_kept_on_the_strategy():
    strategy = distribute.get_strategy("mirrored", devices=["/cpu:0"])
    with strategy.scope():
        assert not distribute.sync_batch_norm()  # one replica: nothing to synchronize
    strategy = distribute.get_strategy(strategy, sync_batch_norm=False)
    assert strategy._bnas_tf_sync_batch_norm is False


def test_batch_norm_is_plain_without_replicas():
    layers = [m for m in bn.SuperNet(bn.SearchSpace(["none", "bin_conv_3x3"], nodes=2),
                                     num_classes=2, layers=1, channels=2).submodules
              if isinstance(m, tf.keras.layers.BatchNormalization)]
    assert layers and not any(layer.synchronized for layer in layers)


@pytest.mark.parametrize("command", ["search", "train"])
def test_cli_takes_strategy(command):
    parser = build_parser()
    required = (["--output", "o"] if command == "search"
                else ["--output", "o", "--genotype", "g.json"])
    args = parser.parse_args([command, *required, "--strategy", "multi_worker"])
    assert args.strategy == "multi_worker"
    assert parser.parse_args([command, *required]).strategy == "default"
    with pytest.raises(SystemExit):
        parser.parse_args([command, *required, "--strategy", "tpu"])


# -- several replicas (subprocesses) -------------------------------------------------------

def test_mirrored_two_cpus_matches_one_device_with_same_global_batch(tmp_path):
    """α, weights and BN statistics after 2 bilevel steps (SGD on both levels).

    Batch norm is synchronized under the strategy (statistics over the global
    batch). Moving variances differ by Bessel's factor n/(n-1) only: one
    device uses the fused kernel, which updates them with the unbiased batch
    variance; the synchronized layer uses the biased one. Their relative
    difference is at most 1/(n-1) with n = 16·2·2 in the smallest feature map.
    """
    (result,) = run_scripts([["equivalence"]], [script_env()], tmp_path)
    assert result["replicas"] == 2
    assert result["batch_norm_synchronized"] and all(result["batch_norm_synchronized"])
    for group in ("alpha", "weights", "moving_mean"):
        assert result[f"{group}_moved"] > 1e-2, group  # the steps did change them
        assert result[f"{group}_diff"] < 1e-5, (group, result)
    assert result["moving_variance_relative_diff"] < 1.0 / (16 * 2 * 2 - 1) + 1e-4
    assert result["genotypes_equal"]
    # logged values are global means, not sums over replicas
    single, mirrored = result["logs_single"], result["logs_mirrored"]
    assert set(single) == set(mirrored) >= {"loss", "arch_loss", "accuracy", "entropy",
                                             "temperature"}
    for key in single:
        assert mirrored[key] == pytest.approx(single[key], rel=1e-4, abs=1e-5), key


def test_mirrored_two_cpus_single_path_draws_alike(tmp_path):
    """Single-path mixing under two replicas: both draw the same ops each step.

    Its mixed ops' batch norms keep per-replica statistics (a synchronized one
    cannot run inside the per-edge switch), so the result is close to, not
    equal to, one device's; the gap stays far below the steps' own size
    (different draws on the replicas would not).
    """
    (result,) = run_scripts([["equivalence"]], [script_env(BNAS_MIXING="gumbel")], tmp_path)
    assert result["replicas"] == 2
    assert result["genotypes_equal"]
    for group in ("alpha", "weights"):  # measured: 3 % and 8 % of the steps' size
        assert result[f"{group}_moved"] > 1e-3, group
        assert result[f"{group}_diff"] < 0.2 * result[f"{group}_moved"], (group, result)


def test_multi_worker_search_and_training_agree_and_only_chief_writes(tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    output = tmp_path / "RUN"  # the same --output on both, as on a shared filesystem
    # per-replica batch norm: synchronized BN costs one all-reduce per layer and pass,
    # far too slow between processes on a shared 2-core machine (its math is tested above)
    envs = [script_env(BNAS_STRATEGY="multi_worker", BNAS_SYNC_BATCH_NORM="0", BNAS_TRAIN="1",
                       TF_CONFIG=json.dumps({"cluster": cluster,
                                             "task": {"type": "worker", "index": i}}))
            for i in range(2)]
    chief, worker = run_scripts([["search", output]] * 2, envs, tmp_path / "logs")
    assert chief["chief"] and not worker["chief"]
    assert chief["replicas"] == worker["replicas"] == 2
    assert chief["genotype"] == worker["genotype"]
    assert bn.Genotype.load(output / "genotype.json").to_dict() == chief["genotype"]
    assert sorted(p.name for p in output.iterdir()) == [
        "TRAIN", "checkpoints", "config.json", "genotype.json", "history.json", "logs"]
    # two-stage training of that genotype under the same strategy: the workers hold the
    # same weights and test results; only the chief saved the model and metrics
    assert chief["train"] == worker["train"]
    assert chief["train_weights_sum"] == pytest.approx(worker["train_weights_sum"], rel=1e-6)
    assert (output / "TRAIN" / "model.keras").is_file()
    assert json.loads((output / "TRAIN" / "metrics.json").read_text())["stage2"]["test"] == (
        chief["train"]["stage2"])
    probs = np.asarray(chief["genotype"]["probabilities"]["normal"])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)


def test_checkpoint_restores_and_two_stage_training_runs_under_mirrored_strategy(tmp_path):
    output = tmp_path / "RUN"
    run_scripts([["search", output]], [script_env()], tmp_path / "search")  # 1 device, 1 epoch
    (result,) = run_scripts([["restore", output]], [script_env()], tmp_path / "restore")
    assert result["replicas"] == 2
    assert result["fresh_diff"] > 1e-3  # training moved α away from its initial value
    assert result["restored_diff"] < 1e-6  # the checkpoint brought it back under 2 replicas
    train = result["train"]  # two stages of the derived network under the same strategy
    assert train["mirrored_kernels"] and train["model_saved"]
    for stage in ("stage1", "stage2"):
        assert 0.0 <= train["test"][stage]["accuracy"] <= 1.0
        assert np.isfinite(train["test"][stage]["loss"])


def test_cli_strategy_options_reach_the_run_configs():
    from bnas_tf.cli import search_config, train_config

    parser = build_parser()
    args = parser.parse_args(["search", "--output", "o", "--strategy", "mirrored",
                              "--no-sync-batch-norm"])
    assert args.strategy == "mirrored"
    assert search_config(args).sync_batch_norm is False  # the config cli._search runs
    args = parser.parse_args(["train", "--output", "o", "--genotype", "g.json"])
    assert train_config(args).sync_batch_norm is True
