"""Costs and cost matching for `search_vs_random.py`: random draws, baseline widths, older runs.

What `benchmarks/search_vs_random.py` compares networks by (`bnas_tf.cost`,
per CIFAR-10 image, of the deployed network: binary weights, stage 2):

* `deployed_cost`: a genotype's trained network, analytic (nothing built);
* `draw_matching`: seeded random genotypes until one's cost is within a
  tolerance of a target (else the closest);
* `baseline_measures`, `nearest_width`, `curve_widths`: a hand-designed
  baseline's parameters and cost at a width (built once, cached), the width
  closest to a target, and the widths of its accuracy-vs-OPs curve;
* `fill_costs`: the costs of the rows of a run before #24 that recorded none,
  from the run's genotype files and the baselines' widths.

Example:
    >>> draw = draw_matching(space, 6e6, lambda g: deployed_cost(g, 5, 16).ops,
    ...                      np.random.default_rng(0), tolerance=0.1, max_draws=2000)
    >>> draw.matched, draw.draws
"""

from __future__ import annotations

import bnas_tf as bn

# isort: split
import dataclasses
import functools
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from bnas_tf import cost as bn_cost

__all__ = ["NUM_CLASSES", "INPUT_SHAPE", "WIDTHS", "UNITS", "Draw", "deployed_cost",
           "draw_matching", "baseline_measures", "baseline_value", "nearest_width",
           "curve_widths", "recomputed_cost", "fill_costs"]

NUM_CLASSES, INPUT_SHAPE = 10, (32, 32, 3)
WIDTHS = tuple(range(4, 513, 4))
"""Baseline widths considered (QuickNet needs a multiple of 4)."""
UNITS = {"ops": "OPs", "params": "parameters"}


def deployed_cost(genotype: bn.Genotype, layers: int, channels: int) -> bn_cost.ModelCost:
    """The cost of the trained network of `genotype`, binary weights (stage 2), analytic."""
    return bn_cost.genotype_cost(genotype, layers=layers, channels=channels,
                                 input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES,
                                 binary_weights=True)


@dataclasses.dataclass(frozen=True)
class Draw:
    """A random genotype drawn to match a target cost.

    Attributes:
        genotype: the genotype (within the tolerance, or the closest draw).
        value: its cost.
        draws: how many genotypes were drawn.
        matched: whether `value` is within the tolerance of the target.
    """

    genotype: bn.Genotype
    value: float
    draws: int
    matched: bool


def draw_matching(space: bn.SearchSpace, target: float, value_of: Callable[[bn.Genotype], float],
                  rng: np.random.Generator, *, tolerance: float, max_draws: int) -> Draw:
    """Draw random genotypes of `space` until one's cost is within ±`tolerance`·`target`.

    Args:
        space: the search space (`bn.random_genotype`'s draws).
        target: the cost to match (OPs or parameters).
        value_of: a genotype's cost.
        rng: the generator of the draws (seeded: the same draws every run).
        tolerance: the allowed relative difference.
        max_draws: draws before giving up.

    Returns:
        The first draw within the tolerance; after `max_draws` draws without one,
        the closest draw (the first of equally close ones), `matched=False`.
    """
    best: tuple[bn.Genotype, float] | None = None
    for n in range(1, max_draws + 1):
        genotype = bn.random_genotype(space, rng)
        value = value_of(genotype)
        if abs(value - target) <= tolerance * target:
            return Draw(genotype, value, n, True)
        if best is None or abs(value - target) < abs(best[1] - target):
            best = (genotype, value)
    if best is None:
        raise ValueError(f"Expected max_draws >= 1, got {max_draws}.")
    return Draw(*best, max_draws, False)


@functools.cache
def baseline_measures(name: str, width: int) -> tuple[int, bn_cost.ModelCost]:
    """`(parameters, cost)` of baseline `name` at `width` on CIFAR-10, built once, not trained.

    Parameters as the rows count them (`bn.count_params` of the stage-1
    network); the cost of the stage-2 network (`binarize_weights`), as deployed.
    """
    tf.keras.backend.clear_session()
    model = bn.baselines.get(name, num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE, width=width)
    deployed = bn.training.binarize_weights(model, bn.baselines.kernel_quantizer(name))
    return bn.count_params(model), dataclasses.replace(bn_cost.model_cost(deployed), layers={})


