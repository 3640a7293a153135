"""Tests for bnas_tf.regularizers: the diversity (BNAS) and temperature (BATS) losses on α."""

from __future__ import annotations

import bnas_tf as bn  # first: selects Keras 2 before TensorFlow is imported

# isort: split
import json

import numpy as np
import pytest
import tensorflow as tf

from bnas_tf import regularizers as R

EDGES, OPS = 14, 8


def _softmax(a):
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _entropy(p):
    return -np.sum(p * np.log(p), axis=-1)


def _alpha(seed=0, scale=1.0, shape=(EDGES, OPS)):
    return np.random.default_rng(seed).normal(0.0, scale, shape)


# Hand-set α: a uniform edge, a peaked edge, a two-way tie and a mild edge.
HAND_ALPHA = np.array([
    [0.0, 0.0, 0.0, 0.0],
    [5.0, 0.0, 0.0, -1.0],
    [2.0, 2.0, -3.0, -3.0],
    [0.3, -0.2, 0.1, 0.0],
])


# -------------------------------------------------------------------------- Diversity


@pytest.mark.parametrize("strength,tau", [(1.0, 7.7), (0.3, 2.0), (2.5, 10.0)])
def test_diversity_value(strength, tau):
    reg = R.Diversity(strength, tau=tau)
    h = _entropy(_softmax(HAND_ALPHA)).mean()
    assert h == pytest.approx((np.log(4) + _entropy(_softmax(HAND_ALPHA[1:])).sum()) / 4)
    for epoch in (0, 1, 5, 30):
        reg.set_epoch(epoch)
        expected = -strength * np.exp(-epoch / tau) * h
        assert float(reg(tf.constant(HAND_ALPHA, tf.float32))) == pytest.approx(expected, rel=1e-5)
        assert float(reg.weight()) == pytest.approx(strength * np.exp(-epoch / tau), rel=1e-6)


def test_diversity_defaults_and_uniform_alpha():
    reg = R.Diversity()
    assert reg.get_config() == {"strength": 1.0, "tau": 7.7}
    assert float(reg(tf.zeros([EDGES, OPS]))) == pytest.approx(-np.log(OPS), rel=1e-6)
    reg.set_epoch(7.7)
    assert float(reg(tf.zeros([EDGES, OPS]))) == pytest.approx(-np.log(OPS) / np.e, rel=1e-5)


def test_diversity_random_alpha_and_stacked_cells():
    alpha = _alpha(1, 2.0, (2, EDGES, OPS))  # normal and reduce cells stacked
    reg = R.Diversity(0.5, tau=3.0)
    reg.set_epoch(2)
    expected = -0.5 * np.exp(-2 / 3) * _entropy(_softmax(alpha.reshape(-1, OPS))).mean()
    assert float(reg(alpha.astype(np.float32))) == pytest.approx(expected, rel=1e-5)


def test_diversity_rejects_bad_tau():
    with pytest.raises(ValueError, match="tau > 0"):
        R.Diversity(1.0, tau=0.0)


# ------------------------------------------------------------------------ Temperature


def _kl_loss(alpha, strength, t):
    p, q = _softmax(alpha / t), _softmax(alpha)
    return strength * np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=-1))


@pytest.mark.parametrize("strength,t", [(1.0, 0.2), (0.5, 0.5), (3.0, 0.9), (1.0, 2.0)])
@pytest.mark.parametrize("alpha", [HAND_ALPHA, _alpha(2, 1.5)], ids=["hand", "random"])
def test_temperature_value_and_gradient(alpha, strength, t):
    reg = R.Temperature(strength, temperature=t)
    variable = tf.Variable(alpha, dtype=tf.float32)
    with tf.GradientTape() as tape:
        loss = reg(variable)
    assert float(loss) == pytest.approx(_kl_loss(alpha, strength, t), rel=1e-4, abs=1e-6)
    grad = tape.gradient(loss, variable).numpy()
    expected = strength * (_softmax(alpha) - _softmax(alpha / t)) / alpha.shape[0]
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)


