"""The `bnas-tf` command line: the only module that parses arguments.

    bnas-tf search --dataset cifar10 --data-dir DIR --space bats --layers 5 \\
        --channels 16 --epochs 2 --limit 2000 --output RUN
    bnas-tf search --output RUN --epochs 4 --resume     # continue an interrupted run
    bnas-tf search --method hmnas ... --output RUN      # + RUN/derived_model.keras
    bnas-tf train --genotype RUN/genotype.json --dataset cifar10 --data-dir DIR \\
        --epochs 2,2 --limit 2000 --output TRAIN
    bnas-tf search ... --strategy mirrored        # all local GPUs (README "Scaling out")
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
from bnas_tf.errors import (  # noqa: E402
    DataError,
    GenotypeError,
    ModelFileError,
    SearchSpaceError,
)
from bnas_tf.search_space import SearchSpace  # noqa: E402

__all__ = ["main", "build_parser"]

_USER_ERRORS = (DataError, GenotypeError, ModelFileError, SearchSpaceError, FileExistsError,
                FileNotFoundError, ValueError)


def _add_search(sub) -> None:
    p = sub.add_parser("search", help="search a cell architecture (writes RUN/genotype.json)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--output", required=True, help="run directory")
    p.add_argument("--resume", action="store_true",
                   help="continue the search in --output after its last finished epoch")
    _add_data_arguments(p)
    p.add_argument("--space", default="bats", choices=SearchSpace.names())
    p.add_argument("--nodes", type=int, default=4, help="intermediate nodes per cell")
    p.add_argument("--input-quantizer", default="ste_sign",
                   choices=("ste_sign", "approx_sign", "swish_sign"))
    p.add_argument("--layers", type=int, default=5, help="cells in the supernet")
    p.add_argument("--channels", type=int, default=16, help="initial channels per node")
    p.add_argument("--no-cell-skip", dest="cell_skip", action="store_false",
                   help="drop the BNAS inter-cell skip connection")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=64, help="per half (train and val)")
    p.add_argument("--no-augment", dest="augment", action="store_false")
    p.add_argument("--lr", dest="learning_rate", type=float, default=1e-3,
                   help="weight optimizer (Adam) learning rate")
    p.add_argument("--arch-lr", dest="arch_learning_rate", type=float, default=3e-4)
    p.add_argument("--arch-weight-decay", type=float, default=1e-3)
    p.add_argument("--temperature", type=float, default=0.2, help="softmax temperature T")
    p.add_argument("--anneal-from", type=float, default=None,
                   help="anneal T exponentially from this value to --temperature")
    p.add_argument("--diversity", type=float, default=1.0,
                   help="diversity regularizer strength λ (0 disables)")
    p.add_argument("--tau", type=float, default=7.7, help="diversity decay, epochs")
    p.add_argument("--temperature-regularizer", type=float, default=0.0,
                   help="strength of the temperature (KL) regularizer (0 disables)")
    p.add_argument("--warmup-epochs", type=int, default=0,
                   help="epochs of weight steps only before α is updated")
    p.add_argument("--second-order", action="store_true", help="unrolled DARTS gradient")
    mix = p.add_argument_group("search modes that fit a CPU (--mixing)")
    mix.add_argument("--mixing", default="all", choices=("all", "partial", "gumbel"),
                     help="all: every op on every edge (DARTS/BATS); partial: ops on "
                          "1/--partial-channels of the channels with edge normalization "
                          "(PC-DARTS); gumbel: one sampled op per edge and step (GDAS)")
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
    hm.add_argument("--method", default="darts", choices=("darts", "hmnas"),
                    help="darts: softmax mixed ops, DARTS-rule derivation; hmnas: edge weights "
                         "and hierarchical masks, writes RUN/derived_model.keras too")
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
    p = sub.add_parser("train", help="train a genotype's network in two stages",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--genotype", required=True, help="genotype.json from `bnas-tf search`")
    p.add_argument("--output", required=True, help="run directory (model/, metrics.json)")
    _add_data_arguments(p)
    p.add_argument("--layers", type=int, default=8, help="cells")
    p.add_argument("--channels", type=int, default=36, help="initial channels per node")
    p.add_argument("--no-cell-skip", dest="cell_skip", action="store_false")
    p.add_argument("--epochs", type=epochs_pair, default=(1, 1),
                   help="STAGE1,STAGE2: binary activations, then binary weights too")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-augment", dest="augment", action="store_false")
    p.add_argument("--lr", dest="learning_rate", type=float, default=None,
                   help="initial Adam learning rate (default 1e-3 * batch/256)")
    p.add_argument("--weight-decay", type=float, default=5e-6, help="stage 1, conv kernels")
    p.add_argument("--kernel-quantizer", default=None,
                   choices=("ste_sign", "magnitude_aware_sign"),
                   help="stage-2 weight binarizer (default: the genotype space's)")
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


def _search(args) -> int:
    from bnas_tf.search_run import SearchConfig, run_search

    values = {k: v for k, v in vars(args).items()
              if k not in ("command", "output", "resume", "verbose", "strategy")}
    result = run_search(SearchConfig(**values), args.output, resume=args.resume,
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
    from bnas_tf.train_run import TrainConfig, run_training

    values = {k: v for k, v in vars(args).items()
              if k not in ("command", "output", "verbose", "strategy")}
    result = run_training(TrainConfig(**values), args.output,
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
