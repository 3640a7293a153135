"""Layers of the search supernet: architecture parameters, mixed ops, cells.

Example:
    >>> space = bn.SearchSpace.get("bats")
    >>> arch = ArchitectureParameters(space.num_edges, space.num_ops, temperature=0.2)
    >>> normal_weights, reduce_weights = arch.op_weights()   # softmax(α / T) per edge
"""

from __future__ import annotations

import contextlib

import numpy as np
import tensorflow as tf

from bnas_tf import distribute, ops
from bnas_tf.mixing import (
    channel_shuffle,
    normalize_and_mix,
    plain_norm,
    quantizer_key,
    single_path,
)
from bnas_tf.regularizers import entropy
from bnas_tf.search_space import SearchSpace

__all__ = ["ArchitectureParameters", "MixedOp", "SearchCell", "CellSkip", "Scale",
           "channel_shuffle"]


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class ArchitectureParameters(tf.keras.layers.Layer):
    """Op logits α of normal and reduction cells, and the softmax temperature T.

    `op_weights()` returns `softmax(α_normal / T), softmax(α_reduce / T)`,
    each `[edges, ops]`. T is a non-trainable variable, so schedules can
    change it between steps of a traced `train_step`.

    Two optional parts serve the cheaper search modes of `SuperNet(mixing=)`:

    * `edge_normalization` (partial channels, PC-DARTS): edge logits β per
      cell type, `edge_weights()` gives `softmax(β_j)` over the edges into
      each node j.
    * `gumbel` (single path, GDAS): `sample()` draws one op per edge,
      `index = argmax(log softmax(α/T) + g)` with Gumbel noise g, and returns
      the straight-through weights `ĥ = one_hot(index) − sg(s) + s`,
      `s = softmax((log softmax(α/T) + g) / τ)`. τ (`gumbel_temperature`) is
      a non-trainable variable (GDAS anneals it from 10 to 0.1). The noise is
      stateless, keyed by a seed and a counter that every draw advances, so
      all replicas of a distribution strategy draw the same ops (their
      synchronized batch norms must run the same layers) and a checkpoint
      restores the sequence.

    Example:
        >>> arch = ArchitectureParameters(14, 8, temperature=0.2, gumbel=True, seed=0)
        >>> (weights, index), _ = arch.sample()    # normal, reduce
        >>> weights.shape, index.shape
        (TensorShape([14, 8]), TensorShape([14]))

    Args:
        num_edges: edges per cell.
        num_ops: ops per edge.
        temperature: initial T (BATS: 0.2; 1.0 is the plain DARTS softmax).
        init_scale: standard deviation of the initial α (and β) (DARTS: 1e-3).
        seed: initializer seed (and Gumbel noise seed).
        nodes: intermediate nodes per cell (needed with `edge_normalization`).
        edge_normalization: learn edge logits β (PC-DARTS).
        gumbel: keep the state of Gumbel sampling (GDAS).
        gumbel_temperature: initial τ.
    """

    def __init__(self, num_edges: int, num_ops: int, temperature: float = 0.2,
                 init_scale: float = 1e-3, seed: int | None = None, *, nodes: int | None = None,
                 edge_normalization: bool = False, gumbel: bool = False,
                 gumbel_temperature: float = 10.0, **kwargs):
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"Expected temperature > 0, got {temperature!r}.")
        if gumbel_temperature <= 0:
            raise ValueError(f"Expected gumbel_temperature > 0, got {gumbel_temperature!r}.")
        if edge_normalization and (nodes is None or sum(j + 2 for j in range(nodes)) != num_edges):
            raise ValueError(f"edge_normalization needs the number of nodes of a cell with "
                             f"{num_edges} edges, got nodes={nodes!r}.")
        self.num_edges, self.num_ops = num_edges, num_ops
        self.initial_temperature, self.init_scale, self.seed = float(temperature), init_scale, seed
        self.nodes, self.edge_normalization, self.gumbel = nodes, bool(edge_normalization), bool(gumbel)
        self.initial_gumbel_temperature = float(gumbel_temperature)

        def init(offset: int):
            return tf.keras.initializers.RandomNormal(
                stddev=init_scale, seed=None if seed is None else seed + offset)

        self.alpha_normal = self.add_weight("alpha_normal", [num_edges, num_ops], initializer=init(0))
        self.alpha_reduce = self.add_weight("alpha_reduce", [num_edges, num_ops], initializer=init(1))
        self.temperature = self.add_weight(
            "temperature", [], initializer=tf.keras.initializers.Constant(temperature),
            trainable=False)
        self.betas: list[tf.Variable] = []
        if self.edge_normalization:
            self.betas = [self.add_weight(f"beta_{kind}", [num_edges], initializer=init(2 + k))
                          for k, kind in enumerate(("normal", "reduce"))]
        if self.gumbel:
            self.gumbel_temperature = self.add_weight(
                "gumbel_temperature", [],
                initializer=tf.keras.initializers.Constant(gumbel_temperature), trainable=False)
            key = seed if seed is not None else int(np.random.default_rng().integers(2**31))
            # [seed, draws so far]: every replica reads the same key and advances it once
            self.sample_key = self.add_weight(
                "sample_key", [2], dtype="int64", trainable=False,
                initializer=tf.keras.initializers.Constant([key, 0]),
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    @property
    def alphas(self) -> list[tf.Variable]:
        return [self.alpha_normal, self.alpha_reduce]

    def op_weights(self) -> tuple[tf.Tensor, tf.Tensor]:
        """`softmax(α_normal / T), softmax(α_reduce / T)`, each `[edges, ops]`."""
        return tuple(tf.nn.softmax(a / self.temperature) for a in self.alphas)

    def edge_weights(self) -> tuple[tf.Tensor, tf.Tensor]:
        """`softmax(β_j)` over the edges into each node j, `[edges]` for normal and reduce."""
        if not self.edge_normalization:
            raise ValueError("These architecture parameters have no edge weights "
                             "(edge_normalization=False).")
        rows = [j + 2 for j in range(self.nodes)]
        return tuple(tf.concat([tf.nn.softmax(b) for b in tf.split(beta, rows)], axis=0)
                     for beta in self.betas)

    def sample(self) -> tuple[tuple[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
        """One Gumbel draw per edge: `((ĥ_normal, index_normal), (ĥ_reduce, index_reduce))`.

        `ĥ [edges, ops]` is one-hot in the forward pass (straight-through
        weights), `index [edges]` the sampled op of each edge.
        """
        if not self.gumbel:
            raise ValueError("These architecture parameters do not sample (gumbel=False).")
        key = tf.identity(self.sample_key)
        self.sample_key.assign_add(tf.constant([0, 1], tf.int64))
        uniform = tf.random.stateless_uniform([2, self.num_edges, self.num_ops], seed=key,
                                              minval=1e-10, maxval=1.0)
        gumbels = -tf.math.log(-tf.math.log(uniform))
        out = []
        for k, alpha in enumerate(self.alphas):
            logits = tf.nn.log_softmax(alpha / self.temperature) + gumbels[k]
            soft = tf.nn.softmax(logits / self.gumbel_temperature)
            index = tf.argmax(logits, axis=-1, output_type=tf.int32)
            hard = tf.one_hot(index, self.num_ops, dtype=soft.dtype)
            out.append((hard - tf.stop_gradient(soft) + soft, index))
        return tuple(out)

    def argmax_ops(self) -> tuple[tuple[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
        """`((one_hot, index), ...)` of each edge's most likely op (single-path inference)."""
        out = []
        for alpha in self.alphas:
            index = tf.argmax(alpha, axis=-1, output_type=tf.int32)
            out.append((tf.one_hot(index, self.num_ops, dtype=alpha.dtype), index))
        return tuple(out)

    def call(self, inputs):
        """Returns `op_weights()`; `inputs` is ignored (Keras needs one argument)."""
        return self.op_weights()

    def mean_entropy(self, tempered: bool = True) -> tf.Tensor:
        """Mean entropy over all edges of `softmax(α/T)` (or `softmax(α)`)."""
        t = self.temperature if tempered else 1.0
        return tf.reduce_mean(entropy(tf.nn.softmax(tf.concat(self.alphas, 0) / t)))

    def get_config(self):
        return {**super().get_config(), "num_edges": self.num_edges, "num_ops": self.num_ops,
                "temperature": self.initial_temperature, "init_scale": self.init_scale,
                "seed": self.seed, "nodes": self.nodes,
                "edge_normalization": self.edge_normalization, "gumbel": self.gumbel,
                "gumbel_temperature": self.initial_gumbel_temperature}


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class MixedOp(tf.keras.layers.Layer):
    """`Σ_o w_o · o(x)` over every op of the space (the `none` op adds nothing).

    In training, the ops that end in a plain batch norm without scale and
    offset (binary convs, pools) share one normalization: their pre-norm
    outputs are concatenated and normalized by a single fused batch norm
    whose per-channel scale is the op's weight `w_o`, then summed. This is
    the same function, the same gradients and the same moving statistics as
    normalizing each op and multiplying by `w_o` (tested), with fewer
    tensors kept for the backward pass and a smaller graph.

    Two cheaper modes (see `bnas_tf.SuperNet(mixing=)`):

    * **Single path** (`call(..., op_index=k)`, GDAS): only op k runs, in a
      `tf.switch_case`, and the output is `w_k · o_k(x) + Σ_{o≠k} w_o`. With
      the straight-through Gumbel weights of
      `ArchitectureParameters.sample` the other `w_o` are 0 in the forward
      pass but pass a gradient to every α of the edge.
    * **Partial channels** (`partial_channels=K`, PC-DARTS): the ops see the
      first `filters / K` channels only; the other channels bypass them
      (2×2 max-pooled on stride-2 edges), and a channel shuffle with K groups
      interleaves both parts, so each cell mixes different channels.

    Example:
        >>> mixed = MixedOp("bats", 16, strides=1, partial_channels=4)
        >>> mixed(tf.ones([2, 8, 8, 16]), tf.fill([8], 0.125)).shape
        TensorShape([2, 8, 8, 16])

    Args:
        space: a `SearchSpace` or its config.
        filters: channels in and out.
        strides: 1 or 2.
        partial_channels: K; the ops run on `filters / K` channels (1: all).
        single_path: the op is called with `op_index` (GDAS): its ops' batch
            norms keep per-replica statistics under a distribution strategy,
            since a synchronized batch norm cannot run inside `tf.switch_case`.
    """

    def __init__(self, space: SearchSpace | dict, filters: int, strides: int = 1,
                 partial_channels: int = 1, single_path: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.space = SearchSpace.get(space)
        self.filters, self.strides = filters, strides
        if (isinstance(partial_channels, bool) or not isinstance(partial_channels, int)
                or partial_channels < 1 or filters % partial_channels):
            raise ValueError(f"Expected partial_channels to be a positive divisor of the "
                             f"{filters} channels of the edge, got {partial_channels!r}.")
        self.partial_channels, self.single_path = partial_channels, bool(single_path)
        self.op_filters = filters // partial_channels
        with distribute.local_batch_norm() if single_path else contextlib.nullcontext():
            self._ops = [self.space.build_op(n, self.op_filters, strides, masked_groups=True)
                         for n in self.space.op_names]
        self._bypass_pool = (tf.keras.layers.MaxPool2D(2, strides=2, padding="same")
                             if partial_channels > 1 and strides > 1 else None)
        self._active = [i for i, n in enumerate(self.space.op_names) if n != "none"]
        plain = [i for i in self._active if plain_norm(self._ops[i])]
        settings = {i: (self._ops[i].bn.epsilon, self._ops[i].bn.momentum) for i in plain}
        self._shared_norm = [i for i in plain if settings[i] == settings[plain[0]]]
        # binary convs of the shared path binarize once per distinct input quantizer
        self._quantizer_keys = {
            i: quantizer_key(self._ops[i].conv.input_quantizer) for i in self._shared_norm
            if isinstance(self._ops[i], ops.BinaryConvBN)
            and self._ops[i].conv.input_quantizer is not None}

    def build(self, input_shape):
        # the shared path bypasses these layers' __call__, so build them here
        for i in self._shared_norm:
            op = self._ops[i]
            if not op.bn.built:  # under the scopes its own call would use: same names
                with tf.name_scope(op.name), tf.name_scope(op.bn.name):
                    op.bn.build(tf.TensorShape([None, None, None, self.op_filters]))
                op.bn.built = True
        # the single path calls each op inside a branch of `tf.switch_case`, where
        # variables cannot be created: build every op now, outside any branch
        height, width = (d if d is not None else 8 for d in tf.TensorShape(input_shape)[1:3])
        probe = tf.zeros([1, height, width, self.op_filters], dtype=self.compute_dtype)
        with tf.init_scope():
            for op in self._ops:
                if not op.built:
                    op(probe, training=False)
        super().build(input_shape)

    def call(self, inputs, op_weights, training=None, op_index=None):
        """Mix the ops on `inputs` with `op_weights [ops]`; with `op_index`, run that op only."""
        op_weights = tf.cast(op_weights, self.compute_dtype)  # float32 α, maybe bf16 activations
        if self.partial_channels == 1:
            return self._mix(inputs, op_weights, training, op_index)
        selected, bypass = inputs[..., :self.op_filters], inputs[..., self.op_filters:]
        out = self._mix(selected, op_weights, training, op_index)
        if self._bypass_pool is not None:
            bypass = self._bypass_pool(bypass)
        return channel_shuffle(tf.concat([out, bypass], axis=-1), self.partial_channels)

    def _mix(self, inputs, op_weights, training, op_index):
        shared = (self._shared_norm if training is True and self._shared_norm
                  and self.compute_dtype == "float32" and self.trainable
                  and all(self._ops[i].bn.trainable for i in self._shared_norm) else [])
        if op_index is not None:
            return single_path(self._ops, inputs, op_weights, op_index, training=training,
                               lean=shared, quantizer_keys=self._quantizer_keys)
        if len(shared) < 2:
            shared = []
        terms = [op_weights[i] * self._ops[i](inputs, training=training)
                 for i in self._active if i not in shared]
        if shared:
            terms.append(normalize_and_mix(self._shared_pre_norm(inputs, shared),
                                            [self._ops[i].bn for i in shared],
                                            tf.gather(op_weights, shared)))
        return tf.add_n(terms)

    def _shared_pre_norm(self, inputs, indices: list[int]) -> list[tf.Tensor]:
        """Pre-norm outputs; binary convs with one input quantizer binarize once."""
        quantized, padded, out = {}, {}, []
        for i in indices:
            op, key = self._ops[i], self._quantizer_keys.get(i)
            if key is None:
                out.append(op.pre_norm(inputs))
                continue
            if key not in quantized:
                quantized[key] = op.conv.input_quantizer(inputs)
            out.append(op.pre_norm(inputs, quantized=quantized[key],
                                   padded=padded.setdefault(key, {})))
        return out

    def get_config(self):
        return {**super().get_config(), "space": self.space.get_config(),
                "filters": self.filters, "strides": self.strides,
                "partial_channels": self.partial_channels, "single_path": self.single_path}


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class CellSkip(tf.keras.layers.Layer):
    """Real-valued inter-cell skip of the BNAS cell template.

    Identity when shapes agree, else `bnas_tf.ops.skip_projection`: a 1×1
    conv + BN when channels change (or, with `parameter_free`, repeated
    channels); a reduction cell first applies 2×2 average pooling.
    """

    def __init__(self, filters: int, in_channels: int, reduction: bool,
                 parameter_free: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.in_channels, self.reduction = filters, in_channels, reduction
        self.parameter_free = parameter_free
        self.pool = tf.keras.layers.AveragePooling2D(2, padding="same") if reduction else None
        self.proj = ops.skip_projection(filters, in_channels, reduction, parameter_free)

    def call(self, inputs, training=None):
        out = self.pool(inputs) if self.pool is not None else inputs
        return self.proj(out, training=training) if self.proj is not None else out

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "in_channels": self.in_channels, "reduction": self.reduction,
                "parameter_free": self.parameter_free}


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class SearchCell(tf.keras.layers.Layer):
    """A DARTS cell whose every edge is a `MixedOp`.

    Inputs `[s0, s1]` (outputs of the two previous cells) are preprocessed to
    `filters` channels; node j sums the mixed ops of all earlier states; the
    output concatenates the nodes (`nodes · filters` channels) and, with
    `cell_skip`, adds the (downsampled) input s1 (BNAS template).

    Args:
        space: a `SearchSpace` or its config.
        filters: channels per node.
        reduction: halve the resolution (edges from the inputs use stride 2).
        reduction_prev: the previous cell was a reduction (s0 is larger).
        in_channels: channels of s1 (for the skip).
        cell_skip: add the inter-cell skip.
        partial_channels: K of partial-channel mixed ops (1: every channel).
        single_path: the mixed ops run one op per call (see `MixedOp`).
    """

    def __init__(self, space: SearchSpace | dict, filters: int, reduction: bool = False,
                 reduction_prev: bool = False, in_channels: int = 0, cell_skip: bool = True,
                 partial_channels: int = 1, single_path: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.space = SearchSpace.get(space)
        self.filters, self.reduction, self.reduction_prev = filters, reduction, reduction_prev
        self.in_channels, self.cell_skip = in_channels, cell_skip
        self.partial_channels, self.single_path = partial_channels, bool(single_path)
        self.pre0 = self.space.build_cell_input(filters, reduction_prev)
        self.pre1 = self.space.build_cell_input(filters, False)
        self.edges = [
            MixedOp(self.space, filters, 2 if reduction and source < 2 else 1,
                    partial_channels=partial_channels, single_path=single_path)
            for source, _ in self.space.edges()
        ]
        self.skip = (CellSkip(self.space.nodes * filters, in_channels, reduction,
                              parameter_free=self.space.parameter_free_skips)
                     if cell_skip else None)

    def call(self, inputs, op_weights, edge_weights=None, training=None, op_indices=None):
        """`op_weights [edges, ops]` mix each edge's ops; optional `edge_weights
        [edges]` scale each edge's output (HM-NAS, PC-DARTS), else every edge
        counts once; optional `op_indices [edges]` run one op per edge (GDAS)."""
        s0, s1 = inputs
        states = [self.pre0(s0, training=training), self.pre1(s1, training=training)]
        if edge_weights is not None:
            edge_weights = tf.cast(edge_weights, self.compute_dtype)
        edge = 0
        for j in range(self.space.nodes):
            terms = []
            for source in range(j + 2):
                out = self.edges[edge](
                    states[source], op_weights[edge], training=training,
                    op_index=None if op_indices is None else op_indices[edge])
                terms.append(out if edge_weights is None else edge_weights[edge] * out)
                edge += 1
            states.append(tf.add_n(terms))
        out = tf.concat(states[2:], axis=-1)
        if self.skip is not None:
            out = out + self.skip(s1, training=training)
        return out

    def get_config(self):
        return {**super().get_config(), "space": self.space.get_config(),
                "filters": self.filters, "reduction": self.reduction,
                "reduction_prev": self.reduction_prev, "in_channels": self.in_channels,
                "cell_skip": self.cell_skip, "partial_channels": self.partial_channels,
                "single_path": self.single_path}


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class Scale(tf.keras.layers.Layer):
    """Multiply by a learned op or edge weight (HM-NAS genotypes), kept fixed by default.

    Args:
        value: the initial weight.
        trainable: let training adjust the weight.
    """

    def __init__(self, value: float = 1.0, trainable: bool = False, **kwargs):
        super().__init__(trainable=trainable, **kwargs)
        self.value = float(value)
        self.scale = self.add_weight("scale", [], initializer=tf.keras.initializers.Constant(value),
                                     trainable=trainable)

    def call(self, inputs):
        return inputs * self.scale

    def get_config(self):
        return {**super().get_config(), "value": self.value}
