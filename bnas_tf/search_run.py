"""A complete, resumable search run writing its results to a directory.

`run_search` is what `bnas-tf search` does. The output directory gets:

* `config.json`    – the run's settings (they win on `resume`),
* `history.json`   – one entry per finished epoch: logs and op probabilities
  (`val_*` on the held-out validation split),
* `genotype.json`  – the genotype derived after the last finished epoch, with
  its `cost` at the search width (`bnas_tf.cost_search.searched_cost`: MACs,
  OPs, parameters, size; the target and relative error with `cost`),
* `logs/`          – TensorBoard event files,
* `checkpoints/`   – weights, α and both optimizers after every epoch,
* `derived_model.keras` – with `method="hmnas"` only: `net.derive_model()`,
  the pruned network holding the searched weights (continue training it with
  `bn.load_model`); rewritten atomically at the end of the run. To derive it
  again from the checkpoints, `--resume` the run with the same `--epochs`.

Data: `validation_fraction` of each class's training images (default 10 %,
seeded by `seed`, `bnas_tf.data.holdout`) is held out; the bilevel search
pairs (`search_pairs`) come from the rest, and the held-out part gives the
`val_*` metrics. The test split is not used.

Before anything is written, the settings (at construction), the data, the
supernet and the output directory are checked; a run that fails afterwards
(e.g. a loss that became NaN, `bnas_tf.errors.NonFiniteError`) removes the
directory it created. A resumed run keeps what it had.

Under a distribution strategy (`strategy="mirrored"` or `"multi_worker"`,
see `bnas_tf.distribute`) the supernet and both optimizers are built in the
strategy's scope and `batch_size` is the global batch of each half. In a
multi-worker run only the chief writes to `output_dir`; the other workers
save into temporary folders (saving is collective) that are deleted at the
end. Resuming a multi-worker run reads the chief's checkpoints, so
`output_dir` must be on a filesystem all workers share.

Example:
    >>> result = run_search(SearchConfig(dataset="cifar10", data_dir="data", recipe="bnas",
    ...                                  layers=5, channels=16, epochs=2, limit=2000),
    ...                     "RUN")
    >>> result.genotype.normal.nodes[0]
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

import tensorflow as tf

from bnas_tf import budget as budget_lib
from bnas_tf import callbacks as callbacks_lib
from bnas_tf import cost_search, distribute, recipes, regularizers
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
from bnas_tf.errors import NonFiniteError
from bnas_tf.genotype import Genotype
from bnas_tf.hmnas import HMNASSuperNet
from bnas_tf.masks import DEFAULT_INITIAL, DEFAULT_THRESHOLD, DEFAULT_WEIGHT_INITIAL
from bnas_tf.search_space import SearchSpace
from bnas_tf.supernet import MIXING_MODES, SuperNet
from bnas_tf.training import StopOnNonFinite, check_finite

__all__ = ["SearchConfig", "SearchResult", "ResumeConflictError", "run_search", "build_supernet",
           "search_schedule", "apply_search_schedule", "search_space", "INPUT_QUANTIZERS"]

INPUT_QUANTIZERS = ("ste_sign", "approx_sign", "swish_sign")
"""Activation binarizers a search can use (`--input-quantizer`)."""

_RESUME_MAY_CHANGE = ("data_dir", "download", "sync_batch_norm")
"""Settings a resumed search may change: where the same data is, how replicas share work."""

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SearchConfig:
    """Settings of a search run (a small, quick network by default).

    The settings a recipe sets (`bnas_tf.recipes.Recipe.SEARCH_SETTINGS`:
    method, space, cell_skip, temperature, anneal_from, diversity, tau,
    temperature_regularizer, learning_rate, arch_learning_rate,
    arch_beta_1/2, arch_weight_decay, binary_search_weights) default to None:
    a None takes the value of `recipe`, or of `bnas_tf.recipes.DEFAULTS` when
    no recipe is named; a value given explicitly overrides the recipe's.
    `anneal_from` stays None (fixed T) unless the recipe anneals; 0 disables
    annealing explicitly. `config.json` records the resolved values and the
    recipe's name. `validation_fraction` is the share of each class's
    training images held out for `val_*` (`bnas_tf.data.holdout`).

    Cost-aware search (`bnas_tf.cost_search`; off by default, no recipe sets
    it): `cost` ("ops" or "latency") adds `bn.regularizers.ExpectedCost`
    with `cost_target` (the derived network's cost at this search's width:
    OPs = FLOPs + BOPs/64 as a plain number, e.g. 6e6, or milliseconds) and
    `cost_weight`; `latency_table` is the `bnas-tf profile` table that
    `cost="latency"` needs.

    Every value is checked at construction (ranges, names, `partial_channels`
    dividing `channels`, `warmup_epochs < epochs`, the space), so a bad
    setting fails before a run writes anything.

    Raises:
        ValueError: a setting out of range or an unknown name (a
            `SearchSpaceError` for the space), naming the setting.

    Example:
        >>> SearchConfig(recipe="bnas", epochs=10).binary_search_weights
        True
        >>> SearchConfig().space                   # no recipe: bnas_tf's defaults
        'lce'
    """

    dataset: str = "cifar10"
    data_dir: str | None = None
    download: bool = True
    limit: int | None = None
    recipe: str | None = None
    space: str | None = None
    nodes: int = 4
    input_quantizer: str = "ste_sign"
    layers: int = 5
    channels: int = 16
    cell_skip: bool | None = None
    epochs: int = 50
    batch_size: int = 64
    augment: bool = True
    learning_rate: float | None = None
    arch_learning_rate: float | None = None
    arch_beta_1: float | None = None
    arch_beta_2: float | None = None
    arch_weight_decay: float | None = None
    binary_search_weights: bool | None = None
    temperature: float | None = None
    anneal_from: float | None = None
    diversity: float | None = None
    tau: float | None = None
    temperature_regularizer: float | None = None
    warmup_epochs: int = 0
    warmup_fraction: float | None = None
    budget_schedule: bool | None = None
    decision: float = budget_lib.DEFAULT_DECISION
    second_order: bool = False
    mixing: str | None = None
    partial_channels: int = 4
    edge_normalization: bool = True
    gumbel_temperature: tuple[float, float] = (10.0, 0.1)
    mixed_bfloat16: bool = False
    sync_batch_norm: bool = True
    seed: int = 0
    data_seed: int | None = None
    method: str | None = None
    mask_threshold: float = DEFAULT_THRESHOLD
    mask_initial: float = DEFAULT_INITIAL
    weight_mask_initial: float = DEFAULT_WEIGHT_INITIAL
    sparsity: float = 0.0
    weight_sparsity: float = 0.0
    validation_fraction: float = data_lib.DEFAULT_HOLDOUT_FRACTION
    cost: str | None = None
    cost_target: float | None = None
    cost_weight: float = cost_search.DEFAULT_COST_WEIGHT
    latency_table: str | None = None

    def __post_init__(self):
        mixing_given = self.mixing is not None
        for key, value in recipes.get(self.recipe).search_settings().items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        recipes.supernet_class(self.method)  # raises for unknown methods, naming the valid ones
        if self.method == "hmnas" and not mixing_given:
            self.mixing = "all"  # HM-NAS masks act on every op of every edge
        _check_search_settings(self)

    @classmethod
    def from_dict(cls, values: dict) -> SearchConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown search settings {unknown}; known: {sorted(known)}.")
        return cls(**values)


def _check_search_settings(c: SearchConfig) -> None:
    """Check every setting of `c` (normalizing numbers); raise ValueError naming the bad one."""
    if not isinstance(c.dataset, str):
        raise SettingError(f"Expected {{0}} to be a name, got {c.dataset!r}.", "dataset")
    for name in ("nodes", "layers", "channels", "epochs", "batch_size", "partial_channels"):
        setattr(c, name, check_int(getattr(c, name), name))
    c.warmup_epochs = check_int(c.warmup_epochs, "warmup_epochs", minimum=0)
    c.seed = check_int(c.seed, "seed", minimum=0, maximum=MAX_SEED)
    if c.limit is not None:
        c.limit = check_int(c.limit, "limit")
    if c.warmup_epochs >= c.epochs:
        raise SettingError(f"{{0}} {c.warmup_epochs} leaves none of the {c.epochs} epochs ({{1}}) "
                           "to train α, so the genotype would be derived from untrained α; use "
                           "fewer warmup epochs or more epochs.", "warmup_epochs", "epochs")
    check_choice(c.input_quantizer, "input_quantizer", INPUT_QUANTIZERS)
    check_choice(c.mixing, "mixing", MIXING_MODES)
    if c.mixing == "partial" and c.channels % c.partial_channels:
        raise SettingError(f"{{0}} {c.partial_channels} must divide {{1}} {c.channels} (each "
                           "mixed op of partial mixing runs on channels / K of them): choose "
                           f"{{1}} a multiple of {c.partial_channels}, another {{0}}, or {{2}} "
                           "gumbel or all.", "partial_channels", "channels", "mixing")
    positive = ("learning_rate", "arch_learning_rate", "temperature", "tau")
    non_negative = ("arch_weight_decay", "diversity", "temperature_regularizer",
                    "mask_threshold", "mask_initial", "weight_mask_initial", "sparsity",
                    "weight_sparsity")
    for name in positive:
        setattr(c, name, check_float(getattr(c, name), name, above=0))
    for name in non_negative:
        setattr(c, name, check_float(getattr(c, name), name, minimum=0))
    for name in ("arch_beta_1", "arch_beta_2"):
        setattr(c, name, check_float(getattr(c, name), name, minimum=0, below=1))
    c.anneal_from = check_float(c.anneal_from, "anneal_from", minimum=0, none=True)
    c.validation_fraction = check_float(c.validation_fraction, "validation_fraction", above=0,
                                        below=1)
    c.warmup_fraction = check_float(c.warmup_fraction, "warmup_fraction", minimum=0, below=1)
    c.decision = check_float(c.decision, "decision", minimum=0)
    if c.data_seed is not None:
        c.data_seed = check_int(c.data_seed, "data_seed", minimum=0, maximum=MAX_SEED)
    try:
        start, end = c.gumbel_temperature
    except (TypeError, ValueError):
        raise SettingError(f"Expected {{0}} as (start, end), got {c.gumbel_temperature!r}.",
                           "gumbel_temperature") from None
    c.gumbel_temperature = tuple(check_float(t, "gumbel_temperature", above=0)
                                 for t in (start, end))
    cost_search.check_cost_settings(c)
    SearchSpace.get(c.space, nodes=c.nodes, input_quantizer=c.input_quantizer,
                    binary_search_weights=c.binary_search_weights)


class ResumeConflictError(ValueError):
    """`resume` with settings that differ from the stored run's.

    Attributes:
        path: the stored `config.json`.
        conflicts: `(setting, stored value, given value)` triples.
    """

    def __init__(self, path: Path, conflicts: list[tuple[str, object, object]]):
        self.path, self.conflicts = path, conflicts
        super().__init__(self.describe())

    def describe(self, name=lambda setting: setting) -> str:
        """The message, each setting shown as `name(setting)` (the CLI shows flags)."""
        listed = "; ".join(
            f"{name(key)}: stored {stored!r}, given {given!r}"
            + (" (a resumed search may add epochs, not drop them)" if key == "epochs" else "")
            for key, stored, given in self.conflicts)
        return (f"--resume: {self.path} holds a search with other settings: {listed}. A resumed "
                "search keeps its stored settings: drop these, or start a new search with "
                "another --output.")


@dataclasses.dataclass
class SearchResult:
    genotype: Genotype
    history: dict
    output_dir: Path
    seconds: float
    derived_model_path: Path | None = None
    cost: dict | None = None


def search_schedule(config: SearchConfig, steps_per_epoch: int) -> dict:
    """The architecture learning rate, diversity τ and warm-up a search runs with.

    With `budget_schedule` (the default) they follow `bnas_tf.budget.SearchBudget`:
    `lr_α = max(arch_learning_rate, decision · T / architecture steps)` and
    `τ · min(1, epochs / 50)`; otherwise the configured values as they are.

    Example:
        >>> search_schedule(SearchConfig(epochs=2), steps_per_epoch=40)["arch_learning_rate"]
        0.04
    """
    budget = budget_lib.SearchBudget(config.epochs, max(1, steps_per_epoch),
                                     config.warmup_fraction,
                                     config.decision if config.budget_schedule else 0.0)
    schedule = {"steps_per_epoch": steps_per_epoch, "total_steps": budget.total_steps,
                "warmup_steps": budget.warmup_steps, "arch_steps": budget.arch_steps,
                "arch_learning_rate": config.arch_learning_rate, "tau": config.tau}
    if config.budget_schedule:
        schedule["arch_learning_rate"] = budget.arch_learning_rate(
            config.temperature, base=config.arch_learning_rate)
        schedule["tau"] = budget.diversity_tau(config.tau)
    return schedule


def search_space(config: SearchConfig) -> SearchSpace:
    """The `SearchSpace` a `SearchConfig` names (`space`, `nodes`, `input_quantizer`, ...).

    Example:
        >>> search_space(SearchConfig(recipe="bnas")).binary_search_weights
        True
    """
    return SearchSpace.get(config.space, nodes=config.nodes,
                           input_quantizer=config.input_quantizer,
                           binary_search_weights=config.binary_search_weights)


def build_supernet(config: SearchConfig, num_classes: int,
                   strategy: tf.distribute.Strategy | None = None,
                   schedule: dict | None = None, *,
                   space: SearchSpace | None = None,
                   input_shape: tuple[int, int, int] | None = None) -> SuperNet:
    """The compiled supernet a `SearchConfig` describes, built in `strategy`'s scope.

    The one place a search's supernet is made: `run_search` (`bnas-tf
    search`), the benchmarks and `bnas_tf.tuning.SearchHyperModel` call it,
    so the method, mixing, partial channels, edge normalization, Gumbel τ,
    temperature (or `anneal_from`), regularizers, both optimizers, warm-up
    and second order all come from `config`. `schedule` (from
    `search_schedule`) sets the architecture learning rate and diversity τ
    (`apply_search_schedule`); without it they are the configured values.
    `space` replaces the space `config` names (`search_space(config)`). With
    `mixed_bfloat16`, this sets Keras' global mixed-precision policy. A
    `config.cost` needs the images' `input_shape` (the per-edge costs depend
    on the resolution).

    Example:
        >>> config = SearchConfig(epochs=2, channels=8, layers=2)
        >>> net = build_supernet(config, 10, schedule=search_schedule(config, 40))
        >>> (net.mixing, float(net.arch_optimizer.learning_rate))
        ('partial', 0.04)
    """
    if config.mixed_bfloat16:
        tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    with distribute.get_strategy(strategy).scope():
        net = _build_supernet(config, num_classes, space or search_space(config),
                              input_shape)
        return apply_search_schedule(net, schedule) if schedule else net


def apply_search_schedule(net: SuperNet, schedule: dict) -> SuperNet:
    """Give a compiled supernet the architecture learning rate and diversity τ of `schedule`.

    What `build_supernet(..., schedule=...)` does after compiling; call it
    yourself when the steps per epoch are known only later (the keras-tuner
    hypermodel does, in `fit`). Keys missing from `schedule` leave their
    setting alone. The train step is traced again at the next `fit` (τ is a
    constant of the traced step).

    Raises:
        RuntimeError: `net` is not compiled.

    Example:
        >>> net = build_supernet(config, num_classes=10)
        >>> apply_search_schedule(net, search_schedule(config, int(pairs.cardinality())))
    """
    if net.arch_optimizer is None:
        raise RuntimeError("Compile the supernet (SuperNet.compile) before applying a schedule.")
    if "arch_learning_rate" in schedule:
        net.arch_optimizer.learning_rate = float(schedule["arch_learning_rate"])
    if "tau" in schedule:
        terms = net.arch_regularizer
        terms = getattr(terms, "regularizers", [terms])  # a Combined holds several
        for term in terms:
            if isinstance(term, regularizers.Diversity):
                term.tau = float(schedule["tau"])
    net.train_function = None
    return net


def _build_supernet(config: SearchConfig, num_classes: int, space: SearchSpace,
                    input_shape: tuple[int, int, int] | None = None) -> SuperNet:
    kwargs = {}
    if config.method == "hmnas":
        kwargs = {f"{level}_threshold": config.mask_threshold
                  for level in ("op", "edge", "weight")}
        kwargs.update(op_initial=config.mask_initial, edge_initial=config.mask_initial,
                      weight_initial=config.weight_mask_initial, sparsity=config.sparsity,
                      weight_sparsity=config.weight_sparsity)
    net = recipes.supernet_class(config.method)(
        space, num_classes=num_classes, layers=config.layers, channels=config.channels,
        temperature=config.anneal_from or config.temperature, cell_skip=config.cell_skip,
        seed=config.seed, mixing=config.mixing, partial_channels=config.partial_channels,
        edge_normalization=config.edge_normalization,
        gumbel_temperature=config.gumbel_temperature, **kwargs)
    terms = []
    if config.diversity:
        terms.append(regularizers.Diversity(config.diversity, tau=config.tau))
    if config.temperature_regularizer:
        terms.append(regularizers.Temperature(config.temperature_regularizer))
    if config.cost:
        terms.append(cost_search.cost_regularizer(config, net, input_shape))
    net.compile(
        optimizer=tf.keras.optimizers.legacy.Adam(config.learning_rate),
        arch_optimizer=tf.keras.optimizers.legacy.Adam(
            config.arch_learning_rate, beta_1=config.arch_beta_1, beta_2=config.arch_beta_2),
        metrics=["accuracy"],
        arch_regularizer=terms or None,
        arch_weight_decay=config.arch_weight_decay,
        warmup_epochs=config.warmup_epochs,
        warmup_fraction=config.warmup_fraction,
        second_order=config.second_order,
    )
    return net


class _EpochCheckpoint(tf.keras.callbacks.Callback):
    """Save weights, α, optimizers and the epoch after every epoch; write the genotype."""

    def __init__(self, manager: tf.train.CheckpointManager, genotype_path: Path,
                 input_shape: tuple[int, int, int]):
        super().__init__()
        self.manager, self.genotype_path = manager, genotype_path
        self.input_shape = input_shape

    def on_epoch_end(self, epoch, logs=None):
        check_finite(self.model.arch_variables, f"After epoch {epoch + 1}, α")
        self.manager.save(checkpoint_number=epoch + 1)
        genotype = self.model.genotype(warn=False)
        cost_search.save_genotype(genotype, self.genotype_path, cost_search.searched_cost(
            self.model, genotype, self.input_shape))


def given_settings(config: SearchConfig) -> set[str]:
    """The settings of `config` that differ from its recipe's defaults (plus `epochs`).

    What `run_search(..., resume=True)` compares with the stored run when the
    caller does not say which settings were given explicitly.
    """
    defaults = SearchConfig(recipe=config.recipe)
    given = {f.name for f in dataclasses.fields(config)
             if getattr(config, f.name) != getattr(defaults, f.name)}
    return given | {"epochs"}


def _resumed_config(output_dir: Path, config: SearchConfig,
                    given: Iterable[str] | None) -> SearchConfig:
    """The stored settings, with the given `epochs` (and data location); conflicts raise."""
    path = output_dir / "config.json"
    try:
        saved = SearchConfig.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"--resume: cannot read the stored settings {path}: {error}") from None
    given = given_settings(config) if given is None else set(given)
    conflicts = [(key, getattr(saved, key), getattr(config, key)) for key in sorted(given)
                 if key not in ("epochs", *_RESUME_MAY_CHANGE) and hasattr(saved, key)
                 and getattr(saved, key) != getattr(config, key)]
    if "epochs" in given and config.epochs < saved.epochs:
        conflicts.append(("epochs", saved.epochs, config.epochs))
    if conflicts:
        raise ResumeConflictError(path, conflicts)
    for key in ("epochs", *_RESUME_MAY_CHANGE):
        if key in given:
            setattr(saved, key, getattr(config, key))
    return saved


def run_search(config: SearchConfig, output_dir: str | os.PathLike, *, resume: bool = False,
               given: Iterable[str] | None = None, extra_callbacks: list | None = None,
               verbose: int = 2, strategy: str | tf.distribute.Strategy | None = "default"
               ) -> SearchResult:
    """Search, checkpointing every epoch; with `resume`, continue after the last one.

    Everything is checked before the first write: the settings, the data
    (loaded, split, batched), the supernet (built) and `output_dir` (a new or
    empty directory; with `resume`, a search). If the run fails after that, the
    directory it created is removed again; an interrupted run
    (`KeyboardInterrupt`) and a resumed one keep their finished epochs.

    On `resume` the stored settings win: a setting in `given` whose value
    differs from the stored one raises `ResumeConflictError` naming both
    values, except `epochs` (may grow, not shrink: the new total),
    `data_dir`/`download` (the same data, found elsewhere) and
    `sync_batch_norm` (taken as given). Training restarts
    at the epoch after the newest checkpoint with its α, weights and optimizer
    states (also under a strategy: the checkpoint does not depend on the
    number of replicas).

    Args:
        given: the settings the caller set explicitly (the CLI passes the
            flags on its command line); default: those of `config` that
            differ from its recipe's defaults, and `epochs`.
        strategy: "default", "mirrored", "multi_worker" or a
            `tf.distribute.Strategy` (see `bnas_tf.distribute.get_strategy`).

    Raises:
        FileExistsError: `output_dir` is a file or a non-empty directory, or holds
            a search and `resume` is False.
        FileNotFoundError: `resume` on a directory without a search.
        NotADirectoryError, PermissionError: `output_dir` cannot be created.
        ResumeConflictError: `resume` with settings other than the stored ones.
        bnas_tf.errors.DataError: the dataset cannot be loaded or split.
        bnas_tf.errors.NonFiniteError: the loss or α became NaN or infinite.
    """
    start = time.time()
    strategy = distribute.get_strategy(strategy, sync_batch_norm=config.sync_batch_norm)  # first
    chief = distribute.is_chief(strategy)
    output_dir = Path(output_dir)
    if chief:  # only the chief writes output_dir
        check_output_dir(output_dir, marker="config.json", kind="search", resume=resume)
    elif resume and not (output_dir / "config.json").is_file():
        raise FileNotFoundError(f"--resume: {output_dir} holds no search (no config.json).")
    if resume:
        config = _resumed_config(output_dir, config, given)
    data = data_lib.load(config.dataset, config.data_dir, limit=config.limit,
                         download=config.download,
                         seed=config.seed if config.data_seed is None else config.data_seed)
    train, held_out = data_lib.holdout(data, config.validation_fraction, seed=config.seed)
    pairs = data_lib.search_pairs(train, batch_size=config.batch_size, augment=config.augment,
                                  seed=config.seed)
    validation = data_lib.make_dataset(held_out, batch_size=max(config.batch_size, 128))
    schedule = search_schedule(config, int(pairs.cardinality()))
    log.info("Search schedule: %d steps per epoch, %d warm-up steps, architecture learning "
             "rate %.3g, diversity tau %.3g epochs", schedule["steps_per_epoch"],
             schedule["warmup_steps"], schedule["arch_learning_rate"], schedule["tau"])
    tf.keras.utils.set_random_seed(config.seed)
    net = build_supernet(config, data.num_classes, strategy, schedule,
                         input_shape=data.input_shape)
    with strategy.scope():
        net(tf.zeros((1, *data.input_shape)))  # create variables before restoring into them
    write_dir = distribute.worker_dir(output_dir, strategy)
    try:
        with RunDirectory(write_dir, keep=resume, keep_on_interrupt=True,
                          keep_on_error=keep_after_a_checkpoint(write_dir / "checkpoints")):
            return _search(config, net, data, pairs, validation, strategy, output_dir,
                           write_dir, schedule, resume=resume, extra_callbacks=extra_callbacks,
                           verbose=verbose, start=start)
    except NonFiniteError as error:
        kept = ("the run keeps its finished epochs" if resume
                else f"what it wrote to {output_dir} was removed")
        raise NonFiniteError(
            f"{error} This search used learning_rate={config.learning_rate:g}, "
            f"arch_learning_rate={schedule['arch_learning_rate']:g}; {kept}.") from None
    finally:
        distribute.cleanup_worker_dir(write_dir, output_dir)


def _search(config, net, data, pairs, validation, strategy, output_dir, write_dir, schedule, *,
            resume, extra_callbacks, verbose, start) -> SearchResult:
    atomic_write_text(write_dir / "config.json", json.dumps(dataclasses.asdict(config), indent=2))
    checkpoint = tf.train.Checkpoint(net=net, optimizer=net.optimizer,
                                     arch_optimizer=net.arch_optimizer)
    manager = tf.train.CheckpointManager(checkpoint, write_dir / "checkpoints", max_to_keep=2)
    initial_epoch = 0
    latest = tf.train.latest_checkpoint(str(output_dir / "checkpoints")) if resume else None
    if latest:
        with strategy.scope():
            # partial: optimizer slots are restored when fit creates them (or never, when
            # no epoch is left to train); no warning about them
            checkpoint.restore(latest).expect_partial()
        initial_epoch = int(net.epoch.numpy()) + 1
        if initial_epoch < config.epochs:
            log.info("Resuming %s at epoch %d of %d", output_dir, initial_epoch + 1,
                     config.epochs)
        else:
            log.info("%s has finished its %d epochs; deriving its results again (a larger "
                     "epochs continues it)", output_dir, config.epochs)
    callbacks = []
    if config.anneal_from:
        callbacks.append(callbacks_lib.TemperatureScheduler.anneal(
            config.anneal_from, config.temperature, config.epochs))
    if resume and write_dir != output_dir and (output_dir / "history.json").exists():
        (write_dir / "history.json").write_text((output_dir / "history.json").read_text())
    history = callbacks_lib.SearchHistory(write_dir / "history.json", resume=resume,
                                          schedule=schedule)
    callbacks += [
        StopOnNonFinite(("loss", "arch_loss")),  # before anything saves the epoch
        history,
        _EpochCheckpoint(manager, write_dir / "genotype.json", data.input_shape),
        tf.keras.callbacks.TensorBoard(str(write_dir / "logs"), write_graph=False,
                                       profile_batch=0),
        # op-probability histograms, and cell diagrams where matplotlib is installed
        callbacks_lib.ArchitectureBoard(write_dir / "logs",
                                        images=importlib.util.find_spec("matplotlib") is not None),
        *(extra_callbacks or []),
    ]
    if initial_epoch < config.epochs:
        net.fit(pairs, epochs=config.epochs, initial_epoch=initial_epoch,
                validation_data=validation, callbacks=callbacks, verbose=verbose)
    check_finite(net.arch_variables, "The searched α")
    genotype = net.genotype()
    cost = cost_search.searched_cost(net, genotype, data.input_shape)
    cost_search.save_genotype(genotype, write_dir / "genotype.json", cost)
    derived_path = None
    if isinstance(net, HMNASSuperNet):
        derived_path = write_dir / "derived_model.keras"
        tmp = write_dir / ".derived_model.tmp.keras"
        net.derive_model(input_shape=data.input_shape).save(tmp)
        os.replace(tmp, derived_path)
    history_path = write_dir / "history.json"
    record = json.loads(history_path.read_text()) if history_path.exists() else {"epochs": []}
    return SearchResult(genotype, record, output_dir, time.time() - start, derived_path, cost)
