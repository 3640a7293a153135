"""Cost-aware search: the expected-cost term of a search, and the searched network's cost.

`bnas-tf search --cost ops --cost-target 6e6` (`SearchConfig(cost="ops",
cost_target=6e6)`) adds `bn.regularizers.ExpectedCost` to the architecture
step: `weight · log(E[cost] / target)²`, with `E[cost]` the expected cost of
the network the DARTS rule derives (its docstring: which edges, which ops,
why two-sided). The target is the derived network's cost **at the search's
width** (`layers`, `channels`, the images' size), in

* `ops`: OPs = FLOPs + BOPs / 64 (`bn.cost`), a plain number: 6e6 is 6 MOPs;
* `latency`: milliseconds per image of the ops on the derived cells' kept
  edges, from a table of per-op latencies measured on the device
  (`--latency-table FILE`, written by `bnas-tf profile` at the same space,
  layers, channels and image size; it times the candidate ops, not the stem
  and classifier, so those are not in the target).

A search-sized `lce` network (5 layers, 16 channels, CIFAR) costs from about
4.7 MOPs (pools and skips only) to 8.0 MOPs (5×5 convs only); a trained
network is wider (`bnas-tf train --channels 32 --layers 8`), so its cost is
larger by about the width ratio squared for the binary part.

The supernet's step and epoch logs (history.json, TensorBoard) then carry
`expected_cost` and `derived_cost` (the cost of the argmax ops on the edges the
derivation keeps, in the target's unit), and `genotype.json` a `cost` field:
the searched network's binary and float MACs, OPs, parameters and size at the
search width (`searched_cost`), with the target and the relative error when
set. The DARTS rule only: HM-NAS keeps every op its masks keep, whatever α
says (use its sparsity terms).

Example:
    >>> from bnas_tf.search_run import SearchConfig, run_search
    >>> result = run_search(SearchConfig(dataset="cifar10", data_dir="data", limit=2000,
    ...                                  epochs=3, cost="ops", cost_target=6.3e6), "RUN")
    >>> result.cost["ops"], result.cost["relative_error"]
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import tensorflow as tf

from bnas_tf import regularizers
from bnas_tf._io import atomic_write_text
from bnas_tf._runs import SettingError, check_choice, check_float
from bnas_tf.genotype import Genotype

if TYPE_CHECKING:  # imports of their own import this module
    from bnas_tf.search_run import SearchConfig
    from bnas_tf.supernet import SuperNet

__all__ = ["COST_METRICS", "DEFAULT_COST_WEIGHT", "check_cost_settings", "cost_regularizer",
           "latency_edge_tables", "find_cost_term", "searched_cost", "save_genotype"]

COST_METRICS = ("ops", "latency")
"""What `--cost` can target: OPs (FLOPs + BOPs/64) or measured latency (ms)."""

DEFAULT_COST_WEIGHT = regularizers.DEFAULT_COST_WEIGHT

_PROFILE_HINT = ("per-op latencies measured on the target device: write them with "
                 "`bnas-tf profile` (bn.cost.latency_table) at the search's space, layers, "
                 "channels and image size")


def check_cost_settings(c: SearchConfig) -> None:
    """Check (and normalize) the cost settings of a `SearchConfig`; SettingError names them."""
    check_choice(c.cost, "cost", COST_METRICS, none=True)
    c.cost_target = check_float(c.cost_target, "cost_target", above=0, none=True)
    c.cost_weight = check_float(c.cost_weight, "cost_weight", minimum=0)
    if c.latency_table is not None and not isinstance(c.latency_table, str | os.PathLike):
        raise SettingError(f"Expected {{0}} to be a file path, got {c.latency_table!r}.",
                           "latency_table")
    if c.latency_table is not None:
        c.latency_table = os.fspath(c.latency_table)
    if c.cost is None:
        if c.cost_target is not None:
            raise SettingError("{0} needs {1} ops or latency (the metric the target is in).",
                               "cost_target", "cost")
        if c.latency_table is not None:
            raise SettingError("{0} is read only with {1} latency.", "latency_table", "cost")
        if c.cost_weight != DEFAULT_COST_WEIGHT:
            raise SettingError("{0} weighs the cost term, which needs {1} ops or latency.",
                               "cost_weight", "cost")
        return
    if c.cost_target is None:
        raise SettingError(f"{{0}} {c.cost} needs {{1}}: the derived network's cost to reach at "
                           "the search width (" + ("OPs, e.g. 6e6" if c.cost == "ops"
                                                   else "milliseconds") + ").",
                           "cost", "cost_target")
    if c.cost == "latency" and c.latency_table is None:
        raise SettingError(f"{{0}} latency needs {{1}} FILE: {_PROFILE_HINT}.", "cost",
                           "latency_table")
    if c.cost == "ops" and c.latency_table is not None:
        raise SettingError("{0} is read only with {1} latency.", "latency_table", "cost")
    if c.method == "hmnas":
        raise SettingError("{0} does not apply to {1} hmnas: HM-NAS derives every op and edge "
                           "its masks keep, whatever α says, so α's expected cost does not set "
                           "the derived network's; prune it with --sparsity, or use {1} darts.",
                           "cost", "method")


def latency_edge_tables(net, input_shape: Sequence[int], table_path: str | os.PathLike
                        ) -> tuple[dict, float]:
    """Per-edge latencies (ms) of `net`'s cells from a `bnas-tf profile` table, and 0.

    `bn.cost.edge_latency_tables`: each op's median latency at the shape and
    stride each edge has, summed over the cells of a kind, aligned with α.
    The table times the candidate ops only (not the stem, cell-input convs,
    skips and classifier), so the fixed part is 0 and a latency target is
    the milliseconds of the ops on the derived cells' kept edges.

    Raises:
        FileNotFoundError: no file at `table_path`.
        ValueError: not a latency table (`LatencyTableError`), or one profiled
            for another space or other shapes.
    """
    from bnas_tf import cost

    if not os.path.isfile(table_path):
        raise FileNotFoundError(f"--latency-table {os.fspath(table_path)}: no such file; "
                                f"write one with `bnas-tf profile`.")
    return cost.edge_latency_tables(table_path, net, input_shape=tuple(input_shape)), 0.0


def cost_regularizer(config: SearchConfig, net: SuperNet, input_shape: Sequence[int] | None
                     ) -> regularizers.ExpectedCost | None:
    """The `ExpectedCost` term a `SearchConfig` asks for (None when `config.cost` is None).

    Raises:
        ValueError: the input shape is unknown, or the latency table cannot be used.
    """
    if config.cost is None:
        return None
    if input_shape is None:
        raise ValueError(f"cost={config.cost!r} needs the images' input_shape to compute the "
                         "supernet's per-edge costs (build_supernet(..., input_shape=...)).")
    tables = fixed = None
    if config.cost == "latency":
        tables, fixed = latency_edge_tables(net, input_shape, config.latency_table)
    return regularizers.ExpectedCost.for_supernet(
        net, config.cost_target, config.cost_weight, input_shape=tuple(input_shape),
        metric=config.cost, tables=tables, fixed=fixed)


def find_cost_term(net) -> regularizers.ExpectedCost | None:
    """The `ExpectedCost` among a compiled supernet's architecture regularizers, or None."""
    terms = getattr(net.arch_regularizer, "regularizers", [net.arch_regularizer])
    return next((t for t in terms if isinstance(t, regularizers.ExpectedCost)), None)


