"""A complete, resumable search run writing its results to a directory.

`run_search` is what `bnas-tf search` does. The output directory gets:

* `config.json`    – the run's settings (checked again on `resume`),
* `history.json`   – one entry per finished epoch: logs and op probabilities,
* `genotype.json`  – the genotype derived after the last finished epoch,
* `logs/`          – TensorBoard event files,
* `checkpoints/`   – weights, α and both optimizers after every epoch,
* `derived_model.keras` – with `method="hmnas"` only: `net.derive_model()`,
  the pruned network holding the searched weights (continue training it with
  `bn.load_model`); rewritten atomically at the end of the run. To derive it
  again from the checkpoints, `--resume` the run with the same `--epochs`.

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
from pathlib import Path

import tensorflow as tf

from bnas_tf import budget as budget_lib
from bnas_tf import callbacks as callbacks_lib
from bnas_tf import data as data_lib
from bnas_tf import distribute, recipes, regularizers
from bnas_tf._io import atomic_write_text
from bnas_tf.genotype import Genotype
from bnas_tf.hmnas import HMNASSuperNet
from bnas_tf.masks import DEFAULT_INITIAL, DEFAULT_THRESHOLD, DEFAULT_WEIGHT_INITIAL
from bnas_tf.search_space import SearchSpace
from bnas_tf.supernet import SuperNet

__all__ = ["SearchConfig", "SearchResult", "run_search", "build_supernet"]

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
    recipe's name.

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

    def __post_init__(self):
        mixing_given = self.mixing is not None
        for key, value in recipes.get(self.recipe).search_settings().items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        recipes.supernet_class(self.method)  # raises for unknown methods, naming the valid ones
        if self.method == "hmnas" and not mixing_given:
            self.mixing = "all"  # HM-NAS masks act on every op of every edge
        self.gumbel_temperature = tuple(float(t) for t in self.gumbel_temperature)

    @classmethod
    def from_dict(cls, values: dict) -> SearchConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown search settings {unknown}; known: {sorted(known)}.")
        return cls(**values)


@dataclasses.dataclass
class SearchResult:
    genotype: Genotype
    history: dict
    output_dir: Path
    seconds: float
    derived_model_path: Path | None = None


def search_schedule(config: SearchConfig, steps_per_epoch: int) -> dict:
    """The architecture learning rate, diversity τ and warm-up a search runs with.

    With `budget_schedule` (the default) they follow `bnas_tf.budget.SearchBudget`:
    `lr_α = max(arch_learning_rate, decision · T / architecture steps)` and
    `τ · min(1, epochs / 50)`; otherwise the configured values as they are.

    Example:
        >>> search_schedule(SearchConfig(epochs=2), steps_per_epoch=40)["arch_learning_rate"]
        0.02
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


def build_supernet(config: SearchConfig, num_classes: int,
                   strategy: tf.distribute.Strategy | None = None,
                   schedule: dict | None = None) -> SuperNet:
    """The compiled supernet a `SearchConfig` describes, built in `strategy`'s scope.

    `schedule` (from `search_schedule`) overrides the architecture learning
    rate and diversity τ. With `mixed_bfloat16`, this sets Keras' global
    mixed-precision policy.
    """
    if config.mixed_bfloat16:
        tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    with distribute.get_strategy(strategy).scope():
        return _build_supernet(config, num_classes, schedule or {})


