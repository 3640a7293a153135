"""A complete two-stage training run of a searched genotype or a baseline, written to a directory.

`run_training` is what `bnas-tf train` does. The output directory gets:

* `model/`        – the trained binary network (SavedModel; `bn.load_model`),
* `metrics.json`  – per stage and epoch: losses, accuracies, `val_*` on the
  held-out validation split, FF-ratio, C2I-ratio, learning rate; the test
  accuracy after each stage (`stageN.test`); at the top level the final
  network's `val_accuracy`/`val_loss` (held-out split) and
  `test_accuracy`/`test_loss` (test split),
* `config.json`   – the run's settings,
* `logs/stage1`, `logs/stage2` – TensorBoard event files.

Data: `validation_fraction` of each class's training images (default 10 %,
seeded by `seed`; `bnas_tf.data.holdout`) is held out for `val_*`; the
network trains on the rest. The test split is evaluated only at the end of
each stage, for the reported accuracy.

Before anything is written, the settings (at construction), the genotype,
the data, the network and the output directory are checked; a run that fails
afterwards (e.g. a loss that became NaN, `bnas_tf.errors.NonFiniteError`, or
an interruption) removes what it wrote.

Under a distribution strategy (`bnas_tf.distribute`) the network is built in
its scope, `batch_size` is the global batch, and in a multi-worker run only
the chief writes `output_dir` (other workers save into temporary folders).
With more than one replica, each epoch drops its last partial training batch:
TensorFlow 2.21 crashes (heap corruption) on a partial batch split over the
replicas of these networks.

Example:
    >>> result = run_training(TrainConfig(genotype="RUN/genotype.json", data_dir="data",
    ...                                   epochs=(2, 2), limit=2000), "TRAIN")
    >>> result = run_training(TrainConfig(baseline="quicknet", data_dir="data",
    ...                                   epochs=(2, 2), limit=2000), "TRAIN_QUICKNET")
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from bnas_tf import baselines, distribute, recipes
from bnas_tf import data as data_lib
from bnas_tf._io import atomic_write_text
from bnas_tf._runs import (
    MAX_SEED,
    RunDirectory,
    SettingError,
    check_choice,
    check_float,
    check_int,
    check_output_dir,
)
from bnas_tf.builder import build_network, count_params
from bnas_tf.errors import NonFiniteError
from bnas_tf.flips import ChangeToInitRatio, FlipFlopRatio
from bnas_tf.genotype import Genotype
from bnas_tf.saving import load_model
from bnas_tf.search_space import warn_if_not_deployable
from bnas_tf.supernet import reduction_indices
from bnas_tf.training import check_finite, train_two_stage

__all__ = ["TrainConfig", "TrainResult", "run_training", "save_model_atomically"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainConfig:
    """Settings of a training run (defaults: METHODS.md §7, a small network).

    Exactly one of `genotype` (a genotype.json) and `baseline` (a name of
    `bnas_tf.baselines.names()`) is given. `layers`, `channels`, `cell_skip`
    shape genotype networks; `width` sets a baseline's base channels (None:
    the published width). `image_size` resizes the images to a square size;
    `stem` is "cifar" or "imagenet" (None: "cifar" for genotype networks, for
    baselines chosen from the input size).

    `channels`, `cell_skip`, `weight_decay`, `kernel_quantizer` and
    `learning_rate` left None take the value of `recipe` (see
    `bnas_tf.recipes.Recipe.train_settings`), or of `bnas_tf.recipes.DEFAULTS`
    when no recipe is named: 32 channels, inter-cell skips, weight decay 5e-6,
    the genotype space's weight quantizer, Adam 1e-3 · batch/256. Explicit
    values override the recipe's. Train with the recipe the genotype was
    searched with: the cell template (`cell_skip`) must match.
    `validation_fraction` is the share of each class's training images held
    out for `val_*` (`bnas_tf.data.holdout`).

    Numbers and names are checked at construction (at least one epoch in
    all; the file and the network choice are checked by `run_training`).

    Raises:
        ValueError: a setting out of range or an unknown name.

    Example:
        >>> TrainConfig(genotype="RUN/genotype.json", recipe="bats").channels
        36
    """

    genotype: str | None = None
    baseline: str | None = None
    dataset: str = "cifar10"
    data_dir: str | None = None
    download: bool = True
    limit: int | None = None
    recipe: str | None = None
    layers: int = 8
    channels: int | None = None
    cell_skip: bool | None = None
    width: int | None = None
    image_size: int | None = None
    stem: str | None = None
    epochs: tuple[int, int] = (1, 1)
    batch_size: int = 64
    augment: bool = True
    learning_rate: float | None = None
    weight_decay: float | None = None
    kernel_quantizer: str | None = None
    sync_batch_norm: bool = True
    seed: int = 0
    validation_fraction: float = data_lib.DEFAULT_HOLDOUT_FRACTION

    def __post_init__(self):
        for key, value in recipes.get(self.recipe).train_settings().items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        _check_train_settings(self)


KERNEL_QUANTIZERS = ("ste_sign", "magnitude_aware_sign")
"""Stage-2 weight binarizers of `bnas-tf train` (`--kernel-quantizer`)."""


def _check_train_settings(c: TrainConfig) -> None:
    """Check every number and name of `c` (normalizing numbers); raise ValueError."""
    for name in ("genotype", "baseline"):
        if getattr(c, name) is not None and not isinstance(getattr(c, name), str | os.PathLike):
            raise SettingError(f"Expected {{0}} to be a path or name, got "
                               f"{getattr(c, name)!r}.", name)
    if not isinstance(c.dataset, str):
        raise SettingError(f"Expected {{0}} to be a name, got {c.dataset!r}.", "dataset")
    for name in ("layers", "channels", "batch_size"):
        setattr(c, name, check_int(getattr(c, name), name))
    for name in ("limit", "width", "image_size"):
        if getattr(c, name) is not None:
            setattr(c, name, check_int(getattr(c, name), name))
    c.seed = check_int(c.seed, "seed", minimum=0, maximum=MAX_SEED)
    try:
        stages = tuple(c.epochs)
    except TypeError:
        stages = ()
    if len(stages) != 2:
        raise SettingError(f"Expected {{0}} as (stage1, stage2), got {c.epochs!r}.", "epochs")
    c.epochs = tuple(check_int(e, "epochs", minimum=0) for e in stages)
    if sum(c.epochs) < 1:
        raise SettingError("Expected at least one training epoch in {0}, got 0,0: the saved "
                           "network would be untrained.", "epochs")
    c.learning_rate = check_float(c.learning_rate, "learning_rate", above=0, none=True)
    c.weight_decay = check_float(c.weight_decay, "weight_decay", minimum=0)
    c.validation_fraction = check_float(c.validation_fraction, "validation_fraction", above=0,
                                        below=1)
    check_choice(c.kernel_quantizer, "kernel_quantizer", KERNEL_QUANTIZERS, none=True)
    check_choice(c.stem, "stem", baselines.STEMS, none=True)


@dataclasses.dataclass
class TrainResult:
    model: tf.keras.Model
    metrics: dict
    output_dir: Path
    seconds: float


def save_model_atomically(model: tf.keras.Model, path: str | os.PathLike) -> Path:
    """Save `model` (SavedModel directory) to a temporary folder, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        model.save(tmp / "model")
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp / "model", path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _reload_difference(model: tf.keras.Model, path: Path, dataset: tf.data.Dataset) -> float:
    """Largest |logit difference| between `model` and its saved copy on one test batch."""
    x = next(iter(dataset))[0]
    reloaded = load_model(path)
    return float(np.max(np.abs(model(x, training=False).numpy()
                               - reloaded(x, training=False).numpy())))


