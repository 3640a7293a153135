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

Settings that a recipe sets default to the recipe's value (`--recipe`), else
to bnas_tf's defaults (`bnas_tf.recipes.DEFAULTS`); a flag given on the
command line overrides either.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter

from bnas_tf._keras2 import select_keras2  # noqa: E402

select_keras2()

from bnas_tf import data as data_lib  # noqa: E402
from bnas_tf import recipes  # noqa: E402
from bnas_tf.budget import DEFAULT_DECISION  # noqa: E402
from bnas_tf.errors import (  # noqa: E402
    DataError,
    GenotypeError,
    ModelFileError,
    SearchSpaceError,
)
from bnas_tf.search_space import SearchSpace  # noqa: E402

__all__ = ["main", "build_parser", "search_config", "train_config"]

_USER_ERRORS = (DataError, GenotypeError, ModelFileError, SearchSpaceError, FileExistsError,
                FileNotFoundError, ValueError)

_DEFAULTS = recipes.DEFAULTS


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
                   help="continue the search in --output after its last finished epoch")
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


def _add_data_arguments(p) -> None:
    p.add_argument("--dataset", default="cifar10", choices=data_lib.DATASET_NAMES)
    p.add_argument("--data-dir", default=None,
                   help="folder holding the dataset's standard layout (downloaded if missing)")
    p.add_argument("--no-download", dest="download", action="store_false",
                   help="fail instead of downloading a dataset that is not in --data-dir")
    p.add_argument("--limit", type=int, default=None,
                   help="keep N training images and N/5 test images (quick runs)")


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
    network = p.add_mutually_exclusive_group(required=True)
    network.add_argument("--genotype", help="genotype.json from `bnas-tf search`")
    network.add_argument("--baseline", choices=baselines.names(),
                         help="a published binary network instead (bnas_tf.baselines)")
    p.add_argument("--output", required=True, help="run directory (model/, metrics.json)")
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
    parser = argparse.ArgumentParser(
        prog="bnas-tf", description="Architecture search for binary neural networks.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_search(sub)
    _add_train(sub)
    return parser


def search_config(args: argparse.Namespace):
    """The `SearchConfig` of parsed `search` arguments (flags not given: the recipe's)."""
    from bnas_tf.search_run import SearchConfig

    return SearchConfig(**{k: v for k, v in vars(args).items()
                           if k not in ("command", "output", "resume", "verbose", "strategy")})


def train_config(args: argparse.Namespace):
    """The `TrainConfig` of parsed `train` arguments (flags not given: the recipe's)."""
    from bnas_tf.train_run import TrainConfig

    return TrainConfig(**{k: v for k, v in vars(args).items()
                          if k not in ("command", "output", "verbose", "strategy")})


def _search(args) -> int:
    from bnas_tf.search_run import run_search

    result = run_search(search_config(args), args.output, resume=args.resume,
                        verbose=1 if sys.stdout.isatty() else 2, strategy=args.strategy)
    epochs = result.history.get("epochs", [])
    last = epochs[-1]["logs"] if epochs else {}
    print(f"search finished in {result.seconds:.0f} s; {len(epochs)} epochs recorded; "
          f"val_accuracy {last.get('val_accuracy', float('nan')):.4f}")
    print(f"genotype: {result.output_dir / 'genotype.json'}")
    if result.derived_model_path is not None:
        print(f"derived model (searched weights): {result.derived_model_path}")
    return 0


def _train(args) -> int:
    from bnas_tf.train_run import run_training

    result = run_training(train_config(args), args.output,
                          verbose=1 if sys.stdout.isatty() else 2, strategy=args.strategy)
    for stage in ("stage1", "stage2"):
        test = result.metrics[stage]["test"]
        if test:
            print(f"{stage}: test accuracy {test['accuracy']:.4f}")
    print(f"{result.metrics['params']:,} parameters; reloaded model's max |logit difference| "
          f"on a test batch: {result.metrics['reload_max_abs_diff']:.3g}")
    print(f"trained in {result.seconds:.0f} s; model: {result.output_dir / 'model'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `bnas-tf`; returns the exit code (2 for bad input)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    commands = {"search": _search, "train": _train}
    try:
        return commands[args.command](args)
    except _USER_ERRORS as error:
        print(f"bnas-tf {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bnas-tf {args.command}: interrupted; finished epochs are saved "
              "(continue with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
