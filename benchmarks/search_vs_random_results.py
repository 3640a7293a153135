"""Reading a `search_vs_random.py` run back: `results.json`, or what an unfinished run's
`progress.json` holds so far, with the statistics recomputed and older runs' gaps filled.

Example:
    >>> results = load_results(Path("RUN_DIR"))      # as --report RUN_DIR reads it
    >>> results["summary"]["searched"]["mean"], results.get("unfinished", False)
"""

from __future__ import annotations

import json
from pathlib import Path

from cost_matching import fill_costs
from run_progress import PROGRESS_NAME, read_progress
from searched_vs_random_statistics import statistics_of

import bnas_tf as bn
from bnas_tf.decision import agreement, candidate_ops


def chance_agreement(space: bn.SearchSpace) -> float:
    """How often two independent random choices of an edge's op agree: 1 / candidate ops."""
    return 1 / len(candidate_ops(space))


def unfinished_results(run_dir: Path) -> dict:
    """What a run that has not finished (running, or interrupted) holds so far, from its
    progress.json, in results.json's layout: its finished searches and trained networks."""
    stored = read_progress(run_dir)
    steps, settings = stored["steps"], stored["settings"]
    searches = [v for k, v in steps.items() if k.startswith("search ")]
    rows = [v for k, v in steps.items() if k.startswith("row ")]
    genotypes = [bn.Genotype.load(run_dir / f"search_{s['seed']}" / "genotype.json")
                 for s in searches]
    results = {"args": settings, "match": settings.get("match"), "searches": searches,
               "rows": rows, "agreement": agreement(genotypes), "unfinished": True,
               "search_seconds": sum(s["seconds"] for s in searches),
               "train_seconds": sum(r["train_s"] for r in rows),
               "total_seconds": stored["seconds"]}
    for row in rows:
        if row["group"] == "hand-designed" and "width" in row:
            results["baseline_width"] = row["width"]
    return results


def load_results(run_dir: Path) -> dict:
    """A run's `results.json` (or, unfinished, `unfinished_results`), statistics recomputed,
    older runs' gaps filled."""
    if (run_dir / "results.json").is_file() or not (run_dir / PROGRESS_NAME).is_file():
        results = json.loads((run_dir / "results.json").read_text())
    else:
        results = unfinished_results(run_dir)
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
    results["costs_recomputed"] = fill_costs(results, run_dir)
    return results
