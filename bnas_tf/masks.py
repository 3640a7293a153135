"""Hierarchical masks of HM-NAS: thresholded real-valued scores with a straight-through gradient.

A mask score `s` is a real number; the forward pass uses the binary mask

    m = 1[s > τ]            (exactly 0.0 or 1.0)

and the backward pass treats the threshold as the identity (straight-through
estimator, as Piggyback and HM-NAS do):

    ∂L/∂s = ∂L/∂m.

So a masked-off op, edge or weight contributes exactly nothing to the output
(it is multiplied by 0.0), yet its score still receives the gradient that
says whether switching it back on would lower the loss.

Defaults: `DEFAULT_THRESHOLD = 5e-3` (Piggyback/HM-NAS), and every score
starts above it, so all masks are on at first. With Adam a score moves by
about the learning rate per step whatever the scale of its gradient, so the
gap `initial − τ` decides how many *consistent* steps it takes to prune, and
must be large against the random walk of a noisy gradient (≈ lr·√steps):

* op and edge scores (architecture step, Adam 3e-4): `DEFAULT_INITIAL =
  2e-2`, a gap of 1.5e-2, i.e. ≥ 50 consistent steps;
* kernel scores (weight step, Adam 1e-3): `DEFAULT_WEIGHT_INITIAL = 0.1`,
  a gap of 0.095, ≥ 95 consistent steps. With the Piggyback value 1e-2, the
  weight learning rate 1e-3 and `Sparsity(0.02)` on the kernel scores, 87 % of
  the kernel entries of a small BATS supernet were masked off within 15
  steps (one epoch on 1,000 CIFAR-10 images): far too fast to be pruning by
  usefulness.

Example:
    >>> s = tf.Variable([0.01, 0.001])
    >>> threshold_mask(s, 5e-3).numpy()
    array([1., 0.], dtype=float32)
    >>> conv = MaskedQuantConv2D(8, 3, padding="same", input_quantizer="ste_sign")
    >>> conv(tf.ones([1, 4, 4, 8])).shape, conv.kernel_mask().shape
    (TensorShape([1, 4, 4, 8]), TensorShape([3, 3, 8, 8]))

References:
    Yan et al., HM-NAS: Efficient Neural Architecture Search via Hierarchical
    Masking, ICCV 2019 Neural Architects Workshop, arXiv:1909.00122.
    Mallya et al., Piggyback: Adapting a Single Network to Multiple Tasks by
    Learning to Mask Weights, ECCV 2018, arXiv:1801.06519.
"""

from __future__ import annotations

import larq as lq
import numpy as np
import tensorflow as tf

from bnas_tf.ops import GroupMaskedQuantConv2D

__all__ = [
    "DEFAULT_THRESHOLD",
    "DEFAULT_INITIAL",
    "DEFAULT_WEIGHT_INITIAL",
    "threshold_mask",
    "Sparsity",
    "MaskedQuantConv2D",
    "MaskedGroupQuantConv2D",
    "masked_conv_from",
]

DEFAULT_THRESHOLD = 5e-3
DEFAULT_INITIAL = 2e-2
DEFAULT_WEIGHT_INITIAL = 0.1


def threshold_mask(scores: tf.Tensor, threshold: float | tf.Tensor) -> tf.Tensor:
    """`1[scores > threshold]` forward, identity gradient to `scores` backward.

    Args:
        scores: real-valued mask scores.
        threshold: scalar τ.

    Returns:
        A tensor of exact 0.0/1.0 values with the dtype of `scores`.
    """
    threshold = tf.cast(threshold, scores.dtype)

    @tf.custom_gradient
    def _mask(s):
        def grad(dy):
            return dy  # straight-through: ∂m/∂s := 1

        return tf.cast(s > threshold, s.dtype), grad

    return _mask(scores)


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class Sparsity(tf.keras.regularizers.Regularizer):
    """L1 pull of mask scores toward zero (below the threshold): `strength · mean(|s|)`.

    The mean (not the sum) keeps the strength independent of how many scores
    a variable has, so one value suits op, edge and kernel scores. On the
    kernel scores of a grouped conv trained masked, the mean runs over the
    real (in-block) entries only. Scores
    that the task loss does not defend drift below the threshold and switch
    their mask off; scores whose mask lowers the loss are held up by the
    straight-through gradient.

    Args:
        strength: regularization factor (0 disables).
    """

    def __init__(self, strength: float = 1e-3):
        if strength < 0:
            raise ValueError(f"Expected strength >= 0, got {strength!r}.")
        self.strength = float(strength)

    def __call__(self, scores):
        return self.strength * tf.reduce_mean(tf.abs(scores))

    def get_config(self):
        return {"strength": self.strength}


