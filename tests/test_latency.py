"""bnas_tf.cost.latency and `bnas-tf profile`: LCE latency tables of a supernet's ops.

Profiling tests time a small space (5 ops, 3 cells, 8 channels, 8x8 images: 17 one-op
models) and skip without larq-compute-engine; file-format tests need no LCE.
"""

from __future__ import annotations

import bnas_tf as bn  # first: selects Keras 2 before TensorFlow is imported

# isort: split
import json
import math
import platform
import re
import sys

import numpy as np
import pytest

from bnas_tf import cli, cost
from bnas_tf.cost.latency import X86_CAVEAT, LatencyEntry, LatencyTable, LatencyTableError
from bnas_tf.export.timing import is_x86
from bnas_tf.supernet import reduction_indices

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SPACE = bn.SearchSpace(
    ["none", "skip_connect", "max_pool_3x3", "bin_conv_3x3", "bin_dil_conv_3x3"],
    name="small", nodes=2, group_channels=32, convertible_groups=True,
    binary_cell_inputs=True, parameter_free_skips=True)
LAYERS, CHANNELS, INPUT = 3, 8, (8, 8, 3)  # a normal cell, then two reductions: 8x8 -> 2x2
ZERO_COST = {("none", 1), ("none", 2), ("skip_connect", 1)}


def edge_keys(space, layers, channels, size) -> list[tuple[str, list]]:
    """Per cell, its kind and each edge's `(input (h, w, c), strides)`: an independent oracle."""
    cells, filters = [], channels
    for i in range(layers):
        reduction = i in reduction_indices(layers)
        filters *= 2 if reduction else 1
        out = math.ceil(size / 2) if reduction else size
        cells.append(("reduce" if reduction else "normal",
                      [((size, size, filters) if source < 2 else (out, out, filters),
                        2 if reduction and source < 2 else 1) for source, _ in space.edges()]))
        size = out
    return cells


@pytest.fixture(scope="module")
def table() -> LatencyTable:
    pytest.importorskip("larq_compute_engine")
    return cost.latency_table(SPACE, LAYERS, CHANNELS, INPUT, repeats=3, warmup=1)


def test_one_entry_per_distinct_op_shape_and_stride(table):
    expected = {(op, shape, strides) for _, row in edge_keys(SPACE, LAYERS, CHANNELS, 8)
                for shape, strides in row for op in SPACE.op_names}
    assert set(table.entries) == expected
    assert len(table.entries) == 5 * len(SPACE.op_names)  # 5 (shape, stride) pairs
    for (op, _, strides), entry in table.entries.items():
        if (op, strides) in ZERO_COST:
            assert (entry.median_ms, entry.min_ms, entry.timed) == (0.0, 0.0, False)
        else:
            assert entry.timed and 0 < entry.min_ms <= entry.median_ms, (op, strides, entry)
        if op.startswith("bin_"):  # binary convs run as LCE's binary kernel
            assert entry.lce_ops.get("LceBconv2d") == 1, entry.lce_ops


def test_machine_record(table):
    m = table.machine
    assert m["machine"] == platform.machine()
    assert m["cpu_count"] >= 1 and m["num_threads"] == 1
    arch = platform.machine().lower()
    assert m["optimized_kernels"] is (arch in ("aarch64", "arm64", "armv8l")
                                      or arch.startswith("armv7"))
    assert m["kernel_options"] == {"kernel": "indirect_bgemm", "use_indirect_bgemm": True,
                                   "use_xnnpack": False}
    for key in ("processor", "python", "tensorflow", "larq_compute_engine", "date",
                "call_overhead_ms"):
        assert key in m
    assert table.settings["layers"] == LAYERS and table.settings["repeats"] == 3
    assert table.space == SPACE.get_config()


def test_json_round_trip(table, tmp_path):
    path = table.to_json(tmp_path / "table.json")
    loaded = LatencyTable.load(path)
    assert loaded == table
    again = loaded.to_json(tmp_path / "again.json")
    assert again.read_text() == path.read_text()
    assert not list(tmp_path.glob(".tmp-*"))  # written atomically: no temporary file left


