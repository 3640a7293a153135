"""Recipes: every default of one paper at once, and the search methods by name.

A `Recipe` is a small immutable value holding the search settings (space,
cell template, temperature, regularizers, architecture optimizer, search-time
weight binarization, search method) and the training settings (weight
quantizer, weight decay, learning rate, width, cell template) of one paper.
Each setting names its source (a METHODS.md section, or "bnas_tf default"
where the paper's value is not in METHODS.md or departs from it); `describe()`
prints them. `bnas-tf search --recipe NAME` and `bnas-tf train --recipe NAME`,
`SearchConfig(recipe=NAME)`, `TrainConfig(recipe=NAME)` and the keras-tuner
hypermodels (`recipe=NAME`) read the same objects; an explicit setting
always overrides the recipe's.

`DEFAULTS` are bnas_tf's own settings, used when no recipe is named. They mix
the papers on purpose (BATS's temperature, BNAS's inter-cell skip and
diversity term, AdamBNN's training) over the `lce` space, so that the
searched network deploys with binary kernels on Larq Compute Engine.

This module is also the one home of the search methods: `supernet_class(
"darts" | "hmnas")` is the supernet class a method name stands for.

Example:
    >>> import bnas_tf as bn
    >>> recipe = bn.recipes.get("bnas")
    >>> recipe.space, recipe.binary_search_weights, recipe.kernel_quantizer
    ('bnas', True, 'magnitude_aware_sign')
    >>> bn.recipes.get("bats").cell_skip
    False
    >>> print(bn.recipes.get("bats").describe())      # every setting and its source
    >>> from bnas_tf.search_run import SearchConfig
    >>> SearchConfig(recipe="bats", temperature=0.5).temperature  # explicit wins
    0.5

References:
    Bulat et al., BATS: Binary ArchitecTure Search, ECCV 2020, arXiv:2003.01711.
    Kim et al., Learning Architectures for Binary Networks (BNAS), ECCV 2020,
    arXiv:2002.06963.
    Yan et al., HM-NAS: Efficient Neural Architecture Search via Hierarchical
    Masking, ICCV 2019 Neural Architects Workshop, arXiv:1909.00122.
    Liu et al., How Do Adam and Training Strategies Help BNNs Optimization?
    (AdamBNN), ICML 2021, arXiv:2106.11309.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from bnas_tf import budget
from bnas_tf.hmnas import HMNASSuperNet
from bnas_tf.search_space import DEFAULT_SPACE, SearchSpace
from bnas_tf.supernet import SuperNet

__all__ = ["Recipe", "DEFAULTS", "get", "names", "register", "supernet_class", "method_names",
           "register_method"]

_METHODS: dict[str, type[SuperNet]] = {"darts": SuperNet, "hmnas": HMNASSuperNet}


def register_method(name: str, cls: type[SuperNet]) -> None:
    """Register a supernet class (a `SuperNet` subclass) under a method name.

    Raises:
        ValueError: if `name` is taken or `cls` is not a `SuperNet` subclass.
    """
    if name in _METHODS:
        raise ValueError(f"A search method named {name!r} is already registered.")
    if not (isinstance(cls, type) and issubclass(cls, SuperNet)):
        raise ValueError(f"Expected a SuperNet subclass for method {name!r}, got {cls!r}.")
    _METHODS[name] = cls


def method_names() -> tuple[str, ...]:
    """Names of the search methods, e.g. `("darts", "hmnas")`."""
    return tuple(_METHODS)


def supernet_class(method: str) -> type[SuperNet]:
    """`SuperNet` for `"darts"`, `HMNASSuperNet` for `"hmnas"`.

    Raises:
        ValueError: for any other name, listing the valid ones.
    """
    if method not in _METHODS:
        raise ValueError(f"Unknown search method {method!r}; expected one of "
                         f"{', '.join(repr(m) for m in _METHODS)}.")
    return _METHODS[method]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The search and training settings of one paper (or bnas_tf's defaults).

    Search settings (fields of `bnas_tf.search_run.SearchConfig`): `method`,
    `space`, `cell_skip`, `temperature`, `anneal_from` (None: fixed T),
    `diversity` (λ, 0 disables), `tau`, `temperature_regularizer` (0
    disables), `learning_rate` (Adam, supernet weights),
    `arch_learning_rate`, `arch_beta_1`, `arch_beta_2`, `arch_weight_decay`,
    `binary_search_weights`, `mixing` (how edges mix their ops, §10),
    `budget_schedule` and `warmup_fraction` (`bnas_tf.budget`).

    Training settings (fields of `bnas_tf.train_run.TrainConfig`):
    `kernel_quantizer` (None: the genotype space's `weight_quantizer`),
    `weight_decay` (stage 1; stage 2 has none), `train_learning_rate` (None:
    1e-3 · batch/256), `train_channels`, and `cell_skip` again (the trained
    network has the searched network's cell template).

    Args:
        name: the registry name.
        description: one line: what the recipe reproduces.
        sources: `{setting: source}` for every setting above.
        departures: where the recipe departs from its paper, and why.

    Raises:
        ValueError: a setting without a source, or a bad value.
    """

    name: str
    description: str
    method: str
    space: str
    cell_skip: bool
    temperature: float
    anneal_from: float | None
    diversity: float
    tau: float
    temperature_regularizer: float
    learning_rate: float
    arch_learning_rate: float
    arch_beta_1: float
    arch_beta_2: float
    arch_weight_decay: float
    binary_search_weights: bool
    mixing: str
    budget_schedule: bool
    warmup_fraction: float
    kernel_quantizer: str | None
    weight_decay: float
    train_learning_rate: float | None
    train_channels: int
    sources: tuple[tuple[str, str], ...] = ()
    departures: tuple[str, ...] = ()

    SEARCH_SETTINGS: ClassVar[tuple[str, ...]] = (
        "method", "space", "cell_skip", "temperature", "anneal_from", "diversity", "tau",
        "temperature_regularizer", "learning_rate", "arch_learning_rate", "arch_beta_1",
        "arch_beta_2", "arch_weight_decay", "binary_search_weights", "mixing",
        "budget_schedule", "warmup_fraction")
    TRAIN_SETTINGS: ClassVar[dict[str, str]] = {  # TrainConfig field: recipe field
        "cell_skip": "cell_skip", "kernel_quantizer": "kernel_quantizer",
        "weight_decay": "weight_decay", "learning_rate": "train_learning_rate",
        "channels": "train_channels"}

    def __post_init__(self):
        if isinstance(self.sources, dict):
            object.__setattr__(self, "sources", tuple(self.sources.items()))
        object.__setattr__(self, "departures", tuple(self.departures))
        settings = {*self.SEARCH_SETTINGS, *self.TRAIN_SETTINGS.values()}
        missing = sorted(settings - dict(self.sources).keys())
        if missing:
            raise ValueError(f"Recipe {self.name!r} gives no source for {missing}.")
        supernet_class(self.method)  # raises for unknown methods
        SearchSpace.get(self.space)  # raises for unknown spaces
        if self.temperature <= 0 or self.train_channels < 1:
            raise ValueError(f"Recipe {self.name!r}: expected temperature > 0 and "
                             f"train_channels >= 1.")

    def search_settings(self) -> dict:
        """`{SearchConfig field: value}` of this recipe."""
        return {key: getattr(self, key) for key in self.SEARCH_SETTINGS}

    def train_settings(self) -> dict:
        """`{TrainConfig field: value}` of this recipe."""
        return {key: getattr(self, field) for key, field in self.TRAIN_SETTINGS.items()}

    def source(self, setting: str) -> str:
        """Where the value of `setting` comes from."""
        return dict(self.sources)[setting]

    def describe(self) -> str:
        """A plain-text table: every setting, its value and its source; then the departures."""
        lines = [f"{self.name}: {self.description}"]
        for key, source in self.sources:
            lines.append(f"  {key:24} {getattr(self, key)!s:21} {source}")
        lines += [f"  departs: {d}" for d in self.departures]
        return "\n".join(lines)

    def get_config(self) -> dict:
        """JSON-ready settings (`Recipe.from_config` inverts it)."""
        config = dataclasses.asdict(self)
        config["sources"] = dict(self.sources)
        config["departures"] = list(self.departures)
        return config

    @classmethod
    def from_config(cls, config: dict) -> Recipe:
        return cls(**config)


