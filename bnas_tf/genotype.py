"""Genotypes: the architecture a search produced, as a small immutable value.

A genotype holds a normal and a reduction cell. Each intermediate node of a
cell lists its incoming edges; an edge names its source (0 and 1 are the two
cell inputs, 2 + k is intermediate node k), one or more ops with a weight
each, and an edge weight. DARTS-rule genotypes have two edges per node, one
op per edge and unit weights; HM-NAS genotypes may have any in-degree, several
ops per edge and learned weights. Nodes left empty were pruned.

Example:
    >>> g = bn.Genotype.load("RUN/genotype.json")
    >>> g.normal.nodes[0][0]
    Edge(source=1, ops=(('bin_conv_3x3', 1.0),), weight=1.0)
    >>> g.save("copy.json")
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence

import numpy as np

from bnas_tf._io import atomic_write_text
from bnas_tf.decision import decision_summary
from bnas_tf.errors import GenotypeError
from bnas_tf.search_space import SearchSpace

__all__ = ["Edge", "Cell", "Genotype", "derive_genotype", "random_genotype"]

FORMAT = "bnas_tf.genotype/1"


@dataclasses.dataclass(frozen=True)
class Edge:
    """An edge into a node: `source`, `(op_name, op_weight)` pairs, and the edge weight."""

    source: int
    ops: tuple[tuple[str, float], ...]
    weight: float = 1.0

    @property
    def op_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.ops)


@dataclasses.dataclass(frozen=True)
class Cell:
    """Incoming edges per intermediate node, and the nodes concatenated as output."""

    nodes: tuple[tuple[Edge, ...], ...]
    concat: tuple[int, ...]

    @property
    def kept_nodes(self) -> tuple[int, ...]:
        """State indices (2 + k) of the nodes that have inputs."""
        return tuple(2 + k for k, edges in enumerate(self.nodes) if edges)


@dataclasses.dataclass(frozen=True)
class Genotype:
    """A searched architecture; JSON round trip with `to_json`/`from_json`.

    Args:
        normal: the normal cell.
        reduce: the reduction cell.
        space: the `SearchSpace.get_config()` the genotype was derived in;
            builders use it to construct the same ops.
        probabilities: op probabilities per edge at derivation time,
            `{"normal": [[...]], "reduce": [[...]]}` in the space's op order.
        method: how it was derived (`darts` or `hmnas`).
        decision: per-edge decision margins at derivation time and the share
            of decided edges (`bnas_tf.decision.decision_summary`), or None.

    Raises:
        GenotypeError: when an op is not in the space, an edge comes from a
            node that does not exist (or from a later or pruned node), or the
            concat list is inconsistent.
    """

    normal: Cell
    reduce: Cell
    space: dict = dataclasses.field(hash=False)
    probabilities: dict | None = dataclasses.field(default=None, hash=False, compare=False)
    method: str = "darts"
    decision: dict | None = dataclasses.field(default=None, hash=False, compare=False)

    def __post_init__(self):
        space = SearchSpace.from_config(self.space)
        for kind in ("normal", "reduce"):
            _validate_cell(getattr(self, kind), kind, space)

    @property
    def search_space(self) -> SearchSpace:
        return SearchSpace.from_config(self.space)

    @property
    def op_names(self) -> set[str]:
        """Every op name used by either cell."""
        return {name for cell in (self.normal, self.reduce)
                for edges in cell.nodes for edge in edges for name in edge.op_names}

    def to_dict(self) -> dict:
        def cell_dict(cell: Cell) -> dict:
            return {
                "nodes": [[{"source": e.source, "ops": [[n, w] for n, w in e.ops],
                            "weight": e.weight} for e in edges] for edges in cell.nodes],
                "concat": list(cell.concat),
            }

        out = {"format": FORMAT, "method": self.method, "space": self.space,
               "normal": cell_dict(self.normal), "reduce": cell_dict(self.reduce)}
        if self.probabilities is not None:
            out["probabilities"] = self.probabilities
        if self.decision is not None:
            out["decision"] = self.decision
        return out

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict) -> Genotype:
        if not isinstance(data, dict):
            raise GenotypeError(f"Expected a JSON object for a genotype, got {type(data).__name__}.")
        if data.get("format") != FORMAT:
            raise GenotypeError(
                f"Expected 'format': {FORMAT!r}, got {data.get('format')!r}; "
                "is this a bnas_tf genotype file?")
        missing = [k for k in ("space", "normal", "reduce") if k not in data]
        if missing:
            raise GenotypeError(f"Genotype is missing {missing}.")
        try:
            space = SearchSpace.from_config(data["space"]).get_config()
        except ValueError as error:
            raise GenotypeError(f"Genotype has a bad 'space': {error}") from None
        return cls(normal=_cell_from_dict(data["normal"], "normal"),
                   reduce=_cell_from_dict(data["reduce"], "reduce"),
                   space=space, probabilities=data.get("probabilities"),
                   method=str(data.get("method", "darts")),
                   decision=data.get("decision") if isinstance(data.get("decision"), dict)
                   else None)

    @classmethod
    def from_json(cls, text: str) -> Genotype:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise GenotypeError(f"Genotype is not valid JSON: {error}.") from None
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike) -> None:
        """Write the genotype as JSON (atomically: temp file, then rename)."""
        atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Genotype:
        """Read a genotype JSON file.

        Raises:
            GenotypeError: naming the file and what is wrong with it.
        """
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as error:
            raise GenotypeError(f"Cannot read genotype file {os.fspath(path)!r}: "
                                f"{error.strerror or error}.") from None
        try:
            return cls.from_json(text)
        except GenotypeError as error:
            raise GenotypeError(f"{os.fspath(path)}: {error}") from None


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GenotypeError(f"Expected a finite number for {what}, got {value!r}.")
    return float(value)


def _cell_from_dict(data, kind: str) -> Cell:
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise GenotypeError(f"Expected '{kind}' to be an object with a 'nodes' list.")
    nodes = []
    for k, edges in enumerate(data["nodes"]):
        where = f"{kind} node {k + 2}"
        if not isinstance(edges, list):
            raise GenotypeError(f"Expected a list of edges for {where}, got {edges!r}.")
        parsed = []
        for edge in edges:
            if not isinstance(edge, dict) or "source" not in edge or "ops" not in edge:
                raise GenotypeError(f"Expected edges of {where} as {{'source', 'ops', 'weight'}}, "
                                    f"got {edge!r}.")
            source = edge["source"]
            if isinstance(source, bool) or not isinstance(source, int):
                raise GenotypeError(f"Expected an integer source in {where}, got {source!r}.")
            op_list = edge["ops"]
            if not isinstance(op_list, list) or not all(
                    isinstance(o, list) and len(o) == 2 and isinstance(o[0], str) for o in op_list):
                raise GenotypeError(f"Expected ops of {where} as [[name, weight], ...], "
                                    f"got {op_list!r}.")
            ops_ = tuple((name, _number(w, f"the weight of {name!r} in {where}"))
                         for name, w in op_list)
            parsed.append(Edge(source, ops_, _number(edge.get("weight", 1.0),
                                                     f"an edge weight in {where}")))
        nodes.append(tuple(parsed))
    concat = data.get("concat", [2 + k for k, edges in enumerate(nodes) if edges])
    if not isinstance(concat, list) or not all(isinstance(c, int) for c in concat):
        raise GenotypeError(f"Expected '{kind}.concat' as a list of node indices, got {concat!r}.")
    return Cell(tuple(nodes), tuple(concat))


def _validate_cell(cell: Cell, kind: str, space: SearchSpace) -> None:
    if not isinstance(cell, Cell):
        raise GenotypeError(f"Expected a Cell for {kind}, got {type(cell).__name__}.")
    if not cell.nodes:
        raise GenotypeError(f"The {kind} cell has no nodes.")
    kept = set(cell.kept_nodes)
    for k, edges in enumerate(cell.nodes):
        node = k + 2
        for edge in edges:
            if not 0 <= edge.source < node:
                raise GenotypeError(
                    f"{kind} node {node} has an edge from node {edge.source}, which does not "
                    f"exist before it (valid sources: 0..{node - 1}).")
            if edge.source >= 2 and edge.source not in kept:
                raise GenotypeError(
                    f"{kind} node {node} has an edge from node {edge.source}, which was pruned "
                    "(it has no inputs).")
            if not edge.ops:
                raise GenotypeError(f"An edge into {kind} node {node} has no ops.")
            for name, _ in edge.ops:
                if name not in space.op_names:
                    raise GenotypeError(
                        f"Unknown op {name!r} in {kind} node {node}; the space "
                        f"{space.name!r} has: {', '.join(space.op_names)}.")
    if not cell.concat:
        raise GenotypeError(f"The {kind} cell concatenates no nodes.")
    for c in cell.concat:
        if c not in kept:
            raise GenotypeError(
                f"The {kind} cell concatenates node {c}, which does not exist or has no "
                f"inputs (nodes with inputs: {sorted(kept)}).")


def _derive_cell(probs: np.ndarray, space: SearchSpace, edges_per_node: int,
                 edge_weights: np.ndarray | None = None) -> Cell:
    names = space.op_names
    candidates = [i for i, n in enumerate(names) if n != "none" or space.selectable_none]
    if not candidates:
        raise GenotypeError("The space has no op other than 'none' to derive a cell from.")
    nodes, row = [], 0
    for j in range(space.nodes):
        rows = probs[row: row + j + 2]
        weights = np.ones(j + 2) if edge_weights is None else edge_weights[row: row + j + 2]
        row += j + 2
        strength = rows[:, candidates].max(axis=1) * weights
        best_sources = sorted(np.argsort(-strength, kind="stable")[:edges_per_node])
        edges = []
        for source in best_sources:
            op = candidates[int(np.argmax(rows[source, candidates]))]
            edges.append(Edge(int(source), ((names[op], 1.0),), round(float(weights[source]), 6)))
        nodes.append(tuple(edges))
    return Cell(tuple(nodes), tuple(range(2, 2 + space.nodes)))


def derive_genotype(normal_probs: Sequence, reduce_probs: Sequence, space: SearchSpace, *,
                    edges_per_node: int = 2, edge_weights: dict | None = None) -> Genotype:
    """Derive a genotype with the DARTS rule.

    For each node keep the `edges_per_node` incoming edges whose strongest op
    is strongest, and on each the strongest op. `none` is excluded unless the
    space allows selecting it (BNAS). With `edge_weights` (PC-DARTS edge
    normalization) an edge's strength is its edge weight times its strongest
    op's probability, and the kept edges carry their edge weight.

    Args:
        normal_probs: `[num_edges, num_ops]` op probabilities of normal cells.
        reduce_probs: the same for reduction cells.
        space: the search space (column order = `space.op_names`).
        edges_per_node: incoming edges kept per node.
        edge_weights: optional `{"normal": [num_edges], "reduce": [num_edges]}`.

    Returns:
        A `Genotype` that keeps the probabilities.

    Raises:
        GenotypeError: probabilities of the wrong shape, or NaN or infinite.

    Example:
        >>> space = bn.SearchSpace.get("bats")
        >>> p = np.full([space.num_edges, space.num_ops], 1 / space.num_ops)
        >>> bn.derive_genotype(p, p, space).normal.nodes[0]
    """
    probabilities = {}
    cells = {}
    for kind, probs in (("normal", normal_probs), ("reduce", reduce_probs)):
        probs = np.asarray(probs, dtype=np.float64)
        if not np.all(np.isfinite(probs)):
            raise GenotypeError(f"Expected finite {kind} op probabilities, got NaN or infinite "
                                "values: the α they come from diverged (lower the learning rates).")
        if probs.shape != (space.num_edges, space.num_ops):
            raise GenotypeError(
                f"Expected {kind} probabilities of shape {(space.num_edges, space.num_ops)}, "
                f"got {probs.shape}.")
        weights = None
        if edge_weights is not None:
            weights = np.asarray(edge_weights[kind], dtype=np.float64)
            if weights.shape != (space.num_edges,) or not np.all(weights > 0):
                raise GenotypeError(f"Expected {kind} edge weights: {space.num_edges} positive "
                                    f"numbers, got {weights.tolist()}.")
        cells[kind] = _derive_cell(probs, space, edges_per_node, weights)
        probabilities[kind] = np.round(probs, 6).tolist()
    summary = decision_summary({k: np.asarray(p) for k, p in probabilities.items()}, space)
    return Genotype(cells["normal"], cells["reduce"], space.get_config(), probabilities,
                    decision=summary)


def random_genotype(space: SearchSpace, rng: np.random.Generator | int | None = None, *,
                    edges_per_node: int = 2) -> Genotype:
    """A genotype drawn uniformly from what the DARTS rule can derive in `space`.

    Each node gets `edges_per_node` distinct sources (or all of them when it has
    fewer inputs) and on each edge one op drawn from those derivation may pick
    (no `none` unless the space selects it), unit weights: the random-search
    baseline a searched genotype must beat (Li & Talwalkar, 2019).

    Example:
        >>> g = bn.random_genotype(bn.SearchSpace.get("lce"), rng=0)
        >>> [len(node) for node in g.normal.nodes]
        [2, 2, 2, 2]
    """
    rng = np.random.default_rng(rng)
    names = [n for n in space.op_names if n != "none" or space.selectable_none]

    def cell() -> Cell:
        nodes = []
        for k in range(space.nodes):
            count = min(edges_per_node, k + 2)
            sources = sorted(int(i) for i in rng.choice(k + 2, size=count, replace=False))
            nodes.append(tuple(Edge(i, ((str(rng.choice(names)), 1.0),), 1.0) for i in sources))
        return Cell(tuple(nodes), tuple(range(2, 2 + space.nodes)))

    return Genotype(cell(), cell(), space.get_config(), method="random")
