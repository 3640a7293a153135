"""Searched vs random vs hand-designed binary network under one training budget.

With one fixed two-stage budget (`bn.train_two_stage`, the AdamBNN recipe of
METHODS.md §6–7: stage 1 binary activations and real weights, stage 2 binary
weights too), the script trains on the same CIFAR-10 subset:

* `searched`: the network derived from `--genotype` (a `bnas-tf search` result);
* `random`: a random DARTS-shaped genotype from the same search space (each
  node has two distinct incoming edges with one non-`none` op each, unit
  weights); among `--random-samples` seeded samples, the one whose network's
  parameter count is closest to the searched network's;
* a published hand-designed BNN from `bn.baselines` (`--baseline`, default
  `quicknet`: Larq's network designed for fast LCE inference, whose ImageNet
  figures METHODS.md §9 quotes; `birealnet` and `reactnet_a` too), with
  the CIFAR stem its 32x32 inputs get. Its base width is chosen so that its
  parameter count is closest to the searched network's (QuickNet's published
  width, 64, has ~12.7M parameters on CIFAR-10); `--baseline-width N` fixes it
  instead (64 for the published QuickNet).

Each network's stage-2 weights use its own binarizer, as `bnas-tf train` does:
the search space's for the derived networks, the published one for the
baseline (`bn.baselines.kernel_quantizer`).

It prints, per network, the test accuracy after each stage, the parameter
count (and how many of those are binary conv kernels), binary and float MACs
per image, and the wall-clock training time (both stages, including the
per-epoch evaluation on the test split).

MACs are counted by walking the layers (nested ones too): a Larq conv with an
input quantizer contributes binary MACs `out_h·out_w·k·k·c_in/groups·filters`,
every other conv and dense layer float MACs. They are what the graph computes:
a conv with stride 2 and dilation 2 runs as an undilated conv on one phase
of its padded input (`bnas_tf.ops.PhaseSubsample`), counted at that size.

Usage:
    python benchmarks/cifar10_budget.py --genotype RUN/genotype.json --data-dir DIR \\
        [--limit 5000] [--layers 5] [--channels 32] [--epochs 2,2] [--batch-size 64] \\
        [--baseline quicknet] [--baseline-width N] [--seed 0] [--json OUT.json]
"""

from __future__ import annotations

import bnas_tf as bn

# isort: split
import argparse
import json
import math
import sys
import time
from collections.abc import Callable

import larq as lq
import numpy as np
import tensorflow as tf

from bnas_tf._io import atomic_write_text
from bnas_tf.cli import epochs_pair

JPEG_NOTE = ("Note: the offline CIFAR-10 copy of the development machines is stored as JPEG "
             "(quality 75); accuracies on it run a few tenths of a point below those on the "
             "original images.")


# --------------------------------------------------------------------------- arguments


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--genotype", required=True, help="genotype.json from `bnas-tf search`")
    parser.add_argument("--data-dir", default="data",
                        help="folder holding cifar-10-batches-py/ (official python layout)")
    parser.add_argument("--limit", type=positive_int, default=5000,
                        help="training images (test images: limit/5)")
    parser.add_argument("--layers", type=positive_int, default=5,
                        help="cells of the derived networks")
    parser.add_argument("--channels", type=positive_int, default=32,
                        help="initial channels of the derived networks")
    parser.add_argument("--epochs", type=epochs_pair, default=(2, 2),
                        help="two-stage budget: stage-1,stage-2 epochs")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--random-samples", type=positive_int, default=20,
                        help="random genotypes sampled to find one of similar size")
    parser.add_argument("--baseline", default="quicknet", choices=bn.baselines.names(),
                        help="published binary network to compare with (bn.baselines)")
    parser.add_argument("--baseline-width", type=positive_int, default=None,
                        help="its base channels (default: the width whose parameter count is "
                             "closest to the searched network's)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the data subset, shuffling, initialization and "
                             "the random genotype")
    parser.add_argument("--json", default=None, help="also save the results here")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- random genotype


def random_cell(space: bn.SearchSpace, rng: np.random.Generator) -> bn.Cell:
    """A DARTS-shaped cell: per node two distinct sources, one non-`none` op each."""
    op_names = [name for name in space.op_names if name != "none"]
    nodes = []
    for k in range(space.nodes):
        sources = sorted(int(s) for s in rng.choice(k + 2, size=2, replace=False))
        nodes.append(tuple(bn.Edge(s, ((str(rng.choice(op_names)), 1.0),), 1.0)
                           for s in sources))
    return bn.Cell(tuple(nodes), tuple(range(2, 2 + space.nodes)))


