"""Analytic costs of search-space ops, supernet edges and genotype networks (no model built)."""

from __future__ import annotations

import dataclasses
import functools
import numbers
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from bnas_tf import ops
from bnas_tf.cost._model import (
    FLOAT_BITS,
    ModelCost,
    batch_norm_cost,
    conv_cost,
    model_cost,
    quantizer_bits,
    strided,
    weights_cost,
)
from bnas_tf.genotype import Cell, Genotype
from bnas_tf.search_space import SearchSpace
from bnas_tf.supernet import SuperNet, reduction_indices

__all__ = ["EdgeCosts", "op_costs", "supernet_edge_costs", "edge_cost_tables", "genotype_cost"]

HW = tuple[int, int]
CELL_KINDS = ("normal", "reduce")


class _NotAnalytic(Exception):
    """A layer type the analytic model does not know (it is measured instead)."""


def _hw(resolution: int | Sequence[int]) -> HW:
    hw = (resolution,) * 2 if isinstance(resolution, numbers.Integral) else tuple(resolution)
    if len(hw) != 2 or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1
                           for d in hw):
        raise ValueError(f"Expected a resolution as a positive int or (height, width), got "
                         f"{resolution!r}.")
    return int(hw[0]), int(hw[1])


def _stride(hw: HW, stride: int) -> HW:
    return strided(hw[0], stride), strided(hw[1], stride)


def _bits(conv: tf.keras.layers.Layer) -> tuple[int, int]:
    """Input and kernel bit widths of a Keras or Larq conv."""
    return (quantizer_bits(getattr(conv, "input_quantizer", None)),
            quantizer_bits(getattr(conv, "kernel_quantizer", None)))


def _conv(conv, kernel_entries: int, hw: HW) -> ModelCost:
    return conv_cost(kernel_entries, hw[0] * hw[1], *_bits(conv))


