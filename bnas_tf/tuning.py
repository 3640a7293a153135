"""keras-tuner hypermodels: tune the search, or the training of a searched genotype.

`SearchHyperModel` tunes the search's own hyperparameters (temperature T,
diversity weight λ and decay τ, both learning rates, supernet width and
depth). Its objective is the accuracy of the *derived* network: each trial
searches, derives the genotype, trains the derived binary network briefly in
two stages and reports its validation accuracy as `derived_val_accuracy`.
`TrainHyperModel` tunes the two-stage training of one genotype (learning
rate, stage-1 weight decay, width, depth) and reports `val_accuracy`.

Select on held-out data, never on the test split: split a validation set off
the training data with `bnas_tf.data.holdout`, give the tuner the rest for
training and the held-out part as `validation_data` (every objective is
computed on it), and evaluate the test split once, for the final accuracy of
the network trained with the best hyperparameters. Tuning on the test split
makes the reported figure optimistic.

Both work with `RandomSearch`, `BayesianOptimization` and `Hyperband`, with
`Tuner(distribution_strategy=bn.distribute.get_strategy("mirrored"))`, and
with keras-tuner's distributed mode (one chief oracle, several workers,
configured by `KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP`,
`KERASTUNER_ORACLE_PORT`; see the README, "Scaling out").

Needs keras-tuner 1.3.5 (`pip install bnas_tf[tuner]`): 1.4.x rejects tf-keras
models (keras-team/keras-tuner#1039). This is the only module importing it.

Example:
    >>> import keras_tuner as kt
    >>> data = bn.data.load("cifar10", "data")
    >>> train, val = bn.data.holdout(data, seed=0)   # 10 % of each class held out
    >>> hypermodel = SearchHyperModel(recipe="bnas", num_classes=10, derived_epochs=(2, 2))
    >>> tuner = kt.RandomSearch(hypermodel, objective=SearchHyperModel.objective(),
    ...                         max_trials=10, directory="TUNE", project_name="search")
    >>> tuner.search(bn.data.search_pairs(train, batch_size=64), epochs=10,
    ...              validation_data=bn.data.make_dataset(val, batch_size=128))
    >>> tuner.get_best_hyperparameters()[0].values
    >>> # then search and train with those values; report the test split's accuracy once:
    >>> # bn.data.make_dataset(data, batch_size=128) is the test split

Fix a hyperparameter by passing `hyperparameters=` with `hp.Fixed(name, value)`
to the tuner (keras-tuner then never tunes it).

A `SearchHyperModel` trial searches as `bnas-tf search` does: it builds its
supernet with `bnas_tf.search_run.build_supernet` from a `SearchConfig` (the
recipe's settings, the hypermodel's `search_settings` such as `mixing=` or
`budget_schedule=`, and the trial's values) and applies the same budget
schedule (`search_schedule`) for the steps and epochs it is given.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import tensorflow as tf

from bnas_tf import callbacks as callbacks_lib
from bnas_tf import recipes, search_run
from bnas_tf.builder import build_network
from bnas_tf.genotype import Genotype
from bnas_tf.search_space import SearchSpace
from bnas_tf.supernet import SuperNet
from bnas_tf.training import train_two_stage

try:
    import keras_tuner as _kt
except ImportError:  # keras-tuner is an optional dependency
    _kt = None

__all__ = ["SearchHyperModel", "TrainHyperModel", "DERIVED_OBJECTIVE"]

log = logging.getLogger(__name__)

DERIVED_OBJECTIVE = "derived_val_accuracy"
"""Metric `SearchHyperModel.fit` reports: the derived network's validation accuracy."""

_INSTALL = ("bnas_tf.tuning needs keras-tuner 1.3.5: `pip install bnas_tf[tuner]` (or "
            "`pip install keras-tuner==1.3.5`; 1.4.x rejects tf-keras models, "
            "keras-team/keras-tuner#1039).")


