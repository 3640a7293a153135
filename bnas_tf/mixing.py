"""How a mixed op combines its ops: fused normalization, single path, channel shuffle.

`bnas_tf.layers.MixedOp` mixes the ops of an edge in one of three ways
(`bnas_tf.SuperNet(mixing=)`); the pieces that do the work live here:

* `normalize_and_mix`: the ops that end in a plain batch norm share one fused
  batch norm scaled by the op weights (all ops, and partial channels).
* `single_path`: one op per edge (GDAS). Only the sampled op runs, in a
  `tf.switch_case`. Its gradient runs in a second `tf.switch_case` (a custom
  gradient) instead of differentiating the first: TensorFlow's gradient of a
  `Case` makes every branch return the intermediates of every other branch, a
  graph quadratic in the number of ops. The forward switch also returns the
  op's batch-norm input; the gradient's batch norm starts from it, and the op
  below it is differentiated through a recomputation whose value nothing
  reads, so TensorFlow prunes its convolutions (a convolution's gradient
  needs its input, not its output). Both switches live in `tf.function`s that
  take the variables as values, shared by all edges of a kind, so a supernet
  traces a few of them instead of one per edge (tracing took minutes and
  gigabytes otherwise). Within `architecture_gradients_only()` (the α step of
  a first-order search) the gradient skips the kernels' gradients: no
  filter-gradient convolutions.
* `channel_shuffle`: interleaves the computed and the bypassed channels of a
  partial-channel edge (PC-DARTS).

Example:
    >>> out = single_path(mixed._ops, x, weights, index, training=True)
"""

from __future__ import annotations

import contextlib
import functools
import threading
import weakref

import larq as lq
import tensorflow as tf

from bnas_tf import ops
from bnas_tf.distribute import thread_flag

__all__ = ["architecture_gradients_only", "channel_shuffle", "normalize_and_mix", "plain_norm",
           "quantizer_key", "single_path"]

_GRADIENTS = threading.local()  # per thread: MirroredStrategy runs replicas in threads


def architecture_gradients_only():
    """Differentiate single-path edges for their inputs and op weights only, not their kernels.

    The gradients a `tf.GradientTape.gradient` call inside this context
    builds through `single_path` edges give `None` for the ops' kernels and
    skip computing them (a filter-gradient convolution per edge). Use it
    around the architecture step's gradient, which targets α (and β) only;
    the other gradients are unchanged.

    Example:
        >>> with architecture_gradients_only():
        ...     grads = tape.gradient(val_loss, supernet.arch_variables)
    """
    return thread_flag(_GRADIENTS, "arch_only")


