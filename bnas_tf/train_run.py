"""A complete, resumable two-stage training run of a searched genotype or a baseline.

`run_training` is what `bnas-tf train` does. The output directory gets:

* `model.keras`   – the trained binary network (`bn.load_model`), written
  atomically at the end of the run,
* `metrics.json`  – `cost`: the binary network's MACs, OPs, parameters and size per
  image (`bnas_tf.cost.model_cost`); per stage and epoch: losses, accuracies, `val_*` on the
  held-out validation split, FF-ratio, C2I-ratio, learning rate; the test
  accuracy after each stage (`stageN.test`); at the top level the final
  network's `val_accuracy`/`val_loss` (held-out split) and
  `test_accuracy`/`test_loss` (test split),
* `config.json`   – the run's settings (they win on `resume`),
* `genotype.json` – a copy of the genotype trained (what `resume` builds, even
  if the search has rewritten the original since),
* `checkpoints/stage1`, `checkpoints/stage2` – weights, optimizer state and
  the logs of every finished epoch (`bnas_tf.train_checkpoints`),
* `logs/stage1`, `logs/stage2` – TensorBoard event files.

Resuming (`bnas-tf train --output TRAIN --resume`, `run_training(...,
resume=True)`): a run that was interrupted (Ctrl-C), killed or crashed goes on
after its newest checkpoint, so it loses at most the epoch it was in. A
finished stage 1 is restored, not trained again. The data split, the seeds,
the order of the images in each epoch and the learning-rate schedule (linear
decay over each stage, continued from the restored optimizer step) are those
of an uninterrupted run: with the same settings it ends with the same weights
and `metrics.json` (every epoch of both stages, those before the interruption
included). The stored `config.json` wins: a setting given with another value
is a `ResumeConflictError` naming it and both values, except `epochs`, which
may grow (not shrink; stage 1 only while stage 2 has not begun; a larger
count stretches the current stage's decay from the resume point on), and
`data_dir`, `download`, `sync_batch_norm`. A run whose stages have all
finished is evaluated and saved again. TensorBoard gets new event files for
the resumed epochs; an epoch lost to a kill may appear twice there.

Data: `validation_fraction` of each class's training images (default 10 %,
seeded by `seed`; `bnas_tf.data.holdout`) is held out for `val_*`; the
network trains on the rest. The test split is evaluated only at the end of
each stage, for the reported accuracy.

Before anything is written, the settings (at construction), the genotype,
the data, the network and the output directory are checked; a run that fails
afterwards (e.g. a loss that became NaN, `bnas_tf.errors.NonFiniteError`)
removes what it wrote, unless it was resumed (then it keeps its finished
epochs). An interruption (`KeyboardInterrupt`) keeps the checkpoints, for
`resume`.

Under a distribution strategy (`bnas_tf.distribute`) the network is built in
its scope, `batch_size` is the global batch, and in a multi-worker run only
the chief writes `output_dir` (other workers save into temporary folders;
resuming reads the chief's checkpoints, so `output_dir` must be shared).
With more than one replica, each epoch drops its last partial training batch:
TensorFlow 2.21 crashes (heap corruption) on a partial batch split over the
replicas of these networks.

Example:
    >>> config = TrainConfig(genotype="RUN/genotype.json", data_dir="data", epochs=(2, 2),
    ...                      limit=2000)
    >>> result = run_training(config, "TRAIN")
    >>> result = run_training(config, "TRAIN", resume=True)  # after Ctrl-C, a kill or a crash
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
from collections.abc import Callable, Iterable
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
    keep_after_a_checkpoint,
)
from bnas_tf.builder import build_network, count_params
from bnas_tf.cost import model_cost
from bnas_tf.errors import NonFiniteError
from bnas_tf.flips import ChangeToInitRatio, FlipFlopRatio
from bnas_tf.genotype import Genotype
from bnas_tf.saving import load_model
from bnas_tf.search_run import ResumeConflictError
from bnas_tf.search_space import warn_if_not_deployable
from bnas_tf.supernet import reduction_indices
from bnas_tf.train_checkpoints import TrainingCheckpoints
from bnas_tf.training import check_finite, train_two_stage

__all__ = ["TrainConfig", "TrainResult", "TrainResumeConflictError", "run_training",
           "save_model_atomically", "given_settings", "MODEL_FILE", "GENOTYPE_FILE"]

MODEL_FILE = "model.keras"
"""The trained network in a training run's directory (`TRAIN/model.keras`)."""

