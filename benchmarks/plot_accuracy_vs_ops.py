"""Accuracy vs OPs of a `search_vs_random.py` run: the plot and the equal-OPs interpolation.

A helper of `benchmarks/search_vs_random.py` (which calls it after a run and
for `--report RUN_DIR`); it reads the rows of `results.json`:

* each row's cost is `row["cost"]` (`bnas_tf.cost.ModelCost.to_dict()` of the
  deployed, binary-weight network); rows without one are left out;
* `row["group"]` is "searched", "random", "hand-designed" or "curve";
  hand-designed and curve rows name their network in `row["curve"]` and its
  width in `row["width"]`, so the baseline is one point of its curve.

OPs are the binary-network papers' operations, `float MACs + binary MACs / 64`
(`bnas_tf.cost`). The x-axis is logarithmic, so a curve's accuracy is
interpolated linearly in log(OPs) between the two widths that bracket an OPs
value (`interpolate_log_linear`); nothing is extrapolated.

Example:
    >>> rows = json.loads(Path("RUN_DIR/results.json").read_text())["rows"]
    >>> plot_accuracy_vs_ops(rows, "RUN_DIR/accuracy_vs_ops.png", title="CIFAR-10")
    True
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence

from bnas_tf.cost import ModelCost

__all__ = ["PLOT_NAME", "row_ops", "curves_of", "interpolate_log_linear",
           "equal_ops_comparisons", "format_comparisons", "plot_accuracy_vs_ops"]

PLOT_NAME = "accuracy_vs_ops.png"
LABELS = {"quicknet": "QuickNet", "birealnet": "Bi-Real Net", "reactnet_a": "ReActNet-A"}


def row_ops(row: dict) -> float | None:
    """The OPs of a row's network, or None when the row records no cost."""
    cost = row.get("cost")
    return None if cost is None else ModelCost.from_dict(cost).ops


def curves_of(rows: Sequence[dict]) -> dict[str, list[tuple[float, float, int]]]:
    """`{baseline name: [(OPs, stage-2 accuracy, width), ...]}` sorted by OPs, one per width."""
    curves: dict[str, dict[int, tuple[float, float, int]]] = {}
    for row in rows:
        name, ops = row.get("curve"), row_ops(row)
        if name is None or ops is None:
            continue
        width = int(row["width"])
        curves.setdefault(name, {})[width] = (ops, float(row["stage2_acc"]), width)
    return {name: sorted(points.values()) for name, points in curves.items()}


def interpolate_log_linear(points: Sequence[tuple[float, float]], x: float
                           ) -> tuple[float, int] | None:
    """The accuracy at OPs `x`, linear in log(OPs) between the two points that bracket `x`.

    Args:
        points: `(OPs, accuracy)` pairs sorted by OPs (a curve of `curves_of`).
        x: the OPs to interpolate at.

    Returns:
        `(accuracy, i)`: the interpolated accuracy and the index of the lower
        bracketing point (`points[i]`, `points[i + 1]`); None when `x` lies
        outside the points' OPs range (no extrapolation) or there are fewer than two.

    Example:
        >>> acc, i = interpolate_log_linear([(1e6, 0.40), (4e6, 0.44)], 2e6)
        >>> round(acc, 4), i                  # 2 M OPs is half-way in log(OPs)
        (0.42, 0)
    """
    for i, ((x0, y0), (x1, y1)) in enumerate(zip(points, points[1:], strict=False)):
        if x0 <= x <= x1:
            if x1 == x0:
                return (y0 + y1) / 2, i
            share = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + share * (y1 - y0), i
    return None


def equal_ops_comparisons(rows: Sequence[dict]) -> list[dict]:
    """Searched vs each baseline curve at the searched networks' mean OPs, interpolated.

    Returns:
        One dict per curve with at least two widths: `curve`, `target_ops`
        (the searched mean), `searched_acc` (their mean stage-2 accuracy), and
        either `acc` (the curve interpolated at `target_ops`), `difference`
        (searched − that) and `between` (the two bracketing `(OPs, acc, width)`
        points), or `span` (the curve's OPs range) when the target lies outside it.
    """
    searched = [(row_ops(r), r["stage2_acc"]) for r in rows if r.get("group") == "searched"]
    searched = [(ops, acc) for ops, acc in searched if ops is not None]
    if not searched:
        return []
    target = statistics.fmean(ops for ops, _ in searched)
    mean_acc = statistics.fmean(acc for _, acc in searched)
    comparisons = []
    for name, points in curves_of(rows).items():
        if len(points) < 2:
            continue
        entry = {"curve": name, "target_ops": target, "searched_acc": mean_acc}
        found = interpolate_log_linear([(ops, acc) for ops, acc, _ in points], target)
        if found is None:
            entry["span"] = (points[0][0], points[-1][0])
        else:
            acc, i = found
            entry.update(acc=acc, difference=mean_acc - acc, between=(points[i], points[i + 1]))
        comparisons.append(entry)
    return comparisons