def _keras_tuner():
    if _kt is None:
        raise ImportError(_INSTALL)
    return _kt


_HyperModel = _kt.HyperModel if _kt is not None else object


def _choices(name: str, values) -> list[int]:
    values = [values] if isinstance(values, int) else list(values)
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"Expected {name} to be a positive integer or a non-empty sequence of "
                         f"them, got {values!r}.")
    return values


def _int_hp(hp, name: str, values: list[int], default: int | None = None) -> int:
    if len(values) == 1:
        return hp.Fixed(name, values[0])
    return hp.Choice(name, values, default=default if default in values else values[0])


def _stages(name: str, epochs) -> tuple[int, int]:
    if isinstance(epochs, int):
        epochs = (epochs, epochs)
    epochs = tuple(epochs)
    if len(epochs) != 2 or any(isinstance(e, bool) or not isinstance(e, int) or e < 0
                               for e in epochs):
        raise ValueError(f"Expected {name} to be (stage1, stage2) epochs >= 0, got {epochs!r}.")
    return epochs


def _input_shape(dataset: tf.data.Dataset, pairs: bool) -> tuple[int, ...]:
    spec = dataset.element_spec
    images = spec[0][0] if pairs else spec[0]
    return tuple(images.shape[1:])


_TUNED = ("temperature", "diversity", "tau", "learning_rate", "arch_learning_rate")
"""`SearchConfig` fields `SearchHyperModel` tunes (besides `channels` and `layers`)."""

_NOT_SEARCH_SETTINGS = ("dataset", "data_dir", "download", "limit", "batch_size", "augment",
                        "validation_fraction", "data_seed", "epochs", "sync_batch_norm",
                        "recipe", "space", "seed", "layers", "channels")
"""`SearchConfig` fields that are the tuner's data, or arguments of their own."""

_SPACE_SETTINGS = ("nodes", "input_quantizer", "binary_search_weights")


def _steps_per_epoch(pairs: tf.data.Dataset, steps: int | None) -> int | None:
    if steps:
        return int(steps)
    cardinality = int(pairs.cardinality())
    return cardinality if cardinality > 0 else None