def _epochs_table(history: dict) -> list[dict]:
    keys = list(history)
    count = len(history[keys[0]]) if keys else 0
    return [{"epoch": i, **{k: float(history[k][i]) for k in keys}} for i in range(count)]


def _cell_widths(channels: int, layers: int) -> list[int]:
    """Channels per node of each cell (doubled at the reductions, as `build_network` does)."""
    widths, reductions = [], reduction_indices(layers)
    for i in range(layers):
        channels = channels * 2 if i in reductions else channels
        widths.append(channels)
    return widths


def _check_search_recipe(config: TrainConfig) -> None:
    """Warn when the genotype's search run (its config.json) used another recipe."""
    path = Path(config.genotype).parent / "config.json"
    try:
        searched = json.loads(path.read_text()).get("recipe")
    except (OSError, ValueError, AttributeError):
        return
    if searched != config.recipe:
        def named(recipe):
            return f"recipe {recipe!r}" if recipe else "no recipe"

        log.warning("%s was searched with %s but is trained with %s; the cell template "
                    "(cell_skip=%s) and training settings follow the latter. Train with %s "
                    "to train it as searched.", config.genotype, named(searched),
                    named(config.recipe), config.cell_skip,
                    f"--recipe {searched}" if searched else "no --recipe")


def run_training(config: TrainConfig, output_dir: str | os.PathLike, *,
                 verbose: int = 2, strategy: str | tf.distribute.Strategy | None = "default"
                 ) -> TrainResult:
    """Build the genotype's (or baseline's) network, train it in two stages, save model and metrics.

    Everything is checked before the first write: the network choice, the
    genotype file, the data (loaded and split), the network (built) and
    `output_dir` (a new or empty directory). If the run fails after that, what
    it wrote is removed; no model is saved from NaN or infinite weights.

    Args:
        strategy: "default", "mirrored", "multi_worker" or a
            `tf.distribute.Strategy` (see `bnas_tf.distribute.get_strategy`).

    Raises:
        ValueError: not exactly one of `config.genotype` and `config.baseline`, or an
            unknown baseline name.
        FileExistsError: `output_dir` is a file, a non-empty directory or a run.
        NotADirectoryError, PermissionError: `output_dir` cannot be created.
        bnas_tf.errors.GenotypeError: the genotype file is missing or malformed.
        bnas_tf.errors.DataError: the dataset cannot be loaded or split.
        bnas_tf.errors.NonFiniteError: the loss or the weights became NaN or infinite.
    """
    start = time.time()
    if (config.genotype is None) == (config.baseline is None):
        raise ValueError("Give exactly one of a genotype file (--genotype) and a baseline "
                         f"network (--baseline {'|'.join(baselines.names())}).")
    if config.baseline is not None:
        baselines.kernel_quantizer(config.baseline)  # an unknown name fails before the data load
    elif config.width is not None:
        raise ValueError("width sets a baseline's channels (--baseline); a genotype network "
                         "takes channels (--channels).")
    strategy = distribute.get_strategy(strategy, sync_batch_norm=config.sync_batch_norm)  # first
    output_dir = Path(output_dir)
    if distribute.is_chief(strategy):  # only the chief writes output_dir
        check_output_dir(output_dir, marker="config.json", kind="training run")
    genotype = Genotype.load(config.genotype) if config.genotype is not None else None
    data = data_lib.load(config.dataset, config.data_dir, limit=config.limit,
                         download=config.download, seed=config.seed)
    train, held_out = data_lib.holdout(data, config.validation_fraction, seed=config.seed)
    if strategy.num_replicas_in_sync > 1 and len(train.y_train) < config.batch_size:
        raise SettingError(f"{{0}} {config.batch_size} exceeds the {len(train.y_train)} "
                           "training images left after the holdout; with several replicas "
                           "only full batches are trained. Use a smaller batch or more data.",
                           "batch_size")
    tf.keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model, quantizer, image_size = _build(config, genotype, data)
    write_dir = distribute.worker_dir(output_dir, strategy)
    try:
        with RunDirectory(write_dir), strategy.scope():
            return _train(config, model, quantizer, image_size, data, train, held_out,
                          write_dir, verbose=verbose, start=start)
    except NonFiniteError as error:
        rate = "the default" if config.learning_rate is None else f"{config.learning_rate:g}"
        raise NonFiniteError(f"{error} This run used learning_rate={rate}; what it wrote to "
                             f"{output_dir} was removed.") from None
    finally:
        distribute.cleanup_worker_dir(write_dir, output_dir)


