"""Tests for bnas_tf.genotype: DARTS derivation, JSON round trip, clean failures."""

from __future__ import annotations

import bnas_tf as bn  # first: selects Keras 2 before TensorFlow is imported

# isort: split
import json
import os
import re

import numpy as np
import pytest

from bnas_tf import Cell, Edge, Genotype, derive_genotype
from bnas_tf.errors import GenotypeError


def _row(space, **probs):
    """One edge's op probabilities: the given ones, the rest spread evenly over other ops."""
    others = [n for n in space.op_names if n not in probs]
    rest = (1.0 - sum(probs.values())) / len(others)
    assert all(p > rest for p in probs.values() if p > 0.2)  # hand-set values stand out
    return [probs.get(n, rest) for n in space.op_names]


def _table(space, rows):
    table = np.array([_row(space, **r) for r in rows])
    assert table.shape == (space.num_edges, space.num_ops)
    np.testing.assert_allclose(table.sum(1), 1.0)
    return table


# One row per edge in SearchSpace.edges() order: (0,2) (1,2) | (0,3) (1,3) (2,3) |
# (0,4) (1,4) (2,4) (3,4) | (0,5) (1,5) (2,5) (3,5) (4,5). `none` has the largest
# probabilities of the table (0.9, 0.97, 0.99) on edges whose best real op is weak.
ROWS = [
    {"skip_connect": 0.5}, {"none": 0.5, "bin_conv_3x3": 0.4},
    {"none": 0.9, "max_pool_3x3": 0.05}, {"bin_dil_conv_5x5": 0.6},
    {"avg_pool_3x3": 0.3, "bin_conv_5x5": 0.25},
    {"bin_conv_5x5": 0.45}, {}, {"none": 0.97}, {"bin_dil_conv_3x3": 0.7},
    {}, {"max_pool_3x3": 0.35}, {}, {"none": 0.99}, {"bin_conv_3x3": 0.5},
]
# the same table for bnas (no skip_connect), with `none` also winning edges (0,2) and (1,2)
BNAS_ROWS = [{"none": 0.8}, {"bin_conv_3x3": 0.4, "none": 0.1}, *ROWS[2:]]

# expected (source, op) per node
BATS_NORMAL = [
    [(0, "skip_connect"), (1, "bin_conv_3x3")],         # `none` 0.5 on (1,2) is skipped
    [(1, "bin_dil_conv_5x5"), (2, "avg_pool_3x3")],     # not (0,3): its best real op is 0.05
    [(0, "bin_conv_5x5"), (3, "bin_dil_conv_3x3")],
    [(1, "max_pool_3x3"), (4, "bin_conv_3x3")],
]
NONE_SELECTABLE = [
    [(0, "skip_connect"), (1, "none")],
    [(0, "none"), (1, "bin_dil_conv_5x5")],
    [(2, "none"), (3, "bin_dil_conv_3x3")],
    [(3, "none"), (4, "bin_conv_3x3")],
]
BNAS_NORMAL = [
    [(0, "none"), (1, "bin_conv_3x3")],
    [(0, "none"), (1, "bin_dil_conv_5x5")],
    [(2, "none"), (3, "bin_dil_conv_3x3")],
    [(3, "none"), (4, "bin_conv_3x3")],
]


def _reduce_rows(nodes=4):
    """Reduction table: node j takes max pool from input 0 and dil conv 3x3 from its last input."""
    rows = []
    for j in range(nodes):
        for source in range(j + 2):
            if source == 0:
                rows.append({"max_pool_3x3": 0.6})
            elif source == j + 1:
                rows.append({"bin_dil_conv_3x3": 0.5})
            else:
                rows.append({"avg_pool_3x3": 0.2})
    return rows


REDUCE = [[(0, "max_pool_3x3"), (j + 1, "bin_dil_conv_3x3")] for j in range(4)]


def _pairs(cell):
    return [[(e.source, e.op_names[0]) for e in edges] for edges in cell.nodes]


def _assert_darts_cell(cell, expected):
    assert _pairs(cell) == expected
    for edges in cell.nodes:
        for edge in edges:
            assert len(edge.ops) == 1 and edge.ops[0][1] == 1.0 and edge.weight == 1.0
    assert cell.concat == tuple(range(2, 2 + len(expected)))


# ------------------------------------------------------------------------ derivation


def test_derive_bats_follows_darts_rule_and_excludes_none():
    space = bn.SearchSpace.get("bats")
    normal, reduce = _table(space, ROWS), _table(space, _reduce_rows())
    assert normal.argmax() // space.num_ops == 12  # the table's largest entry is a `none`
    g = derive_genotype(normal, reduce, space)
    _assert_darts_cell(g.normal, BATS_NORMAL)
    _assert_darts_cell(g.reduce, REDUCE)
    assert "none" not in g.op_names
    assert g.method == "darts" and g.space == space.get_config()
    np.testing.assert_allclose(g.probabilities["normal"], normal, atol=1e-6)
    np.testing.assert_allclose(g.probabilities["reduce"], reduce, atol=1e-6)