class SearchHyperModel(_HyperModel):
    """A supernet per trial; `fit` searches, then trains the derived network.

    Hyperparameters (name: range, default): `temperature`: 0.05–1 log, 0.2;
    `diversity` (λ): 0–2, 1.0; `tau` (τ, epochs): 1–20 log, 7.7;
    `learning_rate`: 1e-4–1e-2 log, 1e-3; `arch_learning_rate`: 1e-4–1e-2
    log, 3e-4; `channels` and `layers`: the given choices. With `recipe`,
    the defaults are the recipe's.

    A trial searches as `bnas-tf search` does: its hyperparameter values,
    the recipe's settings and the `search_settings` make a
    `bnas_tf.search_run.SearchConfig` (`search_config(hp)`), and
    `bnas_tf.search_run.build_supernet` builds the supernet from it. So the
    search method, mixing (the recipe's: `partial` without one), partial
    channels, edge normalization, cell template, search-time weight
    binarization, the α optimizer's β and weight decay, the temperature
    regularizer and the warm-up fraction are those of `bnas-tf search`; and
    `fit`, which knows the steps per epoch (the dataset's cardinality, or
    `steps_per_epoch`) and `epochs`, gives the supernet the budget schedule
    (`search_schedule`: architecture learning rate `max(lr_α, decision · T /
    N)`, τ scaled by epochs / 50) that `run_search` gives a search of that
    size. The tuned `arch_learning_rate` and `tau` are the schedule's base
    values, as `--arch-learning-rate` and `--tau` are.

    `fit(hp, model, pairs, validation_data=..., epochs=..., callbacks=...)`
    takes what `tuner.search` gets: `pairs` from `bnas_tf.data.search_pairs`
    of the training part of `bnas_tf.data.holdout(data)`, `validation_data`
    batches `(images, labels)` of its held-out part (not the test split: the
    objective is computed on them). It runs `SuperNet.fit` with
    the tuner's callbacks (so `Hyperband` resumes supernets from earlier
    rounds), derives the genotype, builds the derived network
    (`derived_layers` × `derived_channels`, default: the supernet's) and
    trains it with `train_two_stage` on the training halves of `pairs` for
    `derived_epochs`, with the recipe's training settings. It returns
    `{"derived_val_accuracy", "derived_val_loss", "search_val_accuracy"}`,
    all on `validation_data`; use `objective=SearchHyperModel.objective()`.
    The tuner's saved "best model" is a supernet: read the winning genotype
    from a new search with `get_best_hyperparameters()`, e.g.
    `run_search(hypermodel.search_config(best, epochs=50), "RUN")` (set the
    data fields of the config too).

    Example:
        >>> hypermodel = SearchHyperModel(recipe="bats", num_classes=10, channels=(12, 24))
        >>> SearchHyperModel(num_classes=10, mixing="gumbel", budget_schedule=False)

    Args:
        space: search space (name, config or `SearchSpace`); default: the
            recipe's (`lce` without a recipe). A name is read with the
            `nodes`, `input_quantizer` and `binary_search_weights` settings
            (default: the recipe's), as `SearchConfig.space`.
        recipe: a `bnas_tf.recipes` name (None: bnas_tf's defaults).
        num_classes: classifier outputs.
        channels: supernet widths to choose from (an int fixes it).
        layers: supernet depths to choose from.
        search_epochs: supernet epochs when the tuner passes no `epochs`.
        derived_epochs: `(stage1, stage2)` epochs of the derived network.
        derived_layers, derived_channels: derived network size (None: the
            supernet's).
        seed: seed of α and of the derived network's initialization.
        input_shape: the images' shape, e.g. `(32, 32, 3)`; needed by a
            cost-targeted search (`cost="ops"`, `cost_target=...`), whose
            per-edge costs depend on the resolution.
        name, tunable: as `keras_tuner.HyperModel`.
        **search_settings: other `SearchConfig` fields, overriding the
            recipe's: `mixing`, `partial_channels`, `edge_normalization`,
            `gumbel_temperature`, `budget_schedule`, `decision`,
            `warmup_fraction`, `warmup_epochs`, `method`, `cell_skip`,
            `anneal_from`, `temperature_regularizer`, `second_order`, ...
            Not the tuned ones (fix those with `hp.Fixed`) nor the data's.

    Raises:
        ImportError: keras-tuner is not installed.
        ValueError: a bad argument or setting, e.g. a width that
            `partial_channels` does not divide, naming it.
    """

    def __init__(self, space: SearchSpace | str | dict | None = None, *,
                 recipe: str | None = None, num_classes: int = 10,
                 channels: int | Sequence[int] = (8, 16, 32), layers: int | Sequence[int] = (5, 8),
                 search_epochs: int = 10, derived_epochs: int | Sequence[int] = (1, 1),
                 derived_layers: int | None = None, derived_channels: int | None = None,
                 seed: int = 0, input_shape: Sequence[int] | None = None,
                 name: str | None = None, tunable: bool = True, **search_settings):
        _keras_tuner()
        super().__init__(name=name, tunable=tunable)
        self.recipe = recipes.get(recipe)
        self._recipe_id = recipe if recipe is None or isinstance(recipe, str) else self.recipe
        self.num_classes = _choices("num_classes", num_classes)[0]
        self.channels, self.layers = _choices("channels", channels), _choices("layers", layers)
        self.search_epochs = _choices("search_epochs", search_epochs)[0]
        self.derived_epochs = _stages("derived_epochs", derived_epochs)
        self.derived_layers, self.derived_channels = derived_layers, derived_channels
        self.seed = seed
        self.search_settings = self._check_settings(search_settings, named=(
            space is None or isinstance(space, str)))
        self.input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        if self.search_settings.get("cost") and self.input_shape is None:
            raise ValueError("A cost-targeted SearchHyperModel (cost="
                             f"{self.search_settings['cost']!r}) needs the images' shape: pass "
                             "input_shape=(height, width, channels), e.g. (32, 32, 3).")
        self._space_name = space if isinstance(space, str) else self.recipe.space
        # every width and depth choice must make a valid search (e.g. partial_channels | width)
        for width in self.channels:
            for depth in self.layers:
                template = self._config({}, channels=width, layers=depth)
        # a SearchSpace (or config) is searched as given; a name as SearchConfig reads it
        self._space = (None if space is None or isinstance(space, str)
                       else SearchSpace.get(space))
        self.space = self._space or search_run.search_space(template)

    def _check_settings(self, settings: dict, named: bool) -> dict:
        known = {f.name for f in dataclasses.fields(search_run.SearchConfig)}
        for key in settings:
            if key in _TUNED:
                raise ValueError(f"SearchHyperModel tunes {key!r}: fix it with "
                                 f"hyperparameters=kt.HyperParameters() and hp.Fixed({key!r}, "
                                 "value) in the tuner, instead of passing it as a setting.")
            if key in _NOT_SEARCH_SETTINGS or key not in known:
                allowed = sorted(known - set(_TUNED) - set(_NOT_SEARCH_SETTINGS))
                raise ValueError(f"Unknown search setting {key!r} for SearchHyperModel; "
                                 f"expected one of {allowed} (the data and epochs are the "
                                 "tuner's; space, recipe, seed, channels and layers are "
                                 "arguments).")
            if key in _SPACE_SETTINGS and not named:
                raise ValueError(f"{key!r} describes a named space; with a SearchSpace "
                                 "object, set it on the space instead.")
        return dict(settings)

    def _config(self, tuned: dict, *, channels: int, layers: int,
                epochs: int | None = None) -> search_run.SearchConfig:
        return search_run.SearchConfig(
            recipe=self._recipe_id, space=self._space_name, channels=channels, layers=layers,
            epochs=epochs or self.search_epochs, seed=self.seed,
            **self.search_settings, **tuned)

    def search_config(self, hp, *, epochs: int | None = None) -> search_run.SearchConfig:
        """The `SearchConfig` a trial with hyperparameters `hp` searches with.

        Declares the hyperparameters in `hp` (as `build` does) on first use.
        `epochs`: the search's (default `search_epochs`). Its data fields
        (`dataset`, `data_dir`, ...) are `SearchConfig`'s defaults: the
        tuner's data are what it is given. With a `SearchSpace` object, the
        object is searched, whatever `space` the config names.

        Example:
            >>> config = hypermodel.search_config(tuner.get_best_hyperparameters()[0])
            >>> config.mixing, config.temperature
            ('partial', 0.2)
        """
        layers = _int_hp(hp, "layers", self.layers, 5)  # the order of earlier versions
        channels = _int_hp(hp, "channels", self.channels, 16)
        defaults = self._config({}, channels=channels, layers=layers)
        tuned = {
            "temperature": hp.Float("temperature", 0.05, 1.0, sampling="log",
                                    default=defaults.temperature),
            "diversity": hp.Float("diversity", 0.0, 2.0, default=defaults.diversity),
            "tau": hp.Float("tau", 1.0, 20.0, sampling="log", default=defaults.tau),
            "learning_rate": hp.Float("learning_rate", 1e-4, 1e-2, sampling="log",
                                      default=defaults.learning_rate),
            "arch_learning_rate": hp.Float("arch_learning_rate", 1e-4, 1e-2, sampling="log",
                                           default=defaults.arch_learning_rate)}
        return self._config(tuned, channels=channels, layers=layers, epochs=epochs)

    @staticmethod
    def objective():
        """`keras_tuner.Objective("derived_val_accuracy", "max")`."""
        return _keras_tuner().Objective(DERIVED_OBJECTIVE, direction="max")

    def build(self, hp) -> SuperNet:
        """The compiled supernet of `search_config(hp)` (`search_run.build_supernet`).

        Its architecture learning rate and τ are the configured ones until
        `fit` applies the budget schedule.
        """
        return search_run.build_supernet(self.search_config(hp), self.num_classes,
                                         space=self._space, input_shape=self.input_shape)

    def fit(self, hp, model: SuperNet, pairs: tf.data.Dataset, *, validation_data=None,
            epochs: int | None = None, callbacks=None, verbose: int = 0, **kwargs) -> dict:
        if validation_data is None:
            raise ValueError("SearchHyperModel needs validation_data: batches (images, labels) "
                             "on which the derived network is scored; pass "
                             "tuner.search(pairs, validation_data=...) with the held-out part "
                             "of bnas_tf.data.holdout(data).")
        epochs = epochs or self.search_epochs
        config = self.search_config(hp, epochs=epochs)
        steps = _steps_per_epoch(pairs, kwargs.get("steps_per_epoch"))
        if steps is None:
            log.warning("The search pairs have no known length: the trial searches without "
                        "the budget schedule (pass steps_per_epoch to tuner.search).")
        else:  # as run_search: the schedule of this many steps and epochs
            schedule = search_run.search_schedule(config, steps)
            search_run.apply_search_schedule(model, schedule)
            log.info("Trial search schedule: %d steps per epoch, %d warm-up steps, "
                     "architecture learning rate %.3g, diversity tau %.3g epochs",
                     steps, schedule["warmup_steps"], schedule["arch_learning_rate"],
                     schedule["tau"])
        callbacks = list(callbacks or [])
        if config.anneal_from:  # as run_search
            callbacks.insert(0, callbacks_lib.TemperatureScheduler.anneal(
                config.anneal_from, config.temperature, epochs))
        history = model.fit(pairs, epochs=epochs, validation_data=validation_data,
                            callbacks=callbacks, verbose=verbose, **kwargs)
        genotype = model.genotype()
        with model.distribute_strategy.scope():
            derived = build_network(
                genotype, num_classes=model.num_classes,
                layers=self.derived_layers or model.num_layers,
                channels=self.derived_channels or model.channels,
                input_shape=_input_shape(pairs, pairs=True), cell_skip=model.cell_skip)
        train = pairs.map(lambda train_half, val_half: train_half)
        result = train_two_stage(derived, train, validation_data, epochs=self.derived_epochs,
                                 learning_rate=hp.get("learning_rate"),
                                 weight_decay=self.recipe.weight_decay,
                                 kernel_quantizer=(self.recipe.kernel_quantizer
                                                   or genotype.search_space.weight_quantizer),
                                 test_ds=validation_data, verbose=verbose)
        score = result.test["stage2"]
        log.info("trial genotype %s: derived val_accuracy %.4f", genotype.to_json(None),
                 score["accuracy"])
        return {DERIVED_OBJECTIVE: float(score["accuracy"]),
                "derived_val_loss": float(score["loss"]),
                "search_val_accuracy": float(history.history.get("val_accuracy", [0.0])[-1])}