def test_edge_tables_are_alpha_shaped_sums_of_entries(table, tmp_path):
    tables = cost.edge_latency_tables(table, SPACE, LAYERS, CHANNELS, INPUT)
    alpha_shaped = cost.edge_cost_tables(SPACE, LAYERS, CHANNELS, INPUT)
    expected = {kind: np.zeros((SPACE.num_edges, SPACE.num_ops)) for kind in tables}
    for kind, row in edge_keys(SPACE, LAYERS, CHANNELS, 8):
        for e, (shape, strides) in enumerate(row):
            for o, op in enumerate(SPACE.op_names):
                entry = table.entries[(op, shape, strides)]
                overhead = table.machine["call_overhead_ms"] if entry.timed else 0.0
                expected[kind][e, o] += max(entry.median_ms - overhead, 0.0)
    for kind in ("normal", "reduce"):
        assert tables[kind].shape == alpha_shaped[kind].shape == (SPACE.num_edges, SPACE.num_ops)
        np.testing.assert_array_equal(tables[kind], expected[kind])
    assert (tables["reduce"][:, SPACE.op_names.index("bin_conv_3x3")] > 0).all()
    net = bn.SuperNet(SPACE, layers=LAYERS, channels=CHANNELS)  # from a supernet, or a file
    from_net = cost.edge_latency_tables(table.to_json(tmp_path / "t.json"), net,
                                        input_shape=INPUT)
    for kind in tables:
        np.testing.assert_array_equal(from_net[kind], tables[kind])


def test_net_ms_takes_the_per_call_overhead_off_timed_entries_only():
    key = ("bin_conv_3x3", (8, 8, 16), 1)
    entries = {key: LatencyEntry(0.05, 0.04), ("max_pool_3x3", (8, 8, 16), 1):
               LatencyEntry(0.005, 0.004), ("none", (8, 8, 16), 1): LatencyEntry(0, 0, False)}
    table = LatencyTable(entries, {"machine": "test", "call_overhead_ms": 0.01}, {})
    assert table.net_ms(*key) == pytest.approx(0.04)
    assert table.net_ms("max_pool_3x3", (8, 8, 16), 1) == 0.0   # below the overhead: 0
    assert table.net_ms("none", (8, 8, 16), 1) == 0.0
    assert LatencyTable(entries, {"machine": "old table"}, {}).net_ms(*key) == 0.05


def test_edge_tables_refuse_other_shapes_or_spaces(table):
    with pytest.raises(ValueError, match="lacks .* op shape"):
        cost.edge_latency_tables(table, SPACE, LAYERS, 16, INPUT)
    with pytest.raises(ValueError, match="group_channels"):
        cost.edge_latency_tables(table, bn.SearchSpace.get(SPACE, group_channels=3), LAYERS,
                                 CHANNELS, INPUT)


def test_bad_arguments_fail_before_any_work():
    for kwargs, match in (({"repeats": 0}, "repeats"), ({"num_threads": True}, "num_threads"),
                          ({"warmup": -1}, "warmup"), ({"kernel": "fast"}, "kernel")):
        with pytest.raises(ValueError, match=match):
            cost.latency_table(SPACE, LAYERS, CHANNELS, INPUT, **kwargs)
    with pytest.raises(ValueError, match="layers"):
        cost.latency_table(SPACE, 0, CHANNELS, INPUT)


# -- the file format (no LCE needed) ---------------------------------------------------------

def fake_table() -> LatencyTable:
    entries = {
        ("none", (8, 8, 8), 1): LatencyEntry(0.0, 0.0, False),
        ("bin_conv_3x3", (8, 8, 8), 1): LatencyEntry(0.25, 0.2, True,
                                                     {"LceQuantize": 1, "LceBconv2d": 1}),
        ("max_pool_3x3", (8, 8, 16), 2): LatencyEntry(0.125, 0.1, True, {"MAX_POOL_2D": 1}),
    }
    machine = {"machine": "x86_64", "num_threads": 1, "cpu_count": 2,
               "kernel_options": {"kernel": "indirect_bgemm", "use_indirect_bgemm": True}}
    return LatencyTable(entries, machine, SPACE.get_config(), {"repeats": 3, "layers": 3})


def test_fake_table_round_trip_and_format(tmp_path):
    table = fake_table()
    assert LatencyTable.load(table.to_json(tmp_path / "t.json")) == table
    text = table.format()
    assert X86_CAVEAT in text and "no compute" in text and "0.2500" in text


def _doc(**changes) -> dict:
    doc = fake_table().to_dict()
    doc.update(changes)
    return doc


def _entry(**changes) -> dict:
    return _doc(entries=[{**fake_table().to_dict()["entries"][1], **changes}])


