"""Search primitives for binary networks, built from Larq layers.

Every candidate operation of a search space maps `filters` channels to
`filters` channels at stride 1 or 2. Binary ops binarize their input with a
Larq quantizer (straight-through estimator), convolve with `pad_values=1.0` so
that Larq Compute Engine can run them as binary kernels, and normalize with
batch norm. Ops are registered by name; a `SearchSpace` lists names.

Example:
    >>> import bnas_tf as bn
    >>> op = bn.ops.get("bin_conv_3x3")(16, 2, bn.ops.OpOptions())
    >>> op(tf.ones([1, 8, 8, 16])).shape
    TensorShape([1, 4, 4, 16])

Adding an op:
    >>> @bn.ops.register_op("bin_conv_7x7")
    ... def bin_conv_7x7(filters, strides, options):
    ...     return bn.ops.BinaryConvBN(filters, 7, strides=strides, **options.conv_kwargs(filters))
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable

import larq as lq
import tensorflow as tf

from bnas_tf.conv_layers import (
    GroupMaskedQuantConv2D,
    PhaseSubsample,
    SameGridSubsample,
    active_entries,
)
from bnas_tf.distribute import sync_batch_norm
from bnas_tf.errors import SearchSpaceError

__all__ = [
    "OpOptions",
    "register_op",
    "get",
    "registered_ops",
    "resolve_groups",
    "Zero",
    "SkipIdentity",
    "FactorizedReduce",
    "ShiftPad",
    "RepeatChannels",
    "cell_input",
    "skip_projection",
    "PoolBN",
    "ConvBN",
    "BinaryConvBN",
    "PhaseSubsample",
    "GroupMaskedQuantConv2D",
    "active_entries",
    "SameGridSubsample",
]

log = logging.getLogger(__name__)

INPUT_QUANTIZERS = ("ste_sign", "approx_sign", "swish_sign")
BN_MOMENTUM = 0.9  # PyTorch's 0.1: moving statistics settle within a short search

OpFactory = Callable[[int, int, "OpOptions"], tf.keras.layers.Layer]
_OPS: dict[str, OpFactory] = {}
_WARNED: set[tuple[int, int]] = set()


@dataclasses.dataclass(frozen=True)
class OpOptions:
    """Settings a search space passes to every op it builds.

    Args:
        input_quantizer: Larq quantizer name that binarizes activations.
        kernel_quantizer: Larq quantizer name for the weights, or None for the
            real-valued latent weights used during search (METHODS.md §6).
        group_channels: channels per group of binary convs, or None for dense.
        convertible_groups: if True, a grouped conv is only used when its
            channels per group are a multiple of `group_channels` (what Larq
            Compute Engine needs); otherwise the conv falls back to dense.
        affine: learn scale and offset in batch norm (False while searching).
        masked_groups: run grouped convs as dense convs with a block-diagonal
            kernel mask (same function; TensorFlow's grouped convs are 10–30×
            slower on CPU). The supernet and derived networks train this way;
            `bnas_tf.export` turns them into real grouped convs for Larq
            Compute Engine.
        binary_cell_inputs: the 1×1 convs inside cells (cell-input
            preprocessing and factorized reduce) binarize their input (and, with
            `kernel_quantizer`, their kernel), so that Larq Compute Engine runs
            them as binary kernels too (the `lce` space). Otherwise they are
            real-valued, as in DARTS/BATS.
    """

    input_quantizer: str = "ste_sign"
    kernel_quantizer: str | None = None
    group_channels: int | None = None
    convertible_groups: bool = False
    affine: bool = False
    masked_groups: bool = False
    binary_cell_inputs: bool = False

    def __post_init__(self):
        if self.input_quantizer not in INPUT_QUANTIZERS:
            raise SearchSpaceError(
                f"Expected input_quantizer in {INPUT_QUANTIZERS}, got {self.input_quantizer!r}."
            )
        if self.group_channels is not None and self.group_channels < 1:
            raise SearchSpaceError(
                f"Expected group_channels >= 1 or None, got {self.group_channels!r}."
            )

    def conv_kwargs(self, channels: int) -> dict:
        """Keyword arguments of `BinaryConvBN` for `channels` input channels."""
        return {
            "groups": resolve_groups(channels, self.group_channels, self.convertible_groups),
            "input_quantizer": self.input_quantizer,
            "kernel_quantizer": self.kernel_quantizer,
            "affine": self.affine,
            "masked_groups": self.masked_groups,
        }


def resolve_groups(channels: int, group_channels: int | None, convertible: bool = False) -> int:
    """Number of groups for a binary conv over `channels` input channels.

    With `convertible=True`, channels per group must be a multiple of
    `group_channels` (else the conv is dense); otherwise the group width is the
    divisor of `channels` closest to `group_channels`.

    Example:
        >>> resolve_groups(36, 3), resolve_groups(16, 3), resolve_groups(48, 32, True)
        (12, 4, 1)
    """
    if not group_channels:
        return 1
    if convertible:
        for width in range(group_channels, channels + 1, group_channels):
            if channels % width == 0:
                return channels // width
        return 1
    divisors = [d for d in range(1, channels + 1) if channels % d == 0]
    width = min(divisors, key=lambda d: (abs(d - group_channels), -d))
    if width != group_channels and (channels, group_channels) not in _WARNED:
        _WARNED.add((channels, group_channels))
        log.warning(
            "%d channels are not divisible by group_channels=%d; binary convs use %d "
            "channels per group instead. Choose channels divisible by %d to get the "
            "published group width.",
            channels, group_channels, width, group_channels,
        )
    return channels // width


def register_op(name: str) -> Callable[[OpFactory], OpFactory]:
    """Register `factory(filters, strides, options) -> Layer` under `name`.

    Raises:
        ValueError: if `name` is already registered.
    """

    def decorator(factory: OpFactory) -> OpFactory:
        if name in _OPS:
            raise ValueError(f"An op named {name!r} is already registered; pick another name.")
        _OPS[name] = factory
        return factory

    return decorator


def registered_ops() -> tuple[str, ...]:
    """Names of all registered ops, sorted."""
    return tuple(sorted(_OPS))


def get(identifier: str | OpFactory) -> OpFactory:
    """Return the factory registered under `identifier` (or a callable as is).

    Raises:
        SearchSpaceError: for an unknown name, listing the known ones.
    """
    if callable(identifier):
        return identifier
    if isinstance(identifier, str) and identifier in _OPS:
        return _OPS[identifier]
    raise SearchSpaceError(
        f"Unknown op {identifier!r}. Known ops: {', '.join(registered_ops())}. "
        "Register new ones with bnas_tf.ops.register_op(name)."
    )


@contextlib.contextmanager
def _patched(obj, **attributes):
    """Set attributes of `obj` for the duration of a `with` block."""
    old = {name: getattr(obj, name) for name in attributes}
    try:
        for name, value in attributes.items():
            setattr(obj, name, value)
        yield obj
    finally:
        for name, value in old.items():
            setattr(obj, name, value)


def _batch_norm(affine: bool) -> tf.keras.layers.BatchNormalization:
    return tf.keras.layers.BatchNormalization(
        momentum=BN_MOMENTUM, epsilon=1e-5, center=affine, scale=affine,
        synchronized=sync_batch_norm(),
    )


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class Zero(tf.keras.layers.Layer):
    """The `none` op: zeros of the output shape (spatially subsampled by `strides`)."""

    def __init__(self, strides: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.strides = strides

    def call(self, inputs):
        return tf.zeros_like(inputs[:, :: self.strides, :: self.strides, :])

    def get_config(self):
        return {**super().get_config(), "strides": self.strides}


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class SkipIdentity(tf.keras.layers.Layer):
    """The `skip_connect` op at stride 1."""

    def call(self, inputs):
        return tf.identity(inputs)


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class ShiftPad(tf.keras.layers.Layer):
    """Shift an image one pixel up and left, zero-padding the last row and column.

    A stride-2 1×1 conv after this shift sees the odd pixels (the second half
    of `FactorizedReduce`).
    """

    def call(self, inputs):
        return tf.pad(inputs[:, 1:, 1:, :], [[0, 0], [0, 1], [0, 1], [0, 0]])


def _pointwise(filters: int, strides: int, input_quantizer: str | None,
               kernel_quantizer: str | None) -> tf.keras.layers.Layer:
    """A bias-free 1×1 conv: Keras `Conv2D`, or a Larq `QuantConv2D` if binarized."""
    if input_quantizer is None:
        return tf.keras.layers.Conv2D(filters, 1, strides=strides, use_bias=False)
    return lq.layers.QuantConv2D(
        filters, 1, strides=strides, use_bias=False, input_quantizer=input_quantizer,
        kernel_quantizer=kernel_quantizer,
        kernel_constraint="weight_clip" if kernel_quantizer else None)


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class FactorizedReduce(tf.keras.layers.Layer):
    """Stride-2 reduction: two offset 1×1 convs, concatenated, then BN.

    Used by `skip_connect` at stride 2 and to align cell inputs after a
    reduction cell (DARTS). Real-valued by default; with `input_quantizer` the
    two convs are binary Larq convs (the `lce` space).

    Args:
        filters: output channels.
        affine: learn batch-norm scale and offset.
        input_quantizer: Larq quantizer of the convs' input, or None (real).
        kernel_quantizer: Larq quantizer of their kernels, or None (real).
    """

    def __init__(self, filters: int, affine: bool = True, input_quantizer: str | None = None,
                 kernel_quantizer: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.affine = filters, affine
        self.input_quantizer, self.kernel_quantizer = input_quantizer, kernel_quantizer
        half = filters // 2
        self.conv_a = _pointwise(half, 2, input_quantizer, kernel_quantizer)
        self.shift = ShiftPad()
        self.conv_b = _pointwise(filters - half, 2, input_quantizer, kernel_quantizer)
        self.bn = _batch_norm(affine)

    def pre_norm(self, inputs):
        """Both convs' outputs, concatenated, before batch norm."""
        return tf.concat([self.conv_a(inputs), self.conv_b(self.shift(inputs))], axis=-1)

    def call(self, inputs, training=None):
        return self.bn(self.pre_norm(inputs), training=training)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "affine": self.affine,
                "input_quantizer": self.input_quantizer,
                "kernel_quantizer": self.kernel_quantizer}


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class PoolBN(tf.keras.layers.Layer):
    """3×3 max or average pooling ("same" padding), then batch norm."""

    def __init__(self, pool: str, strides: int = 1, affine: bool = False, **kwargs):
        super().__init__(**kwargs)
        if pool not in ("max", "avg"):
            raise SearchSpaceError(f"Expected pool 'max' or 'avg', got {pool!r}.")
        self.pool_type, self.strides, self.affine = pool, strides, affine
        layer = tf.keras.layers.MaxPool2D if pool == "max" else tf.keras.layers.AveragePooling2D
        self.pool = layer(3, strides=strides, padding="same")
        self.bn = _batch_norm(affine)

    def pre_norm(self, inputs):
        """The pooled input, before batch norm (see `bnas_tf.layers.MixedOp`)."""
        return self.pool(inputs)

    def call(self, inputs, training=None):
        return self.bn(self.pre_norm(inputs), training=training)

    def get_config(self):
        return {**super().get_config(), "pool": self.pool_type, "strides": self.strides,
                "affine": self.affine}


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class ConvBN(tf.keras.layers.Layer):
    """Real-valued convolution then batch norm (cell preprocessing, stem, skips)."""

    def __init__(self, filters: int, kernel_size: int = 1, strides: int = 1,
                 affine: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.strides, self.affine = (
            filters, kernel_size, strides, affine)
        self.conv = tf.keras.layers.Conv2D(filters, kernel_size, strides=strides,
                                           padding="same", use_bias=False)
        self.bn = _batch_norm(affine)

    def call(self, inputs, training=None):
        return self.bn(self.conv(inputs), training=training)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "affine": self.affine}


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class BinaryConvBN(tf.keras.layers.Layer):
    """Binarized input → (grouped, dilated) `larq.layers.QuantConv2D` → batch norm.

    Forward: `y = BN(conv(q(x), W))` with `q` the input quantizer, e.g.
    `ste_sign(x) = sign(x)` (sign(0) = +1); its pseudo-gradient is
    `1_{|x| ≤ 1}` (straight-through estimator). The kernel stays real-valued
    unless `kernel_quantizer` is set. Convs pad with +1 (`pad_values=1.0`) so
    Larq Compute Engine converts them to `LceBconv2d`. TensorFlow rejects
    dilation with stride 2; a conv with stride 2 and dilation 2 reads one
    phase of its padded input, so it runs as an undilated "valid" conv on
    that phase (`PhaseSubsample`); other strided dilated convs run at stride 1
    and subsample their output on the grid of a "same"-padded strided conv.

    Args:
        filters: output channels.
        kernel_size: square kernel size.
        strides: 1 or 2.
        dilation_rate: 1 or 2.
        groups: conv groups (input channels must be divisible by it).
        input_quantizer: Larq quantizer name for activations.
        kernel_quantizer: Larq quantizer name for weights or None (real weights).
        affine: learn batch-norm scale and offset.
        masked_groups: emulate `groups` with a dense conv and a block-diagonal
            kernel mask (faster on CPU; not for export).

    References:
        Bulat et al., BATS: Binary ArchitecTure Search, ECCV 2020, arXiv:2003.01711.
    """

    def __init__(self, filters: int, kernel_size: int, strides: int = 1, dilation_rate: int = 1,
                 groups: int = 1, input_quantizer: str = "ste_sign",
                 kernel_quantizer: str | None = None, affine: bool = False,
                 masked_groups: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.strides = filters, kernel_size, strides
        self.dilation_rate, self.groups, self.affine = dilation_rate, groups, affine
        self.input_quantizer, self.kernel_quantizer = input_quantizer, kernel_quantizer
        self.masked_groups = masked_groups
        strided_dilation = strides > 1 and dilation_rate > 1
        # stride s with dilation s reads one phase of the padded input: an undilated
        # "valid" conv on that phase computes it (s² fewer MACs than stride 1 + subsample)
        self.phase = (PhaseSubsample(kernel_size, dilation_rate, strides)
                      if strided_dilation and strides == dilation_rate else None)
        self.subsample = (SameGridSubsample(strides)
                          if strided_dilation and self.phase is None else None)
        conv_class, group_args = lq.layers.QuantConv2D, {"groups": groups}
        if masked_groups and groups > 1:
            conv_class, group_args = GroupMaskedQuantConv2D, {"mask_groups": groups}
        conv_args = ({"strides": 1, "dilation_rate": 1, "padding": "valid"} if self.phase
                     else {"strides": 1 if strided_dilation else strides,
                           "dilation_rate": dilation_rate, "padding": "same",
                           "pad_values": 1.0})
        self.conv = conv_class(
            filters, kernel_size, **conv_args, **group_args,
            use_bias=False, input_quantizer=input_quantizer, kernel_quantizer=kernel_quantizer,
            kernel_constraint="weight_clip" if kernel_quantizer else None,
        )
        self.bn = _batch_norm(affine)

    def pre_norm(self, inputs, quantized: tf.Tensor | None = None,
                 padded: dict | None = None):
        """The conv output, before batch norm (see `bnas_tf.layers.MixedOp`).

        Args:
            inputs: real-valued input.
            quantized: `input_quantizer(inputs)`, when several ops share it.
            padded: cache of +1-padded `quantized` tensors by padding, shared
                by those ops (a 5×5 conv and a dilated 3×3 conv pad alike).
        """
        if quantized is not None:
            out = self._conv_quantized(quantized, padded)
        else:
            out = self.conv(self.phase(inputs) if self.phase is not None else inputs)
        return self.subsample(out) if self.subsample is not None else out

    def _conv_quantized(self, quantized: tf.Tensor, padded: dict | None) -> tf.Tensor:
        conv = self.conv
        with _patched(conv, input_quantizer=None):
            if self.phase is not None:
                return conv(self.phase(quantized))
            if padded is None or conv._is_native_padding:
                return conv(quantized)
            paddings = conv._get_padding_same(quantized)
            key = (str(paddings), float(conv.pad_values))
            if key not in padded:
                padded[key] = tf.pad(quantized, paddings, constant_values=conv.pad_values)
            with _patched(conv, _is_native_padding=True, padding="valid"):
                return conv(padded[key])

    def call(self, inputs, training=None):
        return self.bn(self.pre_norm(inputs), training=training)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "dilation_rate": self.dilation_rate,
                "groups": self.groups, "input_quantizer": self.input_quantizer,
                "kernel_quantizer": self.kernel_quantizer, "affine": self.affine,
                "masked_groups": self.masked_groups}


