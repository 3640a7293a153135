"""Tests for bnas_tf.search_space: the preset binary spaces of METHODS.md §1."""

from __future__ import annotations

import bnas_tf as bn  # first: selects Keras 2 before TensorFlow is imported

# isort: split
import json

import pytest

from bnas_tf import ops
from bnas_tf.errors import SearchSpaceError

CONVS = ("bin_conv_3x3", "bin_conv_5x5", "bin_dil_conv_3x3", "bin_dil_conv_5x5")
POOLS = ("max_pool_3x3", "avg_pool_3x3")
SPACES = ("bats", "bnas", "lce")
EXPECTED_OPS = {
    "bats": ("none", *POOLS, "skip_connect", *CONVS),
    "bnas": ("none", *POOLS, *CONVS),
    "lce": ("none", *POOLS, "skip_connect", *CONVS),
}


def test_preset_names():
    assert bn.SearchSpace.names() == SPACES


@pytest.mark.parametrize("name", SPACES)
def test_preset_op_lists(name):
    space = bn.SearchSpace.get(name)
    assert space.op_names == EXPECTED_OPS[name]
    assert space.num_ops == len(EXPECTED_OPS[name])
    assert space.name == name and space.nodes == 4
    assert space.options.input_quantizer == "ste_sign"
    # METHODS.md §1: every binary space has both pools, 3x3/5x5 (dilated) binary convs and
    # `none`, and no separable conv
    assert set(CONVS) | set(POOLS) | {"none"} <= set(space.op_names)
    assert not any("sep" in n for n in space.op_names)


def test_bats_space_is_grouped_with_skip():
    space = bn.SearchSpace.get("bats")
    assert "skip_connect" in space.op_names
    assert space.options.group_channels == 3 and not space.options.convertible_groups
    assert not space.selectable_none
    assert space.weight_quantizer == "ste_sign"
    # not dense: the CIFAR width of 36 channels gives 12 groups of 3
    assert space.build_op("bin_conv_3x3", 36, 1).groups == 12
    assert space.build_op("bin_dil_conv_5x5", 36, 2).groups == 12


def test_bnas_space_is_dense_without_skip_and_none_selectable():
    space = bn.SearchSpace.get("bnas")
    assert "skip_connect" not in space.op_names
    assert space.selectable_none
    assert space.options.group_channels is None
    assert space.weight_quantizer == "magnitude_aware_sign"
    assert space.build_op("bin_conv_3x3", 36, 1).groups == 1
    with pytest.raises(SearchSpaceError, match="'skip_connect' is not in search space 'bnas'"):
        space.build_op("skip_connect", 8, 1)