def channel_shuffle(inputs: tf.Tensor, groups: int) -> tf.Tensor:
    """Interleave `groups` equal channel blocks: block-major order becomes channel-major.

    Example:
        >>> channel_shuffle(tf.reshape(tf.range(6.0), [1, 1, 1, 6]), 2)[0, 0, 0].numpy()
        array([0., 3., 1., 4., 2., 5.], dtype=float32)
    """
    channels = inputs.shape[-1]
    if groups == 1:
        return inputs
    size = tf.shape(inputs)[:-1]
    blocks = tf.reshape(inputs, tf.concat([size, [groups, channels // groups]], axis=0))
    return tf.reshape(tf.transpose(blocks, [0, 1, 2, 4, 3]), tf.concat([size, [channels]], 0))


def quantizer_key(quantizer) -> str:
    """Equal for quantizers that compute the same function (layer names aside)."""
    config = lq.quantizers.serialize(quantizer)
    if isinstance(config, dict) and isinstance(config.get("config"), dict):
        config = {**config, "config": {k: v for k, v in config["config"].items()
                                       if k != "name"}}
    return repr(config)


def plain_norm(op: tf.keras.layers.Layer) -> bool:
    """The op is `bn(op.pre_norm(x))` with a fused, local batch norm without scale/offset."""
    own_call = type(op).call in (ops.BinaryConvBN.call, ops.PoolBN.call)
    return own_call and _plain_bn(getattr(op, "bn", None))


def _plain_bn(bn) -> bool:
    """A fused, local Keras batch norm over the last axis without scale and offset."""
    return (type(bn) is tf.keras.layers.BatchNormalization and not bn.center and not bn.scale
            and not getattr(bn, "synchronized", False) and bn.axis in (-1, [-1], [3], 3)
            and isinstance(bn.momentum, (float, int)) and bn.fused is not False
            and not bn.renorm and bn.virtual_batch_size is None and bn.adjustment is None)


def normalize_and_mix(pre: list[tf.Tensor], norms: list, weights: tf.Tensor, *,
                      update_statistics: bool = True) -> tf.Tensor:
    """`Σ_k weights[k] · norms[k](pre[k], training=True)` with one fused batch norm.

    Updates each layer's moving mean and variance as Keras' batch norm does
    (exponential average of the batch mean and the unbiased batch variance),
    unless `update_statistics` is False.
    """
    k, channels = len(pre), pre[0].shape[-1]
    z = tf.concat(pre, axis=-1)
    eps, momentum = norms[0].epsilon, norms[0].momentum
    moving_mean = tf.concat([n.moving_mean for n in norms], 0)
    moving_variance = tf.concat([n.moving_variance for n in norms], 0)
    y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
        z, tf.repeat(weights, channels), tf.zeros([k * channels], z.dtype),
        mean=moving_mean, variance=moving_variance,
        epsilon=eps, is_training=True, exponential_avg_factor=1.0 - momentum)
    if update_statistics:
        if not z.shape[0]:  # maybe an empty per-replica batch: keep the statistics then
            nonempty = tf.shape(z)[0] > 0
            mean = tf.where(nonempty, mean, moving_mean)
            variance = tf.where(nonempty, variance, moving_variance)
        for n, m, v in zip(norms, tf.split(mean, k), tf.split(variance, k), strict=True):
            n.moving_mean.assign(m)
            n.moving_variance.assign(v)
    if k == 1:
        return y
    shape = tf.concat([tf.shape(y)[:-1], [k, channels]], axis=0)
    return tf.reduce_sum(tf.reshape(y, shape), axis=-2)


@contextlib.contextmanager
def _frozen_statistics(layer: tf.keras.layers.Layer):
    """Batch norms inside `layer` keep their moving statistics (momentum 1) while tracing."""
    norms = [sub for sub in layer._flatten_layers(include_self=True)
             if isinstance(sub, tf.keras.layers.BatchNormalization)]
    saved = [n.momentum for n in norms]
    try:
        for n in norms:
            n.momentum = 1.0
        yield
    finally:
        for n, momentum in zip(norms, saved, strict=True):
            n.momentum = momentum


@contextlib.contextmanager
def _kernel_values(convs: list, kernels: list):
    """Each conv in `convs` convolves with a tensor of `kernels` instead of its variable."""
    saved = [conv.kernel for conv in convs]
    try:
        for conv, kernel in zip(convs, kernels, strict=True):
            object.__setattr__(conv, "kernel", kernel)  # bypass Keras' attribute tracking
        yield
    finally:
        for conv, variable in zip(convs, saved, strict=True):
            object.__setattr__(conv, "kernel", variable)


def _kind(op: tf.keras.layers.Layer, lean: bool) -> str | None:
    """How the shared single-path functions compute `op`, or None if they cannot."""
    if type(op) is ops.Zero:
        return "zero"
    if type(op) is ops.SkipIdentity:
        return "identity"
    if lean and isinstance(op, ops.BinaryConvBN):
        return "conv"
    if lean and isinstance(op, ops.PoolBN):
        return "pool"
    if (type(op) is ops.FactorizedReduce and _plain_bn(op.bn)
            and all(type(c) in (tf.keras.layers.Conv2D, lq.layers.QuantConv2D)
                    for c in (op.conv_a, op.conv_b))):
        return "reduce"
    return None


def _kernel_convs(op, kind: str) -> list:
    """The convs whose kernels the shared functions take as values."""
    if kind == "conv":
        return [op.conv]
    if kind == "reduce":
        return [op.conv_a, op.conv_b]
    return []


class _SharedEdge:
    """One edge's single path as `tf.function`s shared by every edge of its kind.

    `forward(index, x, quantized, w, stats, kernels)` runs op `index` and returns its
    output, every op's new moving statistics and the op's batch-norm input;
    `backward(..., saved, dy)` takes that input back and returns the gradients of
    `x`, the binarized inputs, the op weights and the kernels
    (`backward_inputs`: all but the kernels'). Variables enter
    as values, so all edges whose ops are configured alike (in a supernet: those
    of the same stage and stride) call the same traced functions, and the
    `tf.switch_case` over the ops is traced once per kind of edge instead of
    once per edge.
    """

    def __init__(self, op_layers: list, kinds: list[str], keys: list[str],
                 quantizer_keys: dict):
        self._templates = [weakref.ref(op) for op in op_layers]
        self.kinds, self.keys, self.quantizer_keys = kinds, keys, quantizer_keys
        # not inlined: one instantiation serves every call (inlining would copy the
        # switch and all its branches into the graph once per edge again)
        shared = {"autograph": False, "experimental_attributes": {"_noinline": True}}
        self.forward = tf.function(self._forward, **shared)
        self.backward = tf.function(functools.partial(self._backward, kernels_too=True),
                                    **shared)
        self.backward_inputs = tf.function(
            functools.partial(self._backward, kernels_too=False), **shared)

    def adopt(self, op_layers: list) -> None:
        """Compute through `op_layers` (configured like the earlier templates) from now on.

        The functions trace lazily (the backward ones when a gradient is taken), so
        their templates must be alive then: the calling edge's ops are, while it runs
        and is differentiated; an earlier edge's may have been collected since.
        """
        self._templates = [weakref.ref(op) for op in op_layers]

    def _parameter_free(self, i: int, x, w):
        """`w_i · o_i(x)` for kinds "zero" and "identity"."""
        return w[i] * (x if self.kinds[i] == "identity" else self._templates[i]()(x))

    def _pre_norm(self, i: int, x, quantized, kernels):
        """Op `i`'s output before its batch norm (kinds "conv", "pool" and "reduce")."""
        op, kind = self._templates[i](), self.kinds[i]
        with _kernel_values(_kernel_convs(op, kind), kernels[i]):
            if kind == "conv":  # on the input binarized once, outside the switch
                key = self.keys.index(self.quantizer_keys[i])
                return op.pre_norm(x, quantized=quantized[key], padded={})
            return op.pre_norm(x)

    def _norm(self, i: int, pre, w, stats):
        """`w_i`-scaled fused batch norm of `pre`: output, batch mean, batch variance."""
        op, channels = self._templates[i](), pre.shape[-1]
        return tf.compat.v1.nn.fused_batch_norm(
            pre, tf.repeat(w[i:i + 1], channels), tf.zeros([channels], pre.dtype),
            mean=stats[i][0], variance=stats[i][1], epsilon=op.bn.epsilon,
            is_training=True, exponential_avg_factor=1.0 - op.bn.momentum)

    def _run(self, i: int, x, quantized, w, stats, kernels):
        """`(w_i · o_i(x), new (mean, variance) of o_i or None, tensor the gradient reuses)`.

        The reused tensor is the batch norm's input (`y` itself for ops without one).
        """
        if self.kinds[i] in ("zero", "identity"):
            y = self._parameter_free(i, x, w)
            return y, None, y
        pre = self._pre_norm(i, x, quantized, kernels)
        y, mean, variance = self._norm(i, pre, w, stats)
        return y, (mean, variance), pre

    def _forward(self, index, x, quantized, w, stats, kernels):
        def branch(i: int):
            def run():
                y, new, saved = self._run(i, x, quantized, w, stats, kernels)
                return y, [new if j == i else s for j, s in enumerate(stats)], saved
            return run

        return tf.switch_case(index, [branch(i) for i in range(len(self.kinds))])

    def _backward(self, index, x, quantized, w, stats, kernels, saved, dy, *,
                  kernels_too: bool):
        sources = [x, list(quantized), w] + ([kernels] if kernels_too else [])

        def gradients(tape, target, output_gradients):
            return tape.gradient(target, sources, output_gradients=output_gradients,
                                 unconnected_gradients=tf.UnconnectedGradients.ZERO)

        def branch(i: int):
            def run():
                if self.kinds[i] in ("zero", "identity"):
                    with tf.GradientTape() as tape:
                        tape.watch(tf.nest.flatten(sources))
                        y = self._parameter_free(i, x, w)
                    return gradients(tape, y, dy)
                # the batch norm's backward from the saved forward input; the op's own
                # backward through a recomputation whose value nothing reads: TensorFlow
                # prunes its convolutions when it instantiates the branch
                with tf.GradientTape() as norm_tape:
                    norm_tape.watch([saved, w])
                    y, _, _ = self._norm(i, saved, w, stats)
                d_saved, d_w = norm_tape.gradient(y, [saved, w], output_gradients=dy)
                with tf.GradientTape() as tape:
                    tape.watch(tf.nest.flatten(sources))
                    pre = self._pre_norm(i, x, quantized, kernels)
                grads = gradients(tape, pre, d_saved)
                grads[2] = grads[2] + d_w
                return grads
            return run

        return tf.switch_case(index, [branch(i) for i in range(len(self.kinds))])


_SHARED_EDGES: dict[tuple, _SharedEdge] = {}


def _shared_edge(op_layers: list, lean: list[int], quantizer_keys: dict
                 ) -> tuple[_SharedEdge | None, list[str]]:
    kinds = [_kind(op, i in lean) for i, op in enumerate(op_layers)]
    if None in kinds:
        return None, kinds
    keys = sorted({quantizer_keys[i] for i, k in enumerate(kinds) if k == "conv"})
    signature = tuple(
        (type(op), kind, repr(sorted((k, v) for k, v in op.get_config().items() if k != "name")),
         getattr(getattr(op, "bn", None), "epsilon", None),
         getattr(getattr(op, "bn", None), "momentum", None), quantizer_keys.get(i))
        for i, (op, kind) in enumerate(zip(op_layers, kinds, strict=True)))
    entry = _SHARED_EDGES.get(signature)
    if entry is None:
        entry = _SHARED_EDGES[signature] = _SharedEdge(
            op_layers, kinds, keys, {i: quantizer_keys[i] for i, k in enumerate(kinds)
                                     if k == "conv"})
    else:
        entry.adopt(op_layers)
    return entry, kinds


def single_path(op_layers: list, inputs: tf.Tensor, op_weights: tf.Tensor,
                op_index: tf.Tensor, *, training=None, lean: list[int] = (),
                quantizer_keys: dict | None = None) -> tf.Tensor:
    """`w_k · o_k(x) + Σ_{o≠k} w_o`: run only op `k = op_index` of an edge.

    With the straight-through Gumbel weights of
    `bnas_tf.layers.ArchitectureParameters.sample` the other `w_o` are 0 in
    the forward pass, but every `w_o` (hence every α of the edge) gets a
    gradient. In training, op k's gradient reuses its forward batch-norm input
    (module docstring); its batch norm updates its moving statistics once, in
    the forward pass.

    Args:
        op_layers: the edge's ops, in `op_weights` order.
        inputs: the edge input.
        op_weights: `[ops]` weights.
        op_index: scalar index of the op to run.
        training: Keras training flag.
        lean: ops that may be computed as `pre_norm` + one fused batch norm
            (see `bnas_tf.layers.MixedOp`). When every op of the edge is lean,
            parameter-free or a plain factorized reduction, the edge runs
            through functions shared with all edges of its kind, with the
            input binarized once outside them; otherwise through its own layers.
        quantizer_keys: `quantizer_key` of each binary conv's input quantizer.
    """
    index = tf.cast(op_index, tf.int32)
    others = tf.reduce_sum(op_weights) - tf.gather(op_weights, index)
    if training is not True:
        picked = tf.switch_case(index, [lambda op=op: op(inputs, training=training)
                                        for op in op_layers])
        return picked * tf.gather(op_weights, index) + others
    edge, kinds = _shared_edge(op_layers, list(lean), quantizer_keys or {})
    if edge is None:
        return _own_single_path(op_layers, inputs, op_weights, index) + others
    quantized = [next(op_layers[i].conv.input_quantizer for i, k in enumerate(kinds)
                      if k == "conv" and edge.quantizer_keys[i] == key)(inputs)
                 for key in edge.keys]
    with lq.context.quantized_scope(True):  # binary kernels (if any) as the convs see them
        kernels = [[tf.convert_to_tensor(c.kernel) for c in _kernel_convs(op, kind)]
                   for op, kind in zip(op_layers, kinds, strict=True)]
    norms = [op.bn if kind in ("conv", "pool", "reduce") else None
             for op, kind in zip(op_layers, kinds, strict=True)]
    flat_kernels = tf.nest.flatten(kernels)

    @tf.custom_gradient
    def path(x, w, *flat):
        qs = list(flat[:len(quantized)])
        ks = tf.nest.pack_sequence_as(kernels, list(flat[len(quantized):]))
        stats = [None if bn is None else (tf.identity(bn.moving_mean),
                                          tf.identity(bn.moving_variance)) for bn in norms]
        # values only: run eagerly under a tape, the call would otherwise build the
        # switch's own (quadratic, and failing) gradient; `grad` below is the gradient
        y, new_stats, saved = edge.forward(index, *tf.nest.map_structure(
            lambda t: None if t is None else tf.stop_gradient(t), (x, qs, w, stats, ks)))
        for bn, new in zip(norms, new_stats, strict=True):
            if bn is not None:
                bn.moving_mean.assign(new[0])
                bn.moving_variance.assign(new[1])

        def grad(dy):
            if getattr(_GRADIENTS, "arch_only", False):
                dx, dqs, dw = edge.backward_inputs(index, x, qs, w, stats, ks, saved, dy)
                return [dx, dw, *dqs, *[None] * len(flat_kernels)]
            dx, dqs, dw, dks = edge.backward(index, x, qs, w, stats, ks, saved, dy)
            return [dx, dw, *dqs, *tf.nest.flatten(dks)]

        return y, grad

    return path(inputs, op_weights, *quantized, *flat_kernels) + others


def _own_single_path(op_layers: list, inputs: tf.Tensor, op_weights: tf.Tensor,
                     index: tf.Tensor) -> tf.Tensor:
    """`w_k · o_k(x)` through the edge's own layers (custom ops, synchronized batch norms).

    Traced per edge, and slower to trace; the gradient recomputes op k with
    its batch norms' statistics left alone.
    """

    @tf.custom_gradient
    def path(x, w):
        def forward(i: int):
            return lambda: w[i] * op_layers[i](x, training=True)

        def grad(dy, variables=None):
            variables = list(variables or [])
            sources = [x, w, *variables]

            def backward(i: int):
                def run():
                    with tf.GradientTape(watch_accessed_variables=False) as tape:
                        tape.watch(sources)
                        with _frozen_statistics(op_layers[i]):
                            y = w[i] * op_layers[i](x, training=True)
                    return tape.gradient(y, sources, output_gradients=dy,
                                         unconnected_gradients=tf.UnconnectedGradients.ZERO)
                return run

            grads = tf.switch_case(index, [backward(i) for i in range(len(op_layers))])
            return (grads[:2], grads[2:]) if variables else grads

        return tf.switch_case(index, [forward(i) for i in range(len(op_layers))]), grad

    return path(inputs, op_weights)
