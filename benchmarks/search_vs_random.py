"""Is the search worth running? Searched vs random vs hand-designed, over several seeds.

The protocol (Li & Talwalkar 2019: random search is the baseline a NAS method
must beat), comparing networks of equal cost:

1. `--searches` searches (seeds 0, 1, ...) of the same space on the same
   CIFAR-10 subset, with `bnas-tf search`'s default search mode (partial
   channels; `--mixing` chooses another) and bnas_tf's budget-aware schedule
   (`bnas_tf.budget`); search time is reported apart.
2. `--randoms` random genotypes of the same space (`bn.random_genotype`,
   seeded draws): random genotype i is drawn until its cost is within
   ±`--tolerance` of searched network i's (cycling over the searches), the
   cost being `--match ops` (default) the OPs of the trained, binary-weight
   network (`bnas_tf.cost.genotype_cost` at `--layers` x `--channels`,
   32x32x3 inputs, 10 classes: analytic, nothing built), or `--match params`
   its parameter count (`bn.count_params` of the built network, as before
   #24). When no draw of `--max-draws` is within the tolerance, the closest
   one is taken, and the printout and `results.json` say so.
3. The hand-designed baseline (`bn.baselines`, QuickNet by default) at the
   width (a multiple of 4) whose OPs (or parameters) are closest to the
   searched networks' mean; baseline costs are `bnas_tf.cost.model_cost` of
   the built stage-2 network (binary weights; QuickNet's blur pools counted).
4. Cost curves: each of `--curves` (default QuickNet and Bi-Real Net) at
   `--curve-widths` times its own matched width (default 0.5, 1, 1.5: three
   widths around the searched OPs). The curve networks other than the
   baseline itself are extra networks to train: 5 at the defaults (QuickNet
   at widths 20 and 56, Bi-Real Net at 20, 36 and 56 around the ~6 M OPs of
   5 x 16 searched networks), together about 14 times the MACs of one
   searched network. TensorFlow's CPU training time grows about with the
   MACs, so at the default budget they add roughly an hour to the run (and
   the OPs-matched baseline itself, width 36 instead of the 12 that matches
   by parameters, about 10 minutes). The script prints their number and
   MACs before training and, once the searched networks are trained, an
   estimate of their time; `--curves none` skips them, `--curves quicknet`
   or `--curve-widths 0.5,1` make them cheaper (the latter leaves no width
   above the searched OPs, so mostly nothing to interpolate at them).
5. Every network trains with the same two-stage budget (`bn.train_two_stage`,
   stage 1 binary activations, stage 2 binary weights too) on the same
   training images with the same seed, and is tested once on the test split.

It prints one row per network (group, OPs, binary and float MACs of the
deployed network, parameters, stage-1 and stage-2 test accuracy, training
seconds), the mean ± standard deviation per group, Welch's t and two-sided p
of searched vs random (stage-2 accuracy), the searched networks against each
baseline curve at their mean OPs (interpolated log-linearly in OPs between
the two bracketing widths, and labelled so), the share of edges on which the
searches agree (chosen op per edge; random choice agrees on about 1/ops); it
writes every genotype, `results.json` (with each row's cost and the match
mode) and `accuracy_vs_ops.png` (stage-2 accuracy vs OPs, log x-axis) to
`--output`. `--report RUN_DIR` prints a finished run again and re-plots it (an
unfinished one: what its progress.json holds so far, marked so);
rows of runs before #24 get their costs from the run's genotype files and
baseline widths (or "n/a").

OPs = float MACs + binary MACs / 64 (Bi-Real Net's, BATS' and ReActNet's
count; `bnas_tf.cost`).

Usage:
    python benchmarks/search_vs_random.py --data-dir DIR --output RUN_DIR
    python benchmarks/search_vs_random.py --data-dir DIR --output RUN_DIR --match params \\
        --curves none
    python benchmarks/search_vs_random.py --data-dir DIR --output RUN_DIR \\
        --train-images 20000 --search-epochs 10 --epochs 10,10 --searches 5 --randoms 5
    python benchmarks/search_vs_random.py --report RUN_DIR

A run can be continued: every finished search and trained network is recorded
in `RUN_DIR/progress.json` as it finishes (`run_progress`), so the same command
started again (after Ctrl-C, a crash or on another machine with the run folder
copied) skips them, and continues an interrupted search from its last finished
epoch. Other settings than the run's (`--data-dir` may change) stop it with the
settings that differ named. Every network trains from the same seeds on a
training pipeline of its own, so the rows do not depend on which ran first.

The offline CIFAR-10 copy of the development machines is stored as JPEG
(quality 75); accuracies on it run a few tenths of a point below those on the
original images.
"""