_DEFAULTS_SOURCES = {
    "method": "§5 (DARTS bilevel search, DARTS-rule derivation)",
    "space": "§1 `lce`: every binary conv converts to LCE's binary kernel",
    "cell_skip": "§2 (BNAS cell template; `lce` repeats channels where they double)",
    "temperature": "§3 default T = 0.2 (BATS)",
    "anneal_from": "§3: annealing optional, off",
    "diversity": "§4 default λ = 1.0 (BNAS)",
    "tau": "§4 default τ = 7.7 (BNAS)",
    "temperature_regularizer": "§3: the KL form is bnas_tf's reading of BATS, off",
    "learning_rate": "§7 (AdamBNN: Adam for binary networks), lr 1e-3",
    "arch_learning_rate": "§5 Adam 3e-4 (DARTS)",
    "arch_beta_1": "§5 β = (0.5, 0.999) (DARTS)",
    "arch_beta_2": "§5 β = (0.5, 0.999) (DARTS)",
    "arch_weight_decay": "§5 weight decay 1e-3 on α (DARTS)",
    "binary_search_weights": "§6: binary activations, real weights during search (BATS)",
    "mixing": "§10 partial channels (PC-DARTS): every op on 1/4 of the channels; its "
              "supernet learns within a CPU search and its searches beat random ones, where "
              "single path's stay near chance (benchmarks/README.md, search_vs_random.py)",
    "budget_schedule": "bnas_tf.budget: warm-up, α learning rate and diversity decay scaled "
                       "to the run; the papers' values at the papers' budgets",
    "warmup_fraction": "bnas_tf.budget: weight steps only for the first quarter of the run",
    "kernel_quantizer": "the space's weight quantizer (`lce`: ste_sign)",
    "weight_decay": "§7: 5e-6 in stage 1, 0 in stage 2 (AdamBNN)",
    "train_learning_rate": "§7: Adam 1e-3 · batch/256, linear decay to 0 (AdamBNN)",
    "train_channels": "bnas_tf default: 32, 64, 128 channels = 1, 2, 4 groups of 32 (`lce`)",
}