def cell_input(filters: int, reduction_prev: bool, options: OpOptions) -> tf.keras.layers.Layer:
    """The conv that brings a cell input to `filters` channels (DARTS preprocessing).

    A stride-2 `FactorizedReduce` when the input comes from before a reduction
    cell, else a 1×1 conv + BN; binary when `options.binary_cell_inputs`.

    Example:
        >>> type(cell_input(16, False, OpOptions(binary_cell_inputs=True))).__name__
        'BinaryConvBN'
    """
    if reduction_prev:
        return FactorizedReduce(filters, affine=options.affine, **_cell_input_quantizers(options))
    if options.binary_cell_inputs:
        return BinaryConvBN(filters, 1, input_quantizer=options.input_quantizer,
                            kernel_quantizer=options.kernel_quantizer, affine=options.affine)
    return ConvBN(filters, 1, affine=options.affine)


def _cell_input_quantizers(options: OpOptions) -> dict:
    if not options.binary_cell_inputs:
        return {}
    return {"input_quantizer": options.input_quantizer,
            "kernel_quantizer": options.kernel_quantizer}


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class RepeatChannels(tf.keras.layers.Layer):
    """Repeat the channels `times` times (a parameter-free channel expansion).

    Example:
        >>> RepeatChannels(2)(tf.ones([1, 4, 4, 8])).shape
        TensorShape([1, 4, 4, 16])
    """

    def __init__(self, times: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.times = times

    def call(self, inputs):
        return tf.concat([inputs] * self.times, axis=-1)

    def get_config(self):
        return {**super().get_config(), "times": self.times}


def skip_projection(filters: int, in_channels: int, reduction: bool,
                    parameter_free: bool = False) -> tf.keras.layers.Layer | None:
    """What maps a cell input to the cell's output channels on the inter-cell skip.

    None where shapes already agree; otherwise a real-valued 1×1 conv + BN
    (BNAS), or, with `parameter_free`, channel repetition where the output
    channels are a multiple of the input channels (as ReActNet's downsampling
    blocks do; no float weights for deployment). Reduction cells average-pool
    the input before this.

    Example:
        >>> type(skip_projection(256, 128, True, parameter_free=True)).__name__
        'RepeatChannels'
    """
    if parameter_free and filters % in_channels == 0:
        return RepeatChannels(filters // in_channels) if filters != in_channels else None
    if reduction or filters != in_channels:
        return ConvBN(filters, 1)
    return None


@register_op("none")
def _none(filters, strides, options):
    return Zero(strides)


@register_op("skip_connect")
def _skip(filters, strides, options):
    if strides == 1:
        return SkipIdentity()
    return FactorizedReduce(filters, affine=options.affine, **_cell_input_quantizers(options))


@register_op("max_pool_3x3")
def _max_pool(filters, strides, options):
    return PoolBN("max", strides, affine=options.affine)


@register_op("avg_pool_3x3")
def _avg_pool(filters, strides, options):
    return PoolBN("avg", strides, affine=options.affine)


def _binary_conv(kernel_size: int, dilation_rate: int) -> OpFactory:
    def factory(filters, strides, options):
        return BinaryConvBN(filters, kernel_size, strides=strides, dilation_rate=dilation_rate,
                            **options.conv_kwargs(filters))

    return factory


for _k in (3, 5):
    register_op(f"bin_conv_{_k}x{_k}")(_binary_conv(_k, 1))
    register_op(f"bin_dil_conv_{_k}x{_k}")(_binary_conv(_k, 2))

