"""Keras layers the binary ops are built from: masked grouped convs and phase subsampling.

`GroupMaskedQuantConv2D` computes a grouped binary conv as a block-masked dense
one (much faster in TensorFlow on CPU; `bnas_tf.export.native_groups` swaps in
a real grouped conv for LCE). `SameGridSubsample` and `PhaseSubsample` let a
strided dilated conv run as an undilated "valid" conv on one phase of its
+1-padded input, with s² fewer MACs. `bnas_tf.ops` re-exports all of them.

Example:
    >>> from bnas_tf.conv_layers import PhaseSubsample
    >>> PhaseSubsample(kernel_size=3, dilation_rate=2, strides=2)(tf.zeros((1, 32, 32, 8))).shape
    TensorShape([1, 18, 18, 8])
"""

from __future__ import annotations

import larq as lq
import numpy as np
import tensorflow as tf

from bnas_tf.errors import SearchSpaceError

__all__ = ["GroupMaskedQuantConv2D", "PhaseSubsample", "SameGridSubsample", "active_entries"]


def _spatial_size(inputs: tf.Tensor) -> list:
    """Height and width of NHWC `inputs`: ints when static, else scalar tensors."""
    size = inputs.shape[1:3]
    return list(size) if None not in size else tf.unstack(tf.shape(inputs)[1:3])