from __future__ import annotations

import bnas_tf as bn

# isort: split
import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from bnas_tf import cost as bn_cost
from bnas_tf._io import atomic_write_text
from bnas_tf.cli import epochs_pair
from bnas_tf.decision import agreement
from bnas_tf.recipes import DEFAULTS
from bnas_tf.search_run import SearchConfig, run_search

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cifar10_budget import binary_params  # noqa: E402
from cost_matching import (  # noqa: E402
    UNITS,
    Draw,
    baseline_measures,
    baseline_value,
    curve_widths,
    deployed_cost,
    draw_matching,
    nearest_width,
)
from plot_accuracy_vs_ops import (  # noqa: E402
    PLOT_NAME,
    equal_ops_comparisons,
    format_comparisons,
    plot_accuracy_vs_ops,
)
from run_progress import PROGRESS_NAME, Progress, SettingsMismatchError  # noqa: E402
from search_vs_random_results import chance_agreement, load_results  # noqa: E402
from searched_vs_random_statistics import (  # noqa: E402, F401 (detectable_difference: tests)
    detectable_difference,
    statistics_of,
)

# Settings a continued run may change: where the same data are, where the run is.
RESUME_MAY_CHANGE = ("data_dir", "output", "report")


def baseline_names(text: str) -> tuple[str, ...]:
    """argparse type of `--curves`: comma-separated `bn.baselines` names, or "none"."""
    if text.strip().lower() in ("", "none"):
        return ()
    names = tuple(n.strip() for n in text.split(","))
    unknown = [n for n in names if n not in bn.baselines.names()]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown baseline {', '.join(unknown)}; expected "
                                         f"{', '.join(bn.baselines.names())} or none")
    return tuple(dict.fromkeys(names))


