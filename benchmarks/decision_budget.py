"""Which search settings decide α at small budgets? A grid of short searches.

Each setting runs one short search per seed (same data, in a process of its
own) and the table reports, after the last epoch: the mean entropy of
`softmax(α/T)` (what the mixed ops use; uniform = ln ops) and of `softmax(α)`,
the share of decided edges and the mean margin (`bnas_tf.decision`), the
supernet's validation accuracy, the search time, and how often the seeds'
genotypes pick the same op on the edges both keep (noise alone agrees on
about 1/ops of them; a setting that decides on signal agrees more).

Settings (combine with `--settings`, crossed with `--mixing`):
    paper      the papers' values whatever the budget: arch lr 3e-4, diversity
               τ 7.7 epochs, no warm-up (`--no-budget-schedule --warmup-fraction 0`)
    default    bnas_tf's budget-aware schedule (bnas_tf.budget)
    d3, d6, d24  the schedule with decision 3, 6 or 24 (default 12)
    warm0, warm50  warm-up fraction 0 or 0.5 (default 0.25)
    nodiv      the schedule without the diversity term
    anneal     the schedule with T annealed from 1.0 to 0.2

Usage:
    python benchmarks/decision_budget.py --data-dir DIR --mixing all,gumbel,partial \\
        --settings paper,default --seeds 0,1
"""

from __future__ import annotations

import bnas_tf as bn

# isort: split
import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bnas_tf.decision import agreement

SETTINGS = {
    "paper": {"budget_schedule": False, "warmup_fraction": 0.0},
    "default": {},
    "d3": {"decision": 3.0},
    "d6": {"decision": 6.0},
    "d24": {"decision": 24.0},
    "warm0": {"warmup_fraction": 0.0},
    "warm50": {"warmup_fraction": 0.5},
    "nodiv": {"diversity": 0.0},
    "anneal": {"anneal_from": 1.0},
}


def one_search(args, mixing: str, setting: str, seed: int) -> dict:
    from bnas_tf.search_run import SearchConfig, run_search

    config = SearchConfig(dataset="cifar10", data_dir=args.data_dir, limit=args.train_images,
                          space=args.space, layers=args.layers, channels=args.channels,
                          epochs=args.epochs, batch_size=args.batch_size, mixing=mixing,
                          seed=seed, data_seed=0, **SETTINGS[setting])
    with tempfile.TemporaryDirectory() as tmp:
        start = time.time()
        result = run_search(config, Path(tmp) / "RUN", verbose=0)
        seconds = time.time() - start
    logs = result.history["epochs"][-1]["logs"]
    return {"mixing": mixing, "setting": setting, "seed": seed, "seconds": seconds,
            "schedule": result.history.get("schedule"),
            "ops": len(bn.SearchSpace.get(args.space).op_names),
            **{k: logs.get(k) for k in ("entropy", "alpha_entropy", "decided", "margin",
                                        "val_accuracy")},
            "genotype": result.genotype.to_dict()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--space", default="lce")
    p.add_argument("--mixing", default="all,gumbel")
    p.add_argument("--settings", default="paper,default")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--train-images", type=int, default=2000)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        mixing, setting, seed = args.one.split(":")
        print(json.dumps(one_search(args, mixing, setting, int(seed))))
        return
    unknown = set(args.settings.split(",")) - set(SETTINGS)
    if unknown:
        p.error(f"unknown settings {sorted(unknown)}; choose from {sorted(SETTINGS)}")
    rows = []
    print("| mixing | setting | arch lr | entropy of softmax(α/T) | of softmax(α) | decided | margin "
          "| val acc | agree | s/search |")
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for mixing in args.mixing.split(","):
        for setting in args.settings.split(","):
            runs = []
            for seed in (int(s) for s in args.seeds.split(",")):
                argv = [a for a in sys.argv[1:] if not a.startswith("--one")]
                done = subprocess.run([sys.executable, __file__, *argv, "--one",
                                       f"{mixing}:{setting}:{seed}"],
                                      capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(f"{mixing}/{setting}/{seed} failed:\n{done.stderr[-3000:]}")
                runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            rows.append(runs)

            def mean(key, runs=runs):
                return statistics.fmean(r[key] for r in runs)

            print(f"| {mixing} | {setting} | {runs[0]['schedule']['arch_learning_rate']:.3g} | "
                  f"{mean('entropy'):.3f} | {mean('alpha_entropy'):.3f} | {mean('decided'):.2f} "
                  f"| {mean('margin'):.2f} | {mean('val_accuracy'):.3f} | "
                  f"{agreement([bn.Genotype.from_dict(r['genotype']) for r in runs]):.2f} | "
                  f"{mean('seconds'):.0f} |",
                  flush=True)
    ops = rows[0][0]["ops"]
    print(f"\nln ops = {math.log(ops):.3f} ({ops} ops); random choice agrees on about "
          f"{1 / (ops - 1):.2f} of the edges; {args.train_images} images, {args.layers} cells x "
          f"{args.channels} channels, {args.epochs} epochs, batch {args.batch_size} per half")


if __name__ == "__main__":
    main()