def baseline_value(name: str, width: int, match: str) -> float:
    """Baseline `name`'s OPs or parameters (`match`) at `width`."""
    params_, cost = baseline_measures(name, width)
    return float(params_) if match == "params" else cost.ops


def nearest_width(value_of: Callable[[int], float], target: float,
                  widths: Sequence[int] = WIDTHS) -> tuple[int, float]:
    """The width whose value is closest to `target` (the smaller on ties).

    `value_of` must grow with the width (OPs and parameters do): a doubling
    search, then bisection, so few widths are built and the widest only when needed.

    Returns:
        `(width, value_of(width))`.
    """
    if value_of(widths[0]) >= target:
        return widths[0], value_of(widths[0])
    lo, step = 0, 1  # value_of(widths[lo]) < target
    while True:
        probe = min(lo + step, len(widths) - 1)
        if value_of(widths[probe]) >= target:
            hi = probe
            break
        if probe == len(widths) - 1:
            return widths[probe], value_of(widths[probe])
        lo, step = probe, step * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if value_of(widths[mid]) >= target else (mid, hi)
    below, above = value_of(widths[lo]), value_of(widths[hi])
    return (widths[lo], below) if target - below <= above - target else (widths[hi], above)


def curve_widths(width: int, multiples: Sequence[float]) -> list[int]:
    """`multiples` of `width`, rounded (half up) to multiples of 4, at least 4, sorted, distinct."""
    return sorted({max(4, 4 * math.floor(width * m / 4 + 0.5)) for m in multiples})


_SEARCHED = re.compile(r"searched \(seed (-?\d+)\)")
_RANDOM = re.compile(r"random (\d+)")
_BASELINE = re.compile(r"(\w+) \(width (\d+)\)")


def recomputed_cost(row: dict, args: dict, run_dir: Path) -> bn_cost.ModelCost | None:
    """The cost of an older row's network: from its genotype file in `run_dir`, or its width.

    Returns None when the run dir does not hold what is needed.
    """
    model = str(row.get("model"))
    if row.get("group") in ("hand-designed", "curve") and "curve" in row:
        name, width = row["curve"], int(row["width"])
        if name not in bn.baselines.names() or not 1 <= width <= WIDTHS[-1]:
            return None
        return baseline_measures(name, width)[1]
    path = None
    if row.get("genotype"):
        path = run_dir / str(row["genotype"])
    elif (m := _SEARCHED.fullmatch(model)) and row.get("group") == "searched":
        path = run_dir / f"search_{m[1]}" / "genotype.json"
    elif (m := _RANDOM.fullmatch(model)) and row.get("group") == "random":
        path = run_dir / f"random_{m[1]}.genotype.json"
    if path is None or not path.is_file():
        return None
    return deployed_cost(bn.Genotype.load(path), args["layers"], args["channels"])


def fill_costs(results: dict, run_dir: Path) -> int:
    """Give the rows of a run before #24 their costs where `run_dir` allows; how many got one.

    Hand-designed rows get `curve` and `width` from their name ("quicknet (width 12)").
    """
    filled = 0
    for row in results["rows"]:
        if not isinstance(row, dict):
            continue
        if row.get("group") == "hand-designed" and "curve" not in row:
            m = _BASELINE.fullmatch(str(row.get("model")))
            if m and m[1] in bn.baselines.names() and 1 <= int(m[2]) <= WIDTHS[-1]:
                row.update(curve=m[1], width=int(m[2]))
        if "cost" in row:
            continue
        try:
            cost = recomputed_cost(row, results.get("args"), run_dir)
        except (OSError, ValueError, KeyError, TypeError):
            cost = None
        if cost is not None:
            row.update(cost=cost.to_dict(), cost_recomputed=True)
            filled += 1
    return filled