def factors(text: str) -> tuple[float, ...]:
    """argparse type of `--curve-widths`: comma-separated positive multiples such as 0.5,1,2."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected multiples such as 0.5,1,1.5; got {text!r}") \
            from None
    if not all(v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"multiples must be > 0, got {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", default="data", help="folder holding cifar-10-batches-py/")
    p.add_argument("--output", help="folder for genotypes and results.json (required to run)")
    p.add_argument("--report", metavar="RUN_DIR",
                   help="print the tables of an earlier run (RUN_DIR/results.json, or the "
                        "finished part of an unfinished one: progress.json), re-plot "
                        f"RUN_DIR/{PLOT_NAME} and exit; statistics are recomputed from its rows")
    p.add_argument("--train-images", type=int, default=5000,
                   help="CIFAR-10 training images (the searches split them in two halves)")
    p.add_argument("--test-images", type=int, default=5000, help="test images (all: 10000)")
    p.add_argument("--space", default="lce")
    p.add_argument("--mixing", default=DEFAULTS.mixing, choices=bn.supernet.MIXING_MODES,
                   help="search mode, as bnas-tf search --mixing")
    p.add_argument("--searches", type=int, default=3, help="searches (seeds 0, 1, ...)")
    p.add_argument("--randoms", type=int, default=3, help="random genotypes")
    p.add_argument("--search-epochs", type=int, default=4)
    p.add_argument("--search-layers", type=int, default=5)
    p.add_argument("--search-channels", type=int, default=16)
    p.add_argument("--search-batch-size", type=int, default=64, help="per half")
    p.add_argument("--layers", type=int, default=5, help="cells of the trained networks")
    p.add_argument("--channels", type=int, default=16, help="channels of the trained networks")
    p.add_argument("--epochs", type=epochs_pair, default=(2, 2),
                   help="STAGE1,STAGE2 epochs (see benchmarks/README.md for run times)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--baseline", default="quicknet", choices=bn.baselines.names())
    p.add_argument("--match", default="ops", choices=tuple(UNITS),
                   help="the cost random genotypes and the baseline's width are matched by: "
                        "OPs of the deployed network, or parameters")
    p.add_argument("--tolerance", type=float, default=0.1,
                   help="random network i's cost (--match) within this fraction of "
                        "searched network i's")
    p.add_argument("--max-draws", type=int, default=2000,
                   help="random draws per random genotype before taking the closest")
    p.add_argument("--curves", type=baseline_names, default="quicknet,birealnet",
                   help="baselines trained at --curve-widths for the accuracy-vs-OPs plot "
                        "(comma-separated, or none)")
    p.add_argument("--curve-widths", type=factors, default="0.5,1,1.5",
                   help="widths of each curve, as multiples of its width matched to the "
                        "searched networks (rounded to multiples of 4)")
    p.add_argument("--seed", type=int, default=0, help="training seed (and first search seed)")
    args = p.parse_args(argv)
    if not args.report and not args.output:
        p.error("--output RUN_DIR is required (or --report RUN_DIR to print an earlier run)")
    return args


# --------------------------------------------------------------------------- report


def _cost_cells(row: dict) -> list[str]:
    if row.get("cost") is None:
        return ["n/a"] * 3
    cost = bn_cost.ModelCost.from_dict(row["cost"])
    return [f"{cost.ops / 1e6:.2f}", f"{cost.binary_macs / 1e6:.1f}",
            f"{cost.float_macs / 1e6:.2f}"]


def _args(results: dict) -> dict:
    args = results.get("args")
    return args if isinstance(args, dict) else {}


def _match_lines(results: dict) -> list[str]:
    args = _args(results)
    match, tolerance = results.get("match"), args.get("tolerance")
    within = f" within ±{tolerance:.0%}" if isinstance(tolerance, int | float) else ""
    if match is None:  # runs before #24
        return [f"random genotypes matched by parameters{within} (a run before --match)"]
    unit = UNITS.get(match, match)
    draws = sum(m["draws"] for m in results.get("random_matches", []))
    drawn = (f" ({draws} draw{'' if draws == 1 else 's'})" if "random_matches" in results
             else "")
    lines = [f"random genotypes matched by {unit}{within} of searched network i's{drawn}"]
    scale, fmt = (1e6, "{:.2f} M") if match == "ops" else (1, "{:,.0f}")
    for m in results.get("random_matches", []):
        if not m["matched"]:
            lines.append(f"  {m['model']}: no draw{within} in {m['draws']} draws; took the "
                         f"closest, {fmt.format(m['value'] / scale)} {unit} for a target of "
                         f"{fmt.format(m['target'] / scale)}")
    if "baseline_width" in results and "match_target" in results:
        lines.append(f"hand-designed: {args.get('baseline')} at width "
                     f"{results['baseline_width']}, the width closest in {unit} to the "
                     f"searched mean ({fmt.format(results['match_target'] / scale)})")
    return lines


def report(results: dict) -> None:
    """Print the tables and statistics of one run (`results.json`'s content)."""
    rows, summary = results["rows"], results["summary"]
    if results.get("unfinished"):
        print(f"UNFINISHED RUN ({PROGRESS_NAME}): {len(results['searches'])} searches and "
              f"{len(rows)} network{'' if len(rows) == 1 else 's'} finished so far; the same "
              "command continues it")
    print("\n| model | group | OPs (M) | binary MACs (M) | float MACs (M) | params | "
          "binary params | stage-1 acc | stage-2 acc | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ops, binary, floating = _cost_cells(r)
        print(f"| {r['model']} | {r['group']} | {ops} | {binary} | {floating} | "
              f"{r['params']:,} | {r['binary_params']:,} | {r['stage1_acc']:.4f} | "
              f"{r['stage2_acc']:.4f} | {r['train_s']:.0f} |")
    print("OPs = float MACs + binary MACs / 64, per image, of the deployed (binary-weight) "
          "network (bnas_tf.cost); params as bn.count_params")
    if results.get("costs_recomputed"):
        print(f"({results['costs_recomputed']} costs recomputed from the run's genotype files "
              "and baseline widths: the run did not record them)")
    for line in _match_lines(results):
        print(line)
    print("\n| group | n | stage-2 test accuracy, mean ± std |")
    print("|---|---|---|")
    for group, s in summary.items():
        print(f"| {group} | {s['n']} | {s['mean']:.4f} ± {s['std']:.4f} |")
    if "random" in summary and "searched" in summary:
        print(f"\nsearched − random: "
              f"{summary['searched']['mean'] - summary['random']['mean']:+.4f} "
              f"(Welch t = {results['welch_t']:.2f}, two-sided p = {results['welch_p']:.3f})")
        print("smallest difference that reaches p < 0.1 at these spreads: "
              f"{results['detectable_difference']:.4f}")
    for line in format_comparisons(equal_ops_comparisons(rows)):
        print(line)
    chance = results.get("chance_agreement")
    print(f"searches agree on {results['agreement']:.0%} of the edges both keep"
          + (f" (random choice: about {chance:.0%})" if chance else ""))
    for s in results["searches"]:
        if "val_accuracy" in s:
            print(f"search seed {s['seed']}: decided {s['decided']:.2f}, supernet accuracy "
                  f"{s['accuracy']:.3f} (training), {s['val_accuracy']:.3f} (held out)")
    searches = max(1, len(results["searches"]))
    curve_s = sum(r["train_s"] for r in rows if r["group"] == "curve")
    print(f"time: searches {results['search_seconds']:.0f} s "
          f"({results['search_seconds'] / searches:.0f} s each), training "
          f"{results['train_seconds']:.0f} s"
          + (f" (of which curves {curve_s:.0f} s)" if curve_s else "")
          + f", total {results['total_seconds']:.0f} s")


def plot_title(results: dict) -> str:
    a = _args(results)
    epochs = a.get("epochs")
    budget = f", {epochs[0]}+{epochs[1]} epochs" if isinstance(epochs, list | tuple) else ""
    return (f"CIFAR-10, {a.get('train_images', '?')} training / {a.get('test_images', '?')} "
            f"test images{budget}\nsearched and random: {a.get('layers', '?')} cells x "
            f"{a.get('channels', '?')} channels")


def write_plot(results: dict, run_dir: Path) -> None:
    """Write RUN_DIR/accuracy_vs_ops.png (atomically); say why when it cannot."""
    path = run_dir / PLOT_NAME
    try:
        written = plot_accuracy_vs_ops(results["rows"], path, title=plot_title(results))
    except (ImportError, OSError) as error:
        print(f"accuracy vs OPs plot not written ({type(error).__name__}: {error})")
        return
    print(f"accuracy vs OPs: {path}" if written else
          "accuracy vs OPs: no row records a cost; nothing plotted")


# --------------------------------------------------------------------------- training


def build_derived(genotype: bn.Genotype, args, data) -> tf.keras.Model:
    return bn.build_network(genotype, num_classes=data.num_classes, layers=args.layers,
                            channels=args.channels, input_shape=data.input_shape)


def params(build) -> int:
    tf.keras.backend.clear_session()
    return bn.count_params(build())


def train_once(name: str, group: str, build, kernel_quantizer: str, cost: bn_cost.ModelCost,
               data, test_ds, args, **extra) -> dict:
    """Train one network with the shared budget; its row (`extra` keys added to it).

    Every network starts from the same seeds and a training pipeline of its own,
    so all see the same batches in the same order, whichever ran before (and
    whether the run was continued).
    """
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(args.seed)
    train_ds = bn.data.make_dataset(data, batch_size=args.batch_size, training=True,
                                    seed=args.seed)
    model = build()
    row = {"model": name, "group": group, **extra, "params": bn.count_params(model),
           "binary_params": binary_params(model), "cost": cost.to_dict()}
    start = time.time()
    result = bn.train_two_stage(model, train_ds, epochs=tuple(args.epochs),
                                kernel_quantizer=kernel_quantizer, test_ds=test_ds, verbose=0)
    row["train_s"] = time.time() - start
    for stage in ("stage1", "stage2"):
        row[f"{stage}_acc"] = float(result.test[stage]["accuracy"])
    print(f"  {name}: {cost.ops / 1e6:.2f} M OPs, {row['params']:,} params, stage-1 "
          f"{row['stage1_acc']:.4f}, stage-2 {row['stage2_acc']:.4f}, {row['train_s']:.0f} s",
          flush=True)
    return row


def baseline_builder(name: str, width: int, data) -> Callable[[], tf.keras.Model]:
    return lambda: bn.baselines.get(name, num_classes=data.num_classes,
                                    input_shape=data.input_shape, width=width)


def print_search(record: dict) -> None:
    print(f"  {record['seconds']:.0f} s; decided {record['decided']:.2f}, mean margin "
          f"{record['margin']:.2f}, tempered entropy {record['entropy']:.3f}; "
          f"supernet accuracy {record['accuracy']:.3f} (training), "
          f"{record['val_accuracy']:.3f} (held out)", flush=True)


def run_searches(args, out: Path, progress: Progress) -> tuple[list[bn.Genotype], list[dict]]:
    """The searches, each recorded in `progress` when it finishes.

    A search recorded there is read back (its genotype from search_SEED/); one
    that was interrupted continues from its last finished epoch (`run_search`'s
    `resume`); its `seconds` are then those after the restart (`resumed` says so).
    """
    searched, searches = [], []
    for k in range(args.searches):
        seed = args.seed + k
        search_dir = out / f"search_{seed}"
        record = progress.get(f"search {seed}")
        if record is not None:
            print(f"search {k + 1}/{args.searches} (seed {seed}): finished earlier", flush=True)
            print_search(record)
            searches.append(record)
            searched.append(bn.Genotype.load(search_dir / "genotype.json"))
            continue
        config = SearchConfig(dataset="cifar10", data_dir=args.data_dir,
                              limit=args.train_images, space=args.space, mixing=args.mixing,
                              layers=args.search_layers, channels=args.search_channels,
                              epochs=args.search_epochs, batch_size=args.search_batch_size,
                              seed=seed, data_seed=args.seed)
        resume = (search_dir / "config.json").is_file()
        print(f"search {k + 1}/{args.searches} (seed {seed}) "
              f"{'continued' if resume else ''}...", flush=True)
        result = run_search(config, search_dir, resume=resume, verbose=0)
        last = result.history["epochs"][-1]["logs"]
        record = {"seed": seed, "seconds": result.seconds, "resumed": resume,
                  **{key: last.get(key) for key in
                     ("decided", "margin", "entropy", "accuracy", "val_accuracy")}}
        progress.put(f"search {seed}", record)
        searches.append(record)
        searched.append(result.genotype)
        print_search(record)
    return searched, searches


def draw_randoms(searched: list[bn.Genotype], values: list[float], value_of, args
                 ) -> tuple[list[Draw], list[dict]]:
    """Random genotype i matched to searched network i (cycling), so the two groups spread
    over the same costs, not only around the same mean."""
    rng = np.random.default_rng(args.seed)
    draws, records = [], []
    for i in range(args.randoms):
        target = values[i % len(values)]
        draw = draw_matching(searched[0].search_space, target, value_of, rng,
                             tolerance=args.tolerance, max_draws=args.max_draws)
        if not draw.matched:
            show = ((lambda v: f"{v / 1e6:.2f} M") if args.match == "ops"
                    else (lambda v: f"{v:,.0f}"))
            print(f"random {i}: no random genotype within ±{args.tolerance:.0%} of "
                  f"{show(target)} {UNITS[args.match]} in {draw.draws} draws; taking the "
                  f"closest ({show(draw.value)})", flush=True)
        draws.append(draw)
        records.append({"model": f"random {i}", "target": target, "value": draw.value,
                        "draws": draw.draws, "matched": draw.matched})
    return draws, records


def plan_curves(args, target: float, width: int) -> list[tuple[str, int]]:
    """The `(baseline, width)` networks of the curves, the hand-designed baseline excluded."""
    planned = []
    for name in args.curves:
        base = width if name == args.baseline else nearest_width(
            lambda w, n=name: baseline_value(n, w, args.match), target)[0]
        planned += [(name, w) for w in curve_widths(base, args.curve_widths)
                    if (name, w) != (args.baseline, width)]
    return planned


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        run_dir = Path(args.report)
        path = run_dir / "results.json"
        if not path.is_file() and (run_dir / PROGRESS_NAME).is_file():
            path = run_dir / PROGRESS_NAME
        if not path.is_file():
            raise SystemExit(f"error: no results.json or {PROGRESS_NAME} in {args.report}; "
                             "pass the --output folder of a run")
        try:
            results = load_results(run_dir)
            report(results)
            write_plot(results, run_dir)
        except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
            raise SystemExit(f"error: {path} is not a {path.name} this script wrote, or its "
                             f"run folder is incomplete ({type(error).__name__}: {error}); "
                             "rerun the benchmark") from None
        return 0
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    try:
        progress = Progress.open(out, {k: v for k, v in vars(args).items()
                                       if k not in RESUME_MAY_CHANGE})
    except SettingsMismatchError as error:
        raise SystemExit(f"error: {error}") from None
    if progress.steps:
        print(f"continuing the run in {out}: {len(progress.steps)} steps finished earlier "
              f"({progress.path.name})", flush=True)
    data = bn.data.load("cifar10", args.data_dir, limit=args.train_images, seed=args.seed)
    test = bn.data.load("cifar10", args.data_dir, seed=args.seed)
    print(f"data: {len(data.y_train)} training images, {min(args.test_images, len(test.y_test))} "
          "test images", flush=True)
    searched, searches = run_searches(args, out, progress)

    def cost_of(g: bn.Genotype) -> bn_cost.ModelCost:
        return deployed_cost(g, args.layers, args.channels)

    if args.match == "ops":
        def value_of(g: bn.Genotype) -> float:
            return cost_of(g).ops
    else:
        def value_of(g: bn.Genotype) -> float:
            return float(params(lambda: build_derived(g, args, data)))
    values = [value_of(g) for g in searched]
    target = float(np.mean(values))
    randoms, random_matches = draw_randoms(searched, values, value_of, args)
    width, _ = nearest_width(lambda w: baseline_value(args.baseline, w, args.match), target)
    baseline_cost = baseline_measures(args.baseline, width)[1]
    curves = plan_curves(args, target, width)
    unit, show = (("M OPs", lambda v: f"{v / 1e6:.2f}") if args.match == "ops"
                  else ("parameters", lambda v: f"{v:,.0f}"))
    print(f"{unit}: searched {', '.join(map(show, values))}; random "
          f"{', '.join(show(d.value) for d in randoms)} "
          f"({sum(d.draws for d in randoms)} draws in all); {args.baseline} width {width}: "
          f"{show(baseline_value(args.baseline, width, args.match))}", flush=True)
    searched_macs = statistics.fmean(cost_of(g).macs for g in searched)
    curve_macs = [baseline_measures(n, w)[1].macs for n, w in curves]
    if curves:
        print(f"curves: {', '.join(f'{n} width {w}' for n, w in curves)}: {len(curves)} more "
              f"networks to train, {sum(curve_macs) / searched_macs:.1f}x the MACs of one "
              "searched network (CPU training time grows about with the MACs)", flush=True)
    for i, d in enumerate(randoms):
        d.genotype.save(out / f"random_{i}.genotype.json")

    test_ds = bn.data.make_dataset(test.x_test[:args.test_images],
                                   test.y_test[:args.test_images], batch_size=256,
                                   normalization=data)
    quantizer = searched[0].search_space.weight_quantizer
    rows = []

    def train(name: str, *train_args, **extra) -> None:
        """`train_once`, or the row `progress` recorded for `name` in an earlier start."""
        row = progress.get(f"row {name}")
        if row is None:
            row = train_once(name, *train_args, data, test_ds, args, **extra)
            progress.put(f"row {name}", row)
        else:
            print(f"  {name}: trained earlier, stage-2 {row['stage2_acc']:.4f}", flush=True)
        rows.append(row)

    for seed, g in zip(range(args.seed, args.seed + len(searched)), searched, strict=True):
        train(f"searched (seed {seed})", "searched", lambda g=g: build_derived(g, args, data),
              quantizer, cost_of(g), genotype=f"search_{seed}/genotype.json")
    if curves:
        per_mac = sum(r["train_s"] for r in rows) / (searched_macs * len(rows))
        print(f"estimated training time of the {len(curves)} curve networks: about "
              f"{per_mac * sum(curve_macs):.0f} s (the searched networks' seconds per MAC)",
              flush=True)
    for i, d in enumerate(randoms):
        train(f"random {i}", "random", lambda g=d.genotype: build_derived(g, args, data),
              quantizer, cost_of(d.genotype), genotype=f"random_{i}.genotype.json")
    train(f"{args.baseline} (width {width})", "hand-designed",
          baseline_builder(args.baseline, width, data),
          bn.baselines.kernel_quantizer(args.baseline), baseline_cost, curve=args.baseline,
          width=width)
    for name, w in curves:
        train(f"{name} (width {w})", "curve", baseline_builder(name, w, data),
              bn.baselines.kernel_quantizer(name), baseline_measures(name, w)[1], curve=name,
              width=w)

    results = {"args": {k: (list(v) if isinstance(v, tuple) else v)
                        for k, v in vars(args).items()},
               "match": args.match, "match_target": target,
               "costs": "bnas_tf.cost of the deployed network (binary weights), per image; "
                        "ops = float_macs + binary_macs / 64",
               "searches": searches, "rows": rows, "agreement": agreement(searched),
               "chance_agreement": chance_agreement(searched[0].search_space),
               "random_draws": sum(d.draws for d in randoms), "random_matches": random_matches,
               "baseline_width": width,
               "curves": {n: sorted({w for m, w in curves if m == n}
                                    | ({width} if n == args.baseline else set()))
                          for n in args.curves},
               "search_seconds": sum(s["seconds"] for s in searches),
               "train_seconds": sum(r["train_s"] for r in rows),
               "total_seconds": progress.seconds()}
    results.update(statistics_of(rows))
    report(results)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    write_plot(results, out)
    print(f"genotypes and results.json in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
