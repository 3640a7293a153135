"""Is the search worth running? Searched vs random vs hand-designed, over several seeds.

The protocol (Li & Talwalkar 2019: random search is the baseline a NAS method
must beat):

1. `--searches` searches (seeds 0, 1, ...) of the same space on the same
   CIFAR-10 subset, with `bnas-tf search`'s default search mode (partial
   channels; `--mixing` chooses another) and bnas_tf's budget-aware schedule
   (`bnas_tf.budget`); search time is reported apart.
2. `--randoms` random genotypes of the same space (`bn.random_genotype`),
   drawn until random genotype i has a parameter count within ±`--tolerance`
   of searched network i's (cycling over the searches; seeded draws).
3. The hand-designed baseline (`bn.baselines`, QuickNet by default) at the
   width whose parameter count is closest to the searched networks' mean.
4. Every network trains with the same two-stage budget (`bn.train_two_stage`,
   stage 1 binary activations, stage 2 binary weights too) on the same
   training images with the same seed, and is tested once on the test split.

It prints one row per network (group, parameters, stage-1 and stage-2 test
accuracy, training seconds), the mean ± standard deviation per group, Welch's
t and two-sided p of searched vs random (stage-2 accuracy), the share of
edges on which the searches agree (chosen op per edge; random choice agrees
on about 1/ops), and writes every genotype and `results.json` to `--output`.

Usage:
    python benchmarks/search_vs_random.py --data-dir DIR --output RUN_DIR
    python benchmarks/search_vs_random.py --data-dir DIR --output RUN_DIR \\
        --train-images 20000 --search-epochs 10 --epochs 10,10 --searches 5 --randoms 5

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
from pathlib import Path

import numpy as np
import tensorflow as tf

from bnas_tf._io import atomic_write_text
from bnas_tf.cli import epochs_pair
from bnas_tf.decision import agreement, candidate_ops
from bnas_tf.recipes import DEFAULTS
from bnas_tf.search_run import SearchConfig, run_search

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cifar10_budget import describe, pick_baseline_width  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", default="data", help="folder holding cifar-10-batches-py/")
    p.add_argument("--output", help="folder for genotypes and results.json (required to run)")
    p.add_argument("--report", metavar="RUN_DIR",
                   help="print the tables of an earlier run (RUN_DIR/results.json) and exit; "
                        "statistics are recomputed from its rows")
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
                   help="STAGE1,STAGE2 epochs (2,2 keeps the default run within about 75 "
                        "minutes on 2 cores; see benchmarks/README.md)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--baseline", default="quicknet", choices=bn.baselines.names())
    p.add_argument("--tolerance", type=float, default=0.1,
                   help="random network i's parameter count within this fraction of "
                        "searched network i's")
    p.add_argument("--seed", type=int, default=0, help="training seed (and first search seed)")
    args = p.parse_args(argv)
    if not args.report and not args.output:
        p.error("--output RUN_DIR is required (or --report RUN_DIR to print an earlier run)")
    return args


def welch(a: list[float], b: list[float]) -> tuple[float, float]:
    """Welch's t of mean(a) − mean(b) and its two-sided p (scipy's t distribution)."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return float("nan"), float("nan")
    result = stats.ttest_ind(a, b, equal_var=False)
    return float(result.statistic), float(result.pvalue)


def detectable_difference(a: list[float], b: list[float], p: float = 0.1) -> float:
    """The smallest |mean(a) − mean(b)| that reaches two-sided `p` at these samples' spread.

    Welch's standard error and degrees of freedom from the observed standard
    deviations: what a run of this size can detect at all, whatever the means.
    """
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return float("nan")
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return 0.0
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return float(stats.t.ppf(1 - p / 2, df) * (va + vb) ** 0.5)


def statistics_of(rows: list[dict]) -> dict:
    """Per-group mean ± std of stage-2 accuracy, Welch's t and p, the detectable difference."""
    groups = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row["stage2_acc"])
    searched, random = groups.get("searched", []), groups.get("random", [])
    t, p = welch(searched, random)
    summary = {group: {"mean": statistics.fmean(v),
                       "std": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v)}
               for group, v in groups.items()}
    return {"summary": summary, "welch_t": t, "welch_p": p,
            "detectable_difference": detectable_difference(searched, random)}


