"""Published hand-designed binary networks, to compare searched networks with.

`get(name, num_classes=..., input_shape=...)` builds one of them, without
pretrained weights, in the shape `bnas_tf.build_network` gives searched
networks, so the same two-stage recipe (`bnas_tf.train_two_stage`) trains it
and `bnas_tf.export` converts it:

| name         | network                                   | stage-2 weights        |
|--------------|-------------------------------------------|------------------------|
| `birealnet`  | Bi-Real Net 18 (Liu et al., ECCV 2018)    | `magnitude_aware_sign` |
| `quicknet`   | QuickNet (Larq Zoo; Bannink et al., 2021) | `ste_sign`             |
| `reactnet_a` | ReActNet-A (Liu et al., ECCV 2020)        | `magnitude_aware_sign` |

Every model is a flat functional Keras model: its binary convolutions are
top-level Larq `QuantConv2D` layers with an input quantizer, "same" padding
with `pad_values=1.0` (so LCE turns them into `LceBconv2d`) and
`kernel_quantizer=None`: binary activations on latent real weights, stage 1 of
the recipe. `bnas_tf.training.binarize_weights` (stage 2) binarizes their
kernels with the weight quantizer `kernel_quantizer(name)` returns (the one of
the published network). The stem, the shortcuts, the downsampling convs and
the classifier are real-valued; the classifier outputs logits.

Input size. At 224x224 the networks are the published ImageNet ones (total
stride 32, a 7x7 final feature map). Inputs smaller than 64 pixels on a side
(32x32 CIFAR) get a CIFAR stem instead, as the CIFAR variants of ResNets do:
the stem keeps the resolution (stride 1, no stem pooling), so a 32x32 image
ends as a 4x4 (Bi-Real Net, QuickNet) or 2x2 (ReActNet-A) feature map instead
of collapsing to 1x1. `stem="imagenet"` or `stem="cifar"` overrides the choice.

Departures from the published definitions, all deliberate:

* binary convs pad with +1, not 0 (LCE's binary kernel needs +1 padding);
* batch norm is the package's (momentum 0.9, epsilon 1e-5) everywhere;
* QuickNet's stage-2 weights use `ste_sign` with `weight_clip` at 1.0
  (Larq Zoo clips at 1.25; its input quantizer, `SteSign(clip_value=1.25)`,
  is kept);
* the classifier has no softmax (the package's losses take logits).

Parameters at 224x224 with 1000 classes (checked in `tests/test_baselines.py`):
Bi-Real Net 11,699,112 and QuickNet 13,234,088, as Larq Zoo documents them
(`model.count_params()` for Bi-Real Net; Larq's `summary`, which counts each
batch norm as 2 parameters per channel, for QuickNet); ReActNet-A 29,343,592
trainable parameters, as the authors' PyTorch definition has, with 4.82e9
binary and 0.12e8 float multiply-accumulates, the BOPs and FLOPs the paper
reports.

Example:
    >>> import bnas_tf as bn
    >>> model = bn.baselines.get("quicknet", num_classes=10, input_shape=(32, 32, 3))
    >>> result = bn.train_two_stage(model, train_ds, test_ds, epochs=(30, 30),
    ...                             kernel_quantizer=bn.baselines.kernel_quantizer("quicknet"))

References:
    Liu et al., Bi-Real Net: Enhancing the Performance of 1-bit CNNs with
    Improved Representational Capability and Advanced Training Algorithm,
    ECCV 2018, arXiv:1808.00278.
    Bannink et al., Larq Compute Engine: Design, Benchmark, and Deploy
    State-of-the-Art Binarized Neural Networks, MLSys 2021, arXiv:2011.09398
    (QuickNet; its definition is Larq Zoo's `larq_zoo/sota/quicknet.py`).
    Liu et al., ReActNet: Towards Precise Binary Neural Network with
    Generalized Activation Functions, ECCV 2020, arXiv:2003.03488.
    Zhang, Making Convolutional Networks Shift-Invariant Again, ICML 2019,
    arXiv:1904.11486 (QuickNet's blur pooling).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import larq as lq
import numpy as np
import tensorflow as tf

from bnas_tf.distribute import sync_batch_norm

__all__ = ["get", "names", "kernel_quantizer", "register", "BiRealNet", "QuickNet",
           "ReActNetA", "Shift", "RPReLU", "BlurPool2D", "STEMS", "SMALL_INPUT"]

STEMS = ("cifar", "imagenet")
SMALL_INPUT = 64
"""Inputs with a side below this many pixels get the CIFAR stem by default."""


# --------------------------------------------------------------------------- registry


@dataclasses.dataclass(frozen=True)
class _Entry:
    build: Callable[..., tf.keras.Model]
    kernel_quantizer: str


_BASELINES: dict[str, _Entry] = {}


def register(name: str, *, kernel_quantizer: str):
    """Decorator: register a keyword-only model function under `name`.

    Args:
        name: the registry name (`bnas-tf train --baseline NAME`).
        kernel_quantizer: the stage-2 weight quantizer of the published network.

    Raises:
        ValueError: `name` is already registered.
    """
    def decorator(fn: Callable[..., tf.keras.Model]) -> Callable[..., tf.keras.Model]:
        if name in _BASELINES:
            raise ValueError(f"A baseline named {name!r} is already registered.")
        _BASELINES[name] = _Entry(fn, kernel_quantizer)
        return fn
    return decorator


def names() -> tuple[str, ...]:
    """The registered baseline names, sorted."""
    return tuple(sorted(_BASELINES))


def _entry(name: str) -> _Entry:
    if not isinstance(name, str) or name not in _BASELINES:
        raise ValueError(f"Unknown baseline {name!r}. Expected one of: {', '.join(names())}.")
    return _BASELINES[name]


def get(name: str, *, num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
        **options) -> tf.keras.Model:
    """Build the baseline network `name` (randomly initialized, stage 1).

    Args:
        name: one of `names()`: "birealnet", "quicknet", "reactnet_a".
        num_classes: classifier outputs (logits).
        input_shape: `(height, width, channels)` of the images.
        **options: the model function's other options (`stem`, `width`, `name`).

    Returns:
        An uncompiled functional `tf.keras.Model`.

    Raises:
        ValueError: an unknown name (the message lists the known ones), or bad sizes.

    Example:
        >>> bn.baselines.get("birealnet", num_classes=10, input_shape=(32, 32, 3)).output_shape
        (None, 10)
    """
    return _entry(name).build(num_classes=num_classes, input_shape=input_shape, **options)


def kernel_quantizer(name: str) -> str:
    """The stage-2 weight quantizer of baseline `name` (for `binarize_weights`).

    Raises:
        ValueError: an unknown name.
    """
    return _entry(name).kernel_quantizer


# --------------------------------------------------------------------------- layers


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class Shift(tf.keras.layers.Layer):
    """`x + b`, one learned bias `b` per channel (initially 0).

    Before a sign binarizer it is ReActNet's RSign threshold:
    `sign(x + b) = sign(x − α)` with `α = −b` learned per channel; the gradient
    reaches `b` through the binarizer's pseudo-gradient. Larq quantizers take no
    weights, so the threshold is this separate layer before the binary conv.
    """

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(int(input_shape[-1]),),
                                    initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        return inputs + self.bias


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class RPReLU(tf.keras.layers.Layer):
    """ReActNet's RPReLU: a PReLU shifted on both axes, per channel.

    `f(x) = x − γ + ζ` if `x > γ`, else `β·(x − γ) + ζ`; γ and ζ start at 0 and
    the slope β at 0.25 (PReLU's usual start).

    Reference:
        Liu et al., ReActNet, ECCV 2020, arXiv:2003.03488, Eq. (3).
    """

    def build(self, input_shape):
        channels = (int(input_shape[-1]),)
        self.gamma = self.add_weight(name="gamma", shape=channels, initializer="zeros")
        self.slope = self.add_weight(name="slope", shape=channels,
                                     initializer=tf.keras.initializers.Constant(0.25))
        self.zeta = self.add_weight(name="zeta", shape=channels, initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        x = inputs - self.gamma
        return tf.nn.relu(x) - self.slope * tf.nn.relu(-x) + self.zeta


def _binomial_kernel(shape, dtype=None):
    """A 3x3 binomial blur `[1, 2, 1]ᵀ[1, 2, 1] / 16` per channel, shape `(3, 3, C, 1)`."""
    taps = np.array([1.0, 2.0, 1.0])
    blur = np.outer(taps, taps) / 16.0
    kernel = np.broadcast_to(blur[:, :, None, None], shape)
    return tf.constant(kernel, dtype=dtype or tf.float32)


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class BlurPool2D(tf.keras.layers.Layer):
    """Anti-aliased downsampling: a fixed 3x3 binomial blur per channel, at a stride.

    QuickNet's transition blocks downsample with it. The kernel is a
    non-trainable weight (as in Larq Zoo, where it is a frozen depthwise conv),
    so it counts as parameters but takes no weight decay.

    Reference:
        Zhang, Making Convolutional Networks Shift-Invariant Again, ICML 2019.
    """

    def __init__(self, strides: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.strides = int(strides)

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(3, 3, int(input_shape[-1]), 1),
                                      initializer=_binomial_kernel, trainable=False)
        super().build(input_shape)

    def call(self, inputs):
        s = self.strides
        return tf.nn.depthwise_conv2d(inputs, self.kernel, [1, s, s, 1], "SAME")

    def get_config(self):
        return {**super().get_config(), "strides": self.strides}


# --------------------------------------------------------------------------- pieces


def _bn(name: str, **kwargs) -> tf.keras.layers.BatchNormalization:
    return tf.keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name,
                                              synchronized=sync_batch_norm(), **kwargs)


def _binary_conv(filters: int, kernel_size: int, *, input_quantizer, name: str, strides: int = 1,
                 activation: str | None = None) -> lq.layers.QuantConv2D:
    """A binary conv for stage 1: binary inputs, latent real weights, +1 padding."""
    return lq.layers.QuantConv2D(
        filters, kernel_size, strides=strides, padding="same", pad_values=1.0,
        input_quantizer=input_quantizer, kernel_quantizer=None, kernel_constraint=None,
        kernel_initializer="glorot_normal", use_bias=False, activation=activation, name=name)


def _inputs(num_classes: int, input_shape, stem: str | None, width: int
            ) -> tuple[tf.Tensor, str]:
    """Check the common arguments; return the input tensor and the stem to use."""
    for arg, value in (("num_classes", num_classes), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Expected {arg} to be a positive integer, got {value!r}.")
    shape = tuple(input_shape)
    if len(shape) != 3 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1
                              for d in shape):
        raise ValueError(f"Expected input_shape (height, width, channels), got {input_shape!r}.")
    if stem is None:
        stem = "cifar" if min(shape[:2]) < SMALL_INPUT else "imagenet"
    elif stem not in STEMS:
        raise ValueError(f"Expected stem to be one of {', '.join(map(repr, STEMS))} or None "
                         f"(chosen from the input size), got {stem!r}.")
    return tf.keras.Input(shape, name="images"), stem


def _classifier(x, inputs, num_classes: int, name: str) -> tf.keras.Model:
    x = tf.keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = tf.keras.layers.Dense(num_classes, name="classifier")(x)
    return tf.keras.Model(inputs, outputs, name=name)


# --------------------------------------------------------------------------- Bi-Real Net


def _bireal_block(x, filters: int, strides: int, name: str):
    """`BN(binary_conv3x3(x)) + shortcut(x)`: every binary conv has its own real shortcut.

    Where the block halves the resolution and doubles the channels, the
    shortcut is a 2x2 average pool, a real 1x1 conv and batch norm.
    """
    y = _binary_conv(filters, 3, strides=strides, input_quantizer="approx_sign",
                     name=f"{name}_conv")(x)
    y = _bn(f"{name}_bn")(y)
    shortcut = x
    if strides > 1 or x.shape[-1] != filters:
        if strides > 1:
            shortcut = tf.keras.layers.AveragePooling2D(strides, padding="same",
                                                        name=f"{name}_down_pool")(shortcut)
        shortcut = tf.keras.layers.Conv2D(filters, 1, use_bias=False,
                                          name=f"{name}_down_conv")(shortcut)
        shortcut = _bn(f"{name}_down_bn")(shortcut)
    return tf.keras.layers.Add(name=f"{name}_add")([y, shortcut])


@register("birealnet", kernel_quantizer="magnitude_aware_sign")
def BiRealNet(*, num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
              stem: str | None = None, width: int = 64, name: str = "birealnet"
              ) -> tf.keras.Model:
    """Bi-Real Net 18: ResNet-18 with a real shortcut around every binary conv.

    ImageNet stem: 7x7 conv (stride 2), batch norm, 3x3 max pool (stride 2).
    CIFAR stem: 3x3 conv (stride 1) and batch norm. Then 4 stages of 4 blocks
    (`width`, 2·, 4·, 8·`width` channels; the first block of stages 2–4 halves
    the resolution), each block `BN(binary_conv3x3(x)) + shortcut(x)` with the
    `approx_sign` activation binarizer (Bi-Real's piecewise polynomial
    pseudo-gradient); global average pooling and a dense classifier.

    Args:
        num_classes: classifier outputs (logits).
        input_shape: `(height, width, channels)`.
        stem: "imagenet", "cifar", or None to choose from the input size.
        width: channels of the first stage (published: 64).
        name: model name.

    Returns:
        The stage-1 network (stage-2 weights: `magnitude_aware_sign`).

    Reference:
        Liu et al., Bi-Real Net, ECCV 2018, arXiv:1808.00278.
    """
    inputs, stem = _inputs(num_classes, input_shape, stem, width)
    if stem == "imagenet":
        x = tf.keras.layers.Conv2D(width, 7, strides=2, padding="same", use_bias=False,
                                   name="stem_conv")(inputs)
        x = _bn("stem_bn")(x)
        x = tf.keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    else:
        x = tf.keras.layers.Conv2D(width, 3, padding="same", use_bias=False,
                                   name="stem_conv")(inputs)
        x = _bn("stem_bn")(x)
    for stage in range(4):
        for block in range(4):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _bireal_block(x, width * 2 ** stage, strides, f"stage{stage + 1}_block{block + 1}")
    return _classifier(x, inputs, num_classes, name)


# --------------------------------------------------------------------------- QuickNet


def _quicknet_residual(x, name: str):
    """`BN(relu(binary_conv3x3(x))) + x`, channels and resolution unchanged."""
    y = _binary_conv(int(x.shape[-1]), 3, activation="relu",
                     input_quantizer=lq.quantizers.SteSign(clip_value=1.25),
                     name=f"{name}_conv")(x)
    y = _bn(f"{name}_bn")(y)
    return tf.keras.layers.Add(name=f"{name}_add")([y, x])


def _quicknet_transition(x, filters: int, name: str):
    """Real-valued downsampling: ReLU, 2x2 max pool (stride 1), blur pool (stride 2), 1x1 conv, BN."""
    x = tf.keras.layers.ReLU(name=f"{name}_relu")(x)
    x = tf.keras.layers.MaxPooling2D(2, strides=1, name=f"{name}_max_pool")(x)
    x = BlurPool2D(2, name=f"{name}_blur_pool")(x)
    x = tf.keras.layers.Conv2D(filters, 1, use_bias=False, kernel_initializer="glorot_normal",
                               name=f"{name}_conv")(x)
    return _bn(f"{name}_bn")(x)


@register("quicknet", kernel_quantizer="ste_sign")
def QuickNet(*, num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
             stem: str | None = None, width: int = 64, name: str = "quicknet"
             ) -> tf.keras.Model:
    """QuickNet: a ResNet-style binary network designed for fast LCE inference.

    Stem (real): 3x3 conv to `width/4` channels, batch norm, ReLU, 3x3
    depthwise conv, batch norm without scale and offset, 1x1 conv to `width`
    channels, batch norm; both 3x3 convs have stride 2 with the ImageNet stem
    and stride 1 with the CIFAR stem. Then 4 sections of 4 residual blocks
    (`width`, 2·, 4·, 8·`width` channels), each `BN(relu(binary_conv3x3(x))) + x`
    with the `SteSign(clip_value=1.25)` activation binarizer; a real transition
    (ReLU, 2x2 max pool at stride 1, blur pool at stride 2, 1x1 conv, batch
    norm) starts sections 2–4. Head: ReLU, global average pooling, dense.

    Args:
        num_classes: classifier outputs (logits).
        input_shape: `(height, width, channels)`.
        stem: "imagenet", "cifar", or None to choose from the input size.
        width: channels of the first section (published: 64; a multiple of 4).
        name: model name.

    Returns:
        The stage-1 network (stage-2 weights: `ste_sign`).

    Raises:
        ValueError: `width` is not a multiple of 4.

    Reference:
        Bannink et al., Larq Compute Engine, MLSys 2021, arXiv:2011.09398; Larq
        Zoo's `sota.QuickNet` (v1.0) is the definition.
    """
    inputs, stem = _inputs(num_classes, input_shape, stem, width)
    if width % 4:
        raise ValueError(f"Expected a QuickNet width that is a multiple of 4, got {width}.")
    strides = 2 if stem == "imagenet" else 1
    x = tf.keras.layers.Conv2D(width // 4, 3, strides=strides, padding="same", use_bias=False,
                               kernel_initializer="he_normal", name="stem_conv")(inputs)
    x = _bn("stem_bn")(x)
    x = tf.keras.layers.ReLU(name="stem_relu")(x)
    x = tf.keras.layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False,
                                        name="stem_dw_conv")(x)
    x = _bn("stem_dw_bn", center=False, scale=False)(x)
    x = tf.keras.layers.Conv2D(width, 1, use_bias=False, kernel_initializer="he_normal",
                               name="stem_pw_conv")(x)
    x = _bn("stem_pw_bn")(x)
    for section in range(4):
        filters = width * 2 ** section
        for block in range(4):
            if x.shape[-1] != filters:
                x = _quicknet_transition(x, filters, f"section{section + 1}_transition")
            x = _quicknet_residual(x, f"section{section + 1}_block{block + 1}")
    x = tf.keras.layers.ReLU(name="head_relu")(x)
    return _classifier(x, inputs, num_classes, name)


# --------------------------------------------------------------------------- ReActNet-A


# Channels of ReActNet-A's first conv and 13 blocks, in units of the first conv's
# (MobileNet-v1's widths: 32, 64, 128, 128, 256, 256, 512 x 6, 1024, 1024).
_REACTNET_WIDTHS = (1, 2, 4, 4, 8, 8, 16, 16, 16, 16, 16, 16, 32, 32)


def _reactnet_block(x, filters: int, strides: int, name: str):
    """MobileNet-v1 block, binarized: a 3x3 and a 1x1 binary conv, each with a real shortcut.

    `y = RPReLU(BN(conv3x3(RSign(x))) + pool(x))` (the 3x3 conv keeps the
    channels; `pool` is a 2x2 average pool where it has stride 2), then
    `RPReLU(BN(conv1x1(RSign(y))) + y)`. Where the channels double, two 1x1
    convs each map `y` to its own channel count and their outputs, each plus
    `y`, are concatenated: every shortcut stays parameter-free.
    """
    channels = int(x.shape[-1])
    if filters not in (channels, 2 * channels):
        raise ValueError(f"A ReActNet block keeps or doubles {channels} channels, not {filters}.")
    y = Shift(name=f"{name}_rsign1")(x)
    y = _binary_conv(channels, 3, strides=strides, input_quantizer="approx_sign",
                     name=f"{name}_conv3x3")(y)
    y = _bn(f"{name}_bn1")(y)
    shortcut = x
    if strides > 1:
        shortcut = tf.keras.layers.AveragePooling2D(strides, padding="same",
                                                    name=f"{name}_pool")(x)
    y = tf.keras.layers.Add(name=f"{name}_add1")([y, shortcut])
    y = RPReLU(name=f"{name}_rprelu1")(y)
    z = Shift(name=f"{name}_rsign2")(y)
    parts = 1 if filters == channels else 2
    outs = []
    for k in range(parts):
        suffix = "" if parts == 1 else f"_{k + 1}"
        out = _binary_conv(channels, 1, input_quantizer="approx_sign",
                           name=f"{name}_conv1x1{suffix}")(z)
        out = _bn(f"{name}_bn2{suffix}")(out)
        outs.append(tf.keras.layers.Add(name=f"{name}_add2{suffix}")([out, y]))
    z = outs[0] if parts == 1 else tf.keras.layers.Concatenate(name=f"{name}_concat")(outs)
    return RPReLU(name=f"{name}_rprelu2")(z)


@register("reactnet_a", kernel_quantizer="magnitude_aware_sign")
def ReActNetA(*, num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
              stem: str | None = None, width: int = 32, name: str = "reactnet_a"
              ) -> tf.keras.Model:
    """ReActNet-A: MobileNet-v1 with binary convs, parameter-free shortcuts, RSign and RPReLU.

    A real 3x3 conv (stride 2 with the ImageNet stem, 1 with the CIFAR stem)
    and batch norm, then 13 blocks (`_reactnet_block`) with MobileNet-v1's
    channels (`width` = 32: 64, 128, 128, 256, 256, 512 x 6, 1024, 1024): its
    depthwise convs become 3x3 binary convs that keep the channels, its
    pointwise convs 1x1 binary convs. Blocks that double the channels halve
    the resolution, except the first. Global average pooling, dense classifier.

    RSign, `sign(x − α)` with a learned threshold α per channel, is a `Shift`
    layer before the binary conv, whose input binarizer is `approx_sign` (the
    paper's pseudo-gradient): the threshold is learned as in the paper, not
    approximated. RPReLU is `RPReLU`.

    Args:
        num_classes: classifier outputs (logits).
        input_shape: `(height, width, channels)`.
        stem: "imagenet", "cifar", or None to choose from the input size.
        width: channels of the first conv (published: 32).
        name: model name.

    Returns:
        The stage-1 network (stage-2 weights: `magnitude_aware_sign`, the
        paper's per-channel scaled signs).

    Reference:
        Liu et al., ReActNet, ECCV 2020, arXiv:2003.03488 (Fig. 3, Sec. 4.1).
    """
    inputs, stem = _inputs(num_classes, input_shape, stem, width)
    strides = 2 if stem == "imagenet" else 1
    x = tf.keras.layers.Conv2D(width, 3, strides=strides, padding="same", use_bias=False,
                               name="stem_conv")(inputs)
    x = _bn("stem_bn")(x)
    widths = [width * w for w in _REACTNET_WIDTHS]
    for i, (previous, filters) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        strides = 2 if filters != previous and i > 0 else 1
        x = _reactnet_block(x, filters, strides, f"block{i + 1}")
    return _classifier(x, inputs, num_classes, name)