def format_comparisons(comparisons: Sequence[dict]) -> list[str]:
    """Lines for people, each clearly marked as an interpolation."""
    lines = []
    for c in comparisons:
        name, target = c["curve"], c["target_ops"] / 1e6
        if "acc" not in c:
            lo, hi = (v / 1e6 for v in c["span"])
            lines.append(f"searched vs {name} at equal OPs: the searched mean {target:.2f} M "
                         f"OPs lies outside {name}'s widths ({lo:.2f}–{hi:.2f} M OPs); "
                         "not interpolated")
            continue
        (x0, y0, w0), (x1, y1, w1) = c["between"]
        lines.append(
            f"searched vs {name} at equal OPs (INTERPOLATED, log-linear in OPs between width "
            f"{w0}: {x0 / 1e6:.2f} M OPs, {y0:.4f} and width {w1}: {x1 / 1e6:.2f} M OPs, "
            f"{y1:.4f}): {name} at the searched mean {target:.2f} M OPs ≈ {c['acc']:.4f}; "
            f"searched {c['searched_acc']:.4f}, difference {c['difference']:+.4f}")
    return lines


def plot_accuracy_vs_ops(rows: Sequence[dict], path: str | os.PathLike, *,
                         title: str | None = None) -> bool:
    """Stage-2 test accuracy vs OPs (log x-axis) of every row with a cost, written atomically.

    Searched and random networks are single markers; each baseline curve is
    a line through its widths, each point labelled with its width.

    Args:
        rows: `results.json` rows.
        path: the image to write (PNG, SVG or PDF by suffix; written to a
            temporary file beside it, then renamed).
        title: the figure title.

    Returns:
        False (and nothing written) when no row has a cost.

    Raises:
        ImportError: matplotlib is not installed (`pip install bnas_tf[plot]`).
    """
    from matplotlib.ticker import FuncFormatter

    from bnas_tf.figures import new_figure, save_figure

    groups: dict[str, list[tuple[float, float]]] = {"searched": [], "random": []}
    for row in rows:
        ops = row_ops(row)
        if ops is not None and row.get("group") in groups:
            groups[row["group"]].append((ops / 1e6, float(row["stage2_acc"])))
    curves = curves_of(rows)
    if not any(groups.values()) and not curves:
        return False
    fig = new_figure((7, 4.5), dpi=120)
    ax = fig.add_subplot()
    styles = {"searched": ("o", "C0", "searched"), "random": ("s", "C1", "random")}
    for group, points in groups.items():
        if points:
            marker, color, label = styles[group]
            ax.scatter(*zip(*points, strict=True), marker=marker, color=color, s=50,
                       label=f"{label} (n={len(points)})", zorder=3)
    for k, (name, points) in enumerate(sorted(curves.items())):
        xs, ys = [p[0] / 1e6 for p in points], [p[1] for p in points]
        ax.plot(xs, ys, marker="^D<>v"[k % 5], color=f"C{k + 2}", linestyle="-",
                label=f"{LABELS.get(name, name)} (widths {', '.join(str(p[2]) for p in points)})")
        for x, y, (_, _, width) in zip(xs, ys, points, strict=True):
            ax.annotate(f"w{width}", (x, y), textcoords="offset points", xytext=(4, 4),
                        fontsize=7, color=f"C{k + 2}")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 10, not 10¹
    ax.xaxis.set_minor_formatter(FuncFormatter(  # 2 and 5 of each decade only: no crowding
        lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("OPs per image, M (float MACs + binary MACs / 64; log scale)")
    ax.set_ylabel("stage-2 test accuracy")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    if title:
        ax.set_title(title, fontsize=9)
    save_figure(fig, path)
    return True
