"""`ModelCost` and `model_cost`: what a built Keras/Larq model costs, with Larq's conventions."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Sequence

import larq as lq
import numpy as np
import tensorflow as tf
from larq.models import mac_containing_layers

from bnas_tf.baselines import BlurPool2D
from bnas_tf.conv_layers import active_entries

__all__ = ["ModelCost", "model_cost", "BOPS_PER_OP", "METRICS"]

BOPS_PER_OP = 64
"""Binary MACs per operation in `OPs = FLOPs + BOPs / 64` (Bi-Real Net, BATS, ReActNet)."""

FLOAT_BITS = 32
_MAC_LAYERS = (*mac_containing_layers, BlurPool2D)
_BN_FUSED_PAIRS = (("beta", "moving_mean"), ("gamma", "moving_variance"))


@dataclasses.dataclass(frozen=True)
class ModelCost:
    """Compute and memory of a network (or of one layer, op or edge), per image.

    A MAC (multiply-accumulate) is binary when both of its inputs are binary:
    its precision is the larger bit width of the layer's input quantizer (32
    without one) and of the weight (32 unless a kernel quantizer makes it
    1-bit), as in `larq.models.summary`. Binary MACs are the papers' BOPs,
    all others their FLOPs (they count FLOPs as multiply-accumulates):

        OPs = FLOPs + BOPs / 64

    Args:
        binary_macs: 1-bit multiply-accumulates (BOPs).
        float_macs: all other multiply-accumulates (FLOPs).
        binary_params: 1-bit weights.
        float_params: all other weights (batch norm: 2 per channel, see `model_cost`).
        memory_bits: bits of all weights (`Σ bit width × count`).
        layers: per-layer costs by layer path (only from `model_cost`; not compared).

    Example:
        >>> cost = ModelCost(binary_macs=6400, float_macs=100, binary_params=8, float_params=2)
        >>> cost.ops, cost.params
        (200.0, 10)
    """

    binary_macs: int = 0
    float_macs: int = 0
    binary_params: int = 0
    float_params: int = 0
    memory_bits: int = 0
    layers: dict[str, ModelCost] = dataclasses.field(
        default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def macs(self) -> int:
        """All multiply-accumulates."""
        return self.binary_macs + self.float_macs

    @property
    def ops(self) -> float:
        """`float_macs + binary_macs / 64` (Bi-Real Net's OPs)."""
        return self.float_macs + self.binary_macs / BOPS_PER_OP

    @property
    def params(self) -> int:
        return self.binary_params + self.float_params

    @property
    def size_bytes(self) -> float:
        """Model size in bytes: 1-bit weights take 1/8 byte, 32-bit ones 4 bytes."""
        return self.memory_bits / 8

    @property
    def size_mib(self) -> float:
        """Model size in MiB (2**20 bytes), the unit `larq.models.summary` prints."""
        return self.size_bytes / 2**20

    def __add__(self, other: ModelCost) -> ModelCost:
        if not isinstance(other, ModelCost):
            return NotImplemented
        return ModelCost(*(getattr(self, f) + getattr(other, f) for f in _TOTALS))

    def __radd__(self, other):  # sum() starts from 0
        return self if other == 0 else NotImplemented

    def __mul__(self, factor: int) -> ModelCost:
        """The cost of `factor` copies (e.g. identical cells)."""
        if isinstance(factor, bool) or not isinstance(factor, int):
            return NotImplemented
        return ModelCost(*(getattr(self, f) * factor for f in _TOTALS))

    __rmul__ = __mul__

    def value(self, metric: str) -> float:
        """One figure by name: a field or a property (`"ops"`, `"params"`, `"size_bytes"`, …).

        Raises:
            ValueError: for an unknown metric, listing the known ones.
        """
        if metric not in METRICS:
            raise ValueError(f"Unknown cost metric {metric!r}; expected one of "
                             f"{', '.join(METRICS)}.")
        return getattr(self, metric)

    def to_dict(self) -> dict[str, float]:
        """All totals, JSON-ready: the fields (not `layers`) and the derived figures."""
        return {metric: getattr(self, metric) for metric in METRICS}

    @classmethod
    def from_dict(cls, values: dict) -> ModelCost:
        """The cost `to_dict()` gave (the derived figures are recomputed, not read).

        Raises:
            ValueError: a total is missing or not a non-negative integer.
        """
        try:
            totals = {k: values[k] for k in _TOTALS}
        except (KeyError, TypeError):
            raise ValueError(f"Expected a cost with {', '.join(_TOTALS)}, got {values!r}.") \
                from None
        if not all(isinstance(v, int | float) and v >= 0 and float(v).is_integer()
                   for v in totals.values()):
            raise ValueError(f"Expected non-negative integer totals, got {totals!r}.")
        return cls(**{k: int(v) for k, v in totals.items()})

    def summary(self) -> str:
        """One line for people: OPs, binary and float MACs, parameters, size.

        Example:
            >>> ModelCost(binary_macs=64_000_000, float_macs=500_000, float_params=1000,
            ...           memory_bits=32_000).summary()
            '1.50 M OPs (64.0 M binary MACs + 0.50 M float MACs), 1,000 parameters, 3.9 KiB'
        """
        size = self.size_bytes
        size_text = f"{size / 2**20:.2f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"
        return (f"{self.ops / 1e6:.2f} M OPs ({self.binary_macs / 1e6:.1f} M binary MACs + "
                f"{self.float_macs / 1e6:.2f} M float MACs), {self.params:,} parameters, "
                f"{size_text}")


_TOTALS = ("binary_macs", "float_macs", "binary_params", "float_params", "memory_bits")
METRICS = ("binary_macs", "float_macs", "macs", "ops", "binary_params", "float_params",
           "params", "memory_bits", "size_bytes", "size_mib")


def weights_cost(count: int, bits: int) -> ModelCost:
    """`count` weights of `bits` bits each."""
    binary = bits == 1
    return ModelCost(binary_params=count if binary else 0, float_params=0 if binary else count,
                     memory_bits=count * bits)


def macs_cost(count: int, bits: int) -> ModelCost:
    """`count` multiply-accumulates of precision `bits`."""
    return ModelCost(binary_macs=count, float_macs=0) if bits == 1 else ModelCost(float_macs=count)


def quantizer_bits(quantizer) -> int:
    """Bit width a Larq quantizer produces (32 for None or one without `precision`)."""
    if quantizer is None:
        return FLOAT_BITS
    return getattr(quantizer, "precision", None) or FLOAT_BITS


def _weight_bits(weight) -> int:
    return getattr(weight, "precision", None) or FLOAT_BITS


def _walk(root: tf.keras.layers.Layer) -> list[tuple[str, tf.keras.layers.Layer]]:
    """Every layer below `root` once, depth first, with its slash-separated path.

    Larq's quantizers (Keras layers without weights) are left out.
    """
    found, seen = [], set()

    def visit(layer, prefix):
        for child in layer._flatten_layers(include_self=False, recursive=False):
            if id(child) in seen or isinstance(child, lq.quantizers.Quantizer):
                continue
            seen.add(id(child))
            found.append((prefix + child.name, child))
            visit(child, f"{prefix}{child.name}/")

    visit(root, "")
    return found


def _own_weights(layer: tf.keras.layers.Layer) -> list:
    """Weights `layer` holds itself (not through sublayers), Larq's batch-norm folding applied.

    A batch norm's scale and offset fold into its moving statistics when
    deployed; Larq counts 2 weights per channel whatever `center` and `scale`.
    """
    weights = list(layer._trainable_weights) + list(layer._non_trainable_weights)
    if isinstance(layer, tf.keras.layers.BatchNormalization):
        for folded, kept in _BN_FUSED_PAIRS:
            names = [w.name.split("/")[-1].replace(":0", "") for w in weights]
            if folded in names and kept in names:
                weights.pop(names.index(folded))
    return weights


def _is_bias(weight) -> bool:
    return "bias" in weight.name


def _spatial_positions(layer: tf.keras.layers.Layer, shape: Sequence[int | None]) -> int:
    """Output positions of one feature map (1 for a dense layer on vectors)."""
    channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
    spatial = shape[2:] if channels_first else shape[1:-1]
    return int(np.prod([int(d) for d in spatial])) if spatial else 1


def _layer_macs(layer: tf.keras.layers.Layer, output_shape, input_bits: int) -> ModelCost:
    """MACs of one call: every non-bias weight once per output position (Larq's rule).

    Masked grouped convs count their in-block kernel entries only, i.e. the
    MACs of the real grouped conv that deploys.
    """
    positions, total = _spatial_positions(layer, output_shape), ModelCost()
    for weight in _own_weights(layer):
        if not _is_bias(weight):
            bits = max(input_bits, _weight_bits(weight))
            total += macs_cost(active_entries(weight) * positions, bits)
    return total


@contextlib.contextmanager
def _recorded_calls(layers: Sequence[tf.keras.layers.Layer]) -> Iterator[dict[int, list]]:
    """Record `(output shape, input bits)` of every call of `layers` while the block runs."""
    calls: dict[int, list] = {id(layer): [] for layer in layers}
    patched = []
    try:
        for layer in layers:
            original = layer.call

            def call(*args, _original=original, _layer=layer, **kwargs):
                outputs = _original(*args, **kwargs)
                bits = quantizer_bits(getattr(_layer, "input_quantizer", None))
                calls[id(_layer)].append((tuple(outputs.shape), bits))
                return outputs

            patched.append((layer, layer.__dict__.get("call")))
            layer.call = call
        yield calls
    finally:
        for layer, previous in patched:
            if previous is None:
                del layer.call
            else:
                layer.call = previous


def _input_specs(model: tf.keras.layers.Layer, input_shape) -> list[tf.TensorSpec]:
    """Shapes (batch 1) and dtypes of the inputs to run `model` on once."""
    dtype = model.compute_dtype or "float32"
    if input_shape is not None:
        single = all(isinstance(d, int) for d in input_shape)
        specs = [tf.TensorSpec([1, *shape], dtype)
                 for shape in ([input_shape] if single else input_shape)]
    elif isinstance(model, tf.keras.Model) and getattr(model, "inputs", None):
        specs = [tf.TensorSpec([1, *x.shape[1:]], x.dtype) for x in model.inputs]
    elif getattr(model, "_build_input_shape", None) is not None:
        shapes = model._build_input_shape  # with the batch dimension
        if not (isinstance(shapes, list | tuple) and shapes
                and isinstance(shapes[0], list | tuple | tf.TensorShape)):
            shapes = [shapes]
        specs = [tf.TensorSpec([1, *tf.TensorShape(s)[1:]], dtype) for s in shapes]
    else:
        specs = []
    if not specs or not all(s.shape.is_fully_defined() for s in specs):
        raise ValueError(
            f"Cannot tell the input size of {model.name!r} (got input shapes "
            f"{[s.shape for s in specs] or 'none'}); pass input_shape=(height, width, channels).")
    return specs


def model_cost(model: tf.keras.layers.Layer, input_shape: Sequence | None = None) -> ModelCost:
    """Binary and float MACs, OPs, parameters and size of `model` for one image.

    Runs `model` once on zeros (batch 1, `training=False`) and records the
    output shape of every call of a multiply-accumulate layer, at any depth
    (nested models, composite layers such as `bnas_tf.ops.BinaryConvBN`,
    `bnas_tf.SuperNet` cells): the cost of what inference computes (all ops
    of every edge of a supernet; one per edge with `mixing="gumbel"`, which
    infers with each edge's most likely op). Conventions, as in
    `larq.models.summary`:

    * A conv, depthwise/separable conv or dense layer (Keras or Larq) performs
      `weight count × output positions` MACs per weight, biases excluded; the
      precision of those MACs is `max(input bits, weight bits)`, so a Larq
      conv is binary only with a 1-bit input quantizer *and* a 1-bit kernel
      quantizer (a stage-1 binary conv with latent real weights is float).
    * Parameters: every weight at its bit width (1 for Larq-quantized
      kernels, else 32); a batch norm counts 2 per channel (its scale and
      offset fold into the moving statistics). Size = bits / 8 bytes.

    Departures from Larq's summary, all towards what deploys:

    * `bnas_tf.ops.GroupMaskedQuantConv2D` (a grouped conv trained as a
      block-masked dense one) counts its in-block kernel entries only: the
      MACs and weights of the grouped conv `bnas_tf.export.native_groups`
      puts in its place. Larq counts the dense kernel (`groups ×` too much).
    * `bnas_tf.baselines.BlurPool2D` (QuickNet's blur pool, a frozen float
      depthwise conv) counts its MACs; Larq's summary skips the layer type.
    * Layers nested in non-model layers and layers called several times are
      counted per call; Larq counts only top-level layers of each (nested)
      model and gives shared layers 0 MACs.

    A strided dilated binary conv that runs on one input phase
    (`bnas_tf.ops.PhaseSubsample`) is counted at its strided output size,
    since that is what its conv computes; one that runs at stride 1 and
    subsamples (`SameGridSubsample`) is counted at stride 1. Pooling,
    additions and activations cost nothing, as in Larq.

    Args:
        model: a built Keras model or layer (functional, sequential or subclassed).
        input_shape: `(height, width, channels)` (or a list, one per input),
            needed when the model does not know it (e.g. an unbuilt layer).

    Returns:
        A `ModelCost` whose `layers` holds the cost of each layer by path.

    Raises:
        ValueError: `model` is not built and `input_shape` is missing.

    Example:
        >>> model = bn.baselines.get("quicknet", num_classes=10, input_shape=(32, 32, 3))
        >>> cost = bn.cost.model_cost(bn.training.binarize_weights(model))
        >>> cost.binary_macs, cost.ops, cost.size_mib
    """
    if not model.built and input_shape is None:
        raise ValueError(
            f"{model.name!r} is not built yet. Build it first by calling it on data or "
            "`model.build(...)`, or pass input_shape=(height, width, channels).")
    specs = _input_specs(model, input_shape)
    inputs = [tf.zeros(s.shape, s.dtype) for s in specs]

    def run():
        return model(inputs[0] if len(inputs) == 1 else inputs, training=False)

    if not model.built:  # build first, so that every sublayer exists before hooking
        run()
    named = [(model.name, model), *_walk(model)]
    hooked = [layer for _, layer in named if isinstance(layer, _MAC_LAYERS)]
    with _recorded_calls(hooked) as calls:
        run()
    per_layer, seen = {}, set()
    for path, layer in named:
        if isinstance(layer, tf.keras.Model) or id(layer) in seen:
            continue  # a model's own variables (e.g. SuperNet's epoch) are not weights
        seen.add(id(layer))
        cost = ModelCost()
        for weight in _own_weights(layer):
            cost += weights_cost(active_entries(weight), _weight_bits(weight))
        for output_shape, bits in calls.get(id(layer), ()):
            cost += _layer_macs(layer, output_shape, bits)
        if cost != ModelCost():  # (two layers on one path: both counted)
            per_layer[path] = per_layer.get(path, ModelCost()) + cost
    total = sum(per_layer.values(), ModelCost())
    return dataclasses.replace(total, layers=per_layer)


def conv_cost(kernel_entries: int, positions: int, input_bits: int, kernel_bits: int
              ) -> ModelCost:
    """A conv's weights and MACs: `kernel_entries` weights, each used at `positions` outputs."""
    return (weights_cost(kernel_entries, kernel_bits)
            + macs_cost(kernel_entries * positions, max(input_bits, kernel_bits)))


def batch_norm_cost(channels: int) -> ModelCost:
    """A batch norm as Larq counts it: 2 float weights per channel."""
    return weights_cost(2 * channels, FLOAT_BITS)


def strided(size: int, stride: int) -> int:
    """Output size of a "same"-padded (or 1×1 "valid") op of `stride` on `size` pixels."""
    return math.ceil(size / stride)
