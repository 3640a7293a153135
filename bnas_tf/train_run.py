"""A complete two-stage training run of a searched genotype or a baseline, written to a directory.

`run_training` is what `bnas-tf train` does. The output directory gets:

* `model/`        – the trained binary network (SavedModel; `bn.load_model`),
* `metrics.json`  – per stage and epoch: losses, accuracies, FF-ratio,
  C2I-ratio, learning rate; the test accuracy after each stage,
* `config.json`   – the run's settings,
* `logs/stage1`, `logs/stage2` – TensorBoard event files.

Under a distribution strategy (`bnas_tf.distribute`) the network is built in
its scope, `batch_size` is the global batch, and in a multi-worker run only
the chief writes `output_dir` (other workers save into temporary folders).

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
from bnas_tf.builder import build_network, count_params
from bnas_tf.flips import ChangeToInitRatio, FlipFlopRatio
from bnas_tf.genotype import Genotype
from bnas_tf.saving import load_model
from bnas_tf.search_space import warn_if_not_deployable
from bnas_tf.supernet import reduction_indices
from bnas_tf.training import train_two_stage

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

    def __post_init__(self):
        for key, value in recipes.get(self.recipe).train_settings().items():
            if getattr(self, key) is None:
                setattr(self, key, value)


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

    Args:
        strategy: "default", "mirrored", "multi_worker" or a
            `tf.distribute.Strategy` (see `bnas_tf.distribute.get_strategy`).

    Raises:
        ValueError: not exactly one of `config.genotype` and `config.baseline`, or an
            unknown baseline name.
        bnas_tf.errors.GenotypeError: the genotype file is missing or malformed.
        bnas_tf.errors.DataError: the dataset cannot be loaded.
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
    genotype = Genotype.load(config.genotype) if config.genotype is not None else None
    data = data_lib.load(config.dataset, config.data_dir, limit=config.limit,
                         download=config.download, seed=config.seed)
    write_dir = distribute.worker_dir(output_dir, strategy)
    try:
        with strategy.scope():
            return _train(config, genotype, data, write_dir, verbose=verbose, start=start)
    finally:
        distribute.cleanup_worker_dir(write_dir, output_dir)


def _train(config, genotype, data, output_dir, *, verbose, start) -> TrainResult:
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / "config.json",
                      json.dumps(dataclasses.asdict(config), indent=2))
    tf.keras.utils.set_random_seed(config.seed)
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
    train = data_lib.make_dataset(data, batch_size=config.batch_size, training=True,
                                  augment=config.augment, seed=config.seed, image_size=image_size)
    test = data_lib.make_dataset(data, batch_size=max(128, config.batch_size),
                                 image_size=image_size)

    def callbacks(stage: int) -> list:
        return [FlipFlopRatio(), ChangeToInitRatio(),
                tf.keras.callbacks.TensorBoard(str(output_dir / "logs" / f"stage{stage}"),
                                               write_graph=False, profile_batch=0)]

    result = train_two_stage(model, train, test, epochs=tuple(config.epochs),
                             learning_rate=config.learning_rate,
                             weight_decay=config.weight_decay, kernel_quantizer=quantizer,
                             test_ds=test, callbacks=callbacks, verbose=verbose)
    save_model_atomically(result.model, output_dir / "model")
    metrics = {
        "genotype": None if config.genotype is None else os.fspath(config.genotype),
        "baseline": config.baseline,
        "dataset": config.dataset,
        "params": count_params(result.model),
        "reload_max_abs_diff": _reload_difference(result.model, output_dir / "model", test),
        **{stage: {"epochs": _epochs_table(result.history.get(stage, {})),
                   "test": {k: float(v) for k, v in result.test.get(stage, {}).items()}}
           for stage in ("stage1", "stage2")},
    }
    atomic_write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return TrainResult(result.model, metrics, output_dir, time.time() - start)