def test_lce_space_keeps_groups_convertible():
    space = bn.SearchSpace.get("lce")
    assert space.options.group_channels == 32 and space.options.convertible_groups
    assert "skip_connect" in space.op_names and not space.selectable_none
    assert space.build_op("bin_conv_3x3", 64, 1).groups == 2
    assert space.build_op("bin_conv_3x3", 48, 1).groups == 1
    assert space.build_op("bin_conv_3x3", 36, 1).groups == 1
    for channels in (16, 36, 48, 64, 96, 128):
        groups = space.build_op("bin_dil_conv_3x3", channels, 1).groups
        assert groups == 1 or (channels // groups) % 32 == 0


@pytest.mark.parametrize("nodes,edges", [(1, 2), (2, 5), (3, 9), (4, 14), (5, 20)])
def test_num_edges(nodes, edges):
    assert bn.SearchSpace.get("bats", nodes=nodes).num_edges == edges


def test_edges_order():
    space = bn.SearchSpace.get("bats")
    assert space.edges() == [
        (0, 2), (1, 2),
        (0, 3), (1, 3), (2, 3),
        (0, 4), (1, 4), (2, 4), (3, 4),
        (0, 5), (1, 5), (2, 5), (3, 5), (4, 5),
    ]
    assert len(space.edges()) == space.num_edges
    assert bn.SearchSpace.get("bnas", nodes=2).edges() == [(0, 2), (1, 2), (0, 3), (1, 3),
                                                          (2, 3)]


def test_custom_space():
    space = bn.SearchSpace(["none", "skip_connect", "bin_conv_3x3"], nodes=3)
    assert space.name == "custom" and space.num_ops == 3 and space.num_edges == 9
    assert space.op_names == ("none", "skip_connect", "bin_conv_3x3")
    op = space.build_op("bin_conv_3x3", 8, 2, affine=True, binary_weights=True)
    assert isinstance(op, ops.BinaryConvBN)
    assert op.affine and op.kernel_quantizer == "ste_sign" and op.groups == 1


@pytest.mark.parametrize("make,pattern", [
    (lambda: bn.SearchSpace.get("darts"), r"Unknown search space 'darts'.*bats, bnas, lce"),
    (lambda: bn.SearchSpace.get(42), r"Unknown search space 42"),
    (lambda: bn.SearchSpace(["none", "conv_7x7"]), r"Unknown op 'conv_7x7'.*Known ops:.*bin_conv_3x3"),
    (lambda: bn.SearchSpace(["none", "max_pool_3x3", "none"]), r"unique.*\['none'\]"),
    (lambda: bn.SearchSpace([]), r"at least one op"),
    (lambda: bn.SearchSpace(["none"]), r"only 'none'"),
    (lambda: bn.SearchSpace(["none", "skip_connect"], nodes=0), r"nodes >= 1, got 0"),
    (lambda: bn.SearchSpace.get("bats", nodes=-2), r"nodes >= 1, got -2"),
    (lambda: bn.SearchSpace.get("bats", nodes=2.5), r"nodes >= 1, got 2.5"),
    (lambda: bn.SearchSpace.get("bats", input_quantizer="sign"),
     r"input_quantizer in \('ste_sign', 'approx_sign', 'swish_sign'\), got 'sign'"),
    (lambda: bn.SearchSpace.get("bnas", weight_quantizer="dorefa"),
     r"'ste_sign' or 'magnitude_aware_sign', got 'dorefa'"),
    (lambda: bn.SearchSpace.get("bats", group_channels=0), r"group_channels >= 1"),
    (lambda: bn.SearchSpace.get(bn.SearchSpace.get("bats"), widht=3),
     r"Bad search-space config.*widht"),
    (lambda: bn.SearchSpace.from_config({"nodes": 4}), r"needs 'op_names'"),
    (lambda: bn.SearchSpace.get("bats").build_op("bin_conv_7x7", 8, 1),
     r"'bin_conv_7x7' is not in search space 'bats'"),
])
def test_bad_spaces_raise_search_space_error(make, pattern):
    with pytest.raises(SearchSpaceError, match=pattern) as info:
        make()
    assert isinstance(info.value, ValueError)


def test_unknown_override_names_the_keyword():
    # a preset name goes straight to __init__ (TypeError); a config goes through from_config
    with pytest.raises((TypeError, ValueError), match="widht"):
        bn.SearchSpace.get("bats", widht=3)


@pytest.mark.parametrize("name", SPACES)
def test_config_round_trip(name):
    space = bn.SearchSpace.get(name)
    config = space.get_config()
    assert json.loads(json.dumps(config)) == config  # JSON-only values
    assert config["op_names"] == list(EXPECTED_OPS[name])
    clone = bn.SearchSpace.from_config(json.loads(json.dumps(config)))
    assert clone == space and clone.get_config() == config
    assert hash(clone) == hash(space) and repr(clone) == repr(space)
    assert bn.SearchSpace.get(config) == space
    assert bn.SearchSpace.get(space) is space


def test_config_round_trip_of_non_default_settings():
    space = bn.SearchSpace(["none", "avg_pool_3x3", "bin_dil_conv_5x5"], name="mine", nodes=2,
                           input_quantizer="swish_sign", group_channels=4,
                           convertible_groups=True, selectable_none=True,
                           weight_quantizer="magnitude_aware_sign", binary_cell_inputs=True,
                           parameter_free_skips=True, binary_search_weights=True)
    config = space.get_config()
    assert config == {
        "op_names": ["none", "avg_pool_3x3", "bin_dil_conv_5x5"], "name": "mine", "nodes": 2,
        "input_quantizer": "swish_sign", "group_channels": 4, "convertible_groups": True,
        "selectable_none": True, "weight_quantizer": "magnitude_aware_sign",
        "binary_cell_inputs": True, "parameter_free_skips": True,
        "binary_search_weights": True,
    }
    assert bn.SearchSpace.from_config(config) == space
    assert bn.SearchSpace.from_config({**config, "nodes": 3}) != space


@pytest.mark.parametrize("name", SPACES)
def test_get_overrides(name):
    space = bn.SearchSpace.get(name, nodes=3)
    preset = bn.SearchSpace.get(name)
    assert space.nodes == 3 and space.num_edges == 9
    assert space != preset
    assert {**space.get_config(), "nodes": 4} == preset.get_config()
    assert bn.SearchSpace.get(preset, nodes=3) == space
    assert bn.SearchSpace.get(preset.get_config(), nodes=3) == space
    assert preset.nodes == 4  # overriding does not mutate the preset
    quantized = bn.SearchSpace.get(name, input_quantizer="approx_sign")
    assert quantized.options.input_quantizer == "approx_sign"
    assert quantized.build_op("bin_conv_3x3", 8, 1).input_quantizer == "approx_sign"