class TrainHyperModel(_HyperModel):
    """The derived network of one genotype per trial; `fit` trains it in two stages.

    Hyperparameters: `learning_rate`: 1e-4–1e-2 log, 1e-3; `weight_decay`
    (stage 1, conv kernels): 1e-7–1e-4 log, 5e-6; `channels`, `layers`: the
    given choices. `fit(hp, model, train, validation_data=...)` runs
    `train_two_stage` and returns `{"val_accuracy", "val_loss"}` of the
    binary (stage-2) network on `validation_data`; the tuner's callbacks see
    stage 2 only. An `epochs` from the tuner (Hyperband) is used for each
    stage. Pass the two parts of `bnas_tf.data.holdout(data)`: `train` from
    its training part, `validation_data` from its held-out part (not the test
    split).

    Example:
        >>> train, val = bn.data.holdout(data, seed=0)
        >>> tuner = kt.Hyperband(TrainHyperModel("RUN/genotype.json"),
        ...                      objective="val_accuracy", max_epochs=10)
        >>> tuner.search(bn.data.make_dataset(train, batch_size=64, training=True),
        ...              validation_data=bn.data.make_dataset(val, batch_size=128))

    Args:
        genotype: a `Genotype` or the path of a genotype JSON file.
        recipe: a `bnas_tf.recipes` name: default learning rate and weight
            decay, weight quantizer and cell template (None: bnas_tf's defaults).
        num_classes: classifier outputs.
        input_shape: `(height, width, channels)` of the images.
        channels, layers: network sizes to choose from (an int fixes it).
        epochs: `(stage1, stage2)` epochs when the tuner passes none.
        kernel_quantizer: stage-2 weight binarizer (default: the recipe's, else
            the genotype's).

    Raises:
        ImportError: keras-tuner is not installed.
    """

    def __init__(self, genotype: Genotype | str, *, recipe: str | None = None,
                 num_classes: int = 10, input_shape: Sequence[int] = (32, 32, 3),
                 channels: int | Sequence[int] = (16, 36), layers: int | Sequence[int] = (8,),
                 epochs: int | Sequence[int] = (1, 1), kernel_quantizer: str | None = None,
                 **kwargs):
        _keras_tuner()
        super().__init__(**kwargs)
        self.genotype = genotype if isinstance(genotype, Genotype) else Genotype.load(genotype)
        self.recipe = recipes.get(recipe)
        self.num_classes = _choices("num_classes", num_classes)[0]
        self.input_shape = tuple(input_shape)
        self.channels, self.layers = _choices("channels", channels), _choices("layers", layers)
        self.epochs = _stages("epochs", epochs)
        self.kernel_quantizer = (kernel_quantizer or self.recipe.kernel_quantizer
                                 or self.genotype.search_space.weight_quantizer)

    def build(self, hp) -> tf.keras.Model:
        hp.Float("learning_rate", 1e-4, 1e-2, sampling="log",
                 default=self.recipe.train_learning_rate or 1e-3)
        hp.Float("weight_decay", 1e-7, 1e-4, sampling="log",
                 default=max(self.recipe.weight_decay, 1e-7))
        return build_network(self.genotype, num_classes=self.num_classes,
                             layers=_int_hp(hp, "layers", self.layers, 8),
                             channels=_int_hp(hp, "channels", self.channels, 36),
                             input_shape=self.input_shape, cell_skip=self.recipe.cell_skip)

    def fit(self, hp, model: tf.keras.Model, train: tf.data.Dataset, *, validation_data=None,
            epochs: int | None = None, callbacks=None, verbose: int = 0, **kwargs) -> dict:
        if validation_data is None:
            raise ValueError("TrainHyperModel needs validation_data: batches (images, labels); "
                             "pass tuner.search(train, validation_data=...) with the held-out "
                             "part of bnas_tf.data.holdout(data).")
        kwargs.pop("initial_epoch", None)  # Hyperband's; each stage starts at epoch 0
        if kwargs:
            raise TypeError(f"TrainHyperModel.fit got unexpected arguments {sorted(kwargs)}.")
        stages = self.epochs if epochs is None else _stages("epochs", int(epochs))
        tuner_callbacks = list(callbacks or [])
        result = train_two_stage(model, train, validation_data, epochs=stages,
                                 learning_rate=hp.get("learning_rate"),
                                 weight_decay=hp.get("weight_decay"),
                                 kernel_quantizer=self.kernel_quantizer, test_ds=validation_data,
                                 callbacks=lambda stage: tuner_callbacks if stage == 2 else [],
                                 verbose=verbose)
        score = result.test["stage2"]
        return {"val_accuracy": float(score["accuracy"]), "val_loss": float(score["loss"])}
