"""HM-NAS search mode: multi-level encoding, hierarchical masks, searched weights kept.

DARTS derives a cell by a hand-made rule (two inputs per node, one op per
edge). HM-NAS (METHODS.md §8) learns what to keep by masking and keeps the
searched weights. `HMNASSuperNet` is a `SuperNet` whose node j computes

    x_j = Σ_i  m_ij · g_ij · β_ij · Σ_o m_ij,o · w(α_ij)_o · o(x_i)

* **multi-level encoding**: `w(α_ij) = softmax(α_ij / T)` over all ops of the
  edge (the temperature of BATS applies, and the α regularizers of
  `SuperNet.compile` still act on α), and a separate real edge weight
  `β_ij` per edge (initial 1.0), *not* normalized across edges, so any number
  of edges can matter, each with its own weight;
* **hierarchical masks**: `m = 1[s > τ]` of real-valued scores with a
  straight-through gradient (`bnas_tf.masks.threshold_mask`), one score per
  (edge, op), one per edge, and one per kernel entry of every binary conv
  (`bnas_tf.masks.MaskedQuantConv2D`);
* `g_ij ∈ {0, 1}` is structural, not learned (no gradient): it is 0 when the
  edge's every real op is masked, or when its source node is dead (all of the
  source's incoming edges are off). So a pruned node feeds nothing onward and
  its output is exactly zero.

Which step trains which scores, and why:

* op scores, edge scores, α and β are *architecture* parameters: the
  architecture step updates them on the validation batch (like DARTS' α),
  because they choose the structure, and choosing it on held-out data is what
  keeps the search from overfitting the training half;
* kernel (weight-mask) scores belong to the *weight* step (training batch):
  they prune individual weights of an op, as Piggyback-style masks, and move
  with the weights they gate. `SuperNet.arch_variables` / `weight_variables`
  split them that way, and tests check that each step changes only its own.

Derivation (`genotype()`) keeps every edge whose gate `m_ij · g_ij` is on with
weight `β_ij`, and on it every real op whose mask is on with weight
`w(α)_o`; `none` contributes nothing and is dropped. A node whose inputs are
all masked is removed from the DAG: it has no ops and feeds no edge. It keeps
its (all-zero) slot in the cell output so that channel layouts, and hence the
copied weights, are the same as in the supernet; the genotype marks it with
a single `none` edge from input 1, which `build_network` turns into a zero
tensor. The search space must therefore contain `none` (all presets do).

`derive_model()` builds `bn.build_network(genotype, ...)` and copies the
searched weights into it (masked kernel entries are copied as zeros; the
search's non-affine batch norms become affine ones with γ = 1, β = 0 and the
moving statistics), so its inference-mode predictions equal the masked
supernet's, and `fit` continues from where the search ended.

Example:
    >>> space = bn.SearchSpace.get("bats")
    >>> net = bn.HMNASSuperNet(space, num_classes=10, layers=8, channels=36,
    ...                        sparsity=1e-3)
    >>> net.compile(metrics=["accuracy"])
    >>> net.fit(bn.data.search_pairs(data, batch_size=64), epochs=10)
    >>> genotype = net.genotype()              # any in-degree, weighted edges
    >>> model = net.derive_model()             # pruned network, searched weights
    >>> model.compile(...); model.fit(...)     # continue training

References:
    Yan et al., HM-NAS: Efficient Neural Architecture Search via Hierarchical
    Masking, ICCV 2019 Neural Architects Workshop, arXiv:1909.00122.
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from bnas_tf import ops
from bnas_tf.builder import build_network
from bnas_tf.decision import genotype_warnings
from bnas_tf.errors import SearchSpaceError
from bnas_tf.genotype import Cell, Edge, Genotype
from bnas_tf.layers import ArchitectureParameters, SearchCell
from bnas_tf.masks import (
    DEFAULT_INITIAL,
    DEFAULT_THRESHOLD,
    DEFAULT_WEIGHT_INITIAL,
    Sparsity,
    _KernelMaskMixin,
    masked_conv_from,
    threshold_mask,
)
from bnas_tf.search_space import DEFAULT_SPACE
from bnas_tf.supernet import SuperNet

__all__ = ["HMNASArchitecture", "HMNASCell", "HMNASSuperNet", "copy_searched_weights"]

log = logging.getLogger(__name__)

KINDS = ("normal", "reduce")


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class HMNASArchitecture(ArchitectureParameters):
    """α (op logits), β (edge weights) and the op and edge mask scores of both cell kinds.

    Args:
        space: the search space (its `op_names` order is the column order).
        temperature, init_scale, seed: as `ArchitectureParameters`.
        op_threshold, edge_threshold: τ of the op and edge masks.
        op_initial, edge_initial: initial scores (> τ: everything on at first).
        edge_weight_initial: initial β.
        sparsity: strength of a `bnas_tf.masks.Sparsity` regularizer on the
            op and edge scores (0: none). It is a Keras regularizer of the
            score variables, so it appears in `layer.losses`.
    """

    def __init__(self, space, temperature: float = 0.2, init_scale: float = 1e-3,
                 seed: int | None = None, *, op_threshold: float = DEFAULT_THRESHOLD,
                 edge_threshold: float = DEFAULT_THRESHOLD, op_initial: float = DEFAULT_INITIAL,
                 edge_initial: float = DEFAULT_INITIAL, edge_weight_initial: float = 1.0,
                 sparsity: float = 0.0, **kwargs):
        from bnas_tf.search_space import SearchSpace

        space = SearchSpace.get(space)
        for what, init, thr in (("op", op_initial, op_threshold),
                                ("edge", edge_initial, edge_threshold)):
            if not init > thr:
                raise ValueError(f"Expected {what}_initial > {what}_threshold (masks start on), "
                                 f"got {init!r} <= {thr!r}.")
        super().__init__(space.num_edges, space.num_ops, temperature=temperature,
                         init_scale=init_scale, seed=seed, **kwargs)
        self.space = space
        self.op_threshold, self.edge_threshold = float(op_threshold), float(edge_threshold)
        self.op_initial, self.edge_initial = float(op_initial), float(edge_initial)
        self.edge_weight_initial, self.sparsity = float(edge_weight_initial), float(sparsity)
        reg = Sparsity(sparsity) if sparsity else None
        e, o = self.space.num_edges, self.space.num_ops
        for kind in KINDS:
            setattr(self, f"beta_{kind}", self.add_weight(
                f"beta_{kind}", [e], initializer=tf.keras.initializers.Constant(edge_weight_initial)))
            setattr(self, f"op_scores_{kind}", self.add_weight(
                f"op_scores_{kind}", [e, o], regularizer=reg,
                initializer=tf.keras.initializers.Constant(op_initial)))
            setattr(self, f"edge_scores_{kind}", self.add_weight(
                f"edge_scores_{kind}", [e], regularizer=reg,
                initializer=tf.keras.initializers.Constant(edge_initial)))
        self._real_ops = [i for i, n in enumerate(self.space.op_names) if n != "none"]

    def op_mask(self, kind: str) -> tf.Tensor:
        """`[edges, ops]` binary op masks."""
        return threshold_mask(getattr(self, f"op_scores_{kind}"), self.op_threshold)

    def edge_mask(self, kind: str) -> tf.Tensor:
        """`[edges]` binary edge masks (before the structural gate)."""
        return threshold_mask(getattr(self, f"edge_scores_{kind}"), self.edge_threshold)

    def gates(self, kind: str) -> tuple[tf.Tensor, tf.Tensor]:
        """Structural gates `g` per edge and `alive` per state, both 0/1 without gradient.

        `g_ij = has_op_ij · alive_i`, `alive_j = max_i m_ij · g_ij` (inputs are alive).
        """
        op_mask = tf.stop_gradient(self.op_mask(kind))
        edge_mask = tf.stop_gradient(self.edge_mask(kind))
        has_op = tf.reduce_max(tf.gather(op_mask, self._real_ops, axis=1), axis=1)
        alive = [tf.constant(1.0), tf.constant(1.0)]
        gates, e = [], 0
        for j in range(self.space.nodes):
            on = []
            for source in range(j + 2):
                gates.append(has_op[e] * alive[source])
                on.append(edge_mask[e] * gates[-1])
                e += 1
            alive.append(tf.reduce_max(tf.stack(on)))
        return tf.stack(gates), tf.stack(alive)

    def cell_weights(self, kind: str) -> tuple[tf.Tensor, tf.Tensor]:
        """`(op_weights [edges, ops], edge_weights [edges])` of the forward pass.

        `op_weights = m_op · softmax(α/T)`, `edge_weights = m_edge · g · β`.
        """
        alpha = getattr(self, f"alpha_{kind}")
        op_weights = self.op_mask(kind) * tf.nn.softmax(alpha / self.temperature)
        gates, _ = self.gates(kind)
        edge_weights = self.edge_mask(kind) * gates * getattr(self, f"beta_{kind}")
        return op_weights, edge_weights

    def call(self, inputs):
        return tuple(self.cell_weights(kind) for kind in KINDS)

    def mask_fractions(self) -> dict[str, tf.Tensor]:
        """Fractions of real (edge, op) pairs and of edges whose mask is on, both kinds."""
        ops_on = tf.concat([tf.gather(self.op_mask(k), self._real_ops, axis=1) for k in KINDS], 0)
        edges_on = tf.concat([self.edge_mask(k) * self.gates(k)[0] for k in KINDS], 0)
        return {"ops_on": tf.reduce_mean(ops_on), "edges_on": tf.reduce_mean(edges_on)}

    def get_config(self):
        config = super().get_config()
        for key in ("num_edges", "num_ops"):
            config.pop(key)
        return {**config, "space": self.space.get_config(), "op_threshold": self.op_threshold,
                "edge_threshold": self.edge_threshold, "op_initial": self.op_initial,
                "edge_initial": self.edge_initial,
                "edge_weight_initial": self.edge_weight_initial, "sparsity": self.sparsity}


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class HMNASCell(SearchCell):
    """A `SearchCell` with edge weights, whose binary convs carry weight masks.

    Node j sums `edge_weights[e] · MixedOp_e(x_i, op_weights[e])` over its
    incoming edges e = (i, j) (`SearchCell.call` with `edge_weights`).

    Args:
        weight_threshold, weight_initial: τ and initial score of kernel masks.
        weight_sparsity: `Sparsity` strength on the kernel scores (0: none).
        Other arguments: as `SearchCell`.
    """

    def __init__(self, space, filters: int, reduction: bool = False,
                 reduction_prev: bool = False, in_channels: int = 0, cell_skip: bool = True, *,
                 weight_threshold: float = DEFAULT_THRESHOLD,
                 weight_initial: float = DEFAULT_WEIGHT_INITIAL, weight_sparsity: float = 0.0,
                 **kwargs):
        super().__init__(space, filters, reduction, reduction_prev, in_channels, cell_skip,
                         **kwargs)
        self.weight_threshold, self.weight_initial = float(weight_threshold), float(weight_initial)
        self.weight_sparsity = float(weight_sparsity)
        reg = Sparsity(weight_sparsity) if weight_sparsity else None
        for mixed in self.edges:
            for op in mixed._ops:
                if isinstance(op, ops.BinaryConvBN):
                    op.conv = masked_conv_from(op.conv, mask_threshold=weight_threshold,
                                               mask_initial=weight_initial,
                                               mask_regularizer=reg)

    def get_config(self):
        return {**super().get_config(), "weight_threshold": self.weight_threshold,
                "weight_initial": self.weight_initial, "weight_sparsity": self.weight_sparsity}


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class HMNASSuperNet(SuperNet):
    """A `SuperNet` in HM-NAS mode (module docstring: forward, masks, who trains what).

    A subclass rather than a `method=` switch inside `SuperNet`: the HM-NAS
    forward pass, variables, derivation and weight copy are all different, and
    keeping them apart leaves the DARTS supernet unchanged.
    `bnas_tf.recipes.supernet_class("darts" | "hmnas")` picks the class by
    name (the CLI's `--method`, `--recipe hmnas`).

    Args:
        space, num_classes, layers, channels, temperature, cell_skip,
            stem_multiplier, seed: as `SuperNet`.
        op_threshold, edge_threshold, weight_threshold: mask thresholds τ
            (default 5e-3 each).
        op_initial, edge_initial: initial op and edge scores (default 2e-2).
        weight_initial: initial kernel scores (default 0.1). Every mask starts
            on; `bnas_tf.masks` explains the gaps to the threshold.
        edge_weight_initial: initial edge weight β (default 1.0).
        sparsity: `Sparsity` strength on op and edge scores (default 0).
        weight_sparsity: `Sparsity` strength on kernel scores (default 0).

    Raises:
        SearchSpaceError: the space has no `none` op.
        ValueError: an initial score is not above its threshold.
    """

    def __init__(self, space=DEFAULT_SPACE, num_classes: int = 10, layers: int = 8,
                 channels: int = 16, *, op_threshold: float = DEFAULT_THRESHOLD,
                 edge_threshold: float = DEFAULT_THRESHOLD,
                 weight_threshold: float = DEFAULT_THRESHOLD,
                 op_initial: float = DEFAULT_INITIAL, edge_initial: float = DEFAULT_INITIAL,
                 weight_initial: float = DEFAULT_WEIGHT_INITIAL,
                 edge_weight_initial: float = 1.0,
                 sparsity: float = 0.0, weight_sparsity: float = 0.0, **kwargs):
        if not weight_initial > weight_threshold:
            raise ValueError(f"Expected weight_initial > weight_threshold (masks start on), got "
                             f"{weight_initial!r} <= {weight_threshold!r}.")
        if sparsity < 0 or weight_sparsity < 0:
            raise ValueError(f"Expected sparsity >= 0 and weight_sparsity >= 0, got "
                             f"{sparsity!r} and {weight_sparsity!r}.")
        # read by the construction hooks, which run inside SuperNet.__init__
        object.__setattr__(self, "_hm_options", {
            "op_threshold": float(op_threshold), "edge_threshold": float(edge_threshold),
            "weight_threshold": float(weight_threshold), "op_initial": float(op_initial),
            "edge_initial": float(edge_initial), "weight_initial": float(weight_initial),
            "edge_weight_initial": float(edge_weight_initial), "sparsity": float(sparsity),
            "weight_sparsity": float(weight_sparsity)})
        object.__setattr__(self, "_image_shape", None)
        if kwargs.get("mixing", "all") != "all":
            raise ValueError(f"HM-NAS search supports mixing='all' only (its masks act on "
                             f"every op of every edge), got mixing={kwargs['mixing']!r}.")
        super().__init__(space, num_classes, layers, channels, **kwargs)
        self._mask_trackers = {k: tf.keras.metrics.Mean(name=k)
                               for k in ("ops_on", "edges_on", "weights_on")}

    def _make_arch(self, temperature, seed):
        if "none" not in self.space.op_names:
            raise SearchSpaceError(
                f"HM-NAS needs the 'none' op in the search space (pruned nodes are kept as "
                f"zero blocks); space {self.space.name!r} has {list(self.space.op_names)}.")
        o = self._hm_options
        return HMNASArchitecture(
            self.space, temperature=temperature, seed=seed, op_threshold=o["op_threshold"],
            edge_threshold=o["edge_threshold"], op_initial=o["op_initial"],
            edge_initial=o["edge_initial"], edge_weight_initial=o["edge_weight_initial"],
            sparsity=o["sparsity"], name="arch", dtype="float32")

    def _make_cell(self, filters, reduction, reduction_prev, in_channels, name):
        o = self._hm_options
        return HMNASCell(self.space, filters, reduction, reduction_prev, in_channels=in_channels,
                         cell_skip=self.cell_skip, weight_threshold=o["weight_threshold"],
                         weight_initial=o["weight_initial"],
                         weight_sparsity=o["weight_sparsity"], name=name)

    # -- variables ---------------------------------------------------------------------------

    @property
    def arch_variables(self) -> list[tf.Variable]:
        """α, β, op and edge scores (architecture step)."""
        return list(self.arch.trainable_weights)

    def masked_convs(self) -> list[tf.keras.layers.Layer]:
        """Every binary conv with a weight mask."""
        return [op.conv for cell in self.cells for mixed in cell.edges for op in mixed._ops
                if isinstance(op, ops.BinaryConvBN) and isinstance(op.conv, _KernelMaskMixin)]

    def weight_mask_fraction(self) -> tf.Tensor:
        """Fraction of binary-conv kernel entries whose mask is on.

        Counts the real entries only: not those outside the group blocks of
        grouped convs trained masked, which are always zero.
        """
        convs = [c for c in self.masked_convs() if c.built]
        if not convs:
            return tf.constant(1.0)
        on = tf.add_n([c.kernel_mask_on() for c in convs])
        return on / float(sum(ops.active_entries(c.kernel) for c in convs))

    # -- forward -----------------------------------------------------------------------------

    def call(self, inputs, training=None):
        if inputs.shape.rank != 4:
            raise ValueError(f"Expected images of shape (batch, height, width, channels), "
                             f"got shape {inputs.shape}.")
        if self._image_shape is None:
            object.__setattr__(self, "_image_shape", tuple(int(d) for d in inputs.shape[1:]))
        weights = dict(zip(KINDS, self.arch.call(None), strict=True))
        s0 = s1 = self.stem(inputs, training=training)
        for cell in self.cells:
            op_w, edge_w = weights["reduce" if cell.reduction else "normal"]
            s0, s1 = s1, cell([s0, s1], op_weights=op_w, edge_weights=edge_w, training=training)
        return self.classifier(self.global_pool(s1))

    def arch_regularization(self) -> tf.Tensor:
        """`SuperNet.arch_regularization` (α) plus the score regularizers of the arch layer."""
        total = super().arch_regularization()
        if self.arch.losses:
            total += tf.add_n(self.arch.losses)
        return total

    @tf.autograph.experimental.do_not_convert
    def train_step(self, data):
        logs = super().train_step(data)
        fractions = self.arch.mask_fractions()
        logs["ops_on"], logs["edges_on"] = fractions["ops_on"], fractions["edges_on"]
        logs["weights_on"] = self.weight_mask_fraction()
        return logs

    # -- derivation --------------------------------------------------------------------------

    def genotype(self, edges_per_node: int | None = None, warn: bool = True) -> Genotype:
        """The masked architecture: every edge and op whose mask is on, with its weight.

        Edge weight = β_ij, op weight = `softmax(α_ij/T)_o`. A node with no
        live input is kept as a zero block (one `none` edge from input 1).

        Args:
            edges_per_node: not used (HM-NAS learns the in-degree); passing a
                number raises, so DARTS-rule code does not silently get masks.
            warn: log a warning when the normal cell keeps parameter-free ops only.
        """
        if edges_per_node is not None:
            raise ValueError("HMNASSuperNet.genotype() derives by masks; edges_per_node is a "
                             "DARTS-rule option. Use bn.SuperNet for the DARTS rule.")
        cells = {}
        for kind in KINDS:
            op_weights, edge_weights = (w.numpy() for w in self.arch.cell_weights(kind))
            op_mask = self.arch.op_mask(kind).numpy()
            gates, alive = (t.numpy() for t in self.arch.gates(kind))
            edge_on = self.arch.edge_mask(kind).numpy() * gates
            beta = getattr(self.arch, f"beta_{kind}").numpy()
            nodes, e = [], 0
            for j in range(self.space.nodes):
                edges = []
                for source in range(j + 2):
                    if edge_on[e] > 0:
                        kept = tuple((name, float(op_weights[e, o]))
                                     for o, name in enumerate(self.space.op_names)
                                     if name != "none" and op_mask[e, o] > 0)
                        edges.append(Edge(source, kept, float(beta[e])))
                    e += 1
                if alive[j + 2] == 0:
                    edges = [Edge(1, (("none", 0.0),), 1.0)]
                nodes.append(tuple(edges))
            cells[kind] = Cell(tuple(nodes), tuple(range(2, 2 + self.space.nodes)))
        probs = {k: np.round(v, 6).tolist() for k, v in self.op_probabilities().items()}
        genotype = Genotype(cells["normal"], cells["reduce"], self.space.get_config(), probs,
                            method="hmnas")
        if warn:
            for problem in genotype_warnings(genotype):
                log.warning(problem)
        return genotype

    def derive_model(self, *, input_shape: tuple[int, int, int] | None = None,
                     name: str = "hmnas_network") -> tf.keras.Model:
        """`bn.build_network(self.genotype(), ...)` holding the searched weights.

        Args:
            input_shape: image shape; default: the one the supernet was called on.
            name: model name.

        Returns:
            An uncompiled functional model whose inference-mode predictions
            equal this supernet's (up to float rounding).

        Raises:
            RuntimeError: the supernet has not been called on images yet.
        """
        input_shape = input_shape or self._image_shape
        if input_shape is None:
            raise RuntimeError("HMNASSuperNet.derive_model() needs the image shape: call or fit "
                               "the supernet first, or pass input_shape=(h, w, c).")
        if not self.built:
            self(tf.zeros((1, *input_shape)))
        model = build_network(self.genotype(), num_classes=self.num_classes,
                              layers=self.num_layers, channels=self.channels,
                              input_shape=tuple(input_shape), cell_skip=self.cell_skip,
                              stem_multiplier=self.stem_multiplier,
                              binary_weights=self.space.binary_search_weights, name=name)
        copy_searched_weights(self, model)
        return model

    def get_config(self):
        return {**super().get_config(), **self._hm_options}


# -- weight copy -------------------------------------------------------------------------------


def _short(variable) -> str:
    return variable.name.split("/")[-1].split(":")[0]


def _copy_layer(src: tf.keras.layers.Layer, dst: tf.keras.layers.Layer,
                kernels: dict | None = None) -> None:
    """Copy weights by variable name; missing γ → 1, β → 0 (non-affine search BN)."""
    by_name: dict[str, list] = {}
    for v in src.weights:
        by_name.setdefault(_short(v), []).append(v.numpy())
    values = []
    for v in dst.weights:
        key = _short(v)
        if kernels is not None and key in kernels:
            values.append(kernels[key])
        elif by_name.get(key):
            values.append(by_name[key].pop(0))
        elif key == "gamma":
            values.append(np.ones(v.shape, v.dtype.as_numpy_dtype))
        elif key == "beta":
            values.append(np.zeros(v.shape, v.dtype.as_numpy_dtype))
        else:
            raise ValueError(f"Cannot copy {v.name} of {dst.name}: no {key!r} in {src.name}.")
    dst.set_weights(values)


def _copy_parts(src: tf.keras.layers.Layer, model: tf.keras.Model, name: str) -> None:
    """A composite search op or ConvBN into the top-level layers `build_network` made of it."""
    if isinstance(src, ops.BinaryConvBN):
        conv, dst = src.conv, model.get_layer(f"{name}_conv")
        if isinstance(dst, ops.GroupMaskedQuantConv2D):  # trained masked: the dense layout
            kernel = conv.masked_kernel() if isinstance(conv, _KernelMaskMixin) else (
                conv.kernel.numpy())
            kernel = kernel * conv._mask.numpy()
        elif isinstance(conv, ops.GroupMaskedQuantConv2D):
            kernel = conv.grouped_kernel()  # masked too for MaskedGroupQuantConv2D
        elif isinstance(conv, _KernelMaskMixin):
            kernel = conv.masked_kernel()
        else:
            kernel = conv.kernel.numpy()
        _copy_layer(conv, dst, {"kernel": kernel})
        _copy_layer(src.bn, model.get_layer(f"{name}_bn"))
    elif isinstance(src, ops.PoolBN):
        _copy_layer(src.bn, model.get_layer(f"{name}_bn"))
    elif isinstance(src, ops.ConvBN):
        _copy_layer(src.conv, model.get_layer(f"{name}_conv"))
        _copy_layer(src.bn, model.get_layer(f"{name}_bn"))
    elif isinstance(src, ops.FactorizedReduce):  # unpacked by build_network
        for part in ("conv_a", "conv_b", "bn"):
            _copy_layer(getattr(src, part), model.get_layer(f"{name}_{part}"))
    elif src.weights:
        raise TypeError(f"Do not know how to copy {type(src).__name__} into {name}.")


def copy_searched_weights(net: HMNASSuperNet, model: tf.keras.Model) -> None:
    """Copy an HM-NAS supernet's weights into `build_network(net.genotype(), ...)`.

    Stem, cell preprocessing, inter-cell skips and classifier are copied as
    they are; every kept op gets the weights of the same op on the same edge
    of the same cell, its kernel multiplied by its weight mask (grouped
    kernels re-laid out for a real grouped conv). Non-affine search batch
    norms become γ = 1, β = 0 with the searched moving statistics.
    """
    genotype = net.genotype()
    _copy_parts(net.stem, model, "stem")
    _copy_layer(net.classifier, model.get_layer("classifier"))
    edge_index = {edge: e for e, edge in enumerate(net.space.edges())}
    names = {layer.name for layer in model.layers}
    for i, cell in enumerate(net.cells):
        for pre, pre_name in ((cell.pre0, f"cell{i}_pre0"), (cell.pre1, f"cell{i}_pre1")):
            # absent from the model when no kept edge reads that input
            if pre_name in names or {f"{pre_name}_conv", f"{pre_name}_conv_a"} & names:
                _copy_parts(pre, model, pre_name)
        if cell.skip is not None and cell.skip.proj is not None:
            _copy_parts(cell.skip.proj, model, f"cell{i}_skip")
        derived = genotype.reduce if cell.reduction else genotype.normal
        for k, edges in enumerate(derived.nodes):
            node = k + 2
            for edge in edges:
                mixed = cell.edges[edge_index[(edge.source, node)]]
                for op_name, _ in edge.ops:
                    if op_name == "none":
                        continue
                    op = mixed._ops[net.space.op_names.index(op_name)]
                    _copy_parts(op, model, f"cell{i}_n{node}_e{edge.source}_{op_name}")