def _layer_cost(layer: tf.keras.layers.Layer | None, channels: int, hw: HW
                ) -> tuple[ModelCost, HW]:
    """Cost of a bnas_tf op on a `channels`-channel `hw` input, and its output resolution.

    The same counts as `model_cost` of the layer; raises `_NotAnalytic` for other types.
    """
    if layer is None or isinstance(layer, ops.SkipIdentity | ops.RepeatChannels):
        return ModelCost(), hw
    if isinstance(layer, ops.Zero):
        return ModelCost(), _stride(hw, layer.strides)
    if isinstance(layer, ops.PoolBN):
        return batch_norm_cost(channels), _stride(hw, layer.strides)
    if isinstance(layer, ops.ConvBN):
        out = _stride(hw, layer.strides)
        entries = layer.kernel_size ** 2 * channels * layer.filters
        return _conv(layer.conv, entries, out) + batch_norm_cost(layer.filters), out
    if isinstance(layer, ops.FactorizedReduce):  # two 1x1 convs of stride 2, then BN
        out, half = _stride(hw, 2), layer.filters // 2
        return (_conv(layer.conv_a, channels * half, out)
                + _conv(layer.conv_b, channels * (layer.filters - half), out)
                + batch_norm_cost(layer.filters)), out
    if isinstance(layer, ops.BinaryConvBN):
        s = layer.strides
        entries = layer.kernel_size ** 2 * (channels // layer.groups) * layer.filters
        if layer.subsample is not None:  # a stride-1 conv, then every s-th pixel
            computed = hw
            out = tuple(len(range((n + 1) % s, n, s)) for n in hw)
        else:  # "same" conv of stride s, or an undilated conv on one phase (PhaseSubsample)
            computed = out = _stride(hw, s)
        return _conv(layer.conv, entries, computed) + batch_norm_cost(layer.filters), out
    raise _NotAnalytic(type(layer).__name__)


def _op_cost(space: SearchSpace, op_name: str, filters: int, strides: int, hw: HW,
             binary_weights: bool) -> ModelCost:
    """One op's cost, cached (the factory is part of the key: registries can change)."""
    return _cached_op_cost(space, op_name, ops.get(op_name), filters, strides, hw,
                           binary_weights)


@functools.lru_cache(maxsize=4096)
def _cached_op_cost(space: SearchSpace, op_name: str, factory, filters: int, strides: int,
                    hw: HW, binary_weights: bool) -> ModelCost:
    layer = space.build_op(op_name, filters, strides, affine=True,
                           binary_weights=binary_weights, masked_groups=True)
    try:
        return _layer_cost(layer, filters, hw)[0]
    except _NotAnalytic:  # an op registered by the user: measure it
        return dataclasses.replace(model_cost(layer, input_shape=(*hw, filters)), layers={})


def op_costs(space: SearchSpace | str | dict, channels: int, resolution: int | Sequence[int],
             strides: int = 1, *, binary_weights: bool = True) -> dict[str, ModelCost]:
    """The cost of every op of `space` on a `channels`-channel input of `resolution`.

    As the op is built in a genotype's network (`bnas_tf.build_network`):
    `channels` in and out, grouped binary convs counted as grouped
    (`ModelCost` conventions, `model_cost`). Ops of the predefined kinds are
    computed analytically; others (`bnas_tf.ops.register_op`) are built once
    and measured.

    Args:
        space: a `SearchSpace` or its name or config.
        channels: channels of the op (the cell's `filters`).
        resolution: input `(height, width)`, or one int for a square input.
        strides: 1, or 2 on the edges from the inputs of a reduction cell.
        binary_weights: binary kernels (stage 2, as deployed); False counts
            the latent real kernels of stage 1 (float MACs, 32-bit weights).

    Returns:
        `{op_name: ModelCost}` in the order of `space.op_names`.

    Example:
        >>> costs = bn.cost.op_costs("lce", 64, 8, strides=1)
        >>> costs["bin_conv_3x3"].binary_macs        # 2 groups of 32 channels
        1179648
    """
    space, hw = SearchSpace.get(space), _hw(resolution)
    return {name: _op_cost(space, name, channels, strides, hw, bool(binary_weights))
            for name in space.op_names}


@dataclasses.dataclass(frozen=True)
class _CellShape:
    reduction: bool
    filters: int
    hw: HW                              # resolution of the cell's two (preprocessed) inputs
    out_hw: HW                          # resolution of its intermediate nodes and output
    inputs: tuple[ModelCost, ModelCost]  # the convs that preprocess s0 and s1
    skip: ModelCost                     # the inter-cell skip (nothing without cell skips)


@dataclasses.dataclass(frozen=True)
class _Skeleton:
    """What `build_network` and `SuperNet` build around the cells' edges.

    `stem[0]` makes the first cell's s0, `stem[1]` its s1 from s0 (nothing
    for the CIFAR stem, where s0 is s1).
    """

    stem: tuple[ModelCost, ModelCost]
    cells: tuple[_CellShape, ...]
    head: ModelCost

    @property
    def fixed(self) -> ModelCost:
        return sum((c.inputs[0] + c.inputs[1] + c.skip for c in self.cells),
                   self.stem[0] + self.stem[1] + self.head)


def _classifier(channels: int, num_classes: int) -> ModelCost:
    """The dense classifier: its kernel (float MACs) and its bias."""
    return (conv_cost(channels * num_classes, 1, FLOAT_BITS, FLOAT_BITS)
            + weights_cost(num_classes, FLOAT_BITS))


def _stem_conv(c_in: int, c_out: int, hw: HW) -> ModelCost:
    """A real 3x3 conv without bias and its batch norm, with `hw` outputs."""
    return (conv_cost(9 * c_in * c_out, hw[0] * hw[1], FLOAT_BITS, FLOAT_BITS)
            + batch_norm_cost(c_out))


def _skeleton(space: SearchSpace, layers: int, channels: int, input_shape: Sequence[int], *,
              outputs: Mapping[bool, int], num_classes: int, stem: str, stem_multiplier: int,
              cell_skip: bool, binary_weights: bool) -> _Skeleton:
    """The stem, each cell's shapes, preprocessing and skip, and the classifier.

    `outputs[reduction]` is the number of nodes a (reduction) cell concatenates.
    """
    height, width, image_channels = input_shape
    if stem == "imagenet":  # 3x3 convs of stride 2 to C/2, C (stem0: s0), C (stem1: s1)
        half = max(1, channels // 2)
        hw_a = _stride((height, width), 2)
        hw0 = _stride(hw_a, 2)
        hw1 = _stride(hw0, 2)
        stems = (_stem_conv(image_channels, half, hw_a) + _stem_conv(half, channels, hw0),
                 _stem_conv(channels, channels, hw1))
        s0, s1, reduction_prev = (channels, hw0), (channels, hw1), True
    else:
        stem_channels = stem_multiplier * channels
        stems = (_stem_conv(image_channels, stem_channels, (height, width)), ModelCost())
        s0 = s1 = (stem_channels, (height, width))
        reduction_prev = False
    cells, filters, reductions = [], channels, reduction_indices(layers)
    for i in range(layers):
        reduction = i in reductions
        filters = filters * 2 if reduction else filters
        out_channels = outputs[reduction] * filters
        pre0 = space.build_cell_input(filters, reduction_prev, binary_weights=binary_weights)
        pre1 = space.build_cell_input(filters, False, binary_weights=binary_weights)
        cost0, hw0 = _layer_cost(pre0, *s0)
        cost1, hw1 = _layer_cost(pre1, *s1)
        if hw0 != hw1:
            raise AssertionError(f"cell {i}: inputs at {hw0} and {hw1}")  # builder invariant
        out_hw = _stride(hw1, 2) if reduction else hw1
        skip = ModelCost()
        if cell_skip:  # 2x2 average pool in reduction cells, then the projection
            projection = ops.skip_projection(out_channels, s1[0], reduction,
                                             space.parameter_free_skips)
            skip = _layer_cost(projection, s1[0], out_hw)[0]
        cells.append(_CellShape(reduction, filters, hw1, out_hw, (cost0, cost1), skip))
        s0, s1, reduction_prev = s1, (out_channels, out_hw), reduction
    return _Skeleton(stems, tuple(cells), _classifier(s1[0], num_classes))


def _check_sizes(layers, channels, num_classes, input_shape) -> tuple[int, int, int]:
    for arg, value in (("layers", layers), ("channels", channels), ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Expected {arg} to be a positive integer, got {value!r}.")
    shape = tuple(input_shape) if isinstance(input_shape, Sequence) else ()
    if len(shape) != 3 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1
                              for d in shape):
        raise ValueError(f"Expected input_shape (height, width, channels), got {input_shape!r}.")
    return shape


_SCALE = weights_cost(1, FLOAT_BITS)  # bnas_tf.layers.Scale: one fixed float weight


def genotype_cost(genotype: Genotype, layers: int = 20, channels: int = 36,
                  input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10, *,
                  binary_weights: bool = True, cell_skip: bool = True, stem_multiplier: int = 3,
                  stem: str = "cifar") -> ModelCost:
    """The cost of `bnas_tf.build_network(genotype, ...)`, computed without building it.

    Equals `model_cost(build_network(genotype, ...))` with the same arguments
    (tested for random genotypes of every space), except that it defaults to
    the deployed network, `binary_weights=True` (stage 2), where
    `build_network` defaults to stage 1. `masked_groups` changes nothing:
    grouped convs count as grouped either way.

    Args:
        genotype: a `Genotype` (any in-degree, weighted ops and edges).
        layers: number of cells.
        channels: channels per node of the first cells (doubled at reductions).
        input_shape: `(height, width, channels)` of the images.
        num_classes: classifier outputs.
        binary_weights: binary kernels (stage 2); False counts stage 1.
        cell_skip: BNAS inter-cell skips.
        stem_multiplier: CIFAR stem channels = `stem_multiplier · channels`.
        stem: "cifar" or "imagenet" (see `build_network`).

    Returns:
        A `ModelCost` (without a per-layer breakdown).

    Raises:
        TypeError: `genotype` is not a `Genotype`.
        ValueError: bad sizes or stem.

    Example:
        >>> genotype = bn.random_genotype(bn.SearchSpace.get("lce"), rng=0)
        >>> bn.cost.genotype_cost(genotype, layers=5, channels=16).ops
    """
    if not isinstance(genotype, Genotype):
        raise TypeError(f"Expected a bnas_tf.Genotype, got {type(genotype).__name__}.")
    input_shape = _check_sizes(layers, channels, num_classes, input_shape)
    if stem not in ("cifar", "imagenet"):
        raise ValueError(f"Expected stem 'cifar' or 'imagenet', got {stem!r}.")
    space, binary_weights = genotype.search_space, bool(binary_weights)
    skeleton = _skeleton(
        space, layers, channels, input_shape,
        outputs={False: len(genotype.normal.concat), True: len(genotype.reduce.concat)},
        num_classes=num_classes, stem=stem, stem_multiplier=stem_multiplier,
        cell_skip=cell_skip, binary_weights=binary_weights)
    # Keras keeps only the layers the logits depend on: walk back from the last cell.
    # Cell i reads the outputs of cells i - 2 (s0) and i - 1 (s1); -2 and -1 are the stem's.
    total, live = skeleton.head, {layers - 1}
    for i in reversed(range(layers)):
        if i not in live:
            continue
        shape = skeleton.cells[i]
        cell = genotype.reduce if shape.reduction else genotype.normal
        cell_cost, sources = _cell_cost(cell, shape, space, binary_weights)
        total += cell_cost
        for j in sources:
            total += shape.inputs[j]
            live.add(i - 2 + j)
        if cell_skip:
            total += shape.skip
            live.add(i - 1)
    if -1 in live or -2 in live:
        total += skeleton.stem[0] + (skeleton.stem[1] if -1 in live else ModelCost())
    return total


def _cell_cost(cell: Cell, shape: _CellShape, space: SearchSpace, binary_weights: bool
               ) -> tuple[ModelCost, set[int]]:
    """The ops of the nodes `cell.concat` depends on, and which inputs (0, 1) they read."""
    needed, total = set(cell.concat), ModelCost()
    for k in reversed(range(len(cell.nodes))):
        if k + 2 not in needed:
            continue
        zero_source = None
        terms = 0
        for edge in cell.nodes[k]:
            strides = 2 if shape.reduction and edge.source < 2 else 1
            hw = shape.hw if edge.source < 2 else shape.out_hw
            ops_ = [(name, w) for name, w in edge.ops if name != "none"]  # `none`: left out
            if not ops_:
                zero_source = edge.source
                continue
            for op_name, weight in ops_:
                total += _op_cost(space, op_name, shape.filters, strides, hw, binary_weights)
                total += _SCALE if weight != 1.0 else ModelCost()
            total += _SCALE if edge.weight != 1.0 else ModelCost()
            needed.add(edge.source)
            terms += 1
        if not terms:  # only `none` ops: zeros shaped like the last such edge's source
            needed.add(zero_source)
    return total, {j for j in (0, 1) if j in needed}


@dataclasses.dataclass(frozen=True)
class EdgeCosts:
    """Per edge and op, what choosing that op costs in the derived network.

    Each row is summed over all cells of its kind (normal cells share
    `α_normal`, reduction cells `α_reduce`), so for a genotype that keeps
    every edge with one op each,
    `cost = fixed + Σ_kind Σ_edges cost[kind][edge][op of the edge]`.
    Rows follow `edges` (`SearchSpace.edges()`, the rows of the supernet's α),
    columns `op_names` (its columns).

    Attributes:
        op_names: the space's ops (columns).
        edges: `(source, node)` per row.
        normal: per edge, `{op_name: ModelCost}` summed over the normal cells.
        reduce: the same for the reduction cells.
        fixed: everything the choice of ops does not change: stem, cell-input
            convs, inter-cell skips, classifier.
    """

    op_names: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]
    normal: tuple[dict[str, ModelCost], ...]
    reduce: tuple[dict[str, ModelCost], ...]
    fixed: ModelCost

    def __getitem__(self, kind: str) -> tuple[dict[str, ModelCost], ...]:
        if kind not in CELL_KINDS:
            raise KeyError(f"Expected a cell kind 'normal' or 'reduce', got {kind!r}.")
        return getattr(self, kind)

    def table(self, kind: str, metric: str = "ops") -> np.ndarray:
        """`[edges, ops]` array of one metric (see `ModelCost.value`), aligned with α."""
        return np.array([[row[name].value(metric) for name in self.op_names]
                         for row in self[kind]], dtype=np.float64)

    def tables(self, metric: str = "ops") -> dict[str, np.ndarray]:
        """`{"normal": [edges, ops], "reduce": [edges, ops]}` of one metric."""
        return {kind: self.table(kind, metric) for kind in CELL_KINDS}

    def expected(self, probabilities: Mapping[str, np.ndarray], metric: str = "ops") -> float:
        """`fixed + Σ_kind Σ_edges Σ_o p[kind][edge, o] · cost[kind][edge, o]`.

        Args:
            probabilities: `{"normal": [edges, ops], "reduce": [edges, ops]}`,
                e.g. `SuperNet.op_probabilities()`.
            metric: a `ModelCost` metric.
        """
        total = self.fixed.value(metric)
        for kind, table in self.tables(metric).items():
            p = np.asarray(probabilities[kind], dtype=np.float64)
            if p.shape != table.shape:
                raise ValueError(f"Expected {kind} probabilities of shape {table.shape}, "
                                 f"got {p.shape}.")
            total += float(np.sum(p * table))
        return total


def supernet_edge_costs(supernet_or_space: SuperNet | SearchSpace | str | dict,
                        layers: int | None = None, channels: int | None = None,
                        input_shape: Sequence[int] | None = None, *,
                        num_classes: int | None = None, stem_multiplier: int | None = None,
                        cell_skip: bool | None = None, binary_weights: bool = True
                        ) -> EdgeCosts:
    """The cost of every op on every edge of a supernet's cells, as the derived network has it.

    The cells have the shapes `SuperNet` and `build_network` give them:
    channels doubled at the reduction cells (at 1/3 and 2/3 of the depth),
    stride 2 on the edges from a reduction cell's inputs (the other edges
    run at the halved resolution), each op at the cell's full channels (also
    when the supernet mixes partial channels: the derived network's ops see
    all of them), grouped binary convs as grouped (the `lce` space: 32
    channels per group where channels allow).

    Args:
        supernet_or_space: a `SuperNet` (space, layers, channels, classes,
            stem multiplier and cell skips are read from it), or a search space.
        layers: cells (with a space; must be None with a supernet).
        channels: channels of the first cells (with a space).
        input_shape: `(height, width, channels)`; optional for a built supernet.
        num_classes: classifier outputs (with a space; default 10).
        stem_multiplier: stem channels = `stem_multiplier · channels` (default 3).
        cell_skip: BNAS inter-cell skips (default True).
        binary_weights: binary kernels (the deployed stage 2); False: stage 1.

    Returns:
        An `EdgeCosts`; `.tables(metric)` gives `[edges, ops]` arrays in α's order.

    Raises:
        ValueError: missing or conflicting sizes.

    Example:
        >>> net = bn.SuperNet("lce", layers=5, channels=16)
        >>> costs = bn.cost.supernet_edge_costs(net, input_shape=(32, 32, 3))
        >>> costs.table("reduce").shape == (net.space.num_edges, net.space.num_ops)
        True
        >>> expected_ops = costs.expected(net.op_probabilities())
    """
    if isinstance(supernet_or_space, SuperNet):
        net = supernet_or_space
        given = [name for name, value in (("layers", layers), ("channels", channels),
                                          ("num_classes", num_classes),
                                          ("stem_multiplier", stem_multiplier),
                                          ("cell_skip", cell_skip)) if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} come from the supernet; pass only the "
                             "supernet (and input_shape).")
        space, layers, channels = net.space, net.num_layers, net.channels
        num_classes, stem_multiplier = net.num_classes, net.stem_multiplier
        cell_skip = net.cell_skip
        if input_shape is None and getattr(net, "_build_input_shape", None) is not None:
            input_shape = tuple(tf.TensorShape(net._build_input_shape)[1:])
    else:
        space = SearchSpace.get(supernet_or_space)
        num_classes = 10 if num_classes is None else num_classes
        stem_multiplier = 3 if stem_multiplier is None else stem_multiplier
        cell_skip = True if cell_skip is None else cell_skip
    if input_shape is None:
        raise ValueError("Expected input_shape=(height, width, channels) (the supernet is not "
                         "built, so its input size is unknown).")
    input_shape = _check_sizes(layers, channels, num_classes, input_shape)
    skeleton = _skeleton(space, layers, channels, input_shape,
                         outputs={False: space.nodes, True: space.nodes},
                         num_classes=num_classes, stem="cifar", stem_multiplier=stem_multiplier,
                         cell_skip=cell_skip, binary_weights=bool(binary_weights))
    edges = tuple(space.edges())
    rows = {kind: [dict.fromkeys(space.op_names, ModelCost()) for _ in edges]
            for kind in CELL_KINDS}
    for shape in skeleton.cells:
        kind = CELL_KINDS[shape.reduction]
        for row, (source, _) in zip(rows[kind], edges, strict=True):
            strides = 2 if shape.reduction and source < 2 else 1
            hw = shape.hw if source < 2 else shape.out_hw
            for name, cost in op_costs(space, shape.filters, hw, strides,
                                       binary_weights=binary_weights).items():
                row[name] += cost
    return EdgeCosts(space.op_names, edges, tuple(rows["normal"]), tuple(rows["reduce"]),
                     skeleton.fixed)


def edge_cost_tables(supernet_or_space: SuperNet | SearchSpace | str | dict,
                     layers: int | None = None, channels: int | None = None,
                     input_shape: Sequence[int] | None = None, *, metric: str = "ops",
                     **kwargs) -> dict[str, np.ndarray]:
    """`{"normal": [edges, ops], "reduce": [edges, ops]}` per-op costs aligned with α.

    Row e, column o: what op o on edge e costs in the derived network, summed
    over the cells of that kind (see `supernet_edge_costs`, which takes the
    same arguments), in `metric` (a `ModelCost` metric: "ops", "binary_macs",
    "float_macs", "params", "size_bytes", ...). The expected cost of the
    edges is then `Σ_kind Σ p_kind · table_kind` with `p = softmax(α / T)`.

    Example:
        >>> tables = bn.cost.edge_cost_tables(net, input_shape=(32, 32, 3))
        >>> alpha_shaped = tf.constant(tables["normal"], tf.float32)   # like net.arch.alpha_normal
    """
    return supernet_edge_costs(supernet_or_space, layers, channels, input_shape,
                               **kwargs).tables(metric)