def random_genotype(space: bn.SearchSpace, rng: np.random.Generator) -> bn.Genotype:
    return bn.Genotype(random_cell(space, rng), random_cell(space, rng), space.get_config(),
                       method="random")


def closest(candidates, size: Callable[[object], int], target: int):
    """`(candidate, size)` with the size closest to `target` (first one on ties)."""
    best, best_size = None, None
    for candidate in candidates:
        n = size(candidate)
        if best_size is None or abs(n - target) < abs(best_size - target):
            best, best_size = candidate, n
    return best, best_size


# --------------------------------------------------------------------------- counting


_CONVS = (tf.keras.layers.Conv2D, tf.keras.layers.DepthwiseConv2D)  # Larq's subclass them


def _kernel(layer: tf.keras.layers.Layer) -> tf.Variable:
    kernel = getattr(layer, "depthwise_kernel", None)
    return layer.kernel if kernel is None else kernel


def _is_binary(layer: tf.keras.layers.Layer) -> bool:
    return isinstance(layer, lq.layers.QuantizerBase) and layer.input_quantizer is not None


def _conv_pixels(layer: tf.keras.layers.Layer, parent_input_hw: tuple[int, int] | None) -> int:
    """Output pixels of a conv: its own output shape, or (nested) from its parent's input."""
    try:
        return int(np.prod(layer.output_shape[1:3]))
    except (AttributeError, RuntimeError):
        pass
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.strides, layer.dilation_rate
    h, w = parent_input_hw
    if layer.padding == "same":
        return math.ceil(h / sh) * math.ceil(w / sw)
    return ((h - (kh - 1) * dh - 1) // sh + 1) * ((w - (kw - 1) * dw - 1) // sw + 1)


def _layer_macs(layer, parent_input_hw) -> tuple[int, int]:
    """`(binary, float)` MACs per image of one conv or dense layer.

    A masked grouped conv (how bnas_tf trains grouped convs) counts its groups only,
    as the real grouped conv it exports to.
    """
    if isinstance(layer, _CONVS):
        macs = bn.ops.active_entries(_kernel(layer)) * _conv_pixels(layer, parent_input_hw)
    elif isinstance(layer, tf.keras.layers.Dense):
        macs = int(np.prod(layer.kernel.shape))
    else:
        return 0, 0
    return (macs, 0) if _is_binary(layer) else (0, macs)


def count_macs(model: tf.keras.Model) -> tuple[int, int]:
    """`(binary, float)` MACs per image over all layers, nested ones included."""
    binary = floating = 0
    for top in model.layers:
        shape = getattr(top, "input_shape", None)
        hw = tuple(shape[1:3]) if isinstance(shape, tuple) and len(shape) == 4 else None
        for layer in top._flatten_layers(include_self=True, recursive=True):
            b, f = _layer_macs(layer, hw)
            binary, floating = binary + b, floating + f
    return binary, floating


def binary_params(model: tf.keras.Model) -> int:
    """Weights of the binary conv kernels (1 bit each once deployed)."""
    return sum(bn.ops.active_entries(_kernel(layer))
               for top in model.layers
               for layer in top._flatten_layers(include_self=True, recursive=True)
               if isinstance(layer, _CONVS) and _is_binary(layer))


def describe(model: tf.keras.Model) -> dict:
    binary_macs, float_macs = count_macs(model)
    return {"params": bn.count_params(model), "binary_params": binary_params(model),
            "binary_macs": binary_macs, "float_macs": float_macs}


# --------------------------------------------------------------------------- models


def derived_builder(genotype: bn.Genotype, args, data) -> Callable[[], tf.keras.Model]:
    def build() -> tf.keras.Model:
        return bn.build_network(genotype, num_classes=data.num_classes, layers=args.layers,
                                channels=args.channels, input_shape=data.input_shape)
    return build


def params_of(build: Callable[[], tf.keras.Model]) -> int:
    tf.keras.backend.clear_session()
    return bn.count_params(build())


def pick_random(searched: bn.Genotype, args, data, target: int) -> tuple[bn.Genotype, int]:
    rng = np.random.default_rng(args.seed)
    samples = [random_genotype(searched.search_space, rng) for _ in range(args.random_samples)]
    return closest(samples, lambda g: params_of(derived_builder(g, args, data)), target)


def baseline_builder(name: str, width: int, data) -> Callable[[], tf.keras.Model]:
    def build() -> tf.keras.Model:
        return bn.baselines.get(name, num_classes=data.num_classes,
                                input_shape=data.input_shape, width=width)
    return build


def pick_baseline_width(name: str, data, target: int) -> tuple[int, int]:
    """The baseline width (a multiple of 4) whose parameter count is closest to `target`."""
    sizes: dict[int, int] = {}
    for width in range(4, 513, 4):  # parameters grow with the width: stop once past target
        sizes[width] = params_of(baseline_builder(name, width, data))
        if sizes[width] >= target:
            break
    return closest(sizes, sizes.__getitem__, target)


# --------------------------------------------------------------------------- training


def train(name: str, build: Callable[[], tf.keras.Model], kernel_quantizer: str, train_ds,
          test_ds, args) -> dict:
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(args.seed)  # same seed for every network's initialization
    model = build()
    row = {"model": name, **describe(model)}
    print(f"\n== {name}: {row['params']:,} params; training {args.epochs[0]}+{args.epochs[1]} "
          f"epochs (stage-2 weights: {kernel_quantizer})", flush=True)
    start = time.perf_counter()
    result = bn.train_two_stage(model, train_ds, test_ds, epochs=args.epochs, test_ds=test_ds,
                                kernel_quantizer=kernel_quantizer, verbose=2)
    row["train_seconds"] = time.perf_counter() - start
    for stage in ("stage1", "stage2"):
        row[f"{stage}_accuracy"] = float(result.test[stage]["accuracy"])
    return row


# --------------------------------------------------------------------------- report


COLUMNS = (("model", "model", "{}"), ("stage1_accuracy", "stage-1 acc", "{:.4f}"),
           ("stage2_accuracy", "stage-2 acc", "{:.4f}"), ("params", "params", "{:,}"),
           ("binary_params", "binary params", "{:,}"),
           ("binary_macs", "binary MACs (M)", "{:.1f}"), ("float_macs", "float MACs (M)", "{:.1f}"),
           ("train_seconds", "train s", "{:.0f}"))


def _cell(row: dict, key: str, fmt: str) -> str:
    value = row[key] / 1e6 if key.endswith("_macs") else row[key]
    return fmt.format(value)


def format_table(rows: list[dict]) -> str:
    header = [title for _, title, _ in COLUMNS]
    body = [[_cell(row, key, fmt) for key, _, fmt in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


def save_json(path: str, args, rows: list[dict], extra: dict) -> None:
    settings = {k: v for k, v in vars(args).items() if k != "json"}
    atomic_write_text(path, json.dumps({"settings": settings, "results": rows, **extra},
                                       indent=2) + "\n")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        searched = bn.Genotype.load(args.genotype)
        data = bn.data.load("cifar10", args.data_dir, limit=args.limit, seed=args.seed)
    except (bn.errors.GenotypeError, bn.errors.DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{data!r}; search space {searched.search_space.name!r}; budget "
          f"{args.epochs[0]}+{args.epochs[1]} epochs, batch {args.batch_size}", flush=True)

    build_searched = derived_builder(searched, args, data)
    target = params_of(build_searched)
    random_g, random_params = pick_random(searched, args, data, target)
    if args.baseline_width is None:
        width, baseline_params = pick_baseline_width(args.baseline, data, target)
        how = "closest in size"
    else:
        width = args.baseline_width
        baseline_params = params_of(baseline_builder(args.baseline, width, data))
        how = "--baseline-width"
    print(f"params: searched {target:,}; random {random_params:,} (closest of "
          f"{args.random_samples} samples); {args.baseline} {baseline_params:,} (base width "
          f"{width}, {how})", flush=True)

    train_ds = bn.data.make_dataset(data, batch_size=args.batch_size, training=True,
                                    seed=args.seed)
    test_ds = bn.data.make_dataset(data, batch_size=args.batch_size)
    space_quantizer = searched.search_space.weight_quantizer
    models = {"searched": (build_searched, space_quantizer),
              "random": (derived_builder(random_g, args, data), space_quantizer),
              f"{args.baseline} (width {width})": (
                  baseline_builder(args.baseline, width, data),
                  bn.baselines.kernel_quantizer(args.baseline))}
    rows = [train(name, build, quantizer, train_ds, test_ds, args)
            for name, (build, quantizer) in models.items()]

    print(f"\nCIFAR-10, {len(data.x_train)} training / {len(data.x_test)} test images; "
          f"derived networks: {args.layers} cells, {args.channels} channels; MACs per image; "
          "train s = both stages, including the per-epoch test evaluation\n")
    print(format_table(rows))
    print(f"\n{JPEG_NOTE}")
    if args.json:
        save_json(args.json, args, rows, {"random_genotype": random_g.to_dict(),
                                          "baseline": args.baseline, "baseline_width": width})
        print(f"Saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
