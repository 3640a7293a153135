"""Input-pipeline throughput and memory: streamed image folder vs images in memory.

Two reports, each measured in fresh subprocesses so every figure is that
run's own peak resident set size (`resource.getrusage(RUSAGE_SELF).ru_maxrss`):

* `throughput`: images/s of the input pipeline alone (no model) for
  (a) the streaming path, `bn.data.load("folder", DIR, image_size=S)` +
  `make_dataset(..., training=True)`, in both preprocessing styles, and
  (b) the in-memory path, the same folder decoded up front
  (`in_memory=True`) and sliced from arrays. Also the peak RSS of each run
  and, for (b), the seconds spent decoding up front.
* `scale`: the memory check of issue 15. One folder of 60,000 JPEGs (the
  offline CIFAR-10 copy) and one of 6,000, each resized on the fly to S x S,
  feed `--steps` training steps of a small derived network (a few cells
  and channels); the large run's peak RSS must stay within `--max-ratio`
  (1.2) of the small run's. Exit status 1 when it does not.

Folders are unpacked into a temporary directory from the shared CIFAR-10
copy (`../shared/datasets/cifar10/make_cifar10.py folder DIR [--limit N]`)
unless `--large`/`--small`/`--folder` name existing ones.

Usage:
    python benchmarks/data_throughput.py throughput [--folder DIR] [--image-size 64]
    python benchmarks/data_throughput.py scale [--large DIR --small DIR] [--steps 200]

Figures depend on the machine and its load; the JSON lines carry the
configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAKE_CIFAR10 = Path("datasets") / "cifar10" / "make_cifar10.py"


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (ru_maxrss is in KB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- child runs


def run_pipeline(folder: str, image_size: int, batch_size: int, batches: int, mode: str) -> dict:
    """Images/s of `batches` training batches of the input pipeline alone."""
    import bnas_tf as bn

    start = time.perf_counter()
    if mode == "memory":
        data = bn.data.load("folder", folder, image_size=image_size, in_memory=True)
        style = "cifar"
    else:
        data = bn.data.load("folder", folder, image_size=image_size)
        style = mode.split("-", 1)[1]
    load_seconds = time.perf_counter() - start
    ds = bn.data.make_dataset(data, batch_size=batch_size, training=True, preprocessing=style)
    ds = ds.repeat()
    iterator = iter(ds)
    for _ in range(10):  # warm-up: tracing, autotuning
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        images, _ = next(iterator)
    seconds = time.perf_counter() - start
    return {"mode": mode, "images_per_s": round(batches * batch_size / seconds, 1),
            "load_s": round(load_seconds, 2), "train_images": len(data.y_train),
            "input_shape": list(data.input_shape), "peak_rss_mb": round(peak_rss_mb(), 1)}


def run_training(folder: str, image_size: int, batch_size: int, steps: int, layers: int,
                 channels: int) -> dict:
    """`steps` training steps of a small derived network fed by the streamed folder."""
    import bnas_tf as bn  # first: selects Keras 2

    # isort: split
    import tensorflow as tf

    start = time.perf_counter()
    data = bn.data.load("folder", folder, image_size=image_size)
    load_seconds = time.perf_counter() - start
    tf.keras.utils.set_random_seed(0)
    space = bn.SearchSpace.get("bats", nodes=2)
    genotype = bn.SuperNet(space, num_classes=data.num_classes, layers=layers,
                           channels=channels, seed=0).genotype()
    model = bn.build_network(genotype, num_classes=data.num_classes, layers=layers,
                             channels=channels, input_shape=data.input_shape)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    train = bn.data.make_dataset(data, batch_size=batch_size, training=True).repeat()
    start = time.perf_counter()
    history = model.fit(train, steps_per_epoch=steps, epochs=1, verbose=0)
    return {"folder": folder, "train_images": len(data.y_train), "steps": steps,
            "batch_size": batch_size, "layers": layers, "channels": channels,
            "input_shape": list(data.input_shape),
            "loss": round(float(history.history["loss"][-1]), 4),
            "load_s": round(load_seconds, 2),
            "train_s": round(time.perf_counter() - start, 2),
            "peak_rss_mb": round(peak_rss_mb(), 1)}


# --------------------------------------------------------------------------- parent


def child(*args: str) -> dict:
    """Run this script as `child ARGS` in a fresh process; its last line is JSON."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                       os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, __file__, "child", *args], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def make_folder(shared: Path, target: Path, limit: int | None) -> Path:
    script = shared / MAKE_CIFAR10
    if not script.is_file():
        raise SystemExit(f"{script} not found: pass --shared, or existing folders")
    command = [sys.executable, str(script), "folder", str(target)]
    if limit is not None:
        command += ["--limit", str(limit)]
    subprocess.run(command, check=True, capture_output=True)
    return target


def count_images(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def scale(args, tmp: Path) -> int:
    large = args.large or make_folder(args.shared, tmp / "large", None)
    small = args.small or make_folder(args.shared, tmp / "small", args.small_limit)
    runs = {}
    for name, folder in (("small", small), ("large", large)):
        runs[name] = child("train", str(folder), str(args.image_size), str(args.batch_size),
                           str(args.steps), str(args.layers), str(args.channels))
        runs[name]["images_in_folder"] = count_images(Path(folder))
        print(json.dumps({"run": name, **runs[name]}), flush=True)
    ratio = runs["large"]["peak_rss_mb"] / runs["small"]["peak_rss_mb"]
    passed = ratio <= args.max_ratio
    print(json.dumps({"peak_rss_ratio_large_over_small": round(ratio, 3),
                      "max_ratio": args.max_ratio, "passed": passed}), flush=True)
    return 0 if passed else 1


def throughput(args, tmp: Path) -> int:
    folder = args.folder or make_folder(args.shared, tmp / "folder", args.limit)
    for mode in ("stream-imagenet", "stream-cifar", "memory"):
        result = child("pipeline", str(folder), str(args.image_size), str(args.batch_size),
                       str(args.batches), mode)
        print(json.dumps(result), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "child":
        kind, folder, size, batch, count, *rest = argv[1:]
        if kind == "train":
            layers, channels = (int(v) for v in rest)
            result = run_training(folder, int(size), int(batch), int(count), layers, channels)
        else:
            result = run_pipeline(folder, int(size), int(batch), int(count), rest[0])
        print(json.dumps(result))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", choices=("throughput", "scale"))
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared",
                        help="shared folder holding datasets/cifar10/make_cifar10.py")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--folder", type=Path, help="throughput: an existing image folder")
    parser.add_argument("--limit", type=int, default=10000,
                        help="throughput: training images of the unpacked folder")
    parser.add_argument("--batches", type=int, default=300, help="throughput: timed batches")
    parser.add_argument("--large", type=Path, help="scale: folder of 60,000 images")
    parser.add_argument("--small", type=Path, help="scale: folder of 6,000 images")
    parser.add_argument("--small-limit", type=int, default=5000,
                        help="scale: training images of the small folder (+ 1/5 test)")
    parser.add_argument("--steps", type=int, default=200, help="scale: training steps")
    parser.add_argument("--layers", type=int, default=3, help="scale: cells of the network")
    parser.add_argument("--channels", type=int, default=8, help="scale: channels per node")
    parser.add_argument("--max-ratio", type=float, default=1.2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bnas_data_") as tmp:
        return (scale if args.report == "scale" else throughput)(args, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