def test_temperature_is_zero_for_uniform_alpha_and_positive_otherwise():
    reg = R.Temperature(1.0, temperature=0.2)
    assert float(reg(tf.zeros([EDGES, OPS]))) == pytest.approx(0.0, abs=1e-7)
    assert float(reg(tf.constant(HAND_ALPHA[1:], tf.float32))) > 0.05
    assert float(R.Temperature(1.0, temperature=1.0)(
        tf.constant(HAND_ALPHA, tf.float32))) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("make", [lambda: R.Diversity(1.0), lambda: R.Temperature(1.0, 0.2)],
                         ids=["diversity", "temperature"])
def test_regularizers_accept_float64_alpha(make):
    reg = make()
    expected = float(reg(tf.constant(HAND_ALPHA, tf.float32)))
    assert float(reg(HAND_ALPHA)) == pytest.approx(expected, rel=1e-5)


def test_temperature_without_supernet_raises():
    reg = R.Temperature(1.0)
    assert reg.temperature is None
    with pytest.raises(ValueError, match=r"temperature=None.*SuperNet.compile"):
        reg(tf.constant(HAND_ALPHA, tf.float32))
    with pytest.raises(ValueError, match="temperature > 0"):
        R.Temperature(1.0, temperature=-0.5)


def test_temperature_follows_a_temperature_variable():
    class FakeNet:  # what follow() reads from a compiled SuperNet
        class arch:  # noqa: N801
            temperature = tf.Variable(0.5, trainable=False)

    reg = R.Temperature(2.0)
    reg.follow(FakeNet)
    alpha = tf.constant(HAND_ALPHA, tf.float32)
    assert float(reg(alpha)) == pytest.approx(_kl_loss(HAND_ALPHA, 2.0, 0.5), rel=1e-5)
    FakeNet.arch.temperature.assign(0.25)
    assert float(reg(alpha)) == pytest.approx(_kl_loss(HAND_ALPHA, 2.0, 0.25), rel=1e-5)
    fixed = R.Temperature(2.0, temperature=0.3)
    fixed.follow(FakeNet)  # an explicit temperature wins
    assert float(fixed(alpha)) == pytest.approx(_kl_loss(HAND_ALPHA, 2.0, 0.3), rel=1e-5)


# --------------------------------------------------------------------------- Combined


def test_combined_sums():
    d, t = R.Diversity(0.7, tau=4.0), R.Temperature(1.5, temperature=0.3)
    d.set_epoch(3)
    alpha = tf.constant(_alpha(3), tf.float32)
    combined = d + t
    assert isinstance(combined, R.Combined)
    assert combined.regularizers == [d, t]
    assert float(combined(alpha)) == pytest.approx(float(d(alpha)) + float(t(alpha)), rel=1e-6)
    three = combined + R.Diversity(0.1)
    assert isinstance(three, R.Combined) and len(three.regularizers) == 3  # flattened
    expected = (-0.7 * np.exp(-3 / 4) - 0.1) * _entropy(_softmax(_alpha(3))).mean() + _kl_loss(
        _alpha(3), 1.5, 0.3)
    assert float(three(alpha)) == pytest.approx(expected, rel=1e-5)
    three.set_epoch(0)
    assert float(d.epoch) == 0.0


# ----------------------------------------------------------------- serialization, get

ROUND_TRIP = {
    "diversity": lambda: R.Diversity(0.4, tau=3.5),
    "temperature": lambda: R.Temperature(2.0, temperature=0.25),
    "temperature_follow": lambda: R.Temperature(0.5),
    "combined": lambda: R.Diversity(0.4, tau=3.5) + R.Temperature(2.0, temperature=0.25),
}


@pytest.mark.parametrize("case", list(ROUND_TRIP))
def test_config_round_trip(case):
    reg = ROUND_TRIP[case]()
    config = reg.get_config()
    clone = type(reg).from_config(config)
    assert type(clone) is type(reg) and clone.get_config() == config
    serialized = json.loads(json.dumps(R.serialize(reg)))  # JSON-only values
    revived = R.deserialize(serialized)
    assert type(revived) is type(reg) and revived.get_config() == config
    assert type(R.get(serialized)) is type(reg)
    assert type(tf.keras.regularizers.deserialize(serialized)) is type(reg)  # Keras registry
    if case != "temperature_follow":
        alpha = tf.constant(_alpha(4), tf.float32)
        for other in (clone, revived):
            assert float(other(alpha)) == pytest.approx(float(reg(alpha)), rel=1e-6)


