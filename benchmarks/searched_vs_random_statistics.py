"""Statistics of a searched-vs-random run: group means, Welch's t, the detectable difference.

Example:
    >>> rows = [{"group": "searched", "stage2_acc": a} for a in (0.46, 0.45, 0.47)]
    >>> rows += [{"group": "random", "stage2_acc": a} for a in (0.40, 0.41, 0.39)]
    >>> round(statistics_of(rows)["summary"]["searched"]["mean"], 2)
    0.46
"""

from __future__ import annotations

import statistics


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
    """Per-group mean ± std of stage-2 accuracy, Welch's t and p, the detectable difference.

    Curve rows (baselines at extra widths) are points of the plot, not a group.
    """
    groups = {}
    for row in rows:
        if row["group"] != "curve":
            groups.setdefault(row["group"], []).append(row["stage2_acc"])
    searched, random = groups.get("searched", []), groups.get("random", [])
    t, p = welch(searched, random)
    summary = {group: {"mean": statistics.fmean(v),
                       "std": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v)}
               for group, v in groups.items()}
    return {"summary": summary, "welch_t": t, "welch_p": p,
            "detectable_difference": detectable_difference(searched, random)}