def report(results: dict) -> None:
    """Print the tables and statistics of one run (`results.json`'s content)."""
    rows, summary = results["rows"], results["summary"]
    print("\n| model | group | params | binary params | stage-1 acc | stage-2 acc | train s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['group']} | {r['params']:,} | {r['binary_params']:,} | "
              f"{r['stage1_acc']:.4f} | {r['stage2_acc']:.4f} | {r['train_s']:.0f} |")
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
    chance = results.get("chance_agreement")
    print(f"searches agree on {results['agreement']:.0%} of the edges both keep"
          + (f" (random choice: about {chance:.0%})" if chance else ""))
    for s in results["searches"]:
        if "val_accuracy" in s:
            print(f"search seed {s['seed']}: decided {s['decided']:.2f}, supernet accuracy "
                  f"{s['accuracy']:.3f} (training), {s['val_accuracy']:.3f} (held out)")
    searches = max(1, len(results["searches"]))
    print(f"time: searches {results['search_seconds']:.0f} s "
          f"({results['search_seconds'] / searches:.0f} s each), training "
          f"{results['train_seconds']:.0f} s, total {results['total_seconds']:.0f} s")


def chance_agreement(space: bn.SearchSpace) -> float:
    """How often two independent random choices of an edge's op agree: 1 / candidate ops."""
    return 1 / len(candidate_ops(space))


def load_results(run_dir: Path) -> dict:
    """A finished run's `results.json`, statistics recomputed, older runs' gaps filled."""
    results = json.loads((run_dir / "results.json").read_text())
    if not isinstance(results, dict):
        raise TypeError(f"expected a JSON object, got {type(results).__name__}")
    results.update(statistics_of(results["rows"]))
    for search in results["searches"]:  # runs before f55e942 did not record accuracy
        history = run_dir / f"search_{search['seed']}" / "history.json"
        if "val_accuracy" not in search and history.is_file():
            last = json.loads(history.read_text())["epochs"][-1]["logs"]
            search.update(accuracy=last["accuracy"], val_accuracy=last["val_accuracy"])
    if "chance_agreement" not in results:
        results["chance_agreement"] = chance_agreement(
            bn.SearchSpace.get(results["args"]["space"]))
    return results


def build_derived(genotype: bn.Genotype, args, data) -> tf.keras.Model:
    return bn.build_network(genotype, num_classes=data.num_classes, layers=args.layers,
                            channels=args.channels, input_shape=data.input_shape)


def params(build) -> int:
    tf.keras.backend.clear_session()
    return bn.count_params(build())