def _build(config, genotype, data) -> tuple[tf.keras.Model, str, tuple[int, int] | None]:
    """The network to train, its stage-2 weight quantizer and the image size to resize to."""
    input_shape = data.input_shape
    if config.image_size is not None:
        input_shape = (config.image_size, config.image_size, input_shape[-1])
    if genotype is not None:
        _check_search_recipe(config)
        warn_if_not_deployable(genotype.search_space,
                               _cell_widths(config.channels, config.layers))
        if config.stem is None and min(input_shape[:2]) >= 2 * baselines.SMALL_INPUT:
            log.warning("%dx%d images with the CIFAR stem: the first cells run at full "
                        "resolution; --stem imagenet reduces it 8x first.", *input_shape[:2])
        model = build_network(genotype, num_classes=data.num_classes, layers=config.layers,
                              channels=config.channels, input_shape=input_shape,
                              cell_skip=config.cell_skip, stem=config.stem or "cifar")
        quantizer = config.kernel_quantizer or genotype.search_space.weight_quantizer
    else:
        options = {"stem": config.stem, **({"width": config.width} if config.width else {})}
        model = baselines.get(config.baseline, num_classes=data.num_classes,
                              input_shape=input_shape, **options)
        quantizer = config.kernel_quantizer or baselines.kernel_quantizer(config.baseline)
    image_size = input_shape[:2] if input_shape != data.input_shape else None
    return model, quantizer, image_size