FOREIGN = {
    "empty": b"",
    "not_json": b"op,ms\nbin_conv_3x3,0.1\n",
    "binary": b"\xff\xfe\x00\x81garbage",
    "list": b"[1, 2, 3]",
    "genotype": bn.random_genotype(SPACE, rng=0).to_json().encode(),
    "export_report": json.dumps({"layers": [], "all_converted": True}).encode(),
    "version_2": json.dumps(_doc(version=2)).encode(),
    "no_entries": json.dumps({k: v for k, v in _doc().items() if k != "entries"}).encode(),
    "extra_key": json.dumps(_doc(extra=1)).encode(),
    "machine_not_object": json.dumps(_doc(machine=[])).encode(),
    "entries_not_list": json.dumps(_doc(entries={})).encode(),
    "nan": json.dumps(_entry(median_ms=float("nan"))).encode(),
    "huge": json.dumps(_entry(median_ms=10**400)).encode(),
    "big_float": json.dumps(_doc()).replace("0.25", "1e999").encode(),
    "negative": json.dumps(_entry(min_ms=-1.0)).encode(),
    "text_ms": json.dumps(_entry(median_ms="fast")).encode(),
    "min_above_median": json.dumps(_entry(min_ms=1.0)).encode(),
    "bad_shape": json.dumps(_entry(input_shape=[8, 8])).encode(),
    "bool_stride": json.dumps(_entry(strides=True)).encode(),
    "no_op": json.dumps(_entry(op="")).encode(),
    "unknown_entry_key": json.dumps(_entry(speed=1)).encode(),
    "duplicate": json.dumps(_doc(entries=[_entry()["entries"][0]] * 2)).encode(),
    "untimed_nonzero": json.dumps(_entry(timed=False)).encode(),
    "deep": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("name", FOREIGN)
def test_malformed_or_foreign_files_raise_one_clear_value_error(name, tmp_path):
    path = tmp_path / f"{name}.json"
    path.write_bytes(FOREIGN[name])
    with pytest.raises(LatencyTableError, match=re.escape(repr(str(path)))) as info:
        LatencyTable.load(path)
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


def _paths(doc, prefix=()):
    yield prefix
    children = doc.items() if isinstance(doc, dict) else enumerate(doc) \
        if isinstance(doc, list) else ()
    for key, value in children:
        yield from _paths(value, (*prefix, key))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=6)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_table_loads_consistently_or_raises_the_value_error(tmp_path, data):
    original = fake_table()
    doc = original.to_dict()
    action = data.draw(st.sampled_from(["replace", "delete", "truncate", "byte"]))
    if action in ("replace", "delete"):
        path = data.draw(st.sampled_from(list(_paths(doc))))
        if not path:
            doc = data.draw(JSON_VALUES)
        else:
            parent = doc
            for key in path[:-1]:
                parent = parent[key]
            if action == "delete":
                del parent[path[-1]]
            else:
                parent[path[-1]] = data.draw(JSON_VALUES)
        raw = json.dumps(doc).encode()
    else:
        raw = json.dumps(doc, indent=2).encode()
        at = data.draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] if action == "truncate" else (
            raw[:at] + bytes([data.draw(st.integers(0, 255))]) + raw[at + 1:])
    file = tmp_path / "mutated.json"
    file.write_bytes(raw)
    try:
        loaded = LatencyTable.load(file)
    except LatencyTableError as error:
        assert repr(str(file)) in str(error) and "\n" not in str(error)
        return
    again = LatencyTable.load(loaded.to_json(tmp_path / "again.json"))
    assert again == loaded
    if raw == json.dumps(original.to_dict()).encode():
        assert loaded == original


# -- bnas-tf profile -------------------------------------------------------------------------

def run_main(*argv) -> int:
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as exit_info:  # argparse
        return exit_info.code


def test_profile_command_writes_the_table_and_the_x86_caveat(tmp_path, capsys):
    pytest.importorskip("larq_compute_engine")
    out = tmp_path / "table.json"
    out.write_text("an older table")  # replaced atomically, as bnas-tf export --output does
    code = run_main("profile", "--space", "lce", "--layers", 1, "--channels", 8,
                    "--image-size", 4, "--repeats", 2, "--warmup", 0, "--output", out)
    printed = capsys.readouterr().out
    assert code == 0
    table = LatencyTable.load(out)
    assert len(table.entries) == 2 * 8 and table.settings["input_shape"] == [4, 4, 3]
    assert "bin_conv_5x5" in printed and "no compute" in printed
    assert (X86_CAVEAT in printed) == is_x86(platform.machine())
    assert [p.name for p in tmp_path.iterdir()] == ["table.json"]


@pytest.mark.parametrize("args", [
    ["--space", "nope"], ["--layers", "0"], ["--channels", "-4"], ["--repeats", "0"],
    ["--threads", "two"], ["--image-size", "0"], ["--warmup", "-1"],
    ["--output", "{tmp}/missing/table.json"], ["--output", "{tmp}"],
], ids=lambda a: " ".join(a).replace("{tmp}", "TMP"))
def test_profile_bad_input_exits_2_with_one_line_and_writes_nothing(args, tmp_path, capsys):
    argv = ["profile", "--output", tmp_path / "table.json"]
    argv += [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert run_main(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err, err
    assert not list(tmp_path.iterdir())


def test_profile_without_lce_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "larq_compute_engine", None)  # import fails
    assert run_main("profile", "--output", tmp_path / "t.json") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install" in err, err
    assert not list(tmp_path.iterdir())
