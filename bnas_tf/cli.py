"""The `bnas-tf` command line: the only module that parses arguments.

    bnas-tf search --dataset cifar10 --data-dir DIR --layers 5 \\
        --channels 16 --epochs 2 --limit 2000 --output RUN
    bnas-tf search --output RUN --epochs 4 --resume     # continue an interrupted run
    bnas-tf search --recipe bnas ... --output RUN       # every setting of one paper
    bnas-tf search --method hmnas ... --output RUN      # + RUN/derived_model.keras
    bnas-tf train --genotype RUN/genotype.json --dataset cifar10 --data-dir DIR \\
        --epochs 2,2 --limit 2000 --output TRAIN
    bnas-tf train --baseline quicknet --dataset cifar10 ... --output TRAIN_QUICKNET
    bnas-tf train --genotype RUN/genotype.json --image-size 224 --stem imagenet ...
    bnas-tf search ... --strategy mirrored        # all local GPUs (README "Scaling out")
    bnas-tf export TRAIN/model.keras --output model.tflite --verify 1000 \\
        --dataset cifar10 --data-dir DIR          # as export/to_tflite.py
    bnas-tf --version

Settings that a recipe sets default to the recipe's value (`--recipe`), else
to bnas_tf's defaults (`bnas_tf.recipes.DEFAULTS`); a flag given on the
command line overrides either.

Bad input ends the command with exit status 2 and one line on stderr, before
anything is written: every setting is checked, the data loaded and split, the
network built and the output directory checked first (see README, "Bad
input"). `--resume` keeps the stored settings; a flag given with another value
is an error naming it and both values. TensorFlow's C++ start-up lines are
hidden unless `--verbose` (or TF_CPP_MIN_LOG_LEVEL is set; see
`bnas_tf._startup`): importing this module imports TensorFlow with them kept
off stderr (`import bnas_tf` alone does not import TensorFlow).
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from bnas_tf import _startup  # bnas_tf/__init__ selects Keras 2; imports no TensorFlow
from bnas_tf._version import VersionAction

_startup.import_tensorflow()  # first: TensorFlow's C++ start-up lines stay off stderr

# isort: split
from bnas_tf import data as data_lib  # noqa: E402
from bnas_tf import recipes  # noqa: E402
from bnas_tf.budget import DEFAULT_DECISION  # noqa: E402
from bnas_tf.errors import NonFiniteError  # noqa: E402
from bnas_tf.search_space import SearchSpace  # noqa: E402

__all__ = ["main", "build_parser", "search_config", "train_config", "given_flags"]

_USER_ERRORS = (ValueError, OSError, NonFiniteError)
"""Reported in one line with exit status 2: bnas_tf's errors are ValueErrors (DataError,
GenotypeError, ...), output paths raise OSErrors, a diverged run NonFiniteError."""

_DEFAULTS = recipes.DEFAULTS


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (the usage is one `--help` away)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None (a recipe's setting: its help says the default)."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def _recipe_default(value) -> str:
    return f"(default: {value}, or the recipe's)"


def _add_recipe_argument(p) -> None:
    p.add_argument("--recipe", default=None, choices=recipes.names(),
                   help="set every default of one paper at once (see bnas_tf.recipes; flags "
                        "given here override it); default: bnas_tf's defaults, which deploy "
                        "on LCE")


def _add_search(sub) -> None:
    p = sub.add_parser("search", help="search a cell architecture (writes RUN/genotype.json)",
                       formatter_class=_HelpFormatter)
    p.add_argument("--output", required=True, help="run directory")
    p.add_argument("--resume", action="store_true",
                   help="continue the search in --output after its last finished epoch, with "
                        "its stored settings (a flag given with another value is an error; "
                        "--epochs may grow, --data-dir may change)")
    _add_data_arguments(p)
    _add_recipe_argument(p)
    p.add_argument("--space", default=None, choices=SearchSpace.names(),
                   help=f"search space {_recipe_default(_DEFAULTS.space)}; `lce` networks "
                        "deploy with binary kernels on LCE")
    p.add_argument("--nodes", type=int, default=4, help="intermediate nodes per cell")
    p.add_argument("--input-quantizer", default="ste_sign",
                   choices=("ste_sign", "approx_sign", "swish_sign"))
    p.add_argument("--layers", type=int, default=5, help="cells in the supernet")
    p.add_argument("--channels", type=int, default=16, help="initial channels per node")
    p.add_argument("--cell-skip", action=argparse.BooleanOptionalAction, default=None,
                   help="the BNAS inter-cell skip connection "
                        f"{_recipe_default(_DEFAULTS.cell_skip)}")
    p.add_argument("--binary-search-weights", action=argparse.BooleanOptionalAction,
                   default=None, help="binarize the binary convs' weights during search, as "
                   f"BNAS does {_recipe_default(_DEFAULTS.binary_search_weights)}")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=64, help="per half (train and val)")
    p.add_argument("--no-augment", dest="augment", action="store_false")
    p.add_argument("--lr", dest="learning_rate", type=float, default=None,
                   help="weight optimizer (Adam) learning rate "
                        f"{_recipe_default(_DEFAULTS.learning_rate)}")
    p.add_argument("--arch-lr", dest="arch_learning_rate", type=float, default=None,
                   help=f"α optimizer (Adam) {_recipe_default(_DEFAULTS.arch_learning_rate)}")
    p.add_argument("--arch-beta1", dest="arch_beta_1", type=float, default=None,
                   help=f"α optimizer β1 {_recipe_default(_DEFAULTS.arch_beta_1)}")
    p.add_argument("--arch-beta2", dest="arch_beta_2", type=float, default=None,
                   help=f"α optimizer β2 {_recipe_default(_DEFAULTS.arch_beta_2)}")
    p.add_argument("--arch-weight-decay", type=float, default=None,
                   help=f"L2 on α {_recipe_default(_DEFAULTS.arch_weight_decay)}")
    p.add_argument("--temperature", type=float, default=None,
                   help=f"softmax temperature T {_recipe_default(_DEFAULTS.temperature)}")
    p.add_argument("--anneal-from", type=float, default=None,
                   help="anneal T exponentially from this value to --temperature (0: fixed T; "
                        "default: the recipe's, else fixed)")
    p.add_argument("--diversity", type=float, default=None,
                   help="diversity regularizer strength λ, 0 disables "
                        f"{_recipe_default(_DEFAULTS.diversity)}")
    p.add_argument("--tau", type=float, default=None,
                   help=f"diversity decay, epochs {_recipe_default(_DEFAULTS.tau)}")
    p.add_argument("--temperature-regularizer", type=float, default=None,
                   help="strength of the temperature (KL) regularizer, 0 disables "
                        f"{_recipe_default(_DEFAULTS.temperature_regularizer)}")
    p.add_argument("--warmup-epochs", type=int, default=0,
                   help="epochs of weight steps only before α is updated")
    budget = p.add_argument_group("budget-aware schedule (bnas_tf.budget)")
    budget.add_argument("--warmup-fraction", type=float, default=None,
                        help="share of the search's steps with weight steps only "
                             f"{_recipe_default(_DEFAULTS.warmup_fraction)}")
    budget.add_argument("--decision", type=float, default=DEFAULT_DECISION,
                        help="the architecture learning rate is at least decision * T / "
                             "(architecture steps), so α/T can separate by this much within "
                             "the run")
    budget.add_argument("--budget-schedule", action=argparse.BooleanOptionalAction,
                        default=None,
                        help="scale the α learning rate and the diversity decay to the run "
                             "(--no-budget-schedule: --arch-lr and --tau as given) "
                             f"{_recipe_default(_DEFAULTS.budget_schedule)}")
    p.add_argument("--second-order", action="store_true", help="unrolled DARTS gradient")
    mix = p.add_argument_group("search modes that fit a CPU (--mixing)")
    mix.add_argument("--mixing", default=None, choices=("all", "partial", "gumbel"),
                     help="all: every op on every edge (DARTS/BATS); partial: ops on "
                          "1/--partial-channels of the channels with edge normalization "
                          "(PC-DARTS); gumbel: one sampled op per edge and step (GDAS) "
                          f"{_recipe_default(_DEFAULTS.mixing)}")
    mix.add_argument("--partial-channels", type=int, default=4,
                     help="K of --mixing partial (must divide --channels)")
    mix.add_argument("--no-edge-normalization", dest="edge_normalization",
                     action="store_false", help="--mixing partial without edge weights β")
    mix.add_argument("--gumbel-temperature", type=temperature_pair, default=(10.0, 0.1),
                     help="START,END of the Gumbel-softmax τ of --mixing gumbel, annealed "
                          "linearly over the search")
    p.add_argument("--mixed-bfloat16", action="store_true",
                   help="bfloat16 activations, float32 weights and α (faster, less memory on "
                        "CPUs with AVX512-BF16)")
    p.add_argument("--seed", type=int, default=0)
    hm = p.add_argument_group("HM-NAS (--method hmnas)")
    hm.add_argument("--method", default=None, choices=recipes.method_names(),
                    help="darts: softmax mixed ops, DARTS-rule derivation; hmnas: edge weights "
                         "and hierarchical masks, writes RUN/derived_model.keras too "
                         f"{_recipe_default(_DEFAULTS.method)}")
    hm.add_argument("--mask-threshold", type=float, default=5e-3,
                    help="threshold of op, edge and weight masks")
    hm.add_argument("--mask-initial", type=float, default=2e-2,
                    help="initial op and edge mask score (above the threshold: all on)")
    hm.add_argument("--weight-mask-initial", type=float, default=0.1,
                    help="initial kernel mask score (above the threshold: all on)")
    hm.add_argument("--sparsity", type=float, default=0.0,
                    help="L1 strength on op and edge scores (0 disables)")
    hm.add_argument("--weight-sparsity", type=float, default=0.0,
                    help="L1 strength on kernel mask scores (0 disables)")
    from bnas_tf.cost_search import COST_METRICS, DEFAULT_COST_WEIGHT

    cost = p.add_argument_group(
        "cost-aware search (bnas_tf.cost_search; RUN/genotype.json records the searched "
        "network's cost at the search width either way)")
    cost.add_argument("--cost", default=None, choices=COST_METRICS,
                      help="steer the derived network's cost to --cost-target: ops (FLOPs + "
                           "BOPs/64) or latency (--latency-table); default: off")
    cost.add_argument("--cost-target", type=float, default=None,
                      help="the derived network's cost at this search's width (--layers, "
                           "--channels, image size): OPs as a plain number (6e6 = 6 MOPs; a "
                           "5-layer, 16-channel lce network on CIFAR spans about 4.7e6 to "
                           "8.0e6), or for latency the milliseconds of the derived cells' ops "
                           "(the table times those, not the stem and classifier)")
    cost.add_argument("--cost-weight", type=float, default=DEFAULT_COST_WEIGHT,
                      help="w of the penalty w * log(expected cost / target)^2 (0: only log "
                           "the expected cost)")
    cost.add_argument("--latency-table", default=None,
                      help="per-op latencies measured on the device (`bnas-tf profile`), for "
                           "--cost latency")
    _add_strategy_argument(p)


def epochs_pair(text: str) -> tuple[int, int]:
    """argparse type of `--epochs STAGE1,STAGE2` (also used by the benchmarks)."""
    try:
        first, second = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected STAGE1,STAGE2 epochs such as 2,2; got {text!r}") from None
    if first < 0 or second < 0:
        raise argparse.ArgumentTypeError(f"epochs must be >= 0, got {text!r}")
    return first, second


def temperature_pair(text: str) -> tuple[float, float]:
    """argparse type of `--gumbel-temperature START,END` (both > 0)."""
    try:
        start, end = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected START,END temperatures such as 10,0.1; got {text!r}") from None
    if not (start > 0 and end > 0):
        raise argparse.ArgumentTypeError(f"temperatures must be > 0, got {text!r}")
    return start, end


def dataset_name(text: str) -> str:
    """argparse type of `--dataset`: a name of `bnas_tf.data.DATASET_NAMES` or tfds:NAME."""
    if text in data_lib.DATASET_NAMES or (text.startswith("tfds:") and len(text) > 5):
        return text
    raise argparse.ArgumentTypeError(
        f"expected one of {', '.join(data_lib.DATASET_NAMES)}, or tfds:NAME for a TensorFlow "
        f"Datasets dataset; got {text!r}")


def _add_data_arguments(p) -> None:
    p.add_argument("--dataset", default="cifar10", type=dataset_name,
                   help=f"{', '.join(data_lib.DATASET_NAMES)}, or tfds:NAME (a TensorFlow "
                        "Datasets dataset prepared in --data-dir)")
    p.add_argument("--data-dir", default=None,
                   help="folder holding the dataset's standard layout (downloaded if missing)")
    p.add_argument("--no-download", dest="download", action="store_false",
                   help="fail instead of downloading a dataset that is not in --data-dir")
    p.add_argument("--limit", type=int, default=None,
                   help="keep N training images and N/5 test images (quick runs)")
    p.add_argument("--validation-fraction", type=float,
                   default=data_lib.DEFAULT_HOLDOUT_FRACTION,
                   help="share of each class's training images held out (seeded by --seed) "
                        "for val_* and every selection; the test split is only evaluated "
                        "for the final accuracy")


def _add_strategy_argument(p) -> None:
    from bnas_tf.distribute import STRATEGY_NAMES

    p.add_argument("--strategy", default="default", choices=STRATEGY_NAMES,
                   help="tf.distribute strategy: one device, all local GPUs (mirrored), or the "
                        "machines in TF_CONFIG (multi_worker; only the chief writes --output); "
                        "--batch-size is then the global batch")
    p.add_argument("--no-sync-batch-norm", dest="sync_batch_norm", action="store_false",
                   help="with several replicas, keep per-replica batch norm statistics (less "
                        "communication between machines) instead of global-batch ones")


def _add_train(sub) -> None:
    from bnas_tf import baselines

    p = sub.add_parser("train", help="train a genotype's network, or a baseline, in two stages",
                       formatter_class=_HelpFormatter)
    network = p.add_mutually_exclusive_group()  # one is required unless --resume (below)
    network.add_argument("--genotype", help="genotype.json from `bnas-tf search`")
    network.add_argument("--baseline", choices=baselines.names(),
                         help="a published binary network instead (bnas_tf.baselines)")
    p.add_argument("--output", required=True,
                   help="run directory (model.keras, metrics.json, checkpoints/)")
    p.add_argument("--resume", action="store_true",
                   help="continue the training run in --output after its last checkpointed "
                        "epoch (a finished stage 1 is not trained again), with its stored "
                        "settings (a flag given with another value is an error; --epochs may "
                        "grow, --data-dir may change)")
    parse_known_args = p.parse_known_args

    def parse_with_network(args=None, namespace=None):
        namespace, extras = parse_known_args(args, namespace)
        # "resume" is absent only when given_flags parses without defaults
        if getattr(namespace, "resume", True) is False and namespace.genotype is None \
                and namespace.baseline is None:
            p.error("one of the arguments --genotype --baseline is required (--resume takes "
                    "the stored one)")
        return namespace, extras

    p.parse_known_args = parse_with_network
    _add_data_arguments(p)
    _add_recipe_argument(p)
    p.add_argument("--layers", type=int, default=8, help="cells (genotype networks)")
    p.add_argument("--channels", type=int, default=None,
                   help="initial channels per node of genotype networks "
                        f"{_recipe_default(_DEFAULTS.train_channels)}")
    p.add_argument("--cell-skip", action=argparse.BooleanOptionalAction, default=None,
                   help="the BNAS inter-cell skip; use the search's setting "
                        f"{_recipe_default(_DEFAULTS.cell_skip)}")
    p.add_argument("--width", type=int, default=None,
                   help="base channels of a --baseline (default: the published width)")
    p.add_argument("--image-size", type=int, default=None,
                   help="resize images to N x N (default: the dataset's size)")
    p.add_argument("--stem", choices=baselines.STEMS, default=None,
                   help="cifar: full-resolution stem; imagenet: stride-2 stems (DARTS/BATS "
                        "ImageNet network). Default: cifar for genotypes, from the input size "
                        "for baselines")
    p.add_argument("--epochs", type=epochs_pair, default=(1, 1),
                   help="STAGE1,STAGE2: binary activations, then binary weights too")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-augment", dest="augment", action="store_false")
    p.add_argument("--lr", dest="learning_rate", type=float, default=None,
                   help="initial Adam learning rate (default: the recipe's, else 1e-3 * "
                        "batch/256)")
    p.add_argument("--weight-decay", type=float, default=None,
                   help=f"stage 1, conv kernels {_recipe_default(_DEFAULTS.weight_decay)}")
    p.add_argument("--kernel-quantizer", default=None,
                   choices=("ste_sign", "magnitude_aware_sign"),
                   help="stage-2 weight binarizer (default: the recipe's, else the genotype "
                        "space's, or the baseline's published one)")
    p.add_argument("--seed", type=int, default=0)
    _add_strategy_argument(p)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bnas-tf", description="Architecture search for binary neural networks.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log debug messages, TensorFlow's start-up lines and the traceback "
                             "of an error")
    parser.add_argument("--version", action=VersionAction,
                        help="print the versions of bnas-tf and of the stack it runs on")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_search(sub)
    _add_train(sub)
    _add_export(sub)
    _add_profile(sub)
    return parser


def _add_export(sub) -> None:
    from bnas_tf.export import command

    p = sub.add_parser("export", help="convert a trained model to an LCE TFLite flatbuffer, "
                                      "with checks (as export/to_tflite.py)",
                       formatter_class=_HelpFormatter,
                       description="Exit codes: 0 written; 1 refused (a check failed) or the "
                                   "conversion failed; 2 bad input.")
    command.add_arguments(p)


def _add_profile(sub) -> None:
    from bnas_tf.export.timing import LCE_KERNELS
    from bnas_tf.search_space import DEFAULT_SPACE

    def at_least(least: int):
        def parse(text: str) -> int:
            try:
                value = int(text)
            except ValueError:
                value = least - 1
            if value < least:
                raise argparse.ArgumentTypeError(f"expected an integer >= {least}, got {text!r}")
            return value
        return parse

    p = sub.add_parser(
        "profile", help="time every candidate op at a supernet's shapes with LCE (writes a "
                        "JSON latency table, bnas_tf.cost.latency_table)",
        formatter_class=_HelpFormatter,
        description="Builds each distinct (op, input shape, stride) of the supernet's cells as "
                    "a one-op model as it deploys, converts it with Larq Compute Engine and "
                    "times it in LCE's interpreter on this machine; run it on an ARM board for "
                    "that board's table. Exit codes: 0 written; 1 an op could not be converted "
                    "or run; 2 bad input or larq-compute-engine missing.")
    p.add_argument("--space", default=DEFAULT_SPACE, choices=SearchSpace.names(),
                   help="search space")
    p.add_argument("--layers", type=at_least(1), default=5, help="cells in the supernet")
    p.add_argument("--channels", type=at_least(1), default=16, help="initial channels per node")
    p.add_argument("--image-size", type=at_least(1), default=32, help="input height and width")
    p.add_argument("--output", "-o", required=True,
                   help="the JSON table to write (an existing file is replaced atomically)")
    p.add_argument("--threads", type=at_least(1), default=1, help="interpreter threads")
    p.add_argument("--repeats", type=at_least(1), default=100,
                   help="timed runs per op (the median is reported)")
    p.add_argument("--warmup", type=at_least(0), default=10, help="untimed runs per op first")
    p.add_argument("--kernel", default="indirect_bgemm", choices=tuple(LCE_KERNELS),
                   help="LCE binary-conv kernel (bgemm rejects grouped binary convs)")
    p.add_argument("--xnnpack", action="store_true", help="run float ops with XNNPACK")


def search_config(args: argparse.Namespace):
    """The `SearchConfig` of parsed `search` arguments (flags not given: the recipe's)."""
    from bnas_tf.search_run import SearchConfig

    return SearchConfig(**{k: v for k, v in vars(args).items()
                           if k not in ("command", "output", "resume", "verbose", "strategy")})


def train_config(args: argparse.Namespace):
    """The `TrainConfig` of parsed `train` arguments (flags not given: the recipe's)."""
    from bnas_tf.train_run import TrainConfig

    return TrainConfig(**{k: v for k, v in vars(args).items()
                          if k not in ("command", "output", "resume", "verbose", "strategy")})


def given_flags(argv: list[str]) -> set[str]:
    """The destinations (setting names) of the options actually given in `argv`.

    Parses `argv` a second time with every default suppressed, so a flag given
    with its default value still counts as given (what `--resume` compares).
    """
    parser = build_parser()
    for action in _all_actions(parser):
        action.default = argparse.SUPPRESS
        action.required = False
    for group in _all_groups(parser):
        group.required = False
    try:
        namespace, _ = parser.parse_known_args(argv)
    except SystemExit:  # only reached for arguments the first parse accepted
        return set()
    return set(vars(namespace)) - {"command"}


def _all_actions(parser: argparse.ArgumentParser):
    for action in parser._actions:
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_actions(sub)


def _all_groups(parser: argparse.ArgumentParser):
    yield from parser._mutually_exclusive_groups
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_groups(sub)


def _flag_names(command: str):
    """`setting -> "--flag"` for the messages of a subcommand."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    flags = {action.dest: "/".join(s for s in action.option_strings if s.startswith("--"))
             for action in sub.choices[command]._actions if action.option_strings}
    return lambda setting: flags.get(setting) or setting


def _search(args, argv) -> int:
    from bnas_tf.search_run import run_search

    result = run_search(search_config(args), args.output, resume=args.resume,
                        given=given_flags(argv) if args.resume else None,
                        verbose=1 if sys.stdout.isatty() else 2, strategy=args.strategy)
    epochs = result.history.get("epochs", [])
    last = epochs[-1]["logs"] if epochs else {}
    print(f"search finished in {result.seconds:.0f} s; {len(epochs)} epochs recorded; "
          f"val_accuracy {last.get('val_accuracy', float('nan')):.4f} (held-out split)")
    print(f"genotype: {result.output_dir / 'genotype.json'}")
    if result.cost:
        cost = result.cost
        line = (f"searched network at the search width ({cost['layers']} cells x "
                f"{cost['channels']} channels): {cost['ops'] / 1e6:.2f} M OPs, "
                f"{cost['params']:,} parameters")
        if "target" in cost:
            unit = "M OPs" if cost["metric"] == "ops" else "ms"
            scale = 1e6 if cost["metric"] == "ops" else 1.0
            line += (f"; {cost['metric']} target {cost['target'] / scale:.3g} {unit}, derived "
                     f"{cost['derived'] / scale:.3g} ({cost['relative_error']:+.1%})")
        print(line)
    if result.derived_model_path is not None:
        print(f"derived model (searched weights): {result.derived_model_path}")
    return 0


def _train(args, argv) -> int:
    from bnas_tf.cost import ModelCost
    from bnas_tf.train_run import run_training

    result = run_training(train_config(args), args.output, resume=args.resume,
                          given=given_flags(argv) if args.resume else None,
                          verbose=1 if sys.stdout.isatty() else 2, strategy=args.strategy)
    metrics = result.metrics
    for stage in ("stage1", "stage2"):
        test = metrics[stage]["test"]
        epochs = metrics[stage]["epochs"]
        if epochs and test:
            print(f"{stage}: val accuracy {epochs[-1].get('val_accuracy', float('nan')):.4f}, "
                  f"test accuracy {test['accuracy']:.4f}")
    print(f"final network: val accuracy {metrics['val_accuracy']:.4f} (held-out "
          f"{metrics['validation_images']} training images), test accuracy "
          f"{metrics['test_accuracy']:.4f} ({metrics['test_images']} test images)")
    print(f"{metrics['params']:,} parameters; reloaded model's max |logit difference| "
          f"on a test batch: {metrics['reload_max_abs_diff']:.3g}")
    print(f"cost per image: {ModelCost.from_dict(metrics['cost']).summary()}")
    print(f"trained in {result.seconds:.0f} s; model: {result.model_path}")
    return 0


def _export(args, argv) -> int:
    from bnas_tf.export import command

    return command.run(args)


def _profile(args, argv) -> int:
    from bnas_tf.cost import latency
    from bnas_tf.errors import ExportError
    from bnas_tf.export import check_writable
    from bnas_tf.export._runtime import lce_module

    try:
        lce_module()  # missing: the install hint, before any work
        check_writable(args.output)  # an existing file is replaced atomically, as by export
    except ExportError as error:
        raise ValueError(str(error)) from None  # exit 2, one line, nothing written
    try:
        table = latency.latency_table(
            args.space, args.layers, args.channels, (args.image_size, args.image_size, 3),
            num_threads=args.threads, repeats=args.repeats, warmup=args.warmup,
            kernel=args.kernel, use_xnnpack=args.xnnpack)
    except ExportError as error:
        print(f"bnas-tf profile: error: {error}", file=sys.stderr)
        return 1
    print(table.format())
    table.to_json(args.output)
    timed = sum(entry.timed for entry in table.entries.values())
    print(f"{len(table.entries)} op shapes ({timed} timed) profiled in "
          f"{table.settings['seconds']:.0f} s; table: {args.output}")
    return 0


def _message(error: BaseException, command: str) -> str:
    from bnas_tf._runs import SettingError
    from bnas_tf.search_run import ResumeConflictError

    if isinstance(error, ResumeConflictError | SettingError):
        return error.describe(_flag_names(command))
    return str(error) or type(error).__name__


def main(argv: list[str] | None = None) -> int:
    """Entry point of `bnas-tf`; returns the exit code (2 for bad input)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("bnas_tf").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if logging.getLogger("tensorflow").handlers:  # TensorFlow prints its own: not twice
        logging.getLogger("tensorflow").propagate = False
    if args.verbose:
        sys.stderr.writelines(_startup.hidden_lines())
    commands = {"search": _search, "train": _train, "export": _export, "profile": _profile}
    try:
        return commands[args.command](args, argv)
    except _USER_ERRORS as error:
        if args.verbose:
            traceback.print_exc()
        print(f"bnas-tf {args.command}: error: {_message(error, args.command)}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bnas-tf {args.command}: interrupted; "
              + ("finished epochs are saved (continue with --resume)"
                 if args.command in ("search", "train") else "nothing was saved"),
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