DEFAULTS = Recipe(
    name="default",
    description="bnas_tf's defaults: a mix of the papers whose network deploys on LCE",
    method="darts", space=DEFAULT_SPACE, cell_skip=True, temperature=0.2, anneal_from=None,
    diversity=1.0, tau=7.7, temperature_regularizer=0.0, learning_rate=1e-3,
    arch_learning_rate=3e-4, arch_beta_1=0.5, arch_beta_2=0.999, arch_weight_decay=1e-3,
    binary_search_weights=False, mixing="partial", budget_schedule=True,
    warmup_fraction=budget.DEFAULT_WARMUP_FRACTION, kernel_quantizer=None, weight_decay=5e-6,
    train_learning_rate=None, train_channels=32, sources=_DEFAULTS_SOURCES,
    departures=("mixes BATS (temperature), BNAS (inter-cell skip, diversity) and AdamBNN "
                "(optimizers, two stages) over the deployable `lce` space",
                "searches every op on a quarter of the channels (PC-DARTS, §10) with a "
                "schedule scaled to the run (bnas_tf.budget), so a search of minutes decides α"),
)
"""bnas_tf's settings when no recipe is named (`get(None)`)."""

_RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    """Register `recipe` under `recipe.name`.

    Raises:
        ValueError: if the name is taken.
    """
    if not isinstance(recipe, Recipe):
        raise ValueError(f"Expected a bnas_tf.recipes.Recipe, got {recipe!r}.")
    if recipe.name in _RECIPES or recipe.name == DEFAULTS.name:
        raise ValueError(f"A recipe named {recipe.name!r} is already registered.")
    _RECIPES[recipe.name] = recipe
    return recipe


