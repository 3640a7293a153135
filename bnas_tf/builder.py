"""Build a trainable network from a genotype, as a functional Keras model.

The network mirrors the supernet: a real-valued stem, `layers` cells with
reductions at 1/3 and 2/3 of the depth, the BNAS inter-cell skips, global
average pooling and a dense classifier (logits). The stem is the CIFAR one (a
3x3 conv at full resolution) or, with `stem="imagenet"`, the DARTS/BATS
ImageNet stem, which reduces the resolution 8x before the first cell. Binary convolutions are Larq
`QuantConv2D` layers at the top level of the model, so `larq.models.summary`
counts them and Larq Compute Engine converts them; grouped ones train as masked
dense convs by default, which `bnas_tf.export` turns into real grouped convs.

Example:
    >>> genotype = bn.Genotype.load("RUN/genotype.json")
    >>> model = bn.build_network(genotype, num_classes=10, layers=20, channels=36,
    ...                          input_shape=(32, 32, 3))
    >>> lq.models.summary(model)
"""

from __future__ import annotations

import tensorflow as tf

from bnas_tf import ops
from bnas_tf.distribute import sync_batch_norm
from bnas_tf.genotype import Cell, Genotype
from bnas_tf.layers import Scale
from bnas_tf.search_space import SearchSpace
from bnas_tf.supernet import reduction_indices

__all__ = ["build_network", "count_params", "STEMS"]

STEMS = ("cifar", "imagenet")


def _bn(name: str) -> tf.keras.layers.BatchNormalization:
    return tf.keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name,
                                              synchronized=sync_batch_norm())


def _apply(layer: tf.keras.layers.Layer, x, name: str):
    """Apply an op, unpacking bnas_tf's composite ops into top-level Keras layers."""
    if isinstance(layer, ops.BinaryConvBN):
        if layer.phase is not None:
            layer.phase._name = f"{name}_phase"
            x = layer.phase(x)
        layer.conv._name = f"{name}_conv"
        x = layer.conv(x)
        if layer.subsample is not None:
            layer.subsample._name = f"{name}_subsample"
            x = layer.subsample(x)
        layer.bn._name = f"{name}_bn"
        return layer.bn(x)
    if isinstance(layer, ops.FactorizedReduce):
        for part in ("conv_a", "shift", "conv_b", "bn"):
            getattr(layer, part)._name = f"{name}_{part}"
        halves = [layer.conv_a(x), layer.conv_b(layer.shift(x))]
        return layer.bn(tf.keras.layers.Concatenate(name=f"{name}_concat")(halves))
    if isinstance(layer, (ops.PoolBN, ops.ConvBN)):
        inner = layer.pool if isinstance(layer, ops.PoolBN) else layer.conv
        inner._name = f"{name}_{'pool' if isinstance(layer, ops.PoolBN) else 'conv'}"
        layer.bn._name = f"{name}_bn"
        return layer.bn(inner(x))
    layer._name = name
    return layer(x)


def _sum(terms: list, name: str):
    return terms[0] if len(terms) == 1 else tf.keras.layers.Add(name=name)(terms)


def _edge(x, edge, space: SearchSpace, filters: int, strides: int, binary_weights: bool,
          masked_groups: bool, name: str):
    terms = []
    for op_name, weight in edge.ops:
        if op_name == "none":
            continue  # contributes zeros
        op_id = f"{name}_{op_name}"
        op = space.build_op(op_name, filters, strides, affine=True, binary_weights=binary_weights,
                            masked_groups=masked_groups)
        out = _apply(op, x, op_id)
        if weight != 1.0:
            out = Scale(weight, name=f"{op_id}_weight")(out)
        terms.append(out)
    if not terms:
        return None
    out = _sum(terms, f"{name}_sum")
    return Scale(edge.weight, name=f"{name}_weight")(out) if edge.weight != 1.0 else out


def _cell(s0, s1, cell: Cell, space: SearchSpace, filters: int, reduction: bool,
          reduction_prev: bool, cell_skip: bool, binary_weights: bool, masked_groups: bool,
          name: str):
    states = [
        _apply(space.build_cell_input(filters, reduces, binary_weights=binary_weights),
               s, f"{name}_pre{i}")
        for i, (s, reduces) in enumerate(((s0, reduction_prev), (s1, False)))
    ]
    for k, edges in enumerate(cell.nodes):
        node = k + 2
        terms, zero_source = [], None
        for edge in edges:
            strides = 2 if reduction and edge.source < 2 else 1
            out = _edge(states[edge.source], edge, space, filters, strides, binary_weights,
                        masked_groups, f"{name}_n{node}_e{edge.source}")
            if out is None:
                zero_source = (edge.source, strides)
            else:
                terms.append(out)
        if terms:
            states.append(_sum(terms, f"{name}_n{node}"))
        elif zero_source is not None:  # every op on every edge is `none`
            source, strides = zero_source
            states.append(ops.Zero(strides, name=f"{name}_n{node}_zero")(states[source]))
        else:
            states.append(None)  # pruned node
    outs = [states[i] for i in cell.concat]
    out = outs[0] if len(outs) == 1 else tf.keras.layers.Concatenate(name=f"{name}_concat")(outs)
    if cell_skip:
        skip = s1
        if reduction:
            skip = tf.keras.layers.AveragePooling2D(2, padding="same", name=f"{name}_skip_pool")(skip)
        proj = ops.skip_projection(out.shape[-1], s1.shape[-1], reduction,
                                   space.parameter_free_skips)
        if proj is not None:
            skip = _apply(proj, skip, f"{name}_skip")
        out = tf.keras.layers.Add(name=f"{name}_out")([out, skip])
    return out


