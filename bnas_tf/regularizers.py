"""Regularizers on architecture parameters α (`[edges, ops]` logits).

Both are `tf.keras.regularizers.Regularizer`s: call one on an α tensor to get
a scalar loss. `SuperNet.compile(arch_regularizer=...)` adds them to the
architecture step. They compose with `+`.

Example:
    >>> reg = bn.regularizers.Diversity(1.0, tau=7.7) + bn.regularizers.Temperature(0.5)
    >>> float(reg(tf.zeros([14, 8])))          # uniform α: entropy log(8), KL 0
    -2.0794...
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["Diversity", "Temperature", "Combined", "get", "serialize", "deserialize",
           "entropy"]


def entropy(probs: tf.Tensor) -> tf.Tensor:
    """Entropy (nats) of each row of a probability table; 0·log 0 = 0."""
    return -tf.reduce_sum(tf.math.multiply_no_nan(tf.math.log(probs), probs), axis=-1)


def _rows(alpha: tf.Tensor) -> tf.Tensor:
    alpha = tf.cast(alpha, tf.float32)
    return tf.reshape(alpha, [-1, tf.shape(alpha)[-1]])


class _ArchRegularizer(tf.keras.regularizers.Regularizer):
    """Base: `+` composition; `follow(supernet)` to share its epoch and temperature."""

    def __add__(self, other):
        return Combined([self, other])

    def follow(self, supernet) -> None:  # pragma: no cover - overridden where needed
        """Share state (epoch, temperature) with a compiled `SuperNet`."""


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class Diversity(_ArchRegularizer):
    r"""Entropy bonus that keeps many ops alive early in the search (BNAS).

    `loss(α) = −λ · exp(−t/τ) · mean_edges H(softmax(α))`, with `t` the epoch
    (fractional once compiled into a `SuperNet`: its `search_time`).
    Minimizing it raises the entropy of each edge's op distribution, so the
    weights of all ops get trained before α commits; the bonus decays with
    time constant τ (epochs). Gradient: `−λ·exp(−t/τ)·∂H/∂α / edges`.

    Args:
        strength: λ (default 1.0, as the public BNAS code).
        tau: τ in epochs (default 7.7).

    Example:
        >>> reg = bn.regularizers.Diversity(1.0, tau=7.7)
        >>> reg.set_epoch(3)
        >>> loss = reg(alpha)

    References:
        Kim et al., Learning Architectures for Binary Networks, ECCV 2020,
        arXiv:2002.06963.
    """

    def __init__(self, strength: float = 1.0, tau: float = 7.7):
        if tau <= 0:
            raise ValueError(f"Expected tau > 0 (epochs), got {tau!r}.")
        self.strength, self.tau = float(strength), float(tau)
        self._epoch = None  # created lazily so construction never needs a TF runtime

    @property
    def epoch(self) -> tf.Variable:
        if self._epoch is None:
            self._epoch = tf.Variable(0.0, trainable=False, name="diversity_epoch")
        return self._epoch

    def set_epoch(self, epoch: float) -> None:
        self.epoch.assign(float(epoch))

    def follow(self, supernet) -> None:
        self._epoch = supernet.search_time

    def weight(self) -> tf.Tensor:
        """Current factor `λ · exp(−t/τ)`."""
        return self.strength * tf.exp(-tf.cast(self.epoch, tf.float32) / self.tau)

    def __call__(self, alpha):
        return -self.weight() * tf.reduce_mean(entropy(tf.nn.softmax(_rows(alpha))))

    def get_config(self):
        return {"strength": self.strength, "tau": self.tau}


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class Temperature(_ArchRegularizer):
    r"""Distillation toward each edge's own sharpened distribution (BATS).

    `loss(α) = s · mean_edges KL(stop_gradient(softmax(α/T)) ‖ softmax(α))`.
    The supernet's mixed ops already use `softmax(α/T)`; this term also pulls
    the untempered distribution toward its sharpened self ("borrowed from
    knowledge distillation"), so each edge commits to one op and the mean
    entropy of `softmax(α)` falls faster. Gradient w.r.t. α:
    `s · (softmax(α) − softmax(α/T)) / edges`.

    Args:
        strength: s.
        temperature: T < 1, or None to follow the supernet's (annealed)
            temperature once compiled.

    References:
        Bulat et al., BATS: Binary ArchitecTure Search, ECCV 2020, arXiv:2003.01711.
    """

    def __init__(self, strength: float = 1.0, temperature: float | None = None):
        if temperature is not None and temperature <= 0:
            raise ValueError(f"Expected temperature > 0 or None, got {temperature!r}.")
        self.strength = float(strength)
        self.temperature = None if temperature is None else float(temperature)
        self._temperature_variable = None

    def follow(self, supernet) -> None:
        if self.temperature is None:
            self._temperature_variable = supernet.arch.temperature

    def _current_temperature(self):
        if self.temperature is not None:
            return tf.constant(self.temperature, tf.float32)
        if self._temperature_variable is None:
            raise ValueError("Temperature(temperature=None) follows a SuperNet's temperature; "
                             "pass it to SuperNet.compile(arch_regularizer=...) first, or give "
                             "a temperature.")
        return tf.cast(self._temperature_variable, tf.float32)

    def __call__(self, alpha):
        rows = _rows(alpha)
        target = tf.stop_gradient(tf.nn.softmax(rows / self._current_temperature()))
        log_q = tf.nn.log_softmax(rows)
        kl = tf.reduce_sum(tf.math.multiply_no_nan(tf.math.log(target), target)
                           - target * log_q, axis=-1)
        return self.strength * tf.reduce_mean(kl)

    def get_config(self):
        return {"strength": self.strength, "temperature": self.temperature}


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class Combined(_ArchRegularizer):
    """Sum of several architecture regularizers (what `a + b` builds)."""

    def __init__(self, regularizers):
        flat = []
        for reg in regularizers:
            reg = get(reg)
            flat.extend(reg.regularizers if isinstance(reg, Combined) else [reg])
        self.regularizers = flat

    def follow(self, supernet) -> None:
        for reg in self.regularizers:
            if hasattr(reg, "follow"):
                reg.follow(supernet)

    def set_epoch(self, epoch: float) -> None:
        for reg in self.regularizers:
            if hasattr(reg, "set_epoch"):
                reg.set_epoch(epoch)

    def __call__(self, alpha):
        return tf.add_n([reg(alpha) for reg in self.regularizers])

    def get_config(self):
        return {"regularizers": [serialize(r) for r in self.regularizers]}


def serialize(regularizer) -> dict:
    return tf.keras.regularizers.serialize(regularizer)


def deserialize(config: dict):
    try:
        regularizer = tf.keras.regularizers.deserialize(
            config, custom_objects={"Diversity": Diversity, "Temperature": Temperature,
                                    "Combined": Combined})
    except TypeError as error:
        raise ValueError(f"Bad regularizer config {config!r}: {error}") from None
    if not callable(regularizer):
        raise ValueError(f"Unknown regularizer {config!r}; expected Diversity, Temperature "
                         "or Combined.")
    return regularizer


def get(identifier):
    """None, a regularizer, a config dict, a name (`diversity`, `temperature`) or a list.

    Raises:
        ValueError: if the identifier cannot be interpreted.
    """
    if identifier is None or isinstance(identifier, tf.keras.regularizers.Regularizer):
        return identifier
    if isinstance(identifier, (list, tuple)):
        return Combined(identifier) if identifier else None
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        known = {"diversity": Diversity, "temperature": Temperature}
        if identifier.lower() in known:
            return known[identifier.lower()]()
    if callable(identifier):
        return identifier
    raise ValueError(f"Could not interpret architecture regularizer identifier: {identifier!r}. "
                     "Use bnas_tf.regularizers.Diversity(...) or Temperature(...).")

