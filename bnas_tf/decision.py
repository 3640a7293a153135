"""Is the searched architecture decided? Per-edge margins, shares and warnings.

A search decides an edge when its op distribution `softmax(α/T)` (what the
mixed op uses) puts clearly more weight on the op that derivation picks than
on the runner-up. The *margin* of an edge is `p(chosen) − p(runner-up)` over
the ops derivation may pick (`none` only where the space allows it); an edge
is *decided* when its margin is at least `DECIDED_MARGIN` (0.25: the chosen op
carries 25 percentage points more than any other; at initialization, α ≈ 0,
every margin is ≈ 0). A genotype derived while most edges are undecided is
the initialization noise, not a search result.

`SuperNet` logs `decided` (share of decided edges) and `margin` (mean margin)
every step and epoch; `SuperNet.genotype()` stores the per-edge margins in
the genotype (`Genotype.decision`) and warns, naming the undecided edges,
when fewer than half are decided, and when a normal cell derives to
parameter-free ops only (DARTS's collapse to skips and pools).

Example:
    >>> summary = decision_summary(net.op_probabilities(), net.space)
    >>> summary["decided"], summary["normal"][:3]
    (0.82, [0.91, 0.12, 0.64])
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from bnas_tf.search_space import SearchSpace

__all__ = ["DECIDED_MARGIN", "MOSTLY_DECIDED", "PARAMETER_FREE_OPS", "edge_margins",
           "tf_edge_margins", "decision_summary", "genotype_warnings", "candidate_ops",
           "agreement"]

log = logging.getLogger(__name__)

DECIDED_MARGIN = 0.25
MOSTLY_DECIDED = 0.5  # warn below this share of decided edges
PARAMETER_FREE_OPS = frozenset({"none", "skip_connect", "max_pool_3x3", "avg_pool_3x3"})
KINDS = ("normal", "reduce")


def candidate_ops(space: SearchSpace) -> list[int]:
    """Columns derivation may pick: every op but `none`, unless the space selects it."""
    return [i for i, n in enumerate(space.op_names) if n != "none" or space.selectable_none]


def edge_margins(probs: np.ndarray, space: SearchSpace) -> np.ndarray:
    """`p(chosen) − p(runner-up)` per edge (rows of `probs`), over the candidate ops."""
    top = np.sort(np.asarray(probs, dtype=np.float64)[:, candidate_ops(space)], axis=1)
    if top.shape[1] < 2:
        return top[:, -1]
    return top[:, -1] - top[:, -2]


def tf_edge_margins(probs: tf.Tensor, space: SearchSpace) -> tf.Tensor:
    """`edge_margins` in TensorFlow (for the step logs)."""
    candidates = tf.gather(probs, candidate_ops(space), axis=-1)
    if candidates.shape[-1] < 2:
        return candidates[..., 0]
    top = tf.math.top_k(candidates, k=2).values
    return top[..., 0] - top[..., 1]


def decision_summary(probs: dict, space: SearchSpace,
                     threshold: float = DECIDED_MARGIN) -> dict:
    """Per-edge margins of both cell kinds, the share of decided edges and the mean margin.

    Args:
        probs: `{"normal": [edges, ops], "reduce": [edges, ops]}` op probabilities.
        space: the search space (column order).
        threshold: the margin from which an edge counts as decided.
    """
    margins = {kind: edge_margins(probs[kind], space) for kind in KINDS}
    every = np.concatenate([margins[k] for k in KINDS])
    return {"threshold": threshold,
            "decided": round(float(np.mean(every >= threshold)), 4),
            "mean_margin": round(float(np.mean(every)), 4),
            **{kind: np.round(margins[kind], 4).tolist() for kind in KINDS}}


def _edge_name(space: SearchSpace, kind: str, row: int) -> str:
    source, node = space.edges()[row]
    return f"{kind} {source}->{node}"


def genotype_warnings(genotype, summary: dict | None = None) -> list[str]:
    """What is wrong with a derived genotype: undecided α, parameter-free normal cells.

    Args:
        genotype: a `bnas_tf.Genotype`.
        summary: its `decision_summary` (else only the collapse is checked).
    """
    problems = []
    space = genotype.search_space
    if summary is not None and summary["decided"] < MOSTLY_DECIDED:
        undecided = [_edge_name(space, kind, row) for kind in KINDS
                     for row, margin in enumerate(summary[kind])
                     if margin < summary["threshold"]]
        problems.append(
            f"The genotype is mostly undecided: {len(undecided)} of "
            f"{2 * space.num_edges} edges have a margin below {summary['threshold']} between "
            f"their chosen op's probability and the runner-up's ({', '.join(undecided)}); it "
            "reflects the initial α more than the search. Search longer, or let the "
            "architecture learning rate follow the budget (bnas-tf search --decision, "
            "bn.budget.SearchBudget).")
    ops = [name for edges in genotype.normal.nodes for edge in edges for name in edge.op_names]
    if ops and all(name in PARAMETER_FREE_OPS for name in ops):
        problems.append(
            f"The normal cell derives to parameter-free ops only ({', '.join(sorted(set(ops)))}):"
            " the search collapsed to skips and pools (as DARTS does when α outruns the "
            "weights). Train the weights longer before α (warm-up), lower the architecture "
            "learning rate, or keep the BATS temperature.")
    return problems


def agreement(genotypes: list) -> float:
    """Mean share, over pairs of genotypes, of the edges both keep that get the same op.

    Searches of one space that decide on signal (not on noise) agree more
    often than independent random choices (about 1 / candidate ops).

    Example:
        >>> agreement([g_seed0, g_seed1, g_seed2])
        0.41
    """
    def choices(genotype) -> dict:
        return {(kind, node, edge.source): edge.op_names for kind in KINDS
                for node, edges in enumerate(getattr(genotype, kind).nodes) for edge in edges}

    shares = []
    for i, first in enumerate(genotypes):
        for second in genotypes[i + 1:]:
            a, b = choices(first), choices(second)
            common = set(a) & set(b)
            if common:
                shares.append(float(np.mean([a[k] == b[k] for k in common])))
    return float(np.mean(shares)) if shares else float("nan")