GENOTYPE_FILE = "genotype.json"
"""The copy of the genotype a run trains (`TRAIN/genotype.json`): what `resume` builds."""

_RESUME_MAY_CHANGE = ("data_dir", "download", "sync_batch_norm")
"""Settings a resumed run may change: where the same data is, how replicas share work."""

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

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """The config a `config.json` holds (unknown settings are a ValueError).

        Example:
            >>> TrainConfig.from_dict(json.loads(Path("TRAIN/config.json").read_text()))
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown training settings {unknown}; known: {sorted(known)}.")
        return cls(**values)


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
    """What `run_training` produced: the trained network, `metrics.json`'s contents, where."""

    model: tf.keras.Model
    metrics: dict
    output_dir: Path
    seconds: float
    model_path: Path | None = None


class TrainResumeConflictError(ResumeConflictError):
    """`resume` with settings that differ from the stored training run's.

    Attributes:
        path: the stored `config.json`.
        conflicts: `(setting, stored value, given value)` triples.
        notes: why a conflict is one, per setting (`epochs`).
    """

    def __init__(self, path: Path, conflicts: list[tuple[str, object, object]],
                 notes: dict[str, str] | None = None):
        self.notes = dict(notes or {})
        super().__init__(path, conflicts)

    def describe(self, name=lambda setting: setting) -> str:
        """The message, each setting shown as `name(setting)` (the CLI shows flags)."""
        def shown(key, value):
            return ",".join(map(str, value)) if key == "epochs" else repr(value)

        listed = "; ".join(
            f"{name(key)}: stored {shown(key, stored)}, given {shown(key, given)}"
            + (f" ({self.notes[key]})" if key in self.notes else "")
            for key, stored, given in self.conflicts)
        return (f"--resume: {self.path} holds a training run with other settings: {listed}. A "
                "resumed run keeps its stored settings: drop these, or start a new run with "
                "another --output.")


