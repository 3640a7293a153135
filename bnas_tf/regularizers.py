"""Regularizers on architecture parameters α (`[edges, ops]` logits).

All are `tf.keras.regularizers.Regularizer`s: call one on an α tensor to get
a scalar loss. `SuperNet.compile(arch_regularizer=...)` adds them to the
architecture step. They compose with `+`. `Diversity` (BNAS) and
`Temperature` (BATS) shape the op distributions; `ExpectedCost` steers the
derived network's cost (OPs, latency) to a target (ProxylessNAS, FBNet) and
reports `expected_cost` in the supernet's logs (`arch_logs`).

Example:
    >>> reg = bn.regularizers.Diversity(1.0, tau=7.7) + bn.regularizers.Temperature(0.5)
    >>> float(reg(tf.zeros([14, 8])))          # uniform α: entropy log(8), KL 0
    -2.0794...
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

__all__ = ["Diversity", "Temperature", "ExpectedCost", "Combined", "get", "serialize",
           "deserialize", "entropy", "arch_logs", "DEFAULT_COST_WEIGHT"]


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


DEFAULT_COST_WEIGHT = 10.0
"""`ExpectedCost` weight: missing the target by 10 % costs 10 · log(1.1)² ≈ 0.09 nats.

Reasoning (not tuned to a run): with `weight · log(E/target)²`, the search
settles where the penalty's slope `2 · weight · log(E/target)` (nats per unit
of log cost) balances the validation loss's own pull toward dearer ops. That
pull is the gain in cross-entropy across the space's cost range, estimated
at a few tenths of a nat over a log-cost span of about 0.5 (all-pool to
all-conv cells of a search-sized `lce` network, 4.7 to 8.0 MOPs), i.e. about
0.5 nats per unit of log cost. A weight of 10 balances it about 2.5 % from
the target, leaving most of a ±10 % band for the gap between the expected
cost of soft op choices and the cost of the argmax ops the derivation keeps.
Adam (the architecture optimizer) normalizes the step size, so a larger
weight changes which term wins, not how far α moves per step.
"""


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class ExpectedCost(_ArchRegularizer):
    r"""Pull the expected cost of the derived network toward a target (ProxylessNAS, FBNet).

    The expected cost of the network the DARTS rule would derive now:

        E[cost] = fixed + Σ_edges keep_e · Σ_{o ∈ derivable} q_{e,o} · cost_{e,o},
        q_e = softmax(α_e[derivable] / T),

    and the loss is two-sided in the ratio to the target:

        loss(α) = weight · log(E[cost] / target)².

    * **Op choice.** `q_e` is the edge's tempered op distribution (the
      supernet's `softmax(α/T)`) restricted to the ops derivation may pick
      (`derivable`: every op but `none`, unless the space selects it) and
      renormalized. Counting `none` (which costs nothing, but is never
      derived) would let α lower E[cost] by raising `none` without changing
      the derived network. When every kept edge is decided (one-hot `q`),
      `E[cost]` is the derived network's cost, `bn.cost.genotype_cost` of
      `net.genotype()` (`fixed` counts both cell-input convs: node 0 keeps
      its two edges, one from each input, whenever `edges_per_node >= 2`;
      a `none` derived on both, possible in the `bnas` space, drops one).
    * **Edge choice.** `keep_e` (with `nodes`) is 1 for the `edges_per_node`
      edges per node the derivation keeps now (`bn.derive_genotype`: strength
      = edge weight × the strongest derivable op's probability, the edge
      weight `softmax(β)` of partial mixing once `follow`ing a supernet) and 0
      for the others, rather than the sum over all edges of the supernet
      (which the derivation never builds). It takes no gradient: the edges of
      one cell cost about the same per op (`bn.cost.supernet_edge_costs`), so
      the cost lever is the op choice; the validation loss picks the edges.
      Without `nodes` every row counts with weight 1.
    * **Penalty.** ProxylessNAS adds `λ · E[latency]` and FBNet multiplies the
      loss by `α · log(LAT)^β`: both only push the cost down, so a strong term
      collapses the cells to parameter-free ops (pools and skips cost ~0 OPs;
      METHODS.md §3 warns of this drift). The squared log ratio is zero at the
      target, pushes α toward cheaper ops above it and toward dearer ops below
      it, so going below the target is not rewarded; it is scale-free (the same
      weight for OPs and milliseconds, for any network size) and symmetric in
      ratio (10 % over costs what 1/1.1 under costs). Gradient w.r.t. α of a
      kept edge: `2 · weight · log(E/target) / E · q_o (cost_o − E_q[cost]) / T`.

    Args:
        weight: the penalty's factor (`bnas-tf search` uses `DEFAULT_COST_WEIGHT`);
            0 only logs.
        target: the cost to reach, in the tables' unit (> 0).
        tables: per edge and op cost, `[rows, ops]` in the order the
            regularizer is called with (a supernet's `[α_normal; α_reduce]`),
            or `{"normal": [edges, ops], "reduce": [edges, ops]}`
            (`bn.cost.edge_cost_tables`), each ≥ 0.
        fixed: the cost the op choice does not change (stem, cell inputs,
            skips, classifier: `bn.cost.supernet_edge_costs(...).fixed`).
        nodes: intermediate nodes per cell: apply the derivation's edge rule
            (rows = cell kinds × Σ_j (j + 2)); None counts every row.
        edges_per_node: edges the derivation keeps per node (DARTS: 2).
        derivable: op columns the derivation may pick (default: all).
        temperature: T of `q`; None follows the supernet's (annealed) T once
            compiled into it.
        metric: the tables' metric (a label for messages, e.g. "ops").

    Raises:
        ValueError: a weight < 0, a target ≤ 0, negative or non-finite costs,
            or tables that do not fit `nodes` / `derivable`.

    Example:
        >>> tables = bn.cost.supernet_edge_costs("lce", 5, 16, (32, 32, 3))
        >>> reg = bn.regularizers.ExpectedCost(10.0, 6e6, tables.tables("ops"),
        ...                                    fixed=tables.fixed.ops, nodes=4,
        ...                                    derivable=range(1, 8))
        >>> net.compile(arch_regularizer=[bn.regularizers.Diversity(), reg])
        >>> # or, the same from the supernet itself:
        >>> reg = bn.regularizers.ExpectedCost.for_supernet(net, 6e6, input_shape=(32, 32, 3))

    References:
        Cai et al., ProxylessNAS: Direct Neural Architecture Search on Target
        Task and Hardware, ICLR 2019, arXiv:1812.00332.
        Wu et al., FBNet: Hardware-Aware Efficient ConvNet Design via
        Differentiable Neural Architecture Search, CVPR 2019, arXiv:1812.03443.
    """

    def __init__(self, weight: float, target: float, tables, *, fixed: float = 0.0,
                 nodes: int | None = None, edges_per_node: int = 2, derivable=None,
                 temperature: float | None = None, metric: str = "cost"):
        self.weight = _finite(weight, "weight", minimum=0.0)
        self.target = _finite(target, "target", above=0.0)
        self.fixed = _finite(fixed, "fixed", minimum=0.0)
        if isinstance(tables, dict):
            tables = np.concatenate([np.asarray(tables[k], np.float64)
                                     for k in ("normal", "reduce")])
        self.tables = np.asarray(tables, dtype=np.float64)
        if self.tables.ndim != 2 or not self.tables.size:
            raise ValueError(f"Expected cost tables [rows, ops], got shape {self.tables.shape}.")
        if not np.all(np.isfinite(self.tables)) or np.any(self.tables < 0):
            raise ValueError("Expected finite costs >= 0 in the cost tables.")
        rows, num_ops = self.tables.shape
        self.derivable = None if derivable is None else [int(i) for i in derivable]
        if self.derivable is not None and (not self.derivable or len(set(self.derivable)) != len(
                self.derivable) or not all(0 <= i < num_ops for i in self.derivable)):
            raise ValueError(f"Expected derivable as distinct op columns in [0, {num_ops}), "
                             f"got {derivable!r}.")
        self.nodes = None if nodes is None else int(nodes)
        self.edges_per_node = int(edges_per_node)
        if self.edges_per_node < 1:
            raise ValueError(f"Expected edges_per_node >= 1, got {edges_per_node!r}.")
        if self.nodes is not None and (self.nodes < 1 or rows % self._edges_per_kind()):
            raise ValueError(f"Expected tables of cells with {nodes!r} nodes "
                             f"({self._edges_per_kind()} edges per cell kind), got {rows} rows.")
        if temperature is not None and not temperature > 0:
            raise ValueError(f"Expected temperature > 0 or None, got {temperature!r}.")
        self.temperature = None if temperature is None else float(temperature)
        self.metric = str(metric)
        self._temperature_variable = None
        self._edge_weights = None  # a supernet's softmax(β) per cell kind, once followed

    def _edges_per_kind(self) -> int:
        return sum(j + 2 for j in range(self.nodes))

    @classmethod
    def for_supernet(cls, net, target: float, weight: float = DEFAULT_COST_WEIGHT, *,
                     input_shape=None, metric: str = "ops", tables=None,
                     fixed: float | None = None, edges_per_node: int = 2) -> ExpectedCost:
        """The expected-cost term of `net`'s derived network (DARTS rule).

        Args:
            net: a `SuperNet` (not an `HMNASSuperNet`: its masks, not α, set
                what it derives).
            target: the cost to reach, at `net`'s width (layers, channels).
            weight: the penalty's factor.
            input_shape: `(height, width, channels)` (optional once `net` is built).
            metric: a `bn.cost.ModelCost` metric ("ops": FLOPs + BOPs/64, ...)
                for the analytic tables; ignored with `tables`.
            tables, fixed: per-edge costs in another unit (e.g. latency in
                ms, aligned with α like `bn.cost.edge_cost_tables`) and the
                fixed part in that unit.
            edges_per_node: as `net.genotype(edges_per_node=...)`.
        """
        from bnas_tf.hmnas import HMNASSuperNet

        if isinstance(net, HMNASSuperNet):
            raise ValueError(_HMNAS_MESSAGE)
        if tables is None:
            from bnas_tf import cost

            costs = cost.supernet_edge_costs(net, input_shape=input_shape)
            tables, fixed = costs.tables(metric), costs.fixed.value(metric)
        elif fixed is None:
            raise ValueError("Expected the fixed cost with explicit tables (fixed=...).")
        space = net.space
        derivable = [i for i, name in enumerate(space.op_names)
                     if name != "none" or space.selectable_none]
        return cls(weight, target, tables, fixed=fixed, nodes=space.nodes,
                   edges_per_node=edges_per_node, derivable=derivable, metric=metric)

    def follow(self, supernet) -> None:
        """Use the supernet's T (unless fixed) and, with partial mixing, its edge weights."""
        from bnas_tf.hmnas import HMNASSuperNet

        if isinstance(supernet, HMNASSuperNet):
            raise ValueError(_HMNAS_MESSAGE)
        arch = supernet.arch
        expected = (2 * arch.num_edges, arch.num_ops)
        if self.tables.shape != expected:
            raise ValueError(f"Expected cost tables of shape {expected} for this supernet "
                             f"([α_normal; α_reduce]), got {self.tables.shape}.")
        if self.temperature is None:
            self._temperature_variable = arch.temperature
        if getattr(supernet, "_edge_normalized", False):
            self._edge_weights = arch.edge_weights

    def _current_temperature(self):
        if self.temperature is not None:
            return tf.constant(self.temperature, tf.float32)
        if self._temperature_variable is None:
            raise ValueError("ExpectedCost(temperature=None) follows a SuperNet's temperature; "
                             "pass it to SuperNet.compile(arch_regularizer=...) first, or give "
                             "a temperature.")
        return tf.cast(self._temperature_variable, tf.float32)

    def keep_weights(self, alpha: tf.Tensor) -> tf.Tensor:
        """`[rows]`: 1 for the edges the derivation keeps from `alpha` now, else 0."""
        rows = _rows(alpha)
        if self.nodes is None:
            return tf.ones([self.tables.shape[0]], tf.float32)
        probs = tf.nn.softmax(rows / self._current_temperature())
        if self.derivable is not None:
            probs = tf.gather(probs, self.derivable, axis=1)
        strength = tf.reduce_max(probs, axis=1)
        if self._edge_weights is not None:
            strength *= tf.cast(tf.concat(self._edge_weights(), 0), tf.float32)
        keep, start = [], 0
        while start < self.tables.shape[0]:
            for j in range(self.nodes):
                count = j + 2
                top = tf.math.top_k(strength[start:start + count],  # ties: lower index first
                                    k=min(self.edges_per_node, count)).indices
                keep.append(tf.reduce_sum(tf.one_hot(top, count), axis=0))
                start += count
        return tf.stop_gradient(tf.concat(keep, 0))

    def expected_cost(self, alpha: tf.Tensor) -> tf.Tensor:
        """`E[cost]` (class docstring) of the concatenated α, in the tables' unit."""
        rows = _rows(alpha)
        if rows.shape[0] is not None and rows.shape != self.tables.shape:
            raise ValueError(f"Expected α of shape {self.tables.shape} (the cost tables'), got "
                             f"{rows.shape}.")
        logits, tables = rows / self._current_temperature(), tf.constant(self.tables, tf.float32)
        if self.derivable is not None:
            logits = tf.gather(logits, self.derivable, axis=1)
            tables = tf.gather(tables, self.derivable, axis=1)
        per_edge = tf.reduce_sum(tf.nn.softmax(logits) * tables, axis=1)
        return self.fixed + tf.reduce_sum(self.keep_weights(alpha) * per_edge)

    def derived_cost(self, alpha: tf.Tensor) -> tf.Tensor:
        """The cost of the derived network: each kept edge's strongest derivable op.

        `E[cost]` with one-hot `q`; for OPs tables, `bn.cost.genotype_cost` of
        the genotype `alpha` derives (see the class docstring).
        """
        rows = _rows(alpha)
        columns = list(range(self.tables.shape[1])) if self.derivable is None else self.derivable
        best = tf.gather(columns, tf.argmax(tf.gather(rows, columns, axis=1), axis=1))
        per_edge = tf.gather(tf.constant(self.tables, tf.float32), best, axis=1, batch_dims=1)
        return self.fixed + tf.reduce_sum(self.keep_weights(alpha) * per_edge)

    def __call__(self, alpha):
        ratio = tf.maximum(self.expected_cost(alpha) / self.target, 1e-6)
        return self.weight * tf.square(tf.math.log(ratio))

    def logs(self, alpha: tf.Tensor) -> dict[str, tf.Tensor]:
        """`{"expected_cost": E[cost], "derived_cost": ...}` (the tables' unit) for the logs."""
        return {"expected_cost": self.expected_cost(alpha),
                "derived_cost": self.derived_cost(alpha)}

    def get_config(self):
        return {"weight": self.weight, "target": self.target, "tables": self.tables.tolist(),
                "fixed": self.fixed, "nodes": self.nodes, "edges_per_node": self.edges_per_node,
                "derivable": self.derivable, "temperature": self.temperature,
                "metric": self.metric}


_HMNAS_MESSAGE = (
    "The expected-cost term does not apply to HM-NAS (method 'hmnas'): its derived network "
    "keeps every op and edge whose mask is on, whatever α says, so the cost follows the masks; "
    "use the sparsity terms (--sparsity, --weight-sparsity) to prune it, or method 'darts'.")


def _finite(value, name: str, *, minimum: float | None = None,
            above: float | None = None) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"Expected {name} to be a number, got {value!r}.") from None
    if isinstance(value, bool) or not math.isfinite(number) or (
            minimum is not None and number < minimum) or (above is not None and number <= above):
        bound = f">= {minimum:g}" if minimum is not None else f"> {above:g}"
        raise ValueError(f"Expected {name} to be a finite number {bound}, got {value!r}.")
    return number


def arch_logs(regularizer, alpha) -> dict[str, tf.Tensor]:
    """The step-log entries of a regularizer (or of each part of a `Combined`), e.g. `expected_cost`.

    `SuperNet` adds them to its step and epoch logs (history.json, TensorBoard).
    """
    logs = {}
    for reg in getattr(regularizer, "regularizers", [regularizer]):
        if hasattr(reg, "logs"):
            logs.update(reg.logs(alpha))
    return logs


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
                                    "ExpectedCost": ExpectedCost, "Combined": Combined})
    except TypeError as error:
        raise ValueError(f"Bad regularizer config {config!r}: {error}") from None
    if not callable(regularizer):
        raise ValueError(f"Unknown regularizer {config!r}; expected Diversity, Temperature, "
                         "ExpectedCost or Combined.")
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