def train_once(name: str, group: str, build, kernel_quantizer: str, train_ds, test_ds,
               args) -> dict:
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(args.seed)
    model = build()
    row = {"model": name, "group": group, **describe(model)}
    start = time.time()
    result = bn.train_two_stage(model, train_ds, epochs=tuple(args.epochs),
                                kernel_quantizer=kernel_quantizer, test_ds=test_ds, verbose=0)
    row["train_s"] = time.time() - start
    for stage in ("stage1", "stage2"):
        row[f"{stage}_acc"] = float(result.test[stage]["accuracy"])
    print(f"  {name}: {row['params']:,} params, stage-1 {row['stage1_acc']:.4f}, stage-2 "
          f"{row['stage2_acc']:.4f}, {row['train_s']:.0f} s", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        path = Path(args.report) / "results.json"
        if not path.is_file():
            raise SystemExit(f"error: no results.json in {args.report}; pass the --output "
                             "folder of a finished run")
        try:
            report(load_results(Path(args.report)))
        except (ValueError, KeyError, TypeError, IndexError) as error:
            raise SystemExit(f"error: {path} is not a results.json this script wrote "
                             f"({type(error).__name__}: {error}); rerun the benchmark") from None
        return 0
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    data = bn.data.load("cifar10", args.data_dir, limit=args.train_images, seed=args.seed)
    test = bn.data.load("cifar10", args.data_dir, seed=args.seed)
    print(f"data: {len(data.y_train)} training images, {min(args.test_images, len(test.y_test))} "
          "test images", flush=True)

    searched, searches = [], []
    for k in range(args.searches):
        seed = args.seed + k
        config = SearchConfig(dataset="cifar10", data_dir=args.data_dir,
                              limit=args.train_images, space=args.space, mixing=args.mixing,
                              layers=args.search_layers, channels=args.search_channels,
                              epochs=args.search_epochs, batch_size=args.search_batch_size,
                              seed=seed, data_seed=args.seed)
        print(f"search {k + 1}/{args.searches} (seed {seed}) ...", flush=True)
        result = run_search(config, out / f"search_{seed}", verbose=0)
        last = result.history["epochs"][-1]["logs"]
        searches.append({"seed": seed, "seconds": result.seconds,
                         "decided": last.get("decided"), "margin": last.get("margin"),
                         "entropy": last.get("entropy"), "accuracy": last.get("accuracy"),
                         "val_accuracy": last.get("val_accuracy")})
        searched.append(result.genotype)
        print(f"  {result.seconds:.0f} s; decided {last.get('decided'):.2f}, mean margin "
              f"{last.get('margin'):.2f}, tempered entropy {last.get('entropy'):.3f}; "
              f"supernet accuracy {last.get('accuracy'):.3f} (training), "
              f"{last.get('val_accuracy'):.3f} (held out)", flush=True)

    sizes = [params(lambda g=g: build_derived(g, args, data)) for g in searched]
    target = float(np.mean(sizes))
    rng = np.random.default_rng(args.seed)
    space = searched[0].search_space
    randoms, random_sizes, draws = [], [], 0
    for i in range(args.randoms):
        # Random genotype i matches searched network i (cycling), so the two groups
        # spread over the same parameter counts, not only around the same mean.
        match = sizes[i % len(sizes)]
        for _ in range(2000):
            draws += 1
            genotype = bn.random_genotype(space, rng)
            size = params(lambda g=genotype: build_derived(g, args, data))
            if abs(size - match) <= args.tolerance * match:
                randoms.append(genotype)
                random_sizes.append(size)
                break
        else:
            print(f"no random genotype within ±{args.tolerance:.0%} of {match:,} parameters "
                  "in 2000 draws", flush=True)
    width, width_size = pick_baseline_width(args.baseline, data, target)
    print(f"parameters: searched {sizes}, random {random_sizes} ({draws} draws), "
          f"{args.baseline} width {width}: {width_size:,}", flush=True)
    for i, g in enumerate(randoms):
        g.save(out / f"random_{i}.genotype.json")

    train_ds = bn.data.make_dataset(data, batch_size=args.batch_size, training=True,
                                    seed=args.seed)
    test_ds = bn.data.make_dataset(test.x_test[:args.test_images],
                                   test.y_test[:args.test_images], batch_size=256,
                                   normalization=data)
    quantizer = space.weight_quantizer
    rows = []
    for seed, g in zip(range(args.seed, args.seed + len(searched)), searched, strict=True):
        rows.append(train_once(f"searched (seed {seed})", "searched",
                               lambda g=g: build_derived(g, args, data), quantizer, train_ds,
                               test_ds, args))
    for i, g in enumerate(randoms):
        rows.append(train_once(f"random {i}", "random", lambda g=g: build_derived(g, args, data),
                               quantizer, train_ds, test_ds, args))
    rows.append(train_once(
        f"{args.baseline} (width {width})", "hand-designed",
        lambda: bn.baselines.get(args.baseline, num_classes=data.num_classes,
                                 input_shape=data.input_shape, width=width),
        bn.baselines.kernel_quantizer(args.baseline), train_ds, test_ds, args))

    results = {"args": {k: (list(v) if isinstance(v, tuple) else v)
                        for k, v in vars(args).items()},
               "searches": searches, "rows": rows, "agreement": agreement(searched),
               "chance_agreement": chance_agreement(space),
               "random_draws": draws, "baseline_width": width,
               "search_seconds": sum(s["seconds"] for s in searches),
               "train_seconds": sum(r["train_s"] for r in rows),
               "total_seconds": time.time() - started}
    results.update(statistics_of(rows))
    report(results)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    print(f"genotypes and results.json in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