def _imagenet_stem(inputs, channels: int):
    """DARTS's NetworkImageNet stem (real-valued): two stems at 1/4 and 1/8 of the input size.

    stem0: 3x3 conv (stride 2) to C/2 channels, BN, ReLU, 3x3 conv (stride 2) to
    C, BN; stem1: ReLU, 3x3 conv (stride 2), BN. The first cell reads stem0 as
    its s0 (a reduction_prev input: twice the resolution of s1) and stem1 as s1.
    """
    def conv(x, filters, name):
        x = tf.keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False,
                                   name=f"{name}_conv")(x)
        return _bn(f"{name}_bn")(x)

    x = conv(inputs, max(1, channels // 2), "stem0_a")
    x = tf.keras.layers.ReLU(name="stem0_relu")(x)
    s0 = conv(x, channels, "stem0_b")
    s1 = conv(tf.keras.layers.ReLU(name="stem1_relu")(s0), channels, "stem1")
    return s0, s1


def build_network(genotype: Genotype, *, num_classes: int = 10, layers: int = 20,
                  channels: int = 36, input_shape: tuple[int, int, int] = (32, 32, 3),
                  binary_weights: bool = False, cell_skip: bool = True,
                  stem_multiplier: int = 3, masked_groups: bool = True,
                  stem: str = "cifar", name: str = "bnas_network") -> tf.keras.Model:
    """A functional Keras model of `genotype` with `layers` cells.

    Args:
        genotype: a `Genotype` (any in-degree, weighted ops and edges allowed).
        num_classes: classifier outputs (logits).
        layers: number of cells.
        channels: channels per node in the first cells (doubled at reductions).
        input_shape: `(height, width, channels)` of the images.
        binary_weights: binarize conv kernels with the space's weight quantizer
            (stage 2); otherwise latent real weights with binary activations.
        cell_skip: BNAS inter-cell skip connections.
        stem_multiplier: CIFAR stem channels = `stem_multiplier · channels`.
        masked_groups: train grouped binary convs as dense convs with a
            block-diagonal kernel mask (`bnas_tf.ops.GroupMaskedQuantConv2D`):
            the same function, 10–30× faster in TensorFlow on CPU.
            `bnas_tf.export` swaps them for real grouped convs before LCE
            converts the model (`bnas_tf.export.native_groups`). False builds
            real grouped `QuantConv2D`s.
        stem: "cifar": a 3x3 conv and BN at full resolution (32x32 images);
            "imagenet": the DARTS/BATS ImageNet stem, three real 3x3 convs of
            stride 2 (`channels/2`, `channels`, `channels` filters) before the
            first cell, which then sees a reduction_prev input (e.g. 224x224
            images reach the cells at 28x28).
        name: model name.

    Returns:
        An uncompiled `tf.keras.Model` mapping images to logits.

    Raises:
        ValueError: for a non-genotype, bad sizes or a bad input shape.
    """
    if not isinstance(genotype, Genotype):
        raise TypeError(f"Expected a bnas_tf.Genotype, got {type(genotype).__name__}; "
                        "load one with bnas_tf.Genotype.load(path).")
    for arg, value in (("num_classes", num_classes), ("layers", layers), ("channels", channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Expected {arg} to be a positive integer, got {value!r}.")
    if len(input_shape) != 3 or any(not isinstance(d, int) or d < 1 for d in input_shape):
        raise ValueError(f"Expected input_shape (height, width, channels), got {input_shape!r}.")
    if stem not in STEMS:
        raise ValueError(f"Expected stem to be one of {', '.join(map(repr, STEMS))}, got "
                         f"{stem!r}.")
    space = genotype.search_space
    inputs = tf.keras.Input(input_shape, name="images")
    if stem == "imagenet":
        s0, s1 = _imagenet_stem(inputs, channels)
        reduction_prev = True
    else:
        x = tf.keras.layers.Conv2D(stem_multiplier * channels, 3, padding="same", use_bias=False,
                                   name="stem_conv")(inputs)
        s0 = s1 = _bn("stem_bn")(x)
        reduction_prev = False
    filters = channels
    reductions = reduction_indices(layers)
    for i in range(layers):
        reduction = i in reductions
        filters = filters * 2 if reduction else filters
        cell = genotype.reduce if reduction else genotype.normal
        out = _cell(s0, s1, cell, space, filters, reduction, reduction_prev, cell_skip,
                    binary_weights, masked_groups, f"cell{i}")
        s0, s1, reduction_prev = s1, out, reduction
    x = tf.keras.layers.GlobalAveragePooling2D(name="pool")(s1)
    outputs = tf.keras.layers.Dense(num_classes, name="classifier")(x)
    return tf.keras.Model(inputs, outputs, name=name)


def count_params(model: tf.keras.Model, trainable_only: bool = False) -> int:
    """Parameters of `model` as deployed: masked grouped-conv kernels count their groups only.

    `model.count_params()` also counts the always-zero entries outside the group
    blocks of `bnas_tf.ops.GroupMaskedQuantConv2D` kernels (how grouped binary
    convs train); this does not, so it equals the count of the real grouped network.

    Example:
        >>> bn.count_params(model) == bn.export.native_groups(model).count_params()
        True
    """
    weights = model.trainable_weights if trainable_only else model.weights
    seen, total = set(), 0
    for w in weights:
        if w.ref() not in seen:
            seen.add(w.ref())
            total += ops.active_entries(w)
    return total

