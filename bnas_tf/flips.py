"""Sign-flip diagnostics of binarized kernels (AdamBNN): FF-ratio and C2I-ratio.

Over all binarized kernels with `N` latent weights in total (METHODS.md §7):

    FF-ratio(t) = Σ |sign(w_{t+1}) − sign(w_t)| / (2N)     # flips in one optimizer step
    C2I-ratio   = Σ |sign(w_end) − sign(w_init)| / (2N)    # changed vs the initial weights

with `sign(0) = +1` (for -0.0 too), as Larq's `ste_sign` binarizes. Each term
of the sum is 0 or 2, so both ratios are fractions of weights whose sign
differs. AdamBNN reports the FF-ratio rising about exponentially with weight
decay and the C2I-ratio falling linearly.

"Binarized kernels" are the kernels of Larq quantized layers (`QuantConv2D`,
`QuantDense`, `QuantDepthwiseConv2D`, `QuantSeparableConv2D`, ...) found
recursively in nested layers and models, where the kernel has its own
quantizer (`kernel_quantizer`, `depthwise_quantizer`, `pointwise_quantizer`)
or the layer has an `input_quantizer`. The second case measures stage-1
training (binary activations, real latent weights that stage 2 binarizes).

Both callbacks keep the reference signs in non-trainable boolean
`tf.Variable`s and compare them with the latent weights in one `tf.function`
over all kernels; the flip count stays in an int64 variable that Python reads
once per epoch (and once per batch only with `update_freq="batch"`).

Example:
    >>> import bnas_tf as bn
    >>> from bnas_tf.flips import ChangeToInitRatio, FlipFlopRatio
    >>> history = model.fit(x, y, epochs=10,
    ...                     callbacks=[FlipFlopRatio(), ChangeToInitRatio()])
    >>> history.history["ff_ratio"], history.history["c2i_ratio"]  # one value per epoch

References:
    - Liu et al., "How Do Adam and Training Strategies Help BNNs Optimization?",
      ICML 2021, https://arxiv.org/abs/2106.11309
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from larq import layers_base

from bnas_tf import ops

__all__ = ["FlipFlopRatio", "ChangeToInitRatio", "binarized_kernels", "sign_flip_fraction"]

log = logging.getLogger(__name__)

# (kernel attribute, quantizer attribute) of Larq's quantized layer bases.
_KERNELS = (
    ("kernel", "kernel_quantizer"),
    ("depthwise_kernel", "depthwise_quantizer"),
    ("pointwise_kernel", "pointwise_quantizer"),
)
_UPDATE_FREQS = ("epoch", "batch")


def _latent(variable):
    """The latent (real-valued) variable behind a Larq `QuantizedVariable`."""
    return getattr(variable, "latent_variable", variable)


def binarized_kernels(model: tf.keras.layers.Layer) -> list[tf.Variable]:
    """The latent kernel variables the sign-flip ratios are measured on.

    A kernel is selected when its Larq layer quantizes it (`kernel_quantizer`,
    `depthwise_quantizer` or `pointwise_quantizer` is set) or quantizes the
    layer inputs (`input_quantizer` is set). Nested layers and models are
    searched; shared variables appear once, in the order of `model.weights`.
    Plain Keras layers and Larq layers without any quantizer are excluded.

    Args:
        model: a built `tf.keras.Model` or layer.

    Returns:
        The latent `tf.Variable`s (Larq's `QuantizedVariable`s unwrapped); an
        empty list when the model has no binarized kernels.

    Raises:
        TypeError: if `model` is not a Keras layer or model.
        ValueError: if a quantized layer has not been built yet.

    Example:
        >>> n = sum(int(np.prod(v.shape)) for v in binarized_kernels(model))
    """
    if not isinstance(model, tf.keras.layers.Layer):
        raise TypeError(f"Expected a tf.keras.Model or layer, got {type(model).__name__}.")
    found: dict[Any, tf.Variable] = {}
    seen_layers: set[int] = set()
    for layer in (model, *model.submodules):
        if id(layer) in seen_layers or not isinstance(layer, layers_base.BaseLayer):
            continue
        seen_layers.add(id(layer))
        quantized_inputs = getattr(layer, "input_quantizer", None) is not None
        for kernel_name, quantizer_name in _KERNELS:
            if not (quantized_inputs or getattr(layer, quantizer_name, None) is not None):
                continue
            if not layer.built:
                raise ValueError(
                    f"Expected a built model, but the quantized layer {layer.name!r} has no "
                    "weights yet. Call `model.build(input_shape)` or run the model on a batch "
                    "before training with sign-flip callbacks."
                )
            kernel = getattr(layer, kernel_name, None)
            if isinstance(kernel, tf.Variable):
                latent = _latent(kernel)
                found.setdefault(latent.ref(), latent)
    order = {_latent(w).ref(): i for i, w in enumerate(model.weights)}
    return sorted(found.values(), key=lambda v: order.get(v.ref(), len(order)))


def _as_arrays(value) -> list[np.ndarray]:
    if isinstance(value, list | tuple):
        return [np.asarray(v) for v in value]
    return [np.asarray(value)]


def sign_flip_fraction(before, after) -> float:
    """Fraction of weights whose sign differs between two snapshots (NumPy).

    Computes `Σ |sign(after) − sign(before)| / (2N)` with `sign(0) = +1`
    (for -0.0 too), over one array or over lists of arrays (the kernels of a
    model). A handy reference for offline analysis of saved weights; the
    callbacks do not use it.

    Args:
        before: an array, or a list/tuple of arrays.
        after: the same structure and shapes as `before`.

    Returns:
        A float in [0, 1].

    Raises:
        ValueError: if the structures or shapes differ, or there are no weights.

    Example:
        >>> sign_flip_fraction(np.array([0.5, -0.0, -1.0]), np.array([-0.5, 0.0, -2.0]))
        0.3333333333333333
    """
    before_arrays, after_arrays = _as_arrays(before), _as_arrays(after)
    if len(before_arrays) != len(after_arrays):
        raise ValueError(f"Expected as many arrays after ({len(after_arrays)}) as before "
                         f"({len(before_arrays)}).")
    flips = total = 0
    for i, (b, a) in enumerate(zip(before_arrays, after_arrays, strict=True)):
        if b.shape != a.shape:
            raise ValueError(f"Expected equal shapes, got {b.shape} before and {a.shape} after "
                             f"(array {i}).")
        flips += int(np.count_nonzero((b >= 0) != (a >= 0)))
        total += b.size
    if total == 0:
        raise ValueError("Expected at least one weight, got empty arrays.")
    return flips / total


def _check_variables(variables: Iterable[tf.Variable] | None) -> tuple[tf.Variable, ...] | None:
    if variables is None:
        return None
    if isinstance(variables, tf.Variable):
        raise TypeError("Expected `variables` to be a list of tf.Variables, got a single "
                        "variable; wrap it in a list.")
    result = tuple(_latent(v) for v in variables)
    if not result:
        raise ValueError("Expected at least one variable in `variables`, got none; pass "
                         "`variables=None` to measure the model's binarized kernels.")
    for v in result:
        if not isinstance(v, tf.Variable):
            raise TypeError(f"Expected `variables` to hold tf.Variables, got {type(v).__name__}.")
        if not (v.dtype.is_floating and v.shape.is_fully_defined()):
            raise ValueError(f"Expected floating-point variables of known shape, got {v.name} "
                             f"({v.dtype.name}, shape {v.shape}).")
    return result


class _SignState:
    """Reference signs of a fixed list of variables and the compiled comparisons."""

    def __init__(self, variables: Sequence[tf.Variable]):
        self.variables = tuple(variables)
        self.key = tuple(v.ref() for v in self.variables)
        # masked-out entries of GroupMaskedQuantConv2D kernels stay 0 and never flip
        self.num_weights = sum(ops.active_entries(v) for v in self.variables)
        with tf.init_scope():
            self.signs = [tf.Variable(tf.zeros(v.shape, tf.bool), trainable=False,
                                      name=f"sign_{i}") for i, v in enumerate(self.variables)]
            self.flips = tf.Variable(tf.constant(0, tf.int64), trainable=False, name="flips")
        # Closures, not bound methods: TensorFlow counts retracing per Python function, and
        # each new state traces once, which must not look like retracing of one function.
        self.snapshot = tf.function(lambda: self._snapshot(), autograph=False)
        self.update = tf.function(lambda: self._update(), autograph=False)
        self.count_changed = tf.function(lambda: self._differing(assign=False), autograph=False)

    def _snapshot(self) -> None:
        for sign, v in zip(self.signs, self.variables, strict=True):
            sign.assign(tf.greater_equal(v, tf.zeros([], v.dtype)))

    def assign_signs(self, arrays: Sequence[np.ndarray]) -> None:
        for sign, array in zip(self.signs, arrays, strict=True):
            sign.assign(tf.greater_equal(tf.convert_to_tensor(array), 0))

    def _differing(self, assign: bool) -> tf.Tensor:
        """Number of weights whose sign differs from the stored one (then store it)."""
        counts = []
        for sign, v in zip(self.signs, self.variables, strict=True):
            now = tf.greater_equal(v, tf.zeros([], v.dtype))
            counts.append(tf.math.count_nonzero(tf.not_equal(now, sign), dtype=tf.int64))
            if assign:
                sign.assign(now)
        return tf.add_n(counts)

    def _update(self) -> tf.Tensor:
        flips = self._differing(assign=True)
        self.flips.assign_add(flips)
        return flips


class _SignRatioCallback(tf.keras.callbacks.Callback):
    """Variable resolution, sign state and TensorBoard writer shared by both ratios."""

    def __init__(self, log_dir: str | os.PathLike | None = None, *,
                 variables: Iterable[tf.Variable] | None = None):
        super().__init__()
        if log_dir is not None and not isinstance(log_dir, str | os.PathLike):
            raise TypeError(f"Expected `log_dir` to be a path or None, got {log_dir!r}.")
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self._explicit_variables = _check_variables(variables)
        self.history: list[float] = []
        self._state: _SignState | None = None
        self._writer = None
        # The batch hooks neither read logs nor need them as NumPy: spare Keras the sync.
        self._supports_tf_logs = True

    @property
    def variables(self) -> tuple[tf.Variable, ...]:
        """The measured latent variables (resolved at the start of training)."""
        if self._state is None:
            return self._explicit_variables or ()
        return self._state.variables

    @property
    def num_weights(self) -> int:
        """N: the number of measured weights (0 until training starts, unless `variables`)."""
        return sum(v.shape.num_elements() for v in self.variables)

    def _resolve(self) -> _SignState:
        variables = self._explicit_variables
        if variables is None:
            if self.model is None:
                raise ValueError(f"{type(self).__name__} has no model; pass it to `fit` or "
                                 "call `set_model` first.")
            variables = binarized_kernels(self.model)
            if not variables:
                raise ValueError(
                    f"Expected a model with binarized kernels (Larq quantized layers with a "
                    f"kernel or input quantizer), found none in {self.model.name!r}. Add "
                    "`lq.layers.Quant*` layers or pass `variables=[...]` to measure others."
                )
        key = tuple(v.ref() for v in variables)
        if self._state is None or self._state.key != key:  # reuse the traced functions
            self._state = _SignState(variables)
        return self._state

    def _open_writer(self) -> None:
        if self.log_dir is not None and self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "train"))

    def _write(self, tag: str, value: float, step: int) -> None:
        if self._writer is not None:
            with self._writer.as_default():
                tf.summary.scalar(tag, value, step=step)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def get_config(self) -> dict[str, Any]:
        """The JSON-serializable arguments (not `variables` or `initial_weights`)."""
        return {"log_dir": self.log_dir}

    @classmethod
    def from_config(cls, config: dict[str, Any]):
        return cls(**config)


class FlipFlopRatio(_SignRatioCallback):
    """Log the FF-ratio: the fraction of binarized weights whose sign flips per step.

    For each training step `t`, `FF(t) = Σ |sign(w_{t+1}) − sign(w_t)| / (2N)`
    over the `N` latent weights of all binarized kernels (see
    `binarized_kernels`), with `sign(0) = +1`. The reference signs are taken
    at the start of training and after each step, so `FF(t)` counts the
    flips of exactly that optimizer step. `logs["ff_ratio"]` at the end of an
    epoch is the mean of `FF(t)` over the epoch's steps; with
    `update_freq="batch"` each batch's `logs["ff_ratio"]` is its own `FF(t)`.

    Cost per step: one compiled comparison of all kernels with boolean sign
    copies (1 byte per weight), no host transfer unless `update_freq="batch"`.
    With `steps_per_execution > 1` Keras calls the callback once per
    execution, so a "step" then spans that many optimizer steps (a warning
    says so).

    Args:
        update_freq: `"epoch"` (default) or `"batch"` (also log each batch's
            ratio; reads the count back to Python every batch).
        log_dir: if set, write TensorBoard scalars `epoch_ff_ratio` (and
            `batch_ff_ratio`) into `log_dir/train`, beside Keras' TensorBoard.
        variables: measure these variables instead of the model's binarized
            kernels.

    Attributes:
        history: per-epoch mean FF-ratios of the last `fit`.
        batch_history: per epoch, the list of per-step FF-ratios (only with
            `update_freq="batch"`).

    Raises:
        ValueError: for an unknown `update_freq`, an empty `variables` list,
            or (when training starts) a model without binarized kernels.
        TypeError: if `variables` holds something other than tf.Variables.

    Example:
        >>> ff = FlipFlopRatio(update_freq="batch")
        >>> history = model.fit(x, y, epochs=3, callbacks=[ff])
        >>> history.history["ff_ratio"] == ff.history
        True
    """

    _log_key = "ff_ratio"

    def __init__(self, update_freq: str = "epoch", log_dir: str | os.PathLike | None = None, *,
                 variables: Iterable[tf.Variable] | None = None):
        if update_freq not in _UPDATE_FREQS:
            raise ValueError(f"Expected `update_freq` in {_UPDATE_FREQS}, got {update_freq!r}.")
        super().__init__(log_dir, variables=variables)
        self.update_freq = update_freq
        self.batch_history: list[list[float]] = []
        self._steps = 0
        self._global_step = 0

    def on_train_begin(self, logs=None):
        state = self._resolve()
        state.snapshot()
        self.history, self.batch_history = [], []
        self._global_step = 0
        self._open_writer()
        steps = getattr(self.model, "_steps_per_execution", None)  # a tf.Variable in tf-keras
        steps = 1 if steps is None else int(tf.keras.backend.get_value(steps))
        if steps > 1:
            log.warning("steps_per_execution=%d: FlipFlopRatio sees the weights only every %d "
                        "optimizer steps, so each FF-ratio spans that many steps.", steps, steps)

    def on_epoch_begin(self, epoch, logs=None):
        self._state.flips.assign(0)
        self._steps = 0
        if self.update_freq == "batch":
            self.batch_history.append([])

    def on_train_batch_end(self, batch, logs=None):
        flips = self._state.update()
        self._steps += 1
        if self.update_freq == "batch":
            ratio = int(flips) / self._state.num_weights
            self.batch_history[-1].append(ratio)
            if logs is not None:
                logs[self._log_key] = ratio
            self._write("batch_ff_ratio", ratio, self._global_step)
        self._global_step += 1

    def on_epoch_end(self, epoch, logs=None):
        if self._steps == 0:
            ratio = math.nan
        else:
            ratio = int(self._state.flips.numpy()) / (self._state.num_weights * self._steps)
        self.history.append(ratio)
        if logs is not None:
            logs[self._log_key] = ratio
        self._write("epoch_ff_ratio", ratio, epoch)

    def get_config(self) -> dict[str, Any]:
        return {"update_freq": self.update_freq, **super().get_config()}


class ChangeToInitRatio(_SignRatioCallback):
    """Log the C2I-ratio: the fraction of binarized weights whose sign changed since init.

    `C2I = Σ |sign(w_now) − sign(w_init)| / (2N)` over the `N` latent weights
    of all binarized kernels (see `binarized_kernels`), with `sign(0) = +1`,
    written to `logs["c2i_ratio"]` at the end of every epoch. `w_init` is the
    model at the start of each `fit` unless `initial_weights` is given (use
    that to measure across several `fit` calls or from an earlier stage).
    Costs one compiled comparison per epoch.

    Args:
        log_dir: if set, write the TensorBoard scalar `epoch_c2i_ratio` into
            `log_dir/train`.
        initial_weights: reference weights, one array per measured variable,
            in the order of `binarized_kernels(model)` (or of `variables`).
        variables: measure these variables instead of the model's binarized
            kernels.

    Attributes:
        history: the C2I-ratio after each epoch of the last `fit`.

    Raises:
        ValueError: for an empty `variables` list, or (when training starts)
            a model without binarized kernels or `initial_weights` that do not
            match the measured variables.
        TypeError: if `variables` holds something other than tf.Variables, or
            `initial_weights` is a single array.

    Example:
        >>> init = [v.numpy() for v in binarized_kernels(model)]
        >>> c2i = ChangeToInitRatio(initial_weights=init)
        >>> model.fit(x, y, epochs=3, callbacks=[c2i])
        >>> c2i.history  # three fractions in [0, 1], one per epoch
    """

    _log_key = "c2i_ratio"

    def __init__(self, log_dir: str | os.PathLike | None = None, *,
                 initial_weights: Sequence[Any] | None = None,
                 variables: Iterable[tf.Variable] | None = None):
        super().__init__(log_dir, variables=variables)
        if initial_weights is None:
            self.initial_weights = None
        else:
            if isinstance(initial_weights, np.ndarray | tf.Tensor | tf.Variable):
                raise TypeError("Expected `initial_weights` to be a list of arrays, one per "
                                "measured variable; got a single array.")
            self.initial_weights = [np.asarray(w) for w in initial_weights]
            if not self.initial_weights:
                raise ValueError("Expected at least one array in `initial_weights`, got none.")

    def on_train_begin(self, logs=None):
        state = self._resolve()
        if self.initial_weights is None:
            state.snapshot()
        else:
            shapes = [tuple(v.shape) for v in state.variables]
            given = [w.shape for w in self.initial_weights]
            if shapes != given:
                raise ValueError(f"Expected `initial_weights` with shapes {shapes} (the measured "
                                 f"variables, in order), got {given}.")
            state.assign_signs(self.initial_weights)
        self.history = []
        self._open_writer()

    def on_epoch_end(self, epoch, logs=None):
        ratio = int(self._state.count_changed()) / self._state.num_weights
        self.history.append(ratio)
        if logs is not None:
            logs[self._log_key] = ratio
        self._write("epoch_c2i_ratio", ratio, epoch)
