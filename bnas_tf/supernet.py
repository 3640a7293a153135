"""The search supernet: a Keras model with a bilevel `train_step`.

Example:
    >>> space = bn.SearchSpace.get("lce")
    >>> net = bn.SuperNet(space, num_classes=10, layers=5, channels=16, temperature=0.2)
    >>> net.compile(optimizer=tf.keras.optimizers.legacy.Adam(1e-3),
    ...             arch_regularizer=bn.regularizers.Diversity(1.0, tau=7.7),
    ...             metrics=["accuracy"])
    >>> net.fit(bn.data.search_pairs(x, y, batch_size=64), epochs=50,
    ...         validation_data=(x_test, y_test))
    >>> genotype = net.genotype()

`fit` takes batches `((x_train, y_train), (x_val, y_val))` from two disjoint
halves of the training data (`bnas_tf.data.search_pairs`). Each step first
updates α on the validation batch (architecture step), then the network
weights on the training batch (weight step), as in DARTS.
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from bnas_tf import decision, labels, ops
from bnas_tf import regularizers as regularizers_lib
from bnas_tf.distribute import num_replicas, scale_for_replicas
from bnas_tf.errors import DataError
from bnas_tf.genotype import Genotype, derive_genotype
from bnas_tf.layers import ArchitectureParameters, SearchCell
from bnas_tf.mixing import architecture_gradients_only
from bnas_tf.search_space import DEFAULT_SPACE, SearchSpace, warn_if_not_deployable

__all__ = ["SuperNet", "reduction_indices", "MIXING_MODES"]

MIXING_MODES = ("all", "partial", "gumbel")

log = logging.getLogger(__name__)


def reduction_indices(layers: int) -> tuple[int, ...]:
    """Cells that halve the resolution: at 1/3 and 2/3 of the depth (DARTS)."""
    return tuple(sorted({layers // 3, 2 * layers // 3}))


def _logit_loss(loss):
    if loss is None or loss in ("sparse_categorical_crossentropy",):
        return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if loss == "categorical_crossentropy":
        return tf.keras.losses.CategoricalCrossentropy(from_logits=True)
    return loss


def _learning_rate(optimizer) -> tf.Tensor:
    if hasattr(optimizer, "_decayed_lr"):  # legacy optimizers
        return optimizer._decayed_lr(tf.float32)
    lr = optimizer.learning_rate
    if callable(lr):
        lr = lr(optimizer.iterations)
    return tf.cast(lr, tf.float32)


def _per_replica_share(logs: dict) -> dict:
    """Each replica's logs divided by the number of replicas.

    Keras sums the step outputs of all replicas (its "auto" reduction off
    TPUs), and a metric read inside a replica gives that replica's running
    value; the sum of the shares is then the mean over replicas, which is the
    global value when the replicas see equally many examples (the search's
    `drop_remainder` batches). Training epochs end with exact values anyway
    (`SuperNet.get_metrics_result`).
    """
    replicas = num_replicas()
    if replicas == 1:
        return logs
    return {k: v / replicas for k, v in logs.items()}


class _SearchState(tf.keras.callbacks.Callback):
    """Keeps the supernet's epoch, search time, warm-up switch and Gumbel τ in step with `fit`.

    `search_time` is the fractional epoch (epoch + batch / steps), which the
    `Diversity` regularizer decays with. The architecture step starts after
    `warmup_epochs` epochs and `warmup_fraction` of the `fit` call's steps
    (the train function is retraced once when it switches on). With
    `mixing="gumbel"`, τ falls linearly from the first to the second value of
    `gumbel_temperature` over all steps of the `fit` call's epochs (per epoch
    when the number of steps is unknown).
    """

    def __init__(self, net: SuperNet):
        super().__init__()
        self.net = net
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self.net.epoch.assign(epoch)
        self.net.search_time.assign(float(epoch))
        if not self.params.get("steps"):
            self._set_arch_enabled(epoch >= self.net.warmup_epochs and (
                epoch >= self.net.warmup_fraction * self.params.get("epochs", 1)))
            if self.net.mixing == "gumbel":
                self._set_tau(epoch / max(1, self.params.get("epochs", 1) - 1))

    def on_train_batch_begin(self, batch, logs=None):
        steps = self.params.get("steps")
        if not steps:
            return
        step = self._epoch * steps + batch
        self.net.search_time.assign(self._epoch + batch / steps)
        total = self.params.get("epochs", 1) * steps
        self._set_arch_enabled(self._epoch >= self.net.warmup_epochs
                               and step >= round(self.net.warmup_fraction * total))
        if self.net.mixing == "gumbel":
            self._set_tau(step / max(1, total - 1))

    def _set_arch_enabled(self, enabled: bool) -> None:
        if enabled != self.net._arch_enabled:
            self.net._arch_enabled = enabled
            self.net.train_function = self.net.make_train_function(force=True)

    def _set_tau(self, progress: float) -> None:
        start, end = self.net.gumbel_temperature
        self.net.arch.gumbel_temperature.assign(start + (end - start) * min(1.0, progress))


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class SuperNet(tf.keras.Model):
    """Mixed-op supernet over a binary search space (DARTS/BATS/BNAS).

    Stem (real-valued 3×3 conv + BN), `layers` cells with reductions at 1/3
    and 2/3 of the depth, global average pooling and a dense classifier that
    outputs logits. Each edge mixes all ops with `softmax(α/T)`; all normal
    cells share `α_normal`, all reduction cells `α_reduce`.

    Args:
        space: a `SearchSpace`, its name (`bats`, `bnas`, `lce`) or config;
            default `lce`, whose networks LCE deploys with binary kernels (a
            space whose binary convs LCE keeps float logs a warning).
        num_classes: classifier outputs.
        layers: number of cells.
        channels: channels per node in the first cells (doubled at reductions).
        temperature: softmax temperature T (BATS default 0.2; 1.0 = DARTS).
        cell_skip: add the BNAS inter-cell skip connection.
        stem_multiplier: stem channels = `stem_multiplier · channels`.
        seed: seed of the α initializer (and of the Gumbel noise).
        mixing: how an edge mixes its ops in training (METHODS.md §10):
            `"all"` runs every op on every edge (DARTS/BATS); `"partial"` runs
            them on `1/partial_channels` of the channels, with edge
            normalization (PC-DARTS); `"gumbel"` samples one op per edge and
            step and runs only that one (GDAS). Validation and inference run
            the same partial mix, resp. each edge's most likely op.
        partial_channels: K of `"partial"` mixing (PC-DARTS: 4); must divide
            `channels`.
        edge_normalization: with `"partial"`, weight the edges into each
            node by `softmax(β)` (learned with α); derivation ranks edges by
            edge weight × op probability and writes the edge weights into the
            genotype.
        gumbel_temperature: `(start, end)` of the Gumbel-softmax τ of
            `"gumbel"` mixing, annealed linearly over each `fit` (GDAS: 10 → 0.1);
            separate from the BATS temperature T, which shapes the sampled
            distribution `softmax(α/T)`.

    Example:
        >>> net = bn.SuperNet("bats", num_classes=10, layers=8, channels=16, mixing="gumbel")
        >>> net = bn.SuperNet("lce", num_classes=10, mixing="partial", partial_channels=4)

    Attributes:
        arch: the `ArchitectureParameters` layer (α and T).
        arch_variables: α variables, updated by the architecture step only.
        weight_variables: all other trainable variables (weight step only).
        epoch: non-trainable variable holding the current epoch.
        search_time: non-trainable variable holding the fractional epoch
            (epoch + batch / steps), which `bn.regularizers.Diversity` decays with.
    """

    def __init__(self, space: SearchSpace | str | dict = DEFAULT_SPACE, num_classes: int = 10,
                 layers: int = 8, channels: int = 16, *, temperature: float = 0.2,
                 cell_skip: bool = True, stem_multiplier: int = 3, seed: int | None = None,
                 mixing: str = "all", partial_channels: int = 4, edge_normalization: bool = True,
                 gumbel_temperature: tuple[float, float] = (10.0, 0.1), **kwargs):
        super().__init__(**kwargs)
        for name, value in (("num_classes", num_classes), ("layers", layers),
                            ("channels", channels), ("stem_multiplier", stem_multiplier),
                            ("partial_channels", partial_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected {name} to be a positive integer, got {value!r}.")
        if mixing not in MIXING_MODES:
            raise ValueError(f"Unknown mixing {mixing!r}; expected one of "
                             f"{', '.join(repr(m) for m in MIXING_MODES)}.")
        if mixing == "partial" and channels % partial_channels:
            raise ValueError(f"partial_channels={partial_channels} must divide channels="
                             f"{channels} (each mixed op runs on channels / partial_channels).")
        gumbel_temperature = tuple(float(t) for t in gumbel_temperature)
        if len(gumbel_temperature) != 2 or min(gumbel_temperature) <= 0:
            raise ValueError("Expected gumbel_temperature as (start, end), both > 0, got "
                             f"{gumbel_temperature!r}.")
        self.space = SearchSpace.get(space)
        self.num_classes, self.num_layers, self.channels = num_classes, layers, channels
        self.cell_skip, self.stem_multiplier, self.seed = cell_skip, stem_multiplier, seed
        self.mixing, self.partial_channels = mixing, partial_channels
        self.edge_normalization = bool(edge_normalization)
        self.gumbel_temperature = gumbel_temperature
        self.arch = self._make_arch(temperature, seed)
        self.stem = ops.ConvBN(stem_multiplier * channels, 3, name="stem")
        self.cells = []
        c_prev, filters, reduction_prev = stem_multiplier * channels, channels, False
        reductions = reduction_indices(layers)
        for i in range(layers):
            reduction = i in reductions
            filters = filters * 2 if reduction else filters
            self.cells.append(self._make_cell(filters, reduction, reduction_prev, c_prev,
                                              f"cell_{i}"))
            c_prev, reduction_prev = self.space.nodes * filters, reduction
        warn_if_not_deployable(self.space, [cell.filters for cell in self.cells])
        self.global_pool = tf.keras.layers.GlobalAveragePooling2D()
        # float32 logits also under a mixed-precision policy (numerically safe loss)
        self.classifier = tf.keras.layers.Dense(num_classes, name="classifier", dtype="float32")
        self.epoch = tf.Variable(0, trainable=False, dtype=tf.int64, name="search_epoch")
        self.search_time = tf.Variable(0.0, trainable=False, name="search_time")
        self.arch_optimizer = None
        self.arch_regularizer = None
        self.arch_weight_decay = 0.0
        self.warmup_epochs = 0
        self.warmup_fraction = 0.0
        self.second_order = False
        self._arch_enabled = True
        self._check_labels = False  # compile: class-index labels checked in each step
        self._loss_tracker = tf.keras.metrics.Mean(name="loss")
        self._arch_loss_tracker = tf.keras.metrics.Mean(name="arch_loss")

    # -- construction hooks (overridden by bnas_tf.hmnas.HMNASSuperNet) -------------------

    def _make_arch(self, temperature: float, seed: int | None) -> ArchitectureParameters:
        return ArchitectureParameters(
            self.space.num_edges, self.space.num_ops, temperature=temperature, seed=seed,
            nodes=self.space.nodes, edge_normalization=self._edge_normalized,
            gumbel=self.mixing == "gumbel", gumbel_temperature=self.gumbel_temperature[0],
            name="arch", dtype="float32")

    def _make_cell(self, filters: int, reduction: bool, reduction_prev: bool,
                   in_channels: int, name: str) -> SearchCell:
        return SearchCell(self.space, filters, reduction, reduction_prev,
                          in_channels=in_channels, cell_skip=self.cell_skip,
                          partial_channels=self.partial_channels if self.mixing == "partial"
                          else 1, single_path=self.mixing == "gumbel", name=name)

    @property
    def _edge_normalized(self) -> bool:
        return self.mixing == "partial" and self.edge_normalization

    # -- architecture ----------------------------------------------------------------------

    @property
    def temperature(self) -> float:
        return float(self.arch.temperature.numpy())

    @temperature.setter
    def temperature(self, value: float) -> None:
        if value <= 0:
            raise ValueError(f"Expected temperature > 0, got {value!r}.")
        self.arch.temperature.assign(value)

    @property
    def arch_variables(self) -> list[tf.Variable]:
        """α, and the edge logits β of partial-channel mixing."""
        return [*self.arch.alphas, *self.arch.betas]

    @property
    def weight_variables(self) -> list[tf.Variable]:
        arch = {id(v) for v in self.arch.trainable_weights}
        return [v for v in self.trainable_weights if id(v) not in arch]

    def op_probabilities(self, tempered: bool = True) -> dict[str, np.ndarray]:
        """`{"normal": [edges, ops], "reduce": [edges, ops]}` op probabilities."""
        t = self.arch.temperature if tempered else 1.0
        return {kind: tf.nn.softmax(a / t).numpy()
                for kind, a in zip(("normal", "reduce"), self.arch.alphas, strict=False)}

    def edge_weights(self) -> dict[str, np.ndarray] | None:
        """`{"normal": [edges], "reduce": [edges]}` edge weights `softmax(β_j)`, or None.

        Only partial-channel mixing with edge normalization learns them.
        """
        if not self._edge_normalized:
            return None
        return {kind: w.numpy() for kind, w in zip(("normal", "reduce"),
                                                   self.arch.edge_weights(), strict=True)}

    def genotype(self, edges_per_node: int = 2, warn: bool = True) -> Genotype:
        """Derive the genotype with the DARTS rule from the current α (see `derive_genotype`).

        With edge normalization (`mixing="partial"`) edges rank by edge weight ×
        op probability and keep their edge weight (PC-DARTS). The genotype
        carries each edge's decision margin (`bnas_tf.decision`); with `warn`,
        a mostly undecided genotype and a normal cell of parameter-free ops
        only are logged as warnings.
        """
        probs = self.op_probabilities()
        genotype = derive_genotype(probs["normal"], probs["reduce"], self.space,
                                   edges_per_node=edges_per_node,
                                   edge_weights=self.edge_weights())
        if warn:
            for problem in decision.genotype_warnings(genotype, genotype.decision):
                log.warning(problem)
        return genotype

    # -- forward ---------------------------------------------------------------------------

    def call(self, inputs, training=None):
        if inputs.shape.rank != 4:
            raise ValueError(f"Expected images of shape (batch, height, width, channels), "
                             f"got shape {inputs.shape}.")
        s0 = s1 = self.stem(inputs, training=training)
        mix = self._cell_mixing(training)
        for cell in self.cells:
            s0, s1 = s1, cell([s0, s1], training=training, **mix[cell.reduction])
        return self.classifier(self.global_pool(s1))

    def _cell_mixing(self, training) -> dict[bool, dict]:
        """Keyword arguments of normal (False) and reduction (True) cells for one forward pass."""
        if self.mixing == "gumbel":
            draws = self.arch.sample() if training else self.arch.argmax_ops()
            kwargs = [{"op_weights": w, "op_indices": i} for w, i in draws]
        else:
            kwargs = [{"op_weights": w} for w in self.arch.op_weights()]
        if self._edge_normalized:
            for k, edge_weights in zip(kwargs, self.arch.edge_weights(), strict=True):
                k["edge_weights"] = edge_weights
        return {False: kwargs[0], True: kwargs[1]}

    # -- training --------------------------------------------------------------------------

    def compile(self, optimizer=None, arch_optimizer=None, loss=None, metrics=None, *,
                arch_regularizer=None, arch_weight_decay: float = 1e-3, warmup_epochs: int = 0,
                warmup_fraction: float = 0.0, second_order: bool = False, **kwargs):
        """Configure both optimizers and the architecture objective.

        Args:
            optimizer: weight optimizer (default: legacy Adam 1e-3, AdamBNN).
            arch_optimizer: α optimizer (default: legacy Adam(3e-4, β=(0.5, 0.999))).
            loss: classification loss on logits (default sparse cross-entropy,
                `from_logits=True`; cross-entropy names are read as logits).
            metrics: Keras metrics on the weight step's training batch.
            arch_regularizer: a `bnas_tf.regularizers` object, a list of them,
                or None; added to the architecture loss on all α.
            arch_weight_decay: L2 factor on α (DARTS: 1e-3), as PyTorch Adam's
                `weight_decay` (gradient += decay · α).
            warmup_epochs: epochs at the start with weight steps only.
            warmup_fraction: share of each `fit` call's steps, from its first
                epoch, with weight steps only (see `bnas_tf.budget`).
            second_order: unrolled DARTS gradient (one virtual SGD step and a
                finite-difference Hessian-vector product) instead of first order.
        """
        if optimizer is None:
            optimizer = tf.keras.optimizers.legacy.Adam(1e-3)
        if arch_optimizer is None:
            arch_optimizer = tf.keras.optimizers.legacy.Adam(3e-4, beta_1=0.5, beta_2=0.999)
        super().compile(optimizer=optimizer, loss=_logit_loss(loss), metrics=metrics, **kwargs)
        self._check_labels = labels.is_sparse_loss(_logit_loss(loss))
        self.arch_optimizer = tf.keras.optimizers.get(arch_optimizer)
        self.arch_regularizer = regularizers_lib.get(arch_regularizer)
        if self.arch_regularizer is not None and hasattr(self.arch_regularizer, "follow"):
            self.arch_regularizer.follow(self)
        if arch_weight_decay < 0 or warmup_epochs < 0:
            raise ValueError("Expected arch_weight_decay >= 0 and warmup_epochs >= 0, got "
                             f"{arch_weight_decay!r} and {warmup_epochs!r}.")
        if not 0 <= warmup_fraction < 1:
            raise ValueError(f"Expected 0 <= warmup_fraction < 1, got {warmup_fraction!r}.")
        self.arch_weight_decay = float(arch_weight_decay)
        self.warmup_epochs = int(warmup_epochs)
        self.warmup_fraction = float(warmup_fraction)
        if second_order and self.distribute_strategy.num_replicas_in_sync > 1:
            raise ValueError(
                "second_order=True is not supported with more than one replica (its virtual "
                "weight step assigns per-replica weights); use the first-order search under "
                "a distribution strategy.")
        self.second_order = bool(second_order)
        self._arch_enabled = (int(self.epoch.numpy()) >= self.warmup_epochs
                              and not self.warmup_fraction)

    @property
    def metrics(self):
        metrics = [self._loss_tracker, self._arch_loss_tracker]
        if self.compiled_metrics is not None:
            metrics += self.compiled_metrics.metrics
        return metrics

    def arch_regularization(self) -> tf.Tensor:
        """Architecture regularizers on all α (concatenated) plus the α (and β) weight decay.

        Unscaled: under a distribution strategy the architecture step divides
        it by the number of replicas (their gradients are summed).
        """
        alphas = tf.concat(self.arch.alphas, axis=0)
        total = 0.5 * self.arch_weight_decay * tf.add_n(
            [tf.reduce_sum(tf.square(v)) for v in (alphas, *self.arch.betas)])
        if self.arch_regularizer is not None:
            total += self.arch_regularizer(alphas)
        return total

    def _task_loss(self, x, y, training=True):
        y_pred = self(x, training=training)
        return self.compiled_loss(y, y_pred), y_pred

    def _arch_gradients(self, x_t, y_t, x_v, y_v):
        with tf.GradientTape() as tape:
            val_loss, _ = self._task_loss(x_v, y_v)  # mean over the global batch
            objective = val_loss + scale_for_replicas(self.arch_regularization())
        if not self.second_order:
            with architecture_gradients_only():  # single-path edges skip kernel gradients
                return val_loss, tape.gradient(objective, self.arch_variables)
        return val_loss, self._unrolled_gradients(x_t, y_t, x_v, y_v)

    def _unrolled_gradients(self, x_t, y_t, x_v, y_v):
        """DARTS second-order α gradient; weights and BN moving statistics restored afterwards.

        The virtual step and the finite differences run the network in
        training mode at weights other than the current ones; their batch
        statistics must not enter the moving averages.
        """
        weights, alphas = self.weight_variables, self.arch_variables
        xi = _learning_rate(self.optimizer)
        backup = [tf.identity(w) for w in weights]
        statistics = [v for m in self.submodules if isinstance(m, tf.keras.layers.BatchNormalization)
                      for v in (m.moving_mean, m.moving_variance)]
        statistics_backup = [tf.identity(v) for v in statistics]

        def zeros_for_none(grads, variables):
            return [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables, strict=False)]

        with tf.GradientTape() as tape:
            train_loss, _ = self._task_loss(x_t, y_t)
        for w, g in zip(weights, zeros_for_none(tape.gradient(train_loss, weights), weights), strict=False):
            w.assign_sub(xi * g)                                  # w' = w − ξ ∇w L_train
        with tf.GradientTape() as tape:
            val_loss, _ = self._task_loss(x_v, y_v)
            objective = val_loss + self.arch_regularization()
        grads = zeros_for_none(tape.gradient(objective, alphas + weights), alphas + weights)
        d_alpha, d_weights = grads[: len(alphas)], grads[len(alphas):]
        eps = 0.01 / (tf.linalg.global_norm(d_weights) + 1e-12)

        def train_alpha_grad(sign):
            for w, b, d in zip(weights, backup, d_weights, strict=False):
                w.assign(b + sign * eps * d)
            with tf.GradientTape() as t:
                loss, _ = self._task_loss(x_t, y_t)
            return zeros_for_none(t.gradient(loss, alphas), alphas)

        plus, minus = train_alpha_grad(1.0), train_alpha_grad(-1.0)
        for w, b in zip(weights, backup, strict=False):
            w.assign(b)
        for v, b in zip(statistics, statistics_backup, strict=True):
            v.assign(b)
        return [d - xi * (p - m) / (2.0 * eps) for d, p, m in zip(d_alpha, plus, minus, strict=False)]

    def arch_step(self, x_train, y_train, x_val, y_val) -> tf.Tensor:
        """One architecture step: update α only, on the validation batch.

        First order: `∇α [L_val(w, α) + regularizers]`; with `second_order`,
        the unrolled DARTS gradient (which also uses the training batch).
        Returns the validation loss (under a strategy: this replica's share
        of the global mean, as Keras' `compiled_loss` returns it).
        """
        x_train, y_train, x_val, y_val = (tf.convert_to_tensor(t)
                                          for t in (x_train, y_train, x_val, y_val))
        arch_loss, grads = self._arch_gradients(x_train, y_train, x_val, y_val)
        self.arch_optimizer.apply_gradients(zip(grads, self.arch_variables, strict=False))
        return arch_loss

    def weight_step(self, x_train, y_train) -> tuple[tf.Tensor, tf.Tensor]:
        """One weight step: update network weights only, on the training batch.

        Returns the loss and the predictions.
        """
        x_train, y_train = tf.convert_to_tensor(x_train), tf.convert_to_tensor(y_train)
        weights = self.weight_variables
        with tf.GradientTape() as tape:
            y_pred = self(x_train, training=True)
            loss = self.compiled_loss(y_train, y_pred, regularization_losses=self.losses)
        self.optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights, strict=False))
        return loss, y_pred

    @tf.autograph.experimental.do_not_convert
    def train_step(self, data):
        try:
            (x_t, y_t), (x_v, y_v) = data
        except (TypeError, ValueError):
            raise DataError(
                "SuperNet.fit expects batches ((x_train, y_train), (x_val, y_val)) from two "
                "halves of the training data; build them with "
                "bnas_tf.data.search_pairs(x, y, batch_size=...).") from None
        if self._check_labels:  # bnas_tf.labels: a clear DataError, not the loss kernel's
            y_t, y_v = labels.checked(self.num_classes, y_t, y_v)
        replicas = num_replicas()  # losses are shares of the global mean: report the mean
        if self._arch_enabled:
            self._arch_loss_tracker.update_state(self.arch_step(x_t, y_t, x_v, y_v) * replicas)
        loss, y_pred = self.weight_step(x_t, y_t)
        self._loss_tracker.update_state(loss * replicas)
        self.compiled_metrics.update_state(y_t, y_pred)
        return _per_replica_share({**{m.name: m.result() for m in self.metrics},
                                   **self._arch_logs()})

    def _arch_logs(self) -> dict:
        margins = decision.tf_edge_margins(tf.concat(self.arch.op_weights(), 0), self.space)
        logs = {"entropy": self.arch.mean_entropy(),
                "alpha_entropy": self.arch.mean_entropy(tempered=False),
                "temperature": tf.identity(self.arch.temperature),
                "decided": tf.reduce_mean(tf.cast(margins >= decision.DECIDED_MARGIN,
                                                  tf.float32)),
                "margin": tf.reduce_mean(margins)}
        if self.mixing == "gumbel":
            logs["gumbel_temperature"] = tf.identity(self.arch.gumbel_temperature)
        # e.g. expected_cost of bn.regularizers.ExpectedCost
        logs.update(regularizers_lib.arch_logs(self.arch_regularizer,
                                               tf.concat(self.arch.alphas, 0)))
        return logs

    def get_metrics_result(self):
        """Epoch logs: the metrics over all replicas, entropies and temperature.

        Keras replaces a step's (summed) logs by these at the end of each
        training epoch when the keys agree, which makes them exact under a
        distribution strategy.
        """
        return {**super().get_metrics_result(), **self._arch_logs()}

    @tf.autograph.experimental.do_not_convert
    def test_step(self, data):
        x, y, sample_weight = tf.keras.utils.unpack_x_y_sample_weight(data)
        if self._check_labels:
            (y,) = labels.checked(self.num_classes, y, where="validation batch")
        y_pred = self(x, training=False)
        loss = self.compiled_loss(y, y_pred, sample_weight)
        self._loss_tracker.update_state(loss * num_replicas())
        self.compiled_metrics.update_state(y, y_pred, sample_weight)
        return _per_replica_share({m.name: m.result() for m in self.metrics
                                   if m is not self._arch_loss_tracker})

    def fit(self, x=None, y=None, *args, callbacks=None, **kwargs):
        """`tf.keras.Model.fit` on `((x_train, y_train), (x_val, y_val))` batches.

        Labels outside `[0, num_classes)` raise a DataError (`bnas_tf.labels`).
        """
        if self.arch_optimizer is None:
            raise RuntimeError("Call SuperNet.compile(...) before fit().")
        if y is not None or not isinstance(x, tf.data.Dataset):
            raise DataError(
                "SuperNet.fit expects a tf.data.Dataset of ((x_train, y_train), (x_val, y_val)) "
                "batches, got " + (f"x={type(x).__name__}, y={type(y).__name__}" if y is not None
                                   else type(x).__name__)
                + ". Build it with bnas_tf.data.search_pairs(x, y, batch_size=...).")
        spec = x.element_spec
        if not (isinstance(spec, tuple) and len(spec) == 2
                and all(isinstance(s, tuple) and len(s) == 2 for s in spec)):
            raise DataError(
                "SuperNet.fit expects dataset elements ((x_train, y_train), (x_val, y_val)), "
                f"got {spec}. Build them with bnas_tf.data.search_pairs(x, y, batch_size=...).")
        if self._check_labels:
            labels.check_fit_data(self.num_classes, x, kwargs.get("validation_data"))
        callbacks = [_SearchState(self), *(callbacks or [])]
        image = spec[0][0].shape[1:]
        if not self.built and image.is_fully_defined():
            with self.distribute_strategy.scope():
                self(tf.zeros([1, *image]))
        self._create_optimizer_slots()
        with labels.translate_errors(self.num_classes):
            return super().fit(x, None, *args, callbacks=callbacks, **kwargs)

    def _create_optimizer_slots(self) -> None:
        """Create both optimizers' slot variables before the step is traced.

        A `tf.function` that creates variables on its first call is traced a
        second time; the bilevel step is large (most of all with single-path
        mixing), so creating the slots first halves the tracing time.
        """
        if not self.built:
            return
        with self.distribute_strategy.scope():
            for optimizer, variables in ((self.optimizer, self.weight_variables),
                                         (self.arch_optimizer, self.arch_variables)):
                if hasattr(optimizer, "_create_all_weights"):  # legacy optimizers
                    optimizer._create_all_weights(variables)
                elif hasattr(optimizer, "build"):
                    optimizer.build(variables)

    def get_config(self):
        return {"space": self.space.get_config(), "num_classes": self.num_classes,
                "layers": self.num_layers, "channels": self.channels,
                "temperature": self.arch.initial_temperature, "cell_skip": self.cell_skip,
                "stem_multiplier": self.stem_multiplier, "seed": self.seed,
                "mixing": self.mixing, "partial_channels": self.partial_channels,
                "edge_normalization": self.edge_normalization,
                "gumbel_temperature": list(self.gumbel_temperature), "name": self.name}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)