def save_model_atomically(model: tf.keras.Model, path: str | os.PathLike) -> Path:
    """Save `model` to a `.keras` file: into a temporary folder beside `path`, then renamed.

    A reader, or a run killed meanwhile, never sees a half-written file.

    Raises:
        ValueError: `path` does not end in `.keras`.

    Example:
        >>> save_model_atomically(result.model, "TRAIN/model.keras")
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"Expected a .keras path, got {os.fspath(path)!r}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.stem}-", dir=path.parent))
    try:
        model.save(tmp / path.name)
        os.replace(tmp / path.name, path)
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


def given_settings(config: TrainConfig) -> set[str]:
    """The settings of `config` that differ from its recipe's defaults (plus `epochs`).

    What `run_training(..., resume=True)` compares with the stored run when the
    caller does not say which settings were given explicitly.

    Example:
        >>> sorted(given_settings(TrainConfig(genotype="RUN/genotype.json", layers=5)))
        ['epochs', 'genotype', 'layers']
    """
    defaults = TrainConfig(recipe=config.recipe)
    return {f.name for f in dataclasses.fields(config)
            if getattr(config, f.name) != getattr(defaults, f.name)} | {"epochs"}


def _comparable(value):
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _resumed_config(output_dir: Path, config: TrainConfig,
                    given: Iterable[str] | None) -> TrainConfig:
    """The stored settings, with the given `epochs` (and data location); conflicts raise."""
    path = output_dir / "config.json"
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"--resume: cannot read the stored settings {path}: {error}") from None
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known) if isinstance(values, dict) else []
    if not isinstance(values, dict) or unknown:
        shown = ", ".join(unknown[:3]) + (", ..." if len(unknown) > 3 else "")
        raise FileNotFoundError(
            f"--resume: {output_dir} holds no training run ({path} has settings a training run "
            f"does not have: {shown or type(values).__name__}). Give the --output of a "
            "`bnas-tf train` run, or run without --resume to start one.")
    try:
        saved = TrainConfig.from_dict(values)
    except (ValueError, TypeError) as error:
        raise ValueError(f"--resume: cannot read the stored settings {path}: {error}") from None
    given = given_settings(config) if given is None else set(given)
    conflicts = [(key, getattr(saved, key), getattr(config, key)) for key in sorted(given)
                 if key not in ("epochs", *_RESUME_MAY_CHANGE) and key in known
                 and _comparable(getattr(saved, key)) != _comparable(getattr(config, key))]
    notes = {}
    if "epochs" in given and config.epochs != saved.epochs:
        if any(new < old for new, old in zip(config.epochs, saved.epochs, strict=True)):
            notes["epochs"] = "a resumed run may add epochs to a stage, not drop them"
        elif config.epochs[0] > saved.epochs[0] and \
                TrainingCheckpoints(output_dir / "checkpoints").epochs_done(2):
            notes["epochs"] = ("stage 2 has begun from the finished stage 1, which can no "
                               "longer grow")
        if notes:
            conflicts.append(("epochs", saved.epochs, config.epochs))
    if conflicts:
        raise TrainResumeConflictError(path, conflicts, notes)
    for key in ("epochs", *_RESUME_MAY_CHANGE):
        if key in given:
            setattr(saved, key, getattr(config, key))
    return saved


def _check_network(config: TrainConfig) -> None:
    """Exactly one of a genotype and a (known) baseline; `width` for baselines only."""
    if (config.genotype is None) == (config.baseline is None):
        raise ValueError("Give exactly one of a genotype file (--genotype) and a baseline "
                         f"network (--baseline {'|'.join(baselines.names())}).")
    if config.baseline is not None:
        baselines.kernel_quantizer(config.baseline)  # an unknown name fails before the data load
    elif config.width is not None:
        raise ValueError("width sets a baseline's channels (--baseline); a genotype network "
                         "takes channels (--channels).")


def run_training(config: TrainConfig, output_dir: str | os.PathLike, *, resume: bool = False,
                 given: Iterable[str] | None = None,
                 extra_callbacks: Callable[[int], list] | list | None = None,
                 verbose: int = 2, strategy: str | tf.distribute.Strategy | None = "default"
                 ) -> TrainResult:
    """Build the genotype's (or baseline's) network, train it in two stages, save model and metrics.

    Everything is checked before the first write: the network choice, the
    genotype file, the data (loaded and split), the network (built) and
    `output_dir` (a new or empty directory; with `resume`, a training run). If
    the run fails after that, what it wrote is removed (a resumed run keeps
    it; an interrupted one keeps its checkpoints); no model is saved from NaN
    or infinite weights.

    On `resume` the stored settings win and training goes on after the newest
    checkpoint (see the module docstring): a setting in `given` whose value
    differs from the stored one raises `TrainResumeConflictError`, except
    `epochs` (may grow) and `data_dir`/`download`/`sync_batch_norm`.

    Args:
        resume: continue the training run in `output_dir`.
        given: the settings the caller set explicitly (the CLI passes the flags
            on its command line); default: those of `config` that differ from
            its recipe's defaults, and `epochs`.
        extra_callbacks: more Keras callbacks for both stages, or
            `stage (1 or 2) -> list`.
        strategy: "default", "mirrored", "multi_worker" or a
            `tf.distribute.Strategy` (see `bnas_tf.distribute.get_strategy`).

    Raises:
        ValueError: not exactly one of `config.genotype` and `config.baseline`, or an
            unknown baseline name.
        FileExistsError: `output_dir` is a file, a non-empty directory, or a run
            and `resume` is False.
        FileNotFoundError: `resume` on a directory without a training run.
        NotADirectoryError, PermissionError: `output_dir` cannot be created.
        TrainResumeConflictError: `resume` with settings other than the stored ones.
        bnas_tf.errors.GenotypeError: the genotype file is missing or malformed.
        bnas_tf.errors.DataError: the dataset cannot be loaded or split.
        bnas_tf.errors.NonFiniteError: the loss or the weights became NaN or infinite.

    Example:
        >>> run_training(TrainConfig(baseline="quicknet", dataset="synthetic", limit=64,
        ...                          epochs=(1, 1)), "TRAIN").metrics["test_accuracy"]
    """
    start = time.time()
    if not resume:
        _check_network(config)
    strategy = distribute.get_strategy(strategy, sync_batch_norm=config.sync_batch_norm)  # first
    output_dir = Path(output_dir)
    if distribute.is_chief(strategy):  # only the chief writes output_dir
        check_output_dir(output_dir, marker="config.json", kind="training run", resume=resume)
    elif resume and not (output_dir / "config.json").is_file():
        raise FileNotFoundError(f"--resume: {output_dir} holds no training run (no config.json).")
    if resume:
        config = _resumed_config(output_dir, config, given)
        _check_network(config)
    genotype = None
    if config.genotype is not None:  # resumed: the network the checkpoints hold, even if the
        stored = output_dir / GENOTYPE_FILE  # search has rewritten config.genotype since
        genotype = Genotype.load(stored if resume and stored.is_file() else config.genotype)
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
    checkpoints = TrainingCheckpoints(write_dir / "checkpoints", restore=resume,
                                      restore_from=output_dir / "checkpoints")
    try:
        keep_on_error = keep_after_a_checkpoint(write_dir / "checkpoints")
        with RunDirectory(write_dir, keep=resume, keep_on_interrupt=True,
                          keep_on_error=keep_on_error), strategy.scope():
            if genotype is not None:
                genotype.save(write_dir / GENOTYPE_FILE)
            return _train(config, model, quantizer, image_size, data, train, held_out,
                          write_dir, checkpoints, extra_callbacks, verbose=verbose, start=start)
    except NonFiniteError as error:
        rate = "the default" if config.learning_rate is None else f"{config.learning_rate:g}"
        kept = ("the run keeps its finished epochs" if resume
                else f"what it wrote to {output_dir} was removed")
        raise NonFiniteError(f"{error} This run used learning_rate={rate}; {kept}.") from None
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


def _train(config, model, quantizer, image_size, data, train, held_out, output_dir, checkpoints,
           extra_callbacks, *, verbose, start) -> TrainResult:
    atomic_write_text(output_dir / "config.json",
                      json.dumps(dataclasses.asdict(config), indent=2, default=os.fspath))
    replicas = tf.distribute.get_strategy().num_replicas_in_sync  # in the run's scope
    train_ds = data_lib.make_dataset(train, batch_size=config.batch_size, training=True,
                                     augment=config.augment, seed=config.seed,
                                     image_size=image_size, drop_remainder=replicas > 1)
    eval_batch = max(128, config.batch_size)
    val = data_lib.make_dataset(held_out, batch_size=eval_batch, image_size=image_size)
    test = data_lib.make_dataset(data, batch_size=eval_batch, image_size=image_size)

    def callbacks(stage: int) -> list:
        extra = extra_callbacks(stage) if callable(extra_callbacks) else extra_callbacks
        return [FlipFlopRatio(), ChangeToInitRatio(),
                tf.keras.callbacks.TensorBoard(str(output_dir / "logs" / f"stage{stage}"),
                                               write_graph=False, profile_batch=0),
                *(extra or [])]

    result = train_two_stage(model, train_ds, val, epochs=tuple(config.epochs),
                             learning_rate=config.learning_rate,
                             weight_decay=config.weight_decay, kernel_quantizer=quantizer,
                             test_ds=test, callbacks=callbacks, verbose=verbose,
                             checkpoint_dir=checkpoints)
    check_finite(result.model.weights, "The trained weights")
    final_val = result.model.evaluate(val, verbose=0, return_dict=True)
    final_test = result.test["stage2"]
    model_path = save_model_atomically(result.model, output_dir / MODEL_FILE)
    metrics = {
        "genotype": None if config.genotype is None else os.fspath(config.genotype),
        "baseline": config.baseline,
        "dataset": config.dataset,
        "params": count_params(result.model),
        "cost": model_cost(result.model).to_dict(),  # the binary network, per image
        "validation_fraction": config.validation_fraction,
        "train_images": len(train.y_train),
        "validation_images": len(held_out.y_test),
        "test_images": len(data.y_test),
        "val_accuracy": float(final_val["accuracy"]),
        "val_loss": float(final_val["loss"]),
        "test_accuracy": float(final_test["accuracy"]),
        "test_loss": float(final_test["loss"]),
        "reload_max_abs_diff": _reload_difference(result.model, model_path, test),
        **{stage: {"epochs": _epochs_table(result.history.get(stage, {})),
                   "test": {k: float(v) for k, v in result.test.get(stage, {}).items()}}
           for stage in ("stage1", "stage2")},
    }
    atomic_write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return TrainResult(result.model, metrics, output_dir, time.time() - start, model_path)