def _build_supernet(config: SearchConfig, num_classes: int, schedule: dict) -> SuperNet:
    space = SearchSpace.get(config.space, nodes=config.nodes,
                            input_quantizer=config.input_quantizer,
                            binary_search_weights=config.binary_search_weights)
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
        terms.append(regularizers.Diversity(config.diversity,
                                            tau=schedule.get("tau", config.tau)))
    if config.temperature_regularizer:
        terms.append(regularizers.Temperature(config.temperature_regularizer))
    net.compile(
        optimizer=tf.keras.optimizers.legacy.Adam(config.learning_rate),
        arch_optimizer=tf.keras.optimizers.legacy.Adam(
            schedule.get("arch_learning_rate", config.arch_learning_rate),
            beta_1=config.arch_beta_1, beta_2=config.arch_beta_2),
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

    def __init__(self, manager: tf.train.CheckpointManager, genotype_path: Path):
        super().__init__()
        self.manager, self.genotype_path = manager, genotype_path

    def on_epoch_end(self, epoch, logs=None):
        self.manager.save(checkpoint_number=epoch + 1)
        self.model.genotype(warn=False).save(self.genotype_path)


def _effective_config(output_dir: Path, config: SearchConfig, resume: bool,
                      chief: bool = True) -> SearchConfig:
    """The settings to run with: the saved ones when resuming (with the new `epochs`).

    Only the chief refuses an existing search: it writes `config.json` itself.
    """
    config_path = output_dir / "config.json"
    if resume:
        if not config_path.exists():
            raise FileNotFoundError(
                f"--resume: {output_dir} holds no search (no config.json). Run without "
                "--resume to start one.")
        saved = SearchConfig.from_dict(json.loads(config_path.read_text()))
        saved.epochs = config.epochs  # resuming may extend the run
        return saved
    if chief and config_path.exists():
        raise FileExistsError(
            f"{output_dir} already holds a search. Pass --resume to continue it, or choose "
            "another --output.")
    return config


def run_search(config: SearchConfig, output_dir: str | os.PathLike, *, resume: bool = False,
               extra_callbacks: list | None = None, verbose: int = 2,
               strategy: str | tf.distribute.Strategy | None = "default") -> SearchResult:
    """Search, checkpointing every epoch; with `resume`, continue after the last one.

    On `resume` the saved settings are used (only `epochs` may change), and
    training restarts at the epoch after the newest checkpoint with its α,
    weights and optimizer states (also under a strategy: the checkpoint does
    not depend on the number of replicas).

    Args:
        strategy: "default", "mirrored", "multi_worker" or a
            `tf.distribute.Strategy` (see `bnas_tf.distribute.get_strategy`).

    Raises:
        FileExistsError: the directory holds a search and `resume` is False.
        FileNotFoundError: `resume` on a directory without a search.
        bnas_tf.errors.DataError: the dataset cannot be loaded.
    """
    start = time.time()
    strategy = distribute.get_strategy(strategy, sync_batch_norm=config.sync_batch_norm)  # first
    chief = distribute.is_chief(strategy)
    output_dir = Path(output_dir)
    config = _effective_config(output_dir, config, resume, chief)
    data = data_lib.load(config.dataset, config.data_dir, limit=config.limit,
                         download=config.download,
                         seed=config.seed if config.data_seed is None else config.data_seed)
    write_dir = distribute.worker_dir(output_dir, strategy)
    try:
        return _search(config, data, strategy, output_dir, write_dir, resume=resume,
                       extra_callbacks=extra_callbacks, verbose=verbose, start=start)
    finally:
        distribute.cleanup_worker_dir(write_dir, output_dir)


def _search(config, data, strategy, output_dir, write_dir, *, resume, extra_callbacks, verbose,
            start) -> SearchResult:
    write_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(write_dir / "config.json", json.dumps(dataclasses.asdict(config), indent=2))
    tf.keras.utils.set_random_seed(config.seed)
    pairs = data_lib.search_pairs(data, batch_size=config.batch_size, augment=config.augment,
                                  seed=config.seed)
    schedule = search_schedule(config, int(pairs.cardinality()))
    log.info("Search schedule: %d steps per epoch, %d warm-up steps, architecture learning "
             "rate %.3g, diversity tau %.3g epochs", schedule["steps_per_epoch"],
             schedule["warmup_steps"], schedule["arch_learning_rate"], schedule["tau"])
    net = build_supernet(config, data.num_classes, strategy, schedule)
    with strategy.scope():
        net(tf.zeros((1, *data.input_shape)))  # create variables before restoring into them
    validation = data_lib.make_dataset(data, batch_size=max(config.batch_size, 128))
    checkpoint = tf.train.Checkpoint(net=net, optimizer=net.optimizer,
                                     arch_optimizer=net.arch_optimizer)
    manager = tf.train.CheckpointManager(checkpoint, write_dir / "checkpoints", max_to_keep=2)
    initial_epoch = 0
    latest = tf.train.latest_checkpoint(str(output_dir / "checkpoints")) if resume else None
    if latest:
        with strategy.scope():
            checkpoint.restore(latest)
        initial_epoch = int(net.epoch.numpy()) + 1
        log.info("Resuming %s at epoch %d", output_dir, initial_epoch + 1)
    callbacks = []
    if config.anneal_from:
        callbacks.append(callbacks_lib.TemperatureScheduler.anneal(
            config.anneal_from, config.temperature, config.epochs))
    if resume and write_dir != output_dir and (output_dir / "history.json").exists():
        (write_dir / "history.json").write_text((output_dir / "history.json").read_text())
    history = callbacks_lib.SearchHistory(write_dir / "history.json", resume=resume,
                                          schedule=schedule)
    callbacks += [
        history,
        _EpochCheckpoint(manager, write_dir / "genotype.json"),
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
    genotype = net.genotype()
    genotype.save(write_dir / "genotype.json")
    derived_path = None
    if isinstance(net, HMNASSuperNet):
        derived_path = write_dir / "derived_model.keras"
        tmp = write_dir / ".derived_model.tmp.keras"
        net.derive_model(input_shape=data.input_shape).save(tmp)
        os.replace(tmp, derived_path)
    history_path = write_dir / "history.json"
    record = json.loads(history_path.read_text()) if history_path.exists() else {"epochs": []}
    return SearchResult(genotype, record, output_dir, time.time() - start, derived_path)