def _train(config, model, quantizer, image_size, data, train, held_out, output_dir, *,
           verbose, start) -> TrainResult:
    atomic_write_text(output_dir / "config.json",
                      json.dumps(dataclasses.asdict(config), indent=2))
    replicas = tf.distribute.get_strategy().num_replicas_in_sync  # in the run's scope
    train_ds = data_lib.make_dataset(train, batch_size=config.batch_size, training=True,
                                     augment=config.augment, seed=config.seed,
                                     image_size=image_size, drop_remainder=replicas > 1)
    eval_batch = max(128, config.batch_size)
    val = data_lib.make_dataset(held_out, batch_size=eval_batch, image_size=image_size)
    test = data_lib.make_dataset(data, batch_size=eval_batch, image_size=image_size)

    def callbacks(stage: int) -> list:
        return [FlipFlopRatio(), ChangeToInitRatio(),
                tf.keras.callbacks.TensorBoard(str(output_dir / "logs" / f"stage{stage}"),
                                               write_graph=False, profile_batch=0)]

    result = train_two_stage(model, train_ds, val, epochs=tuple(config.epochs),
                             learning_rate=config.learning_rate,
                             weight_decay=config.weight_decay, kernel_quantizer=quantizer,
                             test_ds=test, callbacks=callbacks, verbose=verbose)
    check_finite(result.model.weights, "The trained weights")
    final_val = result.model.evaluate(val, verbose=0, return_dict=True)
    final_test = result.test["stage2"]
    save_model_atomically(result.model, output_dir / "model")
    metrics = {
        "genotype": None if config.genotype is None else os.fspath(config.genotype),
        "baseline": config.baseline,
        "dataset": config.dataset,
        "params": count_params(result.model),
        "validation_fraction": config.validation_fraction,
        "train_images": len(train.y_train),
        "validation_images": len(held_out.y_test),
        "test_images": len(data.y_test),
        "val_accuracy": float(final_val["accuracy"]),
        "val_loss": float(final_val["loss"]),
        "test_accuracy": float(final_test["accuracy"]),
        "test_loss": float(final_test["loss"]),
        "reload_max_abs_diff": _reload_difference(result.model, output_dir / "model", test),
        **{stage: {"epochs": _epochs_table(result.history.get(stage, {})),
                   "test": {k: float(v) for k, v in result.test.get(stage, {}).items()}}
           for stage in ("stage1", "stage2")},
    }
    atomic_write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return TrainResult(result.model, metrics, output_dir, time.time() - start)
