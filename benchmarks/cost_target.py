"""Cost-targeted searches at the `bnas-tf search` defaults: target vs the derived network's OPs.

Each run is `bnas-tf search --cost ops --cost-target T` at the `make demo`
size (the `lce` space, 5 layers, 16 channels, `--limit 2000`, 3 epochs, every
other setting at its default: partial-channel mixing, T = 0.2, diversity,
budget schedule, `--cost-weight` 10). The targets are given as fractions of
the way from the cheapest network of the space (every kept edge a max pool)
to the dearest (every kept edge a 5x5 binary conv), both at the search width
(`bn.cost.genotype_cost`). Printed per run: the target, the derived
network's OPs (`RUN/genotype.json`'s `cost`), the relative error, the
expected cost the regularizer saw at the end, the share of decided edges,
the held-out accuracy and the wall time. `--control` adds runs with
`--cost-weight 0` (the expected cost is logged, not penalized): where the
search lands unsteered.

Usage:
    python benchmarks/cost_target.py --data-dir data [--fractions 0.25,0.75] \\
        [--seeds 0,1] [--control] [--limit 2000] [--epochs 3] [--json OUT.json]
"""

from __future__ import annotations

import bnas_tf as bn

# isort: split
import argparse
import json
import tempfile
import time
from pathlib import Path

from bnas_tf._io import atomic_write_text
from bnas_tf.genotype import Cell, Edge, Genotype
from bnas_tf.search_run import SearchConfig, run_search


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="data")
    p.add_argument("--limit", type=int, default=2000)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--fractions", type=_floats, default=[0.25, 0.5, 0.75],
                   help="targets, as fractions of the cheapest-to-dearest range")
    p.add_argument("--seeds", type=_ints, default=[0, 1])
    p.add_argument("--cost-weight", type=float, default=bn.regularizers.DEFAULT_COST_WEIGHT)
    p.add_argument("--control", action="store_true",
                   help="also run each seed with --cost-weight 0 (unsteered)")
    p.add_argument("--json", default=None, help="also write the figures here")
    return p.parse_args(argv)


def _all_one_op(space: bn.SearchSpace, op: str) -> Genotype:
    """Both cells: every node reads inputs 0 and 1 through `op`."""
    nodes = tuple((Edge(0, ((op, 1.0),)), Edge(1, ((op, 1.0),))) for _ in range(space.nodes))
    cell = Cell(nodes, tuple(range(2, 2 + space.nodes)))
    return Genotype(cell, cell, space.get_config())


def _range(args) -> tuple[float, float]:
    """OPs of the cheapest and the dearest network of the space at the search width."""
    space = bn.SearchSpace.get("lce")
    return tuple(bn.cost.genotype_cost(_all_one_op(space, op), layers=args.layers,
                                       channels=args.channels).ops
                 for op in ("max_pool_3x3", "bin_conv_5x5"))


def _search(args, seed: int, target: float, weight: float) -> dict:
    config = SearchConfig(dataset="cifar10", data_dir=args.data_dir, download=False,
                          limit=args.limit, layers=args.layers, channels=args.channels,
                          epochs=args.epochs, seed=seed, cost="ops", cost_target=target,
                          cost_weight=weight)
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_search(config, Path(tmp) / "RUN", verbose=0)
    logs = result.history["epochs"][-1]["logs"]
    return {"seed": seed, "weight": weight, "target": target, "ops": result.cost["ops"],
            "relative_error": result.cost["relative_error"],
            "expected_ops": logs["expected_cost"], "decided": logs["decided"],
            "val_accuracy": logs["val_accuracy"], "seconds": time.time() - start}


def main(argv=None) -> None:
    args = _parse(argv)
    cheapest, dearest = _range(args)
    print(f"lce, {args.layers} layers, {args.channels} channels, CIFAR-10 --limit "
          f"{args.limit}, {args.epochs} epochs: cheapest network {cheapest / 1e6:.3f} MOPs, "
          f"dearest {dearest / 1e6:.3f} MOPs")
    runs = [(seed, f, args.cost_weight) for f in args.fractions for seed in args.seeds]
    if args.control:
        runs += [(seed, 0.5, 0.0) for seed in args.seeds]
    print(f"{'fraction':>8} {'seed':>4} {'weight':>6} {'target':>8} {'derived':>8} "
          f"{'error':>7} {'E[cost]':>8} {'decided':>7} {'val_acc':>7} {'s':>5}")
    rows = []
    for seed, fraction, weight in runs:
        target = cheapest + fraction * (dearest - cheapest)
        row = {"fraction": fraction, **_search(args, seed, target, weight)}
        rows.append(row)
        print(f"{fraction:>8.2f} {seed:>4} {weight:>6g} {target / 1e6:>8.3f} "
              f"{row['ops'] / 1e6:>8.3f} {row['relative_error']:>+7.1%} "
              f"{row['expected_ops'] / 1e6:>8.3f} {row['decided']:>7.2f} "
              f"{row['val_accuracy']:>7.3f} {row['seconds']:>5.0f}", flush=True)
    steered = [r for r in rows if r["weight"] > 0]
    if steered:
        worst = max(abs(r["relative_error"]) for r in steered)
        within = sum(abs(r["relative_error"]) <= 0.10 for r in steered)
        print(f"(MOPs at the search width; {within} of {len(steered)} steered runs within "
              f"±10 %, largest |error| {worst:.1%})")
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(
            {"cheapest": cheapest, "dearest": dearest, "settings": vars(args), "runs": rows},
            indent=2))


if __name__ == "__main__":
    main()
