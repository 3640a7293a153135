"""Property-based tests (Hypothesis) of genotype files, which users and runs write.

Random JSON values, and valid genotype files with a random mutation (a value
replaced, a key dropped or added, a number changed, a list shortened, a few
characters of the text changed) either load into a valid genotype (which then
round-trips) or raise `GenotypeError`; never another exception. Bounded example
counts, derandomized, no example database: a few seconds in all.
"""

from __future__ import annotations

import bnas_tf as bn  # first: selects Keras 2 before TensorFlow is imported

# isort: split
import json
import math

import pytest

from bnas_tf.errors import GenotypeError

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SCALARS = (st.none() | st.booleans() | st.integers(-10, 10) | st.integers()
           | st.floats(allow_nan=True, allow_infinity=True)
           | st.sampled_from(["", "none", "skip_connect", "bin_conv_3x3", "lce", "darts",
                              "hmnas", "bnas_tf.genotype/1", "ste_sign", "normal"])
           | st.text(max_size=8))
JSON = st.recursive(SCALARS, lambda children: st.lists(children, max_size=4)
                    | st.dictionaries(st.text(max_size=8) | st.sampled_from(
                        ["format", "space", "normal", "reduce", "nodes", "concat", "source",
                         "ops", "weight", "op_names", "method", "probabilities"]),
                        children, max_size=4), max_leaves=20)


def valid_genotypes() -> list[dict]:
    """A DARTS-rule genotype of each space and an HM-NAS-style one, as JSON dicts."""
    out = []
    for name in ("lce", "bats", "bnas"):
        space = bn.SearchSpace.get(name, nodes=3)
        probs = [[(i * 7 + j * 3) % 5 + 1.0 for j in range(space.num_ops)]
                 for i in range(space.num_edges)]
        probs = [[p / sum(row) for p in row] for row in probs]
        out.append(bn.derive_genotype(probs, probs, space).to_dict())
    E = bn.Edge
    normal = bn.Cell(((E(0, (("bin_conv_3x3", 0.7), ("skip_connect", 0.3)), 0.9),),
                      (E(1, (("max_pool_3x3", 1.0),), 0.4), E(2, (("bin_conv_3x3", 1.0),))),
                      ()), concat=(2, 3))
    space = bn.SearchSpace.get("lce", nodes=3)
    out.append(bn.Genotype(normal, normal, space.get_config(), method="hmnas").to_dict())
    return out


VALID = valid_genotypes()


def load_or_genotype_error(text: str) -> None:
    """`Genotype.from_json(text)` raises only GenotypeError; a loaded genotype round-trips."""
    try:
        genotype = bn.Genotype.from_json(text)
    except GenotypeError as error:
        assert str(error)
        return
    again = bn.Genotype.from_json(genotype.to_json())
    assert again == genotype


@st.composite
def mutated(draw):
    """A valid genotype dict with one random change somewhere in it."""
    doc = json.loads(json.dumps(draw(st.sampled_from(VALID))))
    containers, stack = [], [doc]
    while stack:  # every dict and list in the document, as mutation sites
        node = stack.pop()
        containers.append(node)
        stack.extend(v for v in (node.values() if isinstance(node, dict) else node)
                     if isinstance(v, dict | list))
    node = draw(st.sampled_from(containers))
    keys = list(node) if isinstance(node, dict) else list(range(len(node)))
    action = draw(st.sampled_from(["replace", "delete", "add", "number", "truncate"]))
    if not keys or action == "add":
        if isinstance(node, dict):
            node[draw(st.text(max_size=6) | st.sampled_from(["weight", "concat", "nodes"]))] = \
                draw(JSON)
        else:
            node.append(draw(JSON))
        return doc
    key = draw(st.sampled_from(keys))
    if action == "replace":
        node[key] = draw(JSON)
    elif action == "delete":
        del node[key]
    elif action == "number" and isinstance(node[key], int | float) \
            and not isinstance(node[key], bool):
        node[key] = node[key] + draw(st.sampled_from([-3, -1, 1, 2, 10, 0.5, math.inf]))
    elif action == "truncate" and isinstance(node[key], list):
        node[key] = node[key][: draw(st.integers(0, max(0, len(node[key]) - 1)))]
    else:
        node[key] = draw(SCALARS)
    return doc


@SETTINGS
@given(JSON)
def test_random_json_loads_or_raises_genotype_error(value):
    load_or_genotype_error(json.dumps(value))


@SETTINGS
@given(mutated())
def test_mutated_genotype_files_load_or_raise_genotype_error(doc):
    load_or_genotype_error(json.dumps(doc))


@SETTINGS
@given(st.sampled_from(VALID), st.data())
def test_damaged_genotype_text_loads_or_raises_genotype_error(doc, data):
    text = json.dumps(doc)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(text) - 1))
        j = data.draw(st.integers(i, min(len(text), i + 4)))
        text = text[:i] + data.draw(st.text(max_size=3)) + text[j:]
    load_or_genotype_error(text)


def test_valid_genotypes_round_trip():
    for doc in VALID:
        load_or_genotype_error(json.dumps(doc))
        assert bn.Genotype.from_dict(doc).to_dict() == doc
