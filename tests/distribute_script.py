"""Subprocess entry points of tests/test_distribute.py (logical devices, TF_CONFIG workers).

Run as `python tests/distribute_script.py MODE ARGS...`; prints one line
`RESULT <json>` on success. Not collected by pytest (no `test_` prefix).

Modes:
    equivalence: one device vs MirroredStrategy over two logical CPUs, same
        global batch, same initial values; prints the largest differences
        ($BNAS_MIXING: the supernet's mixing, default "all").
    search OUTPUT: a tiny `run_search` under the strategy named by
        $BNAS_STRATEGY (TF_CONFIG from the environment for multi_worker);
        prints the genotype and whether this process is the chief; with
        $BNAS_TRAIN=1, then two-stage training of that genotype under the same
        strategy (`run_training`, output OUTPUT/TRAIN).
    restore OUTPUT: resume OUTPUT's search under MirroredStrategy over two
        logical CPUs (prints restored vs saved α), then train its genotype in
        two stages under the same strategy (`run_training`).
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys

import bnas_tf as bn  # first: selects Keras 2 before TensorFlow resolves tf.keras

# isort: split
import numpy as np
import tensorflow as tf

import bnas_tf.search_run
from bnas_tf import distribute
from bnas_tf.search_run import SearchConfig, run_search
from bnas_tf.train_run import TrainConfig, run_training

OPS = ["none", "skip_connect", "bin_conv_3x3"]
TINY = dict(dataset="synthetic", limit=32, space="bats", layers=2, channels=4, nodes=2,
            batch_size=8, augment=False, arch_learning_rate=1e-2, seed=0)


def two_logical_cpus() -> list[str]:
    (cpu,) = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def tiny_search_config(**overrides) -> SearchConfig:
    return SearchConfig(**{**TINY, **overrides})


def _train(strategy, initial, dataset, steps):
    with strategy.scope():
        net = bn.SuperNet(bn.SearchSpace(OPS, nodes=2), num_classes=4, layers=2, channels=4,
                          seed=0, mixing=os.environ.get("BNAS_MIXING", "all"))
        # plain SGD: a wrongly scaled loss or regularizer changes the step size
        net.compile(optimizer=tf.keras.optimizers.legacy.SGD(0.1),
                    arch_optimizer=tf.keras.optimizers.legacy.SGD(0.5),
                    arch_regularizer=bn.regularizers.Diversity(1.0), arch_weight_decay=0.1,
                    metrics=["accuracy"])
        net(tf.zeros((1, 8, 8, 3)))
    if initial is not None:
        net.set_weights(initial)
    start = net.get_weights()
    history = net.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    return net, start, {k: v[-1] for k, v in history.history.items()}


def _groups(net) -> dict[str, list[int]]:
    """Indices into `net.weights` of α, other trainable weights, BN moving means/variances."""
    alphas = {id(v) for v in net.arch_variables}
    trainable = {id(v) for v in net.trainable_weights}
    groups = {"alpha": [], "weights": [], "moving_mean": [], "moving_variance": []}
    for i, v in enumerate(net.weights):
        if id(v) in alphas:
            groups["alpha"].append(i)
        elif id(v) in trainable:
            groups["weights"].append(i)
        elif "moving_mean" in v.name:
            groups["moving_mean"].append(i)
        elif "moving_variance" in v.name:
            groups["moving_variance"].append(i)
    return groups


def equivalence() -> dict:
    """2 steps on one device vs 2 replicas; same initial values, same global batches."""
    devices = two_logical_cpus()
    data = bn.data.synthetic(64, 8, image_shape=(8, 8, 3), num_classes=4, seed=0)
    x = bn.data.normalize(data.x_train, data).astype("float32")
    y = data.y_train
    pairs = tf.data.Dataset.from_tensor_slices(((x[:32], y[:32]), (x[32:], y[32:]))).batch(16)
    tf.keras.utils.set_random_seed(0)
    single, initial, logs_single = _train(tf.distribute.get_strategy(), None, pairs, 2)
    strategy = distribute.get_strategy("mirrored", devices=devices[:2])
    mirrored, _, logs_mirrored = _train(strategy, initial, pairs, 2)
    w_single, w_mirrored = single.get_weights(), mirrored.get_weights()
    result = {"replicas": strategy.num_replicas_in_sync,
              "batch_norm_synchronized": [layer.synchronized for layer in mirrored.submodules
                                          if isinstance(layer,
                                                        tf.keras.layers.BatchNormalization)],
              "genotypes_equal": single.genotype() == mirrored.genotype(),
              "logs_single": logs_single, "logs_mirrored": logs_mirrored}
    for group, index in _groups(single).items():
        result[f"{group}_diff"] = max(float(np.max(np.abs(w_single[i] - w_mirrored[i])))
                                      for i in index)
        result[f"{group}_moved"] = max(float(np.max(np.abs(w_single[i] - initial[i])))
                                       for i in index)
    index = _groups(single)["moving_variance"]  # positive, so a relative difference is meaningful
    result["moving_variance_relative_diff"] = max(
        float(np.max(np.abs(w_single[i] - w_mirrored[i]) / w_single[i])) for i in index)
    return result


def search(output: str) -> dict:
    strategy = distribute.get_strategy(os.environ.get("BNAS_STRATEGY", "default"))
    sync = os.environ.get("BNAS_SYNC_BATCH_NORM", "1") == "1"
    result = run_search(tiny_search_config(epochs=1, sync_batch_norm=sync), output,
                        strategy=strategy,
                        verbose=int(os.environ.get("BNAS_VERBOSE", "0")))
    out = {"chief": distribute.is_chief(strategy),
           "replicas": strategy.num_replicas_in_sync,
           "genotype": result.genotype.to_dict()}
    if os.environ.get("BNAS_TRAIN") == "1":  # then `bnas-tf train` under the same strategy
        trained = run_training(TrainConfig(genotype=os.path.join(output, "genotype.json"),
                                           dataset="synthetic", limit=64, layers=2, channels=4,
                                           epochs=(1, 1), batch_size=16, augment=False,
                                           sync_batch_norm=sync),
                               os.path.join(output, "TRAIN"), strategy=strategy, verbose=0)
        out["train"] = {stage: trained.metrics[stage]["test"] for stage in ("stage1", "stage2")}
        out["train_weights_sum"] = float(sum(np.abs(w).sum() for w in trained.model.get_weights()))
    return out


def restore(output: str) -> dict:
    devices = two_logical_cpus()
    strategy = distribute.get_strategy("mirrored", devices=devices[:2])
    saved = bn.Genotype.load(os.path.join(output, "genotype.json")).probabilities
    epochs_before = len(json.loads(open(os.path.join(output, "history.json")).read())["epochs"])
    # same number of epochs: nothing is trained, so α must be the saved α
    result = run_search(tiny_search_config(epochs=epochs_before), output, resume=True,
                        strategy=strategy, verbose=0)
    restored = result.genotype.probabilities
    with strategy.scope():  # what α would be without the checkpoint
        fresh = bn.search_run.build_supernet(tiny_search_config(), 10).genotype().probabilities

    def max_diff(a, b):
        return max(float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k]))))
                   for k in ("normal", "reduce"))

    result = {"replicas": strategy.num_replicas_in_sync,
              "restored_diff": max_diff(saved, restored), "fresh_diff": max_diff(saved, fresh)}
    # then two-stage training of the genotype under the same strategy (`bnas-tf train`)
    trained = run_training(TrainConfig(genotype=os.path.join(output, "genotype.json"),
                                       dataset="synthetic", limit=64, layers=2, channels=4,
                                       epochs=(1, 1), batch_size=16, augment=False),
                           os.path.join(output, "TRAIN"), strategy=strategy, verbose=0)
    kernels = [v for v in trained.model.trainable_variables if "kernel" in v.name]
    result["train"] = {
        "test": {stage: trained.metrics[stage]["test"] for stage in ("stage1", "stage2")},
        "mirrored_kernels": all(isinstance(v, tf.distribute.DistributedValues) for v in kernels),
        "model_saved": os.path.isfile(os.path.join(output, "TRAIN", "model.keras")),
    }
    return result


def main(argv: list[str]) -> int:
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1`: stacks to stderr
    modes = {"equivalence": equivalence, "search": search, "restore": restore}
    result = modes[argv[0]](*argv[1:])
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