def test_get():
    d = R.Diversity()
    assert R.get(None) is None
    assert R.get(d) is d
    assert isinstance(R.get("diversity"), R.Diversity)
    assert isinstance(R.get("Temperature"), R.Temperature)
    assert R.get("diversity").get_config() == {"strength": 1.0, "tau": 7.7}
    from_dict = R.get({"class_name": "Diversity", "config": {"strength": 2.0, "tau": 3.0}})
    assert from_dict.get_config() == {"strength": 2.0, "tau": 3.0}
    combined = R.get(["diversity", R.Temperature(1.0, 0.2)])
    assert isinstance(combined, R.Combined)
    assert [type(r) for r in combined.regularizers] == [R.Diversity, R.Temperature]
    assert R.get([]) is None


@pytest.mark.parametrize("junk", ["entropy", "", 42, 3.5, object()])
def test_get_rejects_junk(junk):
    with pytest.raises(ValueError, match="Could not interpret architecture regularizer"):
        R.get(junk)


def test_get_rejects_unknown_class_dict():
    with pytest.raises(ValueError):
        R.get({"class_name": "Nope", "config": {}})


def test_get_rejects_bad_dicts():
    with pytest.raises(ValueError):
        R.get({"foo": 1})
    with pytest.raises((TypeError, ValueError), match="bogus"):
        R.get({"class_name": "Diversity", "config": {"bogus": 1}})


# ------------------------------------------------------------- effect on the search


def _descend(regularizer, steps=40, lr=5.0, seed=5, reward_scale=0.3):
    """SGD on α for a shared noisy task loss (+ the regularizer); mean entropy per step."""
    rng = np.random.default_rng(seed)
    alpha = tf.Variable(rng.normal(0.0, 0.1, (EDGES, OPS)), dtype=tf.float32)
    reward = tf.constant(rng.normal(0.0, reward_scale, (EDGES, OPS)), tf.float32)
    entropies = []
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(tf.reduce_sum(tf.nn.softmax(alpha) * reward, -1))
            if regularizer is not None:
                loss += regularizer(alpha)
        alpha.assign_sub(lr * tape.gradient(loss, alpha))
        entropies.append(float(np.mean(_entropy(_softmax(alpha.numpy().astype(np.float64))))))
    return np.array(entropies)


def test_temperature_makes_entropy_fall_faster():
    plain = _descend(None)
    tempered = _descend(R.Temperature(1.0, temperature=0.2))
    start = np.log(OPS)
    assert plain[-1] < start - 0.1  # the task loss alone commits, slowly
    assert tempered[-1] < plain[-1] - 0.5
    assert np.all(tempered[5:] < plain[5:])  # faster all along, not only at the end
    assert np.all(np.diff(tempered) < 0)


def test_diversity_pushes_entropy_up():
    plain = _descend(None)
    diverse = _descend(R.Diversity(1.0, tau=7.7))
    assert np.all(diverse[5:] > plain[5:])
    assert diverse[-1] > plain[-1] + 0.1
    # from a peaked start, the entropy bonus alone raises the entropy toward log(ops)
    alpha = tf.Variable(_alpha(6, 2.0), dtype=tf.float32)
    reg = R.Diversity(1.0)
    h0 = float(np.mean(_entropy(_softmax(alpha.numpy().astype(np.float64)))))
    for _ in range(30):
        with tf.GradientTape() as tape:
            loss = reg(alpha)
        alpha.assign_sub(1.0 * tape.gradient(loss, alpha))
    h1 = float(np.mean(_entropy(_softmax(alpha.numpy().astype(np.float64)))))
    assert h0 < h1 <= np.log(OPS) + 1e-6
    assert h1 - h0 > 0.2


def test_module_exports():
    assert set(R.__all__) >= {"Diversity", "Temperature", "Combined", "get", "serialize",
                              "deserialize"}
    assert bn.regularizers is R