def test_derive_selects_none_when_the_space_allows_it():
    space = bn.SearchSpace.get("bats", selectable_none=True)
    g = derive_genotype(_table(space, ROWS), _table(space, _reduce_rows()), space)
    _assert_darts_cell(g.normal, NONE_SELECTABLE)
    _assert_darts_cell(g.reduce, REDUCE)


def test_derive_bnas_selects_none():
    space = bn.SearchSpace.get("bnas")
    assert space.selectable_none
    g = derive_genotype(_table(space, BNAS_ROWS), _table(space, _reduce_rows()), space)
    _assert_darts_cell(g.normal, BNAS_NORMAL)
    _assert_darts_cell(g.reduce, REDUCE)
    assert "none" in g.op_names
    assert Genotype.from_json(g.to_json()) == g


def test_derive_one_edge_per_node_and_smaller_cells():
    space = bn.SearchSpace.get("bats")
    table = _table(space, ROWS)
    g = derive_genotype(table, table, space, edges_per_node=1)
    assert _pairs(g.normal) == [[(0, "skip_connect")], [(1, "bin_dil_conv_5x5")],
                                [(3, "bin_dil_conv_3x3")], [(4, "bin_conv_3x3")]]
    small = bn.SearchSpace.get("bats", nodes=2)
    g2 = derive_genotype(table[:5], table[:5], small)
    assert _pairs(g2.normal) == BATS_NORMAL[:2]
    assert g2.search_space == small


def test_derive_uses_the_column_order_of_the_space():
    space = bn.SearchSpace(["bin_conv_3x3", "none", "max_pool_3x3"], nodes=1)
    g = derive_genotype([[0.2, 0.7, 0.1], [0.1, 0.3, 0.6]],
                        [[0.5, 0.1, 0.4], [0.45, 0.1, 0.45]], space)
    assert _pairs(g.normal) == [[(0, "bin_conv_3x3"), (1, "max_pool_3x3")]]
    assert _pairs(g.reduce) == [[(0, "bin_conv_3x3"), (1, "bin_conv_3x3")]]  # tie: first


@pytest.mark.parametrize("shape", [(14, 7), (13, 8), (14,), (2, 14, 8)])
def test_derive_rejects_wrong_shapes(shape):
    space = bn.SearchSpace.get("bats")
    good = np.full([14, 8], 1 / 8)
    with pytest.raises(GenotypeError, match=r"shape \(14, 8\)"):
        derive_genotype(np.full(shape, 0.1), good, space)
    with pytest.raises(GenotypeError, match="reduce probabilities"):
        derive_genotype(good, np.full(shape, 0.1), space)


# ------------------------------------------------------------------------ round trip


def _hmnas_genotype(probabilities=True):
    """Any in-degree, several weighted ops per edge, a pruned node (HM-NAS)."""
    space = bn.SearchSpace.get("bats").get_config()
    normal = Cell(nodes=(
        (Edge(1, (("bin_conv_3x3", 0.75), ("max_pool_3x3", 0.25)), 0.9),),      # 1 input
        (Edge(0, (("skip_connect", 1.0),), 0.5), Edge(1, (("bin_dil_conv_5x5", 0.6),), 1.25),
         Edge(2, (("avg_pool_3x3", 0.3), ("bin_conv_5x5", 0.2), ("none", 0.5)), 0.1)),  # 3
        (),                                                                          # pruned
        (Edge(0, (("bin_conv_5x5", 1.0),)), Edge(1, (("bin_conv_3x3", 0.5),), 0.3),
         Edge(2, (("max_pool_3x3", 1.0),), 2.0), Edge(3, (("bin_dil_conv_3x3", 0.125),), 0.7)),
    ), concat=(2, 3, 5))
    reduce = Cell(nodes=(
        (Edge(0, (("max_pool_3x3", 1.0),)), Edge(1, (("bin_conv_3x3", 1.0),))),
        (),
        (),
        (Edge(2, (("skip_connect", 0.4), ("avg_pool_3x3", 0.6)), 0.8),),
    ), concat=(2, 5))
    probs = None
    if probabilities:
        rng = np.random.default_rng(0)
        probs = {k: rng.dirichlet(np.ones(8), 14).round(6).tolist() for k in ("normal", "reduce")}
    return Genotype(normal, reduce, space, probs, method="hmnas")