def searched_cost(net, genotype: Genotype, input_shape: Sequence[int]) -> dict:
    """The searched network's cost at the search width: what `genotype.json` records.

    `bn.cost.genotype_cost` of the genotype at the supernet's layers,
    channels, classes and cell template, with binary weights (as deployed):
    `layers`, `channels`, `input_shape`, `binary_macs`, `float_macs`, `ops`,
    `params`, `size_bytes`. With an `ExpectedCost` term also `metric`,
    `target`, `derived` (in the target's unit: the OPs, or for latency the
    table's sum over the derived network's ops) and `relative_error`
    (`derived / target − 1`).
    """
    from bnas_tf import cost

    figures = cost.genotype_cost(genotype, layers=net.num_layers, channels=net.channels,
                                 input_shape=tuple(input_shape), num_classes=net.num_classes,
                                 cell_skip=net.cell_skip,
                                 stem_multiplier=net.stem_multiplier).to_dict()
    record = {"layers": net.num_layers, "channels": net.channels,
              "input_shape": [int(d) for d in input_shape],
              **{k: figures[k] for k in ("binary_macs", "float_macs", "ops", "params",
                                         "size_bytes")}}
    term = find_cost_term(net)
    if term is not None:
        derived = (figures["ops"] if term.metric == "ops"
                   else float(term.derived_cost(tf.concat(net.arch.alphas, 0))))
        record.update(metric=term.metric, target=term.target, derived=derived,
                      relative_error=derived / term.target - 1.0)
    return record


def save_genotype(genotype: Genotype, path: str | os.PathLike, cost: dict | None) -> None:
    """Write `genotype.json` with a `cost` field (`Genotype.load` ignores it)."""
    data = genotype.to_dict()
    if cost is not None:
        data["cost"] = cost
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
