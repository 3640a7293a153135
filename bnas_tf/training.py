"""Two-stage training of binary networks (BATS evaluation, AdamBNN recipe).

Stage 1 trains binary activations with real-valued latent weights, Adam with
a linearly decaying learning rate and weight decay on conv kernels only.
Stage 2 binarizes the weights too, starts from the stage-1 weights, and
trains without weight decay. Each stage is an ordinary `model.fit`. With
`checkpoint_dir`, every epoch of each stage is checkpointed and a second call
continues after the newest checkpoint (`bnas_tf.train_checkpoints`).

Example:
    >>> model = bn.build_network(genotype, num_classes=10, layers=8, channels=36)
    >>> result = bn.train_two_stage(model, train_ds, val_ds, epochs=(30, 30))
    >>> result.model.save("TRAIN/model.keras")       # the binary (stage-2) network

References:
    Liu et al., How Do Adam and Training Strategies Help BNNs Optimization?
    (AdamBNN), ICML 2021, arXiv:2106.11309.
    Bulat et al., BATS: Binary ArchitecTure Search, ECCV 2020, arXiv:2003.01711.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence

import larq as lq
import numpy as np
import tensorflow as tf

from bnas_tf.distribute import scale_for_replicas
from bnas_tf.errors import NonFiniteError
from bnas_tf.flips import ChangeToInitRatio, binarized_kernels
from bnas_tf.train_checkpoints import StageCheckpoints, TrainingCheckpoints

__all__ = ["TwoStageResult", "train_two_stage", "with_weight_decay", "binarize_weights",
           "binary_conv_layers", "Distiller", "LearningRateLogger", "StopOnNonFinite",
           "check_finite"]

log = logging.getLogger(__name__)

_CONVS = (tf.keras.layers.Conv2D, tf.keras.layers.DepthwiseConv2D, lq.layers.QuantConv2D,
          lq.layers.QuantDepthwiseConv2D)


def binary_conv_layers(model: tf.keras.Model) -> list[tf.keras.layers.Layer]:
    """Top-level Larq conv layers that binarize their input (the binary convs)."""
    return [layer for layer in model.layers
            if isinstance(layer, (lq.layers.QuantConv2D, lq.layers.QuantDepthwiseConv2D))
            and layer.input_quantizer is not None]


def _clone(model: tf.keras.Model, edit: Callable[[tf.keras.layers.Layer, dict], dict]
           ) -> tf.keras.Model:
    """Clone `model` with `edit(layer, config) -> config` per layer; copy all weights."""
    if not isinstance(model, tf.keras.Model):
        raise TypeError(f"Expected a tf.keras.Model, got {type(model).__name__}.")

    def clone_layer(layer):
        return layer.__class__.from_config(edit(layer, layer.get_config()))

    clone = tf.keras.models.clone_model(model, clone_function=clone_layer)
    clone.set_weights(model.get_weights())
    return clone


def with_weight_decay(model: tf.keras.Model, weight_decay: float) -> tf.keras.Model:
    """A copy of `model` whose conv kernels (and nothing else) carry L2 weight decay.

    The penalty `weight_decay/2 · ‖W‖²` adds `weight_decay · W` to each conv
    kernel's gradient (PyTorch's coupled `weight_decay`). Dense layers, batch
    norm and biases get none.
    """
    if weight_decay < 0:
        raise ValueError(f"Expected weight_decay >= 0, got {weight_decay!r}.")

    def edit(layer, config):
        if isinstance(layer, _CONVS):
            key = ("depthwise_regularizer" if isinstance(layer, tf.keras.layers.DepthwiseConv2D)
                   else "kernel_regularizer")
            config[key] = (tf.keras.regularizers.serialize(tf.keras.regularizers.L2(weight_decay / 2))
                           if weight_decay else None)
        return config

    return _clone(model, edit)


def binarize_weights(model: tf.keras.Model, kernel_quantizer: str = "ste_sign"
                     ) -> tf.keras.Model:
    """A copy of `model` whose binary convs also binarize their kernels (stage 2).

    The latent weights are copied unchanged; `weight_clip` keeps them in
    [-1, 1] from the next update on (Larq's recommendation for binary kernels).
    Stage 2 has no weight decay (AdamBNN, METHODS.md §7): the copy drops the
    kernel regularizers of every conv, the real-valued ones (stem, 1×1 cell
    inputs, factorized reductions, skip projections) included.

    Args:
        model: a network with binary activations (e.g. from `build_network`).
        kernel_quantizer: `ste_sign`, or `magnitude_aware_sign` for XNOR-style
            per-channel scaling.
    """
    if kernel_quantizer not in ("ste_sign", "magnitude_aware_sign", "approx_sign"):
        raise ValueError(f"Expected kernel_quantizer 'ste_sign', 'magnitude_aware_sign' or "
                         f"'approx_sign', got {kernel_quantizer!r}.")
    targets = {id(layer) for layer in binary_conv_layers(model)}
    if not targets:
        raise ValueError("The model has no binary convolutions (Larq conv layers with an "
                         "input_quantizer); nothing to binarize.")

    def edit(layer, config):
        key = "depthwise" if isinstance(layer, tf.keras.layers.DepthwiseConv2D) else "kernel"
        if id(layer) in targets:
            config[f"{key}_quantizer"] = kernel_quantizer
            config[f"{key}_constraint"] = "weight_clip"
        if isinstance(layer, _CONVS):
            config[f"{key}_regularizer"] = None
        return config

    return _clone(model, edit)


class LearningRateLogger(tf.keras.callbacks.Callback):
    """Put the optimizer's current learning rate into `logs["learning_rate"]`."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        optimizer = self.model.optimizer
        lr = optimizer.learning_rate if not hasattr(optimizer, "_decayed_lr") else \
            optimizer._decayed_lr(tf.float32)
        if callable(lr):
            lr = lr(optimizer.iterations)
        logs["learning_rate"] = float(tf.keras.backend.get_value(lr))


LIKELY_CAUSES = ("Likely causes: a learning rate too high for this network, or NaN or infinite "
                 "values in the input images.")


class StopOnNonFinite(tf.keras.callbacks.Callback):
    """Stop `fit` at the first training step whose loss is NaN or infinite.

    Checks the running loss in the logs after every training batch, as
    `tf.keras.callbacks.TerminateOnNaN` does, but raises `NonFiniteError`
    instead of ending the epoch normally: the callbacks that save at the end
    of an epoch (checkpoints, genotypes, models) never see the values.

    Args:
        keys: the log entries to check (a SuperNet also logs `arch_loss`).
        context: named before the epoch in the message, e.g. "stage 1".

    Raises:
        NonFiniteError: naming the epoch, the step and the likely causes.

    Example:
        >>> model.fit(train, epochs=10, callbacks=[StopOnNonFinite()])
    """

    def __init__(self, keys: Iterable[str] = ("loss",), *, context: str | None = None):
        super().__init__()
        self.keys = tuple(keys)
        self.context = context
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        bad = {key: float(logs[key]) for key in self.keys
               if logs and logs.get(key) is not None and not math.isfinite(float(logs[key]))}
        if bad:
            steps = (self.params or {}).get("steps")
            where = (f"{self.context + ', ' if self.context else ''}epoch {self._epoch + 1}, "
                     f"step {batch + 1}" + (f" of {steps}" if steps else ""))
            values = ", ".join(f"{key} {value}" for key, value in bad.items())
            raise NonFiniteError(f"Training diverged at {where}: {values}. Stopped before "
                                 f"anything was saved from it. {LIKELY_CAUSES}")


def check_finite(variables: Iterable[tf.Variable], what: str) -> None:
    """Raise `NonFiniteError` if any of `variables` holds a NaN or infinite value.

    Args:
        variables: the variables to check (e.g. `model.weights`, α).
        what: how the error names them ("the trained weights").
    """
    bad = [v.name for v in variables if not np.all(np.isfinite(np.asarray(v.numpy(), float)))]
    if bad:
        listed = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise NonFiniteError(f"{what} hold NaN or infinite values ({listed}); not saved. "
                             f"{LIKELY_CAUSES}")


@tf.keras.utils.register_keras_serializable(package="bnas_tf")
class Distiller(tf.keras.Model):
    """Train `student` against a real-valued `teacher`'s outputs (ReActNet, AdamBNN).

    `loss = (1 − α)·CE(y, s) + α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + R` with
    student logits `s`, teacher logits `t` and the student's regularization
    losses `R` (its weight decay), which count fully whatever α is; α = 1 is
    ReActNet's pure distributional loss. Calling the distiller calls the student.

    Args:
        student: the model being trained (updated in place).
        teacher: a Keras model giving logits for the same inputs (frozen).
        alpha: weight of the distillation term.
        temperature: softening temperature T.
    """

    def __init__(self, student: tf.keras.Model, teacher: tf.keras.Model, alpha: float = 1.0,
                 temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= alpha <= 1.0 or temperature <= 0:
            raise ValueError(f"Expected 0 <= alpha <= 1 and temperature > 0, got {alpha!r}, "
                             f"{temperature!r}.")
        self.student, self.teacher = student, teacher
        self.alpha, self.distill_temperature = float(alpha), float(temperature)
        self.teacher.trainable = False

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def train_step(self, data):
        x, y, _ = tf.keras.utils.unpack_x_y_sample_weight(data)
        teacher = self.teacher(x, training=False)
        t = self.distill_temperature
        with tf.GradientTape() as tape:
            student = self.student(x, training=True)
            hard = self.compiled_loss(y, student)
            soft = tf.reduce_mean(tf.keras.losses.kl_divergence(
                tf.nn.softmax(teacher / t), tf.nn.softmax(student / t))) * t * t
            loss = (1.0 - self.alpha) * hard + self.alpha * soft
            if self.student.losses:  # weight decay is not part of either target
                loss += scale_for_replicas(tf.add_n(self.student.losses))  # as Keras does
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        self.compiled_metrics.update_state(y, student)
        return {**{m.name: m.result() for m in self.metrics}, "loss": loss,
                "distillation_loss": soft}


@dataclasses.dataclass
class TwoStageResult:
    """What `train_two_stage` produced.

    Attributes:
        model: the stage-2 network (binary weights and activations).
        stage1_model: the stage-1 network (binary activations, real weights).
        history: `{"stage1": {metric: [per epoch]}, "stage2": {...}}`.
        test: `{"stage1": {metric: value}, "stage2": {...}}` when test data was given.
    """

    model: tf.keras.Model
    stage1_model: tf.keras.Model
    history: dict
    test: dict


def _batch_size(dataset: tf.data.Dataset) -> int | None:
    spec = dataset.element_spec
    first = spec[0] if isinstance(spec, tuple) else spec
    return first.shape[0] if hasattr(first, "shape") else None


def _steps(dataset: tf.data.Dataset, steps_per_epoch: int | None) -> int:
    if steps_per_epoch:
        return steps_per_epoch
    count = int(dataset.cardinality())
    if count <= 0:
        raise ValueError("The training dataset has no known length (infinite or unknown "
                         "cardinality); pass steps_per_epoch=.")
    return count


def _stage_callbacks(callbacks, stage: int) -> list:
    if callbacks is None:
        return []
    return list(callbacks(stage) if callable(callbacks) else callbacks)


class _EpochCheckpoint(tf.keras.callbacks.Callback):
    """After every epoch (the last callback): check the weights, record the logs, checkpoint."""

    def __init__(self, checkpoints: StageCheckpoints, network: tf.keras.Model, stage: int):
        super().__init__()
        self.checkpoints, self.network, self.stage = checkpoints, network, stage

    def on_epoch_end(self, epoch, logs=None):
        check_finite(self.network.weights, f"After stage {self.stage}, epoch {epoch + 1}, the "
                                           "weights")
        self.checkpoints.save(epoch, logs)


class _DataOrder:
    """Make a resumed run see the training images in an uninterrupted run's order.

    A seeded `shuffle(..., reshuffle_each_iteration=True)` (and `Dataset.random`,
    which seeds the augmentation) draws a new order each time an iterator of
    the dataset is made, and tf-keras' `fit` makes one when it starts and one
    per epoch (for a dataset of known length, without `steps_per_epoch`). A
    resumed process has made fewer; `before_fit` makes the missing ones (no
    element is read), so that epoch E of a resumed stage gets the order epoch E
    of an uninterrupted run got. With `steps_per_epoch` (`dataset` None) Keras
    keeps one iterator for all epochs and nothing is aligned.
    """

    def __init__(self, dataset: tf.data.Dataset | None):
        self.dataset = dataset
        self.planned = 0  # iterators an uninterrupted run has made before this point
        self.made = 0  # iterators made in this process

    def before_fit(self, initial_epoch: int) -> None:
        if self.dataset is None:
            return
        for _ in range(self.planned + initial_epoch - self.made):
            iter(self.dataset)
        self.made = max(self.made, self.planned + initial_epoch)

    def after_stage(self, initial_epoch: int, epochs: int, fitted: bool) -> None:
        if fitted:
            self.made += 1 + epochs - initial_epoch
        self.planned += 1 + epochs


def _history_of(entries: list[dict]) -> dict:
    """Per-epoch log entries as Keras' `History.history` (`{metric: [per epoch]}`)."""
    keys = list(dict.fromkeys(k for entry in entries for k in entry if k != "epoch"))
    return {k: [entry.get(k, math.nan) for entry in entries] for k in keys}


def _fit_stage(model, train_ds, val_ds, *, stage, epochs, learning_rate, steps, steps_per_epoch,
               teacher, callbacks, verbose, loss, checkpoints=None, order=None) -> dict:
    schedule = tf.keras.optimizers.schedules.PolynomialDecay(
        learning_rate, decay_steps=max(1, epochs * steps), end_learning_rate=0.0, power=1.0)
    optimizer = tf.keras.optimizers.legacy.Adam(schedule)
    trainer = Distiller(model, teacher) if teacher is not None else model
    trainer.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    callbacks = [StopOnNonFinite(context=f"stage {stage}"), LearningRateLogger(), *callbacks]
    initial_epoch, references = 0, []
    if checkpoints is not None:
        reference = checkpoints.reference(binarized_kernels(trainer))  # before the restore
        initial_epoch = checkpoints.restore(model, optimizer)
        if initial_epoch > epochs:
            raise ValueError(f"The checkpoints in {checkpoints.restore_from} hold {initial_epoch} "
                             f"epochs of stage {stage}, more than the {epochs} asked for.")
        if initial_epoch == epochs:
            log.info("Stage %d finished its %d epochs before (%s): restored, not trained again",
                     stage, epochs, checkpoints.restore_from)
        elif initial_epoch:
            log.info("Resuming stage %d at epoch %d of %d (%s)", stage, initial_epoch + 1,
                     epochs, checkpoints.restore_from)
            # the C2I-ratio measures from the stage's start, not from the restored weights
            references = [c for c in callbacks
                          if isinstance(c, ChangeToInitRatio) and c.initial_weights is None]
            for callback in references:
                callback.initial_weights = reference
        callbacks.append(_EpochCheckpoint(checkpoints, model, stage))
    fitted = initial_epoch < epochs
    history = {}
    try:
        if fitted:
            if order is not None:
                order.before_fit(initial_epoch)
            history = trainer.fit(train_ds, validation_data=val_ds, epochs=epochs,
                                  initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                                  callbacks=callbacks, verbose=verbose).history
    finally:
        for callback in references:  # a list of callbacks may serve both stages
            callback.initial_weights = None
    if order is not None:
        order.after_stage(initial_epoch, epochs, fitted)
    if teacher is not None:
        model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    return history if checkpoints is None else _history_of(checkpoints.entries)


def train_two_stage(model: tf.keras.Model, train_ds: tf.data.Dataset,
                    val_ds: tf.data.Dataset | None = None, *, epochs: Sequence[int] = (1, 1),
                    learning_rate: float | None = None, weight_decay: float = 5e-6,
                    kernel_quantizer: str = "ste_sign", teacher: tf.keras.Model | None = None,
                    test_ds: tf.data.Dataset | None = None, steps_per_epoch: int | None = None,
                    callbacks=None, verbose: int = 1,
                    checkpoint_dir: str | os.PathLike | TrainingCheckpoints | None = None
                    ) -> TwoStageResult:
    """Train `model` in two stages and return both trained networks.

    Stage 1: a copy of `model` with weight decay on conv kernels; binary
    activations, real weights. Stage 2: `binarize_weights` of the stage-1
    network (same latent values), no weight decay. Both: Adam whose learning
    rate decays linearly to 0 over the stage; sparse cross-entropy on logits.

    Args:
        model: a network with binary activations (e.g. `build_network(...)`),
            used as the template and initial weights; it is not modified.
        train_ds: batches `(images, labels)`.
        val_ds: validation batches (`val_*` per epoch), or None.
        epochs: `(stage1_epochs, stage2_epochs)`; 0 skips a stage.
        learning_rate: initial Adam learning rate (default 1e-3 · batch/256).
        weight_decay: stage-1 decay on conv kernels (AdamBNN: 5e-6).
        kernel_quantizer: stage-2 weight binarizer (`magnitude_aware_sign`
            adds per-channel scaling).
        teacher: optional real-valued Keras model for knowledge distillation.
        test_ds: evaluated after each stage (`TwoStageResult.test`).
        steps_per_epoch: needed only when `train_ds` has no known length.
        callbacks: a list for both stages, or `stage (1 or 2) -> list`.
        verbose: `fit` verbosity.
        checkpoint_dir: checkpoint every epoch of each stage there
            (`bnas_tf.train_checkpoints`), and continue after the newest
            checkpoints found: a finished stage is restored, not trained
            again; the learning-rate decay goes on from the restored step.
            Called again with the same arguments and data (a larger epoch
            count of the current stage stretches its decay from there on),
            it gives the result of an uninterrupted call: the same images in
            the same order per epoch (unless `steps_per_epoch` is given), the
            same `history` (all epochs), and a `ChangeToInitRatio` without
            `initial_weights` measuring from the stage's start.

    Under a distribution strategy, build `model` in `strategy.scope()`; both
    stages' copies are then made in the same scope (`model.distribute_strategy`)
    and the datasets' batch size is the global batch.

    Select on held-out data: pass a validation split of the training data as
    `val_ds` (`bnas_tf.data.holdout`), and the test split only as `test_ds`,
    for the final accuracy.

    Returns:
        A `TwoStageResult`.

    Raises:
        NonFiniteError: a training loss became NaN or infinite (`StopOnNonFinite`
            stops at that step), or with `checkpoint_dir` the weights after an
            epoch (nothing is checkpointed from them).
        ValueError: bad `epochs`, a network without binary convolutions, or
            checkpoints that do not fit `epochs` (more epochs than asked for, or
            stage 2 begun before stage 1 finished).

    Example:
        >>> result = train_two_stage(model, train, val, epochs=(30, 30),
        ...                          checkpoint_dir="TRAIN/checkpoints")  # killed: call again
        >>> len(result.history["stage1"]["loss"])
        30
    """
    strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
    if checkpoint_dir is not None and not isinstance(checkpoint_dir, TrainingCheckpoints):
        checkpoint_dir = TrainingCheckpoints(checkpoint_dir)
    with strategy.scope():
        return _train_two_stage(model, train_ds, val_ds, epochs=epochs,
                                learning_rate=learning_rate, weight_decay=weight_decay,
                                kernel_quantizer=kernel_quantizer, teacher=teacher,
                                test_ds=test_ds, steps_per_epoch=steps_per_epoch,
                                callbacks=callbacks, verbose=verbose, checkpoints=checkpoint_dir)


def _train_two_stage(model, train_ds, val_ds, *, epochs, learning_rate, weight_decay,
                     kernel_quantizer, teacher, test_ds, steps_per_epoch, callbacks, verbose,
                     checkpoints=None) -> TwoStageResult:
    if len(epochs) != 2 or any(int(e) < 0 for e in epochs):
        raise ValueError(f"Expected epochs=(stage1, stage2) with non-negative integers, got "
                         f"{epochs!r}.")
    if not binary_conv_layers(model):
        raise ValueError("The model has no binary convolutions; two-stage training is for "
                         "binary networks (build one with bnas_tf.build_network).")
    if checkpoints is not None and checkpoints.epochs_done(2) \
            and checkpoints.epochs_done(1) < int(epochs[0]):
        raise ValueError(f"The checkpoints in {checkpoints.restore_from} hold stage-2 epochs, "
                         f"but only {checkpoints.epochs_done(1)} of the {int(epochs[0])} "
                         "stage-1 epochs: stage 2 began from another stage 1.")
    steps = _steps(train_ds, steps_per_epoch)
    if learning_rate is None:
        learning_rate = 1e-3 * (_batch_size(train_ds) or 256) / 256
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    history, test = {}, {}
    common = dict(steps=steps, steps_per_epoch=steps_per_epoch, teacher=teacher,
                  verbose=verbose, loss=loss, learning_rate=learning_rate,
                  order=_DataOrder(train_ds if steps_per_epoch is None else None))
    stage1 = with_weight_decay(model, weight_decay)
    stage2 = None
    for stage, n_epochs in ((1, int(epochs[0])), (2, int(epochs[1]))):
        if stage == 2:
            stage2 = binarize_weights(stage1, kernel_quantizer)
        current = stage1 if stage == 1 else stage2
        if n_epochs:
            history[f"stage{stage}"] = _fit_stage(
                current, train_ds, val_ds, stage=stage, epochs=n_epochs,
                callbacks=_stage_callbacks(callbacks, stage),
                checkpoints=None if checkpoints is None else checkpoints.stage(stage), **common)
        else:
            current.compile(optimizer=tf.keras.optimizers.legacy.Adam(learning_rate),
                            loss=loss, metrics=["accuracy"])
            history[f"stage{stage}"] = {}
        if test_ds is not None:
            test[f"stage{stage}"] = current.evaluate(test_ds, verbose=0, return_dict=True)
    return TwoStageResult(stage2, stage1, history, test)