def test_hmnas_genotype_is_representable():
    g = _hmnas_genotype()
    assert [len(edges) for edges in g.normal.nodes] == [1, 3, 0, 4]
    assert g.normal.kept_nodes == (2, 3, 5)
    assert g.reduce.kept_nodes == (2, 5)
    assert g.normal.nodes[1][2].op_names == ("avg_pool_3x3", "bin_conv_5x5", "none")
    assert g.normal.nodes[1][2].ops[1] == ("bin_conv_5x5", 0.2)
    assert g.normal.nodes[1][1].weight == 1.25


@pytest.mark.parametrize("make", [
    _hmnas_genotype,
    lambda: _hmnas_genotype(probabilities=False),
    lambda: derive_genotype(_table(bn.SearchSpace.get("bats"), ROWS),
                            _table(bn.SearchSpace.get("bats"), _reduce_rows()),
                            bn.SearchSpace.get("bats")),
], ids=["hmnas", "hmnas_no_probabilities", "darts"])
def test_json_round_trip(make, tmp_path):
    g = make()
    text = g.to_json()
    data = json.loads(text)
    assert data["format"] == "bnas_tf.genotype/1" and data["method"] == g.method
    clone = Genotype.from_json(text)
    assert clone == g and hash(clone) == hash(g)
    assert clone.probabilities == g.probabilities
    assert clone.to_dict() == g.to_dict()
    assert Genotype.from_json(g.to_json(indent=None)) == g
    path = tmp_path / "genotype.json"
    g.save(path)
    loaded = Genotype.load(path)
    assert loaded == g and loaded.probabilities == g.probabilities
    assert loaded.method == g.method and loaded.normal == g.normal and loaded.reduce == g.reduce
    assert Genotype.load(str(path)) == g
    assert os.listdir(tmp_path) == ["genotype.json"]


def test_equality_sees_structure_and_weights():
    g = _hmnas_genotype()
    data = g.to_dict()
    data["normal"]["nodes"][0][0]["ops"][0][1] = 0.7
    assert Genotype.from_dict(data) != g
    data = g.to_dict()
    data["reduce"]["nodes"][3][0]["weight"] = 0.9
    assert Genotype.from_dict(data) != g
    data = g.to_dict()
    data["probabilities"] = None
    assert Genotype.from_dict(data) == g  # probabilities are a record, not the architecture


def test_missing_concat_defaults_to_kept_nodes():
    data = _hmnas_genotype().to_dict()
    del data["normal"]["concat"]
    assert Genotype.from_dict(data).normal.concat == (2, 3, 5)


# --------------------------------------------------------------------- bad genotypes


def _mutate(change):
    data = json.loads(_hmnas_genotype().to_json())
    change(data)
    return json.dumps(data)


