"""Seconds per search step (architecture step + weight step), images/s, peak memory.

Prints the configuration and one line of figures per mixing mode, then (with
several modes) a table side by side. Reference (issue 2): the public PyTorch
BNAS code on 2 cores, 7-op BNAS space, first order, all ops on every edge:
layers=5, channels=16, batch 32+32: 7.1-8.2 s/step (median), 2.9 GB peak RSS;
layers=8, channels=16, batch 64+64: 23 s/step, 8.1 GB.

Usage:
    python benchmarks/search_throughput.py --space bnas --layers 5 --channels 16 --batch 32
    python benchmarks/search_throughput.py --layers 8 --batch 64 --mixing all,partial,gumbel
    python benchmarks/search_throughput.py --layers 8 --batch 64 --mixed-bfloat16

Peak memory is the process's peak resident set size (TensorFlow runtime,
traced graphs and activations); each mode runs in a process of its own, one
after the other. The `rss_*` figures are the resident size after importing
bnas_tf (TensorFlow runtime), after building the supernet and after tracing
the step (before it runs). `first_step_s` includes tracing and graph
optimization; `median_step_s` is the median of the following `--steps` steps.
"""

from __future__ import annotations

import bnas_tf as bn  # selects Keras 2 first

# isort: split
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf


def rss_gb() -> float:
    """Current resident set size of this process in GB (Linux), else the peak."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**30
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure(space: str, layers: int, channels: int, batch: int, steps: int, image: int,
            second_order: bool, mixed_bfloat16: bool, jit_compile: bool = False,
            mixing: str = "all", partial_channels: int = 4) -> dict:
    """Median wall time of `steps` search steps after one traced warm-up step."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2 * batch, image, image, 3)).astype("float32")
    y = rng.integers(0, 10, size=2 * batch)
    pair = ((x[:batch], y[:batch]), (x[batch:], y[batch:]))
    if mixed_bfloat16:
        tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    rss = {"rss_import_gb": rss_gb()}
    net = bn.SuperNet(space, num_classes=10, layers=layers, channels=channels, seed=0,
                      mixing=mixing, partial_channels=partial_channels)
    net.compile(second_order=second_order,
                arch_regularizer=bn.regularizers.Diversity(1.0, tau=7.7))
    net(x[:1])
    rss["rss_built_gb"] = rss_gb()
    step = tf.function(net.train_step, jit_compile=jit_compile)
    t0 = time.perf_counter()
    step.get_concrete_function(pair)  # trace only
    rss["rss_traced_gb"] = rss_gb()
    step(pair)  # first step: graph optimization and the first run
    first = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        float(step(pair)["loss"])
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {"mixing": mixing, "space": space, "layers": layers, "channels": channels,
            "batch": batch, "image": image, "second_order": second_order, "mixed_bfloat16": mixed_bfloat16, "jit_compile": jit_compile,
            "first_step_s": first, "median_step_s": median, "images_per_s": 2 * batch / median,
            **rss, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def _in_subprocess(mode: str) -> dict:
    """Run this script for one mixing mode in a fresh process (its own peak RSS)."""
    argv = [a for a in sys.argv[1:]]
    if "--mixing" in argv:
        i = argv.index("--mixing")
        del argv[i:i + 2]
    argv = [a for a in argv if not a.startswith("--mixing=")]
    done = subprocess.run([sys.executable, __file__, *argv, "--mixing", mode, "--json"],
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"mixing={mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _median_run(runs: list[dict]) -> dict:
    """The run of median step time (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r["median_step_s"])
    return ordered[(len(ordered) - 1) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="bnas")
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--batch", type=int, default=32, help="per half: train and val batches")
    p.add_argument("--image", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--mixing", default="all",
                   help="comma-separated modes among all, partial, gumbel (each in its own "
                        "process)")
    p.add_argument("--partial-channels", type=int, default=4, help="K of partial mixing")
    p.add_argument("--repeats", type=int, default=1,
                   help="run the sequence of modes this many times (a fresh process each) "
                        "and report each mode's median: drifts of a shared machine hit all "
                        "modes alike")
    p.add_argument("--second-order", action="store_true")
    p.add_argument("--mixed-bfloat16", action="store_true",
                   help="Keras mixed precision: bfloat16 activations, float32 weights and α")
    p.add_argument("--jit-compile", action="store_true", help="compile the step with XLA")
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    modes = [m.strip() for m in a.mixing.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(bn.supernet.MIXING_MODES))
    if unknown or not modes:
        p.error(f"--mixing: unknown modes {unknown}; choose from {bn.supernet.MIXING_MODES}")
    if len(modes) == 1 and a.json:
        r = measure(a.space, a.layers, a.channels, a.batch, a.steps, a.image, a.second_order,
                    a.mixed_bfloat16, a.jit_compile, modes[0], a.partial_channels)
        print(json.dumps(r))
        return
    print(f"tensorflow {tf.__version__}, {len(tf.config.list_physical_devices('CPU'))} CPU "
          f"device(s), {tf.config.threading.get_intra_op_parallelism_threads() or 'default'} "
          "intra-op threads")
    runs = {mode: [] for mode in modes}
    for _ in range(max(1, a.repeats)):
        for mode in modes:
            r = _in_subprocess(mode)
            runs[mode].append(r)
            print(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in r.items()), flush=True)
    results = [_median_run(runs[mode]) for mode in modes]
    if len(results) > 1:
        base = results[0]["median_step_s"]
        print(f"\n| mixing | s/step | train img/s | speed-up vs {results[0]['mixing']} | "
              "first step s | peak RSS GB |")
        print("|---|---|---|---|---|---|")
        for r in results:
            print(f"| {r['mixing']} | {r['median_step_s']:.2f} | {r['batch'] / r['median_step_s']:.1f} "
                  f"| {base / r['median_step_s']:.2f}x | {r['first_step_s']:.0f} "
                  f"| {r['peak_rss_gb']:.2f} |")


if __name__ == "__main__":
    main()