def names() -> tuple[str, ...]:
    """Names of the registered recipes."""
    return tuple(_RECIPES)


def get(identifier: str | dict | Recipe | None) -> Recipe:
    """A recipe by name, config dict, or as is; None gives `DEFAULTS` (no recipe named).

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if identifier is None:
        return DEFAULTS
    if isinstance(identifier, Recipe):
        return identifier
    if isinstance(identifier, dict):
        return Recipe.from_config(identifier)
    if isinstance(identifier, str) and identifier in _RECIPES:
        return _RECIPES[identifier]
    raise ValueError(f"Unknown recipe {identifier!r}. Known recipes: {', '.join(_RECIPES)}.")


_PAPER_SEARCH = {  # every op on every edge, the papers' fixed search settings
    "settings": {"mixing": "all", "budget_schedule": False, "warmup_fraction": 0.0},
    "sources": {"mixing": "§3: every op of every edge in the mixed op, as the paper",
                "budget_schedule": "off: the paper's α learning rate and τ whatever the "
                                   "run's length (bnas_tf.budget scales them)",
                "warmup_fraction": "no warm-up fraction (--warmup-epochs as the paper)"},
}


def _recipe(name: str, description: str, sources: dict, departures: tuple[str, ...],
            **settings) -> Recipe:
    """A paper's recipe: `DEFAULTS` changed by `settings`, with the paper's search mode."""
    settings = {**_PAPER_SEARCH["settings"], **settings}
    return register(dataclasses.replace(
        DEFAULTS, name=name, description=description,
        sources={**_DEFAULTS_SOURCES, **_PAPER_SEARCH["sources"], **sources},
        departures=departures, **settings))


_UNKNOWN = "not in METHODS.md for this paper: bnas_tf's value"
_NO_DIVERSITY = "unused (diversity off)"

_recipe(
    "bats", "BATS (Bulat et al., ECCV 2020): grouped binary space, T = 0.2, real weights "
    "during search, two-stage evaluation",
    {"space": "§1 BATS: grouped convs, 12 groups × 3 channels on CIFAR, skip_connect op",
     "cell_skip": "off: the inter-cell skip is BNAS's template (§2), not BATS's",
     "temperature": "§3 BATS: T = 0.2",
     "anneal_from": "§3: annealing optional, off (BATS's schedule is not in METHODS.md)",
     "diversity": "off: the diversity term is BNAS's (§4)",
     "tau": _NO_DIVERSITY,
     "temperature_regularizer": "off: BATS's temperature acts in the mixed op (§3)",
     "learning_rate": _UNKNOWN + " (Adam, §7)",
     "kernel_quantizer": "§6 BATS: binarize the weights after search; ste_sign",
     "weight_decay": _UNKNOWN + " (AdamBNN, §7)",
     "train_learning_rate": _UNKNOWN + " (AdamBNN, §7)",
     "train_channels": "§1 BATS CIFAR width: 36 = 12 groups × 3"},
    ("LCE keeps its grouped binary convs (3 channels per group) in float: the network "
     "does not deploy with binary kernels (§1)",
     "the search width is the command's (default 16 channels: groups of 4); pass "
     "--channels 12/24/36 for groups of 3",
     "BATS's weight scaling factors are not reproduced (ste_sign; the batch norm after "
     "each binary conv takes a per-channel scale)"),
    space="bats", cell_skip=False, diversity=0.0, train_channels=36,
)

_recipe(
    "bnas", "BNAS (Kim et al., ECCV 2020): dense XNOR-scaled space, zeroise selectable, "
    "inter-cell skips, diversity term, binary weights and activations during search",
    {"space": "§1 BNAS: dense convs with XNOR per-channel scale, none selectable, no skip op",
     "cell_skip": "§2 BNAS cell template",
     "temperature": "T = 1: BNAS uses the plain softmax (the temperature is BATS's, §3)",
     "diversity": "§4 BNAS: λ = 1.0 (public BNAS code)",
     "tau": "§4 BNAS: τ = 7.7, per epoch (public BNAS code)",
     "learning_rate": _UNKNOWN + " (Adam, §7)",
     "binary_search_weights": "BNAS's search space is binary in weights and activations "
                              "(the BNAS write-up in METHODS.md's seeds)",
     "kernel_quantizer": "§1 BNAS: magnitude_aware_sign (XNOR: mean |W| per channel)",
     "weight_decay": _UNKNOWN + " (AdamBNN, §7)",
     "train_learning_rate": _UNKNOWN + " (AdamBNN, §7)",
     "train_channels": _UNKNOWN + " (32)"},
    ("BNAS trains the searched network with binary weights from the start; `bnas-tf "
     "train` runs the two-stage recipe (pass --epochs 0,N for one binary stage)",
     "the cell-input 1×1 convs and the skips are real-valued, as in BNAS, so only the "
     "cell ops' binary convs run as LCE binary kernels"),
    space="bnas", temperature=1.0, binary_search_weights=True,
    kernel_quantizer="magnitude_aware_sign",
)

_recipe(
    "hmnas", "HM-NAS (Yan et al., ICCVW 2019): edge weights and hierarchical masks, the "
    "searched weights kept",
    {"method": "§8 HM-NAS: multi-level encoding, hierarchical masks",
     "space": "bnas_tf: `lce` (HM-NAS searched the real-valued DARTS space; `lce` has its "
              "op kinds minus separable convs, §1, and deploys)",
     "cell_skip": "off: HM-NAS uses DARTS cells (the skip is BNAS's, §2)",
     "temperature": "T = 1: HM-NAS weighs ops by softmax(α) (§8)",
     "diversity": "off: the diversity term is BNAS's (§4)",
     "tau": _NO_DIVERSITY,
     "learning_rate": _UNKNOWN + " (Adam, §7)",
     "arch_learning_rate": "§5 (DARTS, which HM-NAS builds on)",
     "weight_decay": _UNKNOWN + " (AdamBNN, §7)",
     "train_learning_rate": _UNKNOWN + " (AdamBNN, §7)"},
    ("HM-NAS is not a binary method: searching binary activations (§6) is bnas_tf's",
     "HM-NAS continues training the searched subnetwork (§8): use RUN/derived_model.keras; "
     "`bnas-tf train` trains the genotype from scratch"),
    method="hmnas", cell_skip=False, temperature=1.0, diversity=0.0,
)

_recipe(
    "adambnn", "AdamBNN (Liu et al., ICML 2021) training: Adam, two stages, weight decay "
    "5e-6 then 0, scaled binary weights; the search is bnas_tf's default",
    {"kernel_quantizer": "magnitude_aware_sign: ReActNet-A's binary conv (mean |W| per "
                         "channel), the network AdamBNN trains (§7, §9)",
     **{key: _DEFAULTS_SOURCES[key] for key in _PAPER_SEARCH["settings"]}},
    ("AdamBNN has no search: the search settings are bnas_tf's defaults (mixing, "
     "schedule included)",
     "AdamBNN distils from a real-valued teacher (ReActNet's distributional loss); "
     "`bnas-tf train` does not (bn.train_two_stage(teacher=...) does)",
     "AdamBNN trains ReActNet-A on ImageNet; here the network is the searched one"),
    kernel_quantizer="magnitude_aware_sign", mixing=DEFAULTS.mixing,
    budget_schedule=DEFAULTS.budget_schedule, warmup_fraction=DEFAULTS.warmup_fraction,
)