class _KernelMaskMixin:
    """Adds a real-valued score per kernel entry; the conv uses `kernel · 1[score > τ]`."""

    def _init_mask(self, mask_threshold, mask_initial, mask_regularizer):
        if not mask_initial > mask_threshold:
            raise ValueError(
                f"Expected mask_initial > mask_threshold (masks start on), got "
                f"mask_initial={mask_initial!r}, mask_threshold={mask_threshold!r}.")
        self.mask_threshold, self.mask_initial = float(mask_threshold), float(mask_initial)
        self.mask_regularizer = tf.keras.regularizers.get(mask_regularizer)

    def build(self, input_shape):
        super().build(input_shape)
        regularizer = self.mask_regularizer
        self.kernel_scores = self.add_weight(
            "kernel_scores", self.kernel.shape,
            initializer=tf.keras.initializers.Constant(self.mask_initial),
            # on the real entries only: a grouped conv's off-block entries do not exist
            regularizer=(lambda scores: regularizer(self.real_entries(scores)))
            if regularizer is not None else None, dtype=self.kernel.dtype)

    def real_entries(self, values: tf.Tensor) -> tf.Tensor:
        """`values` (kernel-shaped) at the entries the conv uses, flattened.

        All entries, except for grouped convs trained masked
        (`GroupMaskedQuantConv2D`), whose entries outside the group blocks
        are always zero.
        """
        block = getattr(self, "_mask", None)
        if block is None:
            return tf.reshape(values, [-1])
        return tf.boolean_mask(values, tf.broadcast_to(block > 0, values.shape))

    def kernel_mask(self) -> tf.Tensor:
        """The binary kernel mask `1[score > τ]` (straight-through gradient)."""
        return threshold_mask(self.kernel_scores, self.mask_threshold)

    def kernel_mask_on(self) -> tf.Tensor:
        """How many real kernel entries (see `real_entries`) have their mask on."""
        return tf.reduce_sum(self.real_entries(self.kernel_mask()))

    def masked_kernel(self) -> np.ndarray:
        """`kernel · mask` as a NumPy array (what the forward pass uses)."""
        return (self.kernel * self.kernel_mask()).numpy()

    def convolution_op(self, inputs, kernel):
        return super().convolution_op(inputs, kernel * tf.cast(self.kernel_mask(), kernel.dtype))

    def _mask_config(self):
        return {"mask_threshold": self.mask_threshold, "mask_initial": self.mask_initial,
                "mask_regularizer": tf.keras.regularizers.serialize(self.mask_regularizer)
                if self.mask_regularizer is not None else None}


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class MaskedQuantConv2D(_KernelMaskMixin, lq.layers.QuantConv2D):
    """`larq.layers.QuantConv2D` with a learned binary mask on its kernel (HM-NAS weight mask).

    Args:
        mask_threshold: τ of the kernel mask.
        mask_initial: initial kernel score (> τ: all weights kept at first).
        mask_regularizer: regularizer on the kernel scores (e.g. `Sparsity`).
        *args, **kwargs: as `QuantConv2D`.
    """

    def __init__(self, *args, mask_threshold: float = DEFAULT_THRESHOLD,
                 mask_initial: float = DEFAULT_WEIGHT_INITIAL, mask_regularizer=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_mask(mask_threshold, mask_initial, mask_regularizer)

    def get_config(self):
        return {**super().get_config(), **self._mask_config()}


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class MaskedGroupQuantConv2D(_KernelMaskMixin, GroupMaskedQuantConv2D):
    """`GroupMaskedQuantConv2D` (grouped conv as a block-masked dense conv) with a weight mask.

    `grouped_kernel()` returns the masked kernel of the equivalent grouped conv.
    """

    def __init__(self, *args, mask_threshold: float = DEFAULT_THRESHOLD,
                 mask_initial: float = DEFAULT_WEIGHT_INITIAL, mask_regularizer=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_mask(mask_threshold, mask_initial, mask_regularizer)

    def grouped_kernel(self) -> np.ndarray:
        kernel, groups = self.masked_kernel(), self.mask_groups
        cin, cout = kernel.shape[2] // groups, kernel.shape[3] // groups
        return np.concatenate([kernel[:, :, g * cin:(g + 1) * cin, g * cout:(g + 1) * cout]
                               for g in range(groups)], axis=-1)

    def get_config(self):
        return {**super().get_config(), **self._mask_config()}


def masked_conv_from(conv: tf.keras.layers.Layer, *, mask_threshold: float,
                     mask_initial: float, mask_regularizer=None) -> tf.keras.layers.Layer:
    """An unbuilt masked copy of an unbuilt `QuantConv2D`/`GroupMaskedQuantConv2D` config."""
    cls = MaskedGroupQuantConv2D if isinstance(conv, GroupMaskedQuantConv2D) else MaskedQuantConv2D
    config = conv.get_config()
    return cls.from_config({**config, "mask_threshold": mask_threshold,
                            "mask_initial": mask_initial, "mask_regularizer": mask_regularizer})
