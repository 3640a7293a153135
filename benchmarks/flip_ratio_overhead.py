"""Seconds per training step with and without the sign-flip callbacks.

A CIFAR-sized binary CNN (32x32x3, batch 64; four `QuantConv2D` layers of
64, 64, 128, 128 channels with batch norm; Adam) trains `--steps` steps per
`fit` call for each setting: no callbacks, `FlipFlopRatio`, `ChangeToInitRatio`
and both. Settings are interleaved (rotating order) over `--rounds` rounds
after one warm-up `fit` each. The table reports median seconds per step and
the overhead against no callbacks, both per step (a `StepTimer` callback, in
every setting, times the intervals between batch ends: one train step plus
the batch hooks under test) and per whole `fit` call divided by the steps
(adds epoch hooks and `fit` setup); wall clock and process CPU time. The
callback instances are reused, so only the warm-up `fit` traces their
functions.

The end-to-end medians carry the noise of a shared machine, so the script
also times the callback hooks alone (`on_train_batch_end`, `on_epoch_end`)
and reports them as a fraction of the median step.

Usage:
    python benchmarks/flip_ratio_overhead.py --steps 8 --rounds 10 [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import bnas_tf as bn  # noqa: F401  (first: selects Keras 2 before TensorFlow is imported)

# isort: split
import larq as lq
import numpy as np
import tensorflow as tf

from bnas_tf.flips import ChangeToInitRatio, FlipFlopRatio, binarized_kernels


def build_model(channels=(64, 64, 128, 128)) -> tf.keras.Model:
    binary = dict(kernel_quantizer="ste_sign", kernel_constraint="weight_clip", use_bias=False,
                  padding="same")
    layers = [tf.keras.Input((32, 32, 3))]
    for i, filters in enumerate(channels):
        # The first conv sees the real image; the others binarize their inputs.
        layers.append(lq.layers.QuantConv2D(filters, 3, input_quantizer=None if i == 0
                                            else "ste_sign", **binary))
        layers.append(tf.keras.layers.BatchNormalization(momentum=0.9, scale=False))
        if i % 2 == 1:
            layers.append(tf.keras.layers.MaxPool2D())
    layers += [tf.keras.layers.GlobalAveragePooling2D(), tf.keras.layers.Dense(10)]
    model = tf.keras.Sequential(layers)
    model.compile(tf.keras.optimizers.Adam(1e-3),
                  tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class StepTimer(tf.keras.callbacks.Callback):
    """Wall and CPU seconds between consecutive `on_train_batch_end` calls.

    Placed last, each interval holds one training step plus the batch hooks of
    the callbacks before it (the callbacks under test).
    """

    def __init__(self):
        super().__init__()
        self._supports_tf_logs = True  # do not make Keras convert logs to NumPy
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self._last = None

    def on_epoch_begin(self, epoch, logs=None):
        self._last = None

    def on_train_batch_end(self, batch, logs=None):
        now = (time.perf_counter(), time.process_time())
        if self._last is not None:
            self.wall.append(now[0] - self._last[0])
            self.cpu.append(now[1] - self._last[1])
        self._last = now


def hook_seconds(callback, model, calls: int) -> tuple[float, float]:
    """Mean seconds of one `on_train_batch_end` and one `on_epoch_end` call."""
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_epoch_begin(0)
    callback.on_train_batch_end(0, {})  # trace
    t0 = time.perf_counter()
    for i in range(calls):
        callback.on_train_batch_end(i, {})
    batch = (time.perf_counter() - t0) / calls
    callback.on_epoch_end(0, {})  # trace
    t0 = time.perf_counter()
    for _ in range(calls):
        callback.on_epoch_end(0, {})
    epoch = (time.perf_counter() - t0) / calls
    callback.on_train_end()
    return batch, epoch


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10, help="training steps per fit call")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per setting")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--hook-calls", type=int, default=200)
    p.add_argument("--threads", type=int, default=0,
                   help="TensorFlow intra-op threads (0: TensorFlow's default)")
    args = p.parse_args()
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)

    tf.keras.utils.set_random_seed(0)
    model = build_model()
    kernels = binarized_kernels(model)
    n = sum(v.shape.num_elements() for v in kernels)
    print(f"TensorFlow {tf.__version__}, larq {lq.__version__}; {len(kernels)} binarized kernels, "
          f"N = {n} latent weights; {model.count_params()} parameters; batch {args.batch}; "
          f"{args.steps} steps per fit; {args.rounds} rounds; "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'} intra-op threads")
    rng = np.random.default_rng(0)
    dataset = tf.data.Dataset.from_tensor_slices((
        rng.normal(size=(args.batch * args.steps, 32, 32, 3)).astype("float32"),
        rng.integers(0, 10, size=args.batch * args.steps),
    )).batch(args.batch).cache()

    settings = {"none": [], "FlipFlopRatio": [FlipFlopRatio()],
                "ChangeToInitRatio": [ChangeToInitRatio()],
                "both": [FlipFlopRatio(), ChangeToInitRatio()]}
    for callbacks in settings.values():  # warm-up: trace train step and callback functions
        model.fit(dataset, epochs=1, verbose=0, callbacks=callbacks)
    timers = {name: StepTimer() for name in settings}
    fit_wall: dict[str, list[float]] = {name: [] for name in settings}
    fit_cpu: dict[str, list[float]] = {name: [] for name in settings}
    names = list(settings)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order
            t0, c0 = time.perf_counter(), time.process_time()
            model.fit(dataset, epochs=1, verbose=0, callbacks=[*settings[name], timers[name]])
            fit_wall[name].append((time.perf_counter() - t0) / args.steps)
            fit_cpu[name].append((time.process_time() - c0) / args.steps)

    def row(values, base):
        median = statistics.median(values)
        return f"{median:8.4f} {100 * (median / base - 1):+6.2f}%"

    columns = {"step wall": {k: t.wall for k, t in timers.items()},
               "step CPU": {k: t.cpu for k, t in timers.items()},
               "fit wall/steps": fit_wall, "fit CPU/steps": fit_cpu}
    print("Median seconds per training step and overhead vs no callbacks. 'step': intervals "
          "between batch ends (train step + batch hooks); 'fit .../steps': whole fit calls "
          "(adds epoch hooks and fit setup). CPU = process CPU time over both cores.")
    print(f"{'setting':<18}" + "".join(f"{c:>17}" for c in columns))
    for name in settings:
        print(f"{name:<18}" + "".join(
            f" {row(col[name], statistics.median(col['none']))}" for col in columns.values()))
    print(f"samples: {len(timers['none'].wall)} steps, {args.rounds} fits per setting; "
          "none step wall min/max "
          f"{min(timers['none'].wall):.4f}/{max(timers['none'].wall):.4f} s")
    base = statistics.median(timers["none"].wall)

    print("Hook cost alone (mean of", args.hook_calls, "calls):")
    for name, callback in [("FlipFlopRatio('epoch')", FlipFlopRatio()),
                           ("FlipFlopRatio('batch')", FlipFlopRatio("batch")),
                           ("ChangeToInitRatio", ChangeToInitRatio())]:
        batch, epoch = hook_seconds(callback, model, args.hook_calls)
        print(f"  {name:<24} on_train_batch_end {1e3 * batch:7.3f} ms "
              f"({100 * batch / base:.2f}% of a step), on_epoch_end {1e3 * epoch:7.3f} ms")


if __name__ == "__main__":
    main()
