"""Layers of the search supernet: architecture parameters, mixed ops, cells.

Example:
    >>> space = bn.SearchSpace.get("bats")
    >>> arch = ArchitectureParameters(space.num_edges, space.num_ops, temperature=0.2)
    >>> normal_weights, reduce_weights = arch.op_weights()   # softmax(α / T) per edge
"""

from __future__ import annotations

import tensorflow as tf

from bnas_tf import ops
from bnas_tf.regularizers import entropy
from bnas_tf.search_space import SearchSpace

__all__ = ["ArchitectureParameters", "MixedOp", "SearchCell", "CellSkip", "Scale"]


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class ArchitectureParameters(tf.keras.layers.Layer):
    """Op logits α of normal and reduction cells, and the softmax temperature T.

    `op_weights()` returns `softmax(α_normal / T), softmax(α_reduce / T)`,
    each `[edges, ops]`. T is a non-trainable variable, so schedules can
    change it between steps of a traced `train_step`.

    Args:
        num_edges: edges per cell.
        num_ops: ops per edge.
        temperature: initial T (BATS: 0.2; 1.0 is the plain DARTS softmax).
        init_scale: standard deviation of the initial α (DARTS: 1e-3).
        seed: initializer seed.
    """

    def __init__(self, num_edges: int, num_ops: int, temperature: float = 0.2,
                 init_scale: float = 1e-3, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"Expected temperature > 0, got {temperature!r}.")
        self.num_edges, self.num_ops = num_edges, num_ops
        self.initial_temperature, self.init_scale, self.seed = float(temperature), init_scale, seed
        init = tf.keras.initializers.RandomNormal(stddev=init_scale, seed=seed)
        self.alpha_normal = self.add_weight("alpha_normal", [num_edges, num_ops], initializer=init)
        init = tf.keras.initializers.RandomNormal(
            stddev=init_scale, seed=None if seed is None else seed + 1)
        self.alpha_reduce = self.add_weight("alpha_reduce", [num_edges, num_ops], initializer=init)
        self.temperature = self.add_weight(
            "temperature", [], initializer=tf.keras.initializers.Constant(temperature),
            trainable=False)

    @property
    def alphas(self) -> list[tf.Variable]:
        return [self.alpha_normal, self.alpha_reduce]

    def op_weights(self) -> tuple[tf.Tensor, tf.Tensor]:
        """`softmax(α_normal / T), softmax(α_reduce / T)`, each `[edges, ops]`."""
        return tuple(tf.nn.softmax(a / self.temperature) for a in self.alphas)

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
                "seed": self.seed}


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class MixedOp(tf.keras.layers.Layer):
    """`Σ_o w_o · o(x)` over every op of the space (the `none` op adds nothing).

    Args:
        space: a `SearchSpace` or its config.
        filters: channels in and out.
        strides: 1 or 2.
    """

    def __init__(self, space: SearchSpace | dict, filters: int, strides: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.space = SearchSpace.get(space)
        self.filters, self.strides = filters, strides
        self._ops = [self.space.build_op(n, filters, strides, masked_groups=True)
                     for n in self.space.op_names]
        self._active = [i for i, n in enumerate(self.space.op_names) if n != "none"]

    def call(self, inputs, op_weights, training=None):
        op_weights = tf.cast(op_weights, self.compute_dtype)  # float32 α, maybe bf16 activations
        return tf.add_n([op_weights[i] * self._ops[i](inputs, training=training)
                         for i in self._active])

    def get_config(self):
        return {**super().get_config(), "space": self.space.get_config(),
                "filters": self.filters, "strides": self.strides}


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
    """

    def __init__(self, space: SearchSpace | dict, filters: int, reduction: bool = False,
                 reduction_prev: bool = False, in_channels: int = 0, cell_skip: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        self.space = SearchSpace.get(space)
        self.filters, self.reduction, self.reduction_prev = filters, reduction, reduction_prev
        self.in_channels, self.cell_skip = in_channels, cell_skip
        self.pre0 = self.space.build_cell_input(filters, reduction_prev)
        self.pre1 = self.space.build_cell_input(filters, False)
        self.edges = [
            MixedOp(self.space, filters, 2 if reduction and source < 2 else 1)
            for source, _ in self.space.edges()
        ]
        self.skip = (CellSkip(self.space.nodes * filters, in_channels, reduction,
                              parameter_free=self.space.parameter_free_skips)
                     if cell_skip else None)

    def call(self, inputs, op_weights, edge_weights=None, training=None):
        """`op_weights [edges, ops]` mix each edge's ops; optional `edge_weights
        [edges]` scale each edge's output (HM-NAS), else every edge counts once."""
        s0, s1 = inputs
        states = [self.pre0(s0, training=training), self.pre1(s1, training=training)]
        if edge_weights is not None:
            edge_weights = tf.cast(edge_weights, self.compute_dtype)
        edge = 0
        for j in range(self.space.nodes):
            terms = []
            for source in range(j + 2):
                out = self.edges[edge](states[source], op_weights[edge], training=training)
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
                "cell_skip": self.cell_skip}


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