def _same_grid_start(size, stride: int):
    """First pixel a "same"-padded conv of `stride` centres on (TF pads the end more)."""
    return (size + 1) % stride


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class SameGridSubsample(tf.keras.layers.Layer):
    """Keep the pixels a "same"-padded conv of this stride centres on.

    TensorFlow pads "same" convs asymmetrically: at stride 2, even sizes keep
    pixels 1, 3, 5, … and odd sizes 0, 2, 4, …; the pools and plain convs of a
    mixed op follow that grid, so a subsampled stride-1 (dilated) conv must too.
    """

    def __init__(self, stride: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.stride = stride

    def call(self, inputs):
        s = self.stride
        h0, w0 = (_same_grid_start(size, s) for size in _spatial_size(inputs))
        return inputs[:, h0::s, w0::s, :]

    def get_config(self):
        return {**super().get_config(), "stride": self.stride}


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class PhaseSubsample(tf.keras.layers.Layer):
    """Input of a conv with stride s and dilation s, rewritten as an undilated conv.

    Such a conv ("same" padding with +1, outputs on the grid of a TF "same"
    conv at stride s, as `SameGridSubsample` keeps them) reads only the
    pixels of one phase of its padded input. This layer pads as the stride-1
    dilated conv would, with `pad_value` (+1: `sign(1) = +1`, so padding before
    or after binarizing is the same), and keeps that phase; a "valid",
    undilated conv with the same kernel then gives the strided dilated conv's
    output exactly, with s² fewer MACs. LCE converts that conv to `LceBconv2d`.

    Example:
        >>> phase = PhaseSubsample(kernel_size=3, dilation_rate=2, strides=2)
        >>> phase(tf.zeros((1, 32, 32, 8))).shape
        TensorShape([1, 18, 18, 8])

    Args:
        kernel_size: the conv's kernel size k.
        dilation_rate: the conv's dilation (must equal `strides`).
        strides: the conv's stride s.
        pad_value: padding value (+1 for binary convs).
    """

    def __init__(self, kernel_size: int, dilation_rate: int = 2, strides: int = 2,
                 pad_value: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if dilation_rate != strides or strides < 2:
            raise ValueError("PhaseSubsample needs dilation_rate == strides >= 2, got "
                             f"dilation_rate={dilation_rate}, strides={strides}.")
        self.kernel_size, self.dilation_rate, self.strides = kernel_size, dilation_rate, strides
        self.pad_value = pad_value

    def _axis(self, size):
        s, k = self.strides, self.kernel_size
        total = self.dilation_rate * (k - 1)  # "same" padding of the stride-1 dilated conv
        start = _same_grid_start(size, s)     # phase of TF's "same" grid at stride s
        outputs = (size - start + s - 1) // s
        return (total // 2, total - total // 2), start, start + s * (outputs + k - 1)

    def call(self, inputs):
        height, width = _spatial_size(inputs)
        (top, bottom), h0, h1 = self._axis(height)
        (left, right), w0, w1 = self._axis(width)
        padded = tf.pad(inputs, [[0, 0], [top, bottom], [left, right], [0, 0]],
                        constant_values=self.pad_value)
        return padded[:, h0:h1:self.strides, w0:w1:self.strides, :]

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size,
                "dilation_rate": self.dilation_rate, "strides": self.strides,
                "pad_value": self.pad_value}


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class GroupMaskedQuantConv2D(lq.layers.QuantConv2D):
    """A `QuantConv2D` whose dense kernel is masked block-diagonally into `mask_groups`.

    Computes exactly the grouped convolution with `groups=mask_groups`;
    TensorFlow runs it 10–30× faster on CPU than a real grouped conv. The
    masked-out kernel entries start at zero and get zero gradient, so they
    never change (and never flip sign). `grouped_kernel()` returns the
    `[k, k, in/groups, filters]` kernel a real grouped conv would hold;
    `bnas_tf.export.native_groups(model)` swaps these layers for real grouped
    `QuantConv2D`s before Larq Compute Engine converts the model. With
    `kernel_quantizer="magnitude_aware_sign"` the per-output-channel scale is
    mean |W| over the in-block entries only, the grouped conv's own scale
    (Larq's would average the masked zeros too: 1/groups of it).

    Example:
        >>> conv = GroupMaskedQuantConv2D(8, 3, mask_groups=4, padding="same",
        ...                               input_quantizer="ste_sign")
        >>> conv(tf.ones([1, 5, 5, 8])).shape, conv.grouped_kernel().shape
        (TensorShape([1, 5, 5, 8]), (3, 3, 2, 8))
    """

    def __init__(self, *args, mask_groups: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.mask_groups = mask_groups

    def build(self, input_shape):
        channels, groups = int(input_shape[-1]), self.mask_groups
        if channels % groups or self.filters % groups:
            raise SearchSpaceError(f"Expected input channels ({channels}) and filters "
                                   f"({self.filters}) divisible by groups={groups}.")
        cin, cout = channels // groups, self.filters // groups
        block = np.kron(np.eye(groups, dtype="float32"), np.ones((cin, cout), "float32"))
        self._mask = tf.constant(block[None, None])
        initializer = self.kernel_initializer

        def block_diagonal(shape, dtype=None, **kw):
            """The grouped conv's initial kernel (same fans), placed on the diagonal."""
            grouped = initializer((*shape[:2], cin, shape[3]), dtype=dtype, **kw)
            blocks = tf.split(grouped, groups, axis=3)
            zeros = tf.zeros_like(blocks[0])
            return tf.concat([tf.concat([blocks[g] if g == row else zeros for g in range(groups)],
                                        axis=3) for row in range(groups)], axis=2)

        self.kernel_initializer = block_diagonal
        try:
            super().build(input_shape)
        finally:
            self.kernel_initializer = initializer
        # read by `active_entries` (sign-flip ratios count only these)
        _latent(self.kernel)._bnas_active_entries = int(block.sum()) * int(np.prod(self.kernel_size))

    def _get_quantizer(self, name):
        quantizer = super()._get_quantizer(name)
        if name == "kernel" and isinstance(quantizer, lq.quantizers.MagnitudeAwareSign):
            return _InBlockMagnitudeAwareSign(quantizer, self._mask)
        return quantizer

    def convolution_op(self, inputs, kernel):
        return super().convolution_op(inputs, kernel * tf.cast(self._mask, kernel.dtype))

    def grouped_kernel(self) -> np.ndarray:
        """The kernel of the equivalent `groups=mask_groups` convolution."""
        kernel, groups = self.kernel.numpy(), self.mask_groups
        cin, cout = kernel.shape[2] // groups, kernel.shape[3] // groups
        return np.concatenate([kernel[:, :, g * cin:(g + 1) * cin, g * cout:(g + 1) * cout]
                               for g in range(groups)], axis=-1)

    def get_config(self):
        return {**super().get_config(), "mask_groups": self.mask_groups}


class _InBlockMagnitudeAwareSign:
    """`magnitude_aware_sign` of a block-masked kernel: `s_c · ste_sign(W)` with
    `s_c = mean |W|` over output channel c's in-block entries (no gradient to s_c):
    Larq's quantizer (whose `s_c` also averages the masked zeros) times a constant."""

    precision = 1

    def __init__(self, quantizer: lq.quantizers.MagnitudeAwareSign, mask: tf.Tensor):
        self.quantizer, self.mask = quantizer, mask

    def __call__(self, kernel: tf.Tensor) -> tf.Tensor:
        mask = tf.cast(self.mask, kernel.dtype)
        entries = tf.reduce_sum(mask, axis=(0, 1, 2)) * float(np.prod(kernel.shape[:2]))
        scale = tf.reduce_sum(tf.abs(kernel * mask), axis=(0, 1, 2)) / entries
        dense = tf.reduce_mean(tf.abs(kernel), axis=(0, 1, 2))  # Larq's scale
        # Larq's quantizer (its gradient, metrics and build), rescaled
        return self.quantizer(kernel) * tf.stop_gradient(tf.math.divide_no_nan(scale, dense))


def _latent(variable):
    return getattr(variable, "latent_variable", variable)


def active_entries(variable: tf.Variable) -> int:
    """Number of kernel entries that take part in the convolution.

    All of them, except for `GroupMaskedQuantConv2D` kernels, whose entries
    outside the group blocks are always zero.
    """
    return getattr(_latent(variable), "_bnas_active_entries", variable.shape.num_elements())