def _set(path, value):
    def change(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


ALL_BATS_OPS = bn.SearchSpace.get("bats").op_names
NORMAL = ("normal", "nodes")
BAD = {
    "not_json": ("{'normal': [oops", [r"not valid JSON"]),
    "not_object": ("[1, 2]", [r"JSON object", "list"]),
    "wrong_format": (_mutate(_set(("format",), "darts.genotype/2")),
                     [r"'format': 'bnas_tf.genotype/1'", "'darts.genotype/2'"]),
    "no_format": (_mutate(lambda d: d.pop("format")), [r"'format'", "got None"]),
    "missing_cell": (_mutate(lambda d: d.pop("reduce")), [r"missing \['reduce'\]"]),
    "unknown_op": (_mutate(_set((*NORMAL, 1, 0, "ops", 0, 0), "sep_conv_3x3")),
                   ["'sep_conv_3x3'", "normal node 3", *ALL_BATS_OPS]),
    "source_is_node_itself": (_mutate(_set((*NORMAL, 0, 0, "source"), 2)),
                              ["normal node 2", "from node 2", "does not exist", "0..1"]),
    "source_later_node": (_mutate(_set((*NORMAL, 1, 0, "source"), 4)),
                          ["normal node 3", "from node 4", "does not exist"]),
    "source_out_of_range": (_mutate(_set((*NORMAL, 3, 0, "source"), 9)),
                            ["normal node 5", "from node 9", "does not exist"]),
    "source_negative": (_mutate(_set((*NORMAL, 3, 0, "source"), -1)), ["from node -1"]),
    "source_pruned": (_mutate(_set((*NORMAL, 3, 0, "source"), 4)),
                      ["normal node 5", "from node 4", "pruned"]),
    "source_not_int": (_mutate(_set((*NORMAL, 3, 0, "source"), "1")), ["integer source"]),
    "concat_pruned": (_mutate(_set(("normal", "concat"), [2, 4])),
                      ["concatenates node 4", r"\[2, 3, 5\]"]),
    "concat_missing": (_mutate(_set(("reduce", "concat"), [2, 9])),
                       ["reduce cell concatenates node 9"]),
    "concat_empty": (_mutate(_set(("reduce", "concat"), [])), ["concatenates no nodes"]),
    "weight_string": (_mutate(_set((*NORMAL, 0, 0, "ops", 0, 1), "0.75")),
                      ["finite number", "'bin_conv_3x3'", "'0.75'"]),
    "weight_null": (_mutate(_set((*NORMAL, 0, 0, "ops", 1, 1), None)), ["finite number", "None"]),
    "weight_bool": (_mutate(_set((*NORMAL, 0, 0, "ops", 1, 1), True)), ["finite number", "True"]),
    "weight_nan": (_mutate(_set((*NORMAL, 0, 0, "ops", 1, 1), float("nan"))),
                   ["finite number", "nan"]),
    "edge_weight_string": (_mutate(_set((*NORMAL, 1, 1, "weight"), "heavy")),
                           ["finite number", "edge weight", "'heavy'"]),
    "ops_not_pairs": (_mutate(_set((*NORMAL, 0, 0, "ops"), ["bin_conv_3x3"])),
                      [r"\[\[name, weight\], \.\.\.\]"]),
    "edge_without_ops": (_mutate(_set((*NORMAL, 0, 0, "ops"), [])), ["has no ops"]),
    "edge_not_object": (_mutate(_set((*NORMAL, 0, 0), 3)), ["normal node 2"]),
    "node_not_list": (_mutate(_set((*NORMAL, 0), "x")), ["list of edges", "normal node 2"]),
    "cell_without_nodes": (_mutate(_set(("reduce",), {"concat": [2]})), ["'reduce'", "'nodes'"]),
    "bad_space_op": (_mutate(_set(("space", "op_names"), ["none", "conv_9x9"])),
                     ["bad 'space'", "conv_9x9"]),
    "bad_space_string": (_mutate(_set(("space",), "bats")), ["bad 'space'"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_genotype_fails_cleanly(case, tmp_path):
    text, patterns = BAD[case]
    with pytest.raises(GenotypeError) as info:
        Genotype.from_json(text)
    assert isinstance(info.value, ValueError)
    for pattern in patterns:
        assert re.search(pattern, str(info.value)), (pattern, str(info.value))
    path = tmp_path / f"{case}.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(GenotypeError) as info:
        Genotype.load(path)
    message = str(info.value)
    assert str(path) in message
    for pattern in patterns:
        assert re.search(pattern, message), (pattern, message)


@pytest.mark.parametrize("space", [5, None, 1.5], ids=["int", "null", "float"])
def test_bad_space_type_fails_with_genotype_error(space, tmp_path):
    path = tmp_path / "genotype.json"
    path.write_text(_mutate(_set(("space",), space)), encoding="utf-8")
    with pytest.raises(GenotypeError, match="bad 'space'"):
        Genotype.load(path)


def test_direct_construction_is_validated():
    g = _hmnas_genotype()
    bad_normal = Cell(((Edge(3, (("bin_conv_3x3", 1.0),)),),), (2,))
    with pytest.raises(GenotypeError, match="from node 3"):
        Genotype(bad_normal, g.reduce, g.space)
    unknown = Cell(((Edge(0, (("bin_conv_3x3", 1.0), ("conv_1x1", 1.0))),),), (2,))
    with pytest.raises(GenotypeError, match="'conv_1x1'"):
        Genotype(unknown, g.reduce, g.space)
    with pytest.raises(GenotypeError, match="'skip_connect'.*'bnas'"):
        Genotype(g.normal, g.reduce, bn.SearchSpace.get("bnas").get_config())
    with pytest.raises(GenotypeError, match="no nodes"):
        Genotype(Cell((), ()), g.reduce, g.space)


def test_load_missing_file_names_the_path(tmp_path):
    path = tmp_path / "run" / "nope.json"
    with pytest.raises(GenotypeError) as info:
        Genotype.load(path)
    assert str(path) in str(info.value)
    assert "Cannot read genotype file" in str(info.value)
    with pytest.raises(GenotypeError, match="Cannot read"):
        Genotype.load(tmp_path)  # a directory


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "genotype.json"
    original = _hmnas_genotype()
    original.save(path)
    before = path.read_bytes()
    other = derive_genotype(_table(bn.SearchSpace.get("bats"), ROWS),
                            _table(bn.SearchSpace.get("bats"), _reduce_rows()),
                            bn.SearchSpace.get("bats"))
    assert other != original

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        other.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["genotype.json"]
    monkeypatch.undo()
    other.save(path)
    assert Genotype.load(path) == other
    assert os.listdir(tmp_path) == ["genotype.json"]
