"""Tests of bnas_tf.export: LCE conversion, per-layer report, verification, CLI.

Tiny Larq models (8x8 inputs) keep each conversion around a second; the networks
`bnas_tf.build_network` derives from genotypes (32x32 inputs, 1-3 cells) take 2-9 s.
Batch-norm statistics are randomized: with the default ones, binary conv outputs (integers) sit
exactly on the next binarizer's threshold, and float rounding may flip such ties.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bnas_tf  # noqa: F401  (selects Keras 2 before TensorFlow)

lce = pytest.importorskip("larq_compute_engine")

import larq as lq  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import bnas_tf as bn  # noqa: E402
from bnas_tf import export  # noqa: E402
from bnas_tf.errors import ExportError  # noqa: E402
from bnas_tf.export.walk import walk  # noqa: E402
from bnas_tf.training import binarize_weights  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "export" / "to_tflite.py"


def qconv(name, filters=32, **kwargs):
    options = dict(
        kernel_size=3,
        padding="same",
        pad_values=1.0,
        input_quantizer="ste_sign",
        kernel_quantizer="ste_sign",
        kernel_constraint="weight_clip",
        use_bias=False,
    )
    options.update(kwargs)
    return lq.layers.QuantConv2D(filters, name=name, **options)


def randomize_bn(model, seed=0):
    """Trained-like statistics for every batch norm, also those nested in custom layers."""
    rng = np.random.default_rng(seed)
    for _, layer in walk(model):
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            g, b, mean, var = (w.shape for w in layer.get_weights())
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, g),
                    rng.normal(0.0, 0.5, b),
                    rng.normal(0.0, 2.0, mean),
                    rng.uniform(1.0, 4.0, var),
                ]
            )
    return model


def one_conv(conv, channels, name):
    """input -> conv -> BN -> global pool -> float Dense(10): a tiny classifier."""
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((8, 8, channels))
    x = tf.keras.layers.BatchNormalization()(conv(inp))
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    x = tf.keras.layers.Dense(10)(x)
    return randomize_bn(tf.keras.Model(inp, x, name=name))


def inputs(model, n=16, seed=1):
    shape = (n, *model.inputs[0].shape[1:])
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def dense():
    model = one_conv(qconv("bin"), 32, "dense")
    return model, export.convert(model)


@pytest.fixture(scope="module")
def grouped3():
    model = one_conv(qconv("g3", 36, groups=12), 36, "grouped3")
    return model, export.convert(model)


@pytest.fixture(scope="module")
def grouped32():
    model = one_conv(qconv("g32", 64, groups=2), 64, "grouped32")
    return model, export.convert(model)


@pytest.fixture(scope="module")
def mixed():
    """Binary conv, max pool feeding a binary conv, real-weight conv, binary dense."""
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((8, 8, 32))
    x = tf.keras.layers.BatchNormalization()(qconv("first", 32)(inp))
    x = tf.keras.layers.MaxPool2D(2, name="pool")(x)
    x = tf.keras.layers.BatchNormalization()(qconv("after_pool", 32)(x))
    x = tf.keras.layers.BatchNormalization()(
        qconv("real_weights", 32, kernel_quantizer=None, kernel_constraint=None)(x)
    )
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    x = lq.layers.QuantDense(
        10, input_quantizer="ste_sign", kernel_quantizer="ste_sign", name="classifier"
    )(x)
    model = randomize_bn(tf.keras.Model(inp, x, name="mixed"))
    return model, export.convert(model)


# --------------------------------------------------------------------------- conversion rules


def test_dense_binary_conv_becomes_lce_bconv2d(dense):
    model, fb = dense
    report = export.conversion_report(model, fb)
    assert report.op_counts.get("LceBconv2d") == 1
    assert "CONV_2D" not in report.op_counts
    layer = report.layer("bin")
    assert (layer.converted, layer.op, layer.reason, layer.warnings) == (
        True,
        "LceBconv2d",
        None,
        [],
    )
    assert report.all_converted and len(report.layers) == 1
    # 32x32x3x3 binary weights pack 32 to a word; the float model stores them as float32.
    assert report.float_size_bytes > 2 * report.size_bytes
    assert report.size_bytes == len(fb)


def test_grouped_conv_with_3_channels_per_group_stays_float(grouped3):
    model, fb = grouped3
    report = export.conversion_report(model, fb, compare_float=False)
    assert "LceBconv2d" not in report.op_counts
    assert report.op_counts["CONV_2D"] == 1
    layer = report.layer("g3")
    assert not layer.converted and layer.op == "CONV_2D"
    assert "groups=12 with 3 input channels per group" in layer.reason
    assert "multiple of 32" in layer.reason
    assert "group_channels=32" in layer.fix
    assert report.float_layers == [layer]
    table = report.format_table()
    assert "g3" in table and "FLOAT" in table and "groups=12" in table


def test_grouped_conv_with_32_channels_per_group_converts(grouped32):
    model, fb = grouped32
    report = export.conversion_report(model, fb, compare_float=False)
    layer = report.layer("g32")
    assert layer.converted and report.op_counts["LceBconv2d"] == 1
    assert layer.details["groups"] == 2 and layer.details["channels_per_group"] == 32
    assert "use_indirect_bgemm=True" in layer.warnings[0]
    # The runtime rule behind that warning: LCE's default kernel refuses grouped convs.
    with pytest.raises(ExportError, match="could not run"):
        export.verify(model, fb, inputs(model, 2), interpreter_kwargs={"use_indirect_bgemm": False})
    result = export.verify(model, fb, inputs(model))
    assert result.passed and result.top1_agreement == 1.0


@pytest.mark.parametrize("target", ["arm", "xcore"])
def test_pad_values_zero_is_reported(target):
    model = one_conv(qconv("pad0", pad_values=0.0), 32, f"pad0_{target}")
    fb = export.convert(model, target=target)
    report = export.conversion_report(model, fb, target=target, compare_float=False)
    layer = report.layer("pad0")
    if target == "arm":  # converts, with LCE's slower zero-padding correction
        assert layer.converted and report.op_counts["LceBconv2d"] == 1
        assert "pad_values=0 with padding='same'" in layer.warnings[0]
        assert "set pad_values=1.0" in layer.warnings[0]
    else:
        assert not layer.converted and "LceBconv2d" not in report.op_counts
        assert "pad_values=0 with padding='same'" in layer.reason
        assert layer.fix == "set pad_values=1.0"


def test_mixed_model_attributes_every_binary_layer(mixed):
    model, fb = mixed
    report = export.conversion_report(model, fb, compare_float=False)
    by_name = {r.name: r for r in report.layers}
    assert sorted(by_name) == ["after_pool", "classifier", "first", "pool", "real_weights"]
    assert by_name["first"].converted and by_name["after_pool"].converted
    assert by_name["pool"].converted and by_name["pool"].op == "LceBMaxPool2d"
    assert report.op_counts["LceBconv2d"] == 2 and report.op_counts["LceBMaxPool2d"] == 1
    real = by_name["real_weights"]
    assert not real.converted
    assert real.reason == "kernel_quantizer is None: the layer has real weights"
    assert "stage 2" in real.fix
    dense = by_name["classifier"]
    assert not dense.converted and dense.op == "FULLY_CONNECTED"
    assert "fully-connected" in dense.reason
    assert report.unattributed_ops == []


def test_flatbuffer_overrides_wrong_prediction(mixed, grouped32):
    model, fb = mixed
    # Report as if converted for xcore (no LceBMaxPool2d there): the flatbuffer wins.
    report = export.conversion_report(model, fb, target="xcore", compare_float=False)
    pool = report.layer("pool")
    assert pool.converted and "rules predicted float" in pool.warnings[0]
    assert not pool.required  # strict mode does not require pools to fuse
    # A flatbuffer of another model: the layers are not found, its LceBconv2d is left over.
    other = export.conversion_report(model, grouped32[1], compare_float=False)
    first = other.layer("first")
    assert not first.converted
    assert "no LceBconv2d of this layer's shape" in first.reason
    assert other.unattributed_ops == ["LceBconv2d(64, (3, 3), 64, 2, (1, 1), (1, 1), 'same', 1)"]


@pytest.mark.parametrize("groups", [1, 2])
def test_identical_dilated_binary_convs_on_one_input_both_convert(groups):
    """Keras' SpaceToBatchND would be shared by both convs and leave them float."""
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((8, 8, 64))
    convs = [qconv(f"dil{i}", 64, groups=groups, dilation_rate=2, kernel_size=5)
             for i in range(2)]
    x = tf.keras.layers.Add()([conv(inp) for conv in convs])
    x = tf.keras.layers.Dense(10)(tf.keras.layers.GlobalAveragePooling2D()(
        tf.keras.layers.BatchNormalization()(x)))
    model = randomize_bn(tf.keras.Model(inp, x, name="twin_dilated"))
    fb = export.convert(model, strict=True)
    counts = export.op_counts(fb)
    assert counts["LceBconv2d"] == 2 and "SPACE_TO_BATCH_ND" not in counts
    assert all("convolution_op" not in vars(conv) for conv in convs)  # restored afterwards
    result = export.verify(model, fb, inputs(model, 32), y=np.zeros(32, int))
    assert result.top1_agreement == 1.0 and result.max_abs_diff < 1e-4


@settings(max_examples=6, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(size=st.integers(5, 12), kernel=st.sampled_from([3, 5]), dilation=st.integers(2, 3),
       groups=st.sampled_from([1, 2]), twins=st.integers(1, 2))
def test_dilated_binary_convs_convert_exactly(size, kernel, dilation, groups, twins):
    """Any dilated binary conv (alone or with a twin on its input) is one exact LceBconv2d."""
    inp = tf.keras.Input((size, size, 64))
    convs = [qconv(f"d{i}", 32, groups=groups, dilation_rate=dilation, kernel_size=kernel)
             for i in range(twins)]
    outs = [conv(inp) for conv in convs]
    model = tf.keras.Model(inp, outs[0] if twins == 1 else tf.keras.layers.Add()(outs))
    fb = export.convert(model)
    assert export.op_counts(fb).get("LceBconv2d") == twins
    assert export.verify(model, fb, inputs(model, 2)).max_abs_diff == 0.0  # integer outputs


def test_unsupported_input_quantizer_is_named():
    model = one_conv(qconv("heavi", input_quantizer="ste_heaviside"), 32, "heaviside")
    fb = export.convert(model)
    layer = export.conversion_report(model, fb, compare_float=False).layer("heavi")
    assert not layer.converted and "LceBconv2d" not in export.op_counts(fb)
    assert layer.reason.startswith("input_quantizer=ste_heaviside")
    assert "ste_sign" in layer.fix


# --------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("fixture", ["dense", "mixed"])
def test_tflite_outputs_match_keras(fixture, request):
    model, fb = request.getfixturevalue(fixture)
    x = inputs(model, 32)
    result = export.verify(model, fb, x, y=np.zeros(len(x), int))
    assert result.num_samples == 32
    assert result.top1_agreement == 1.0 and result.passed
    assert result.max_abs_diff < 1e-4
    assert result.keras_accuracy == result.tflite_accuracy
    assert result.disagreement_gap is None and "flips" not in result.format()


def different_model(model):
    """A model of `model`'s shapes with other weights, hence other outputs."""
    other = one_conv(qconv("bin"), 32, "reseeded")
    randomize_bn(other, seed=7)
    other.set_weights([w + 0.3 for w in model.get_weights()])
    return other


def test_verify_fails_on_a_different_model(dense, grouped3):
    model, _ = dense
    result = export.verify(model, export.convert(different_model(model)), inputs(model, 32),
                           top1_threshold=0.99)
    assert not result.passed and result.top1_agreement < 0.99
    assert "FAILED" in result.format()
    flips = round((1 - result.top1_agreement) * 32)
    assert f"{flips} top-1 flips, median Keras top-2 gap" in result.format()
    keras = model.predict(inputs(model, 32), verbose=0)
    top2 = np.sort(keras, axis=1)[:, -2:]
    assert result.median_gap == pytest.approx(float(np.median(top2[:, 1] - top2[:, 0])))
    assert result.disagreement_gap > 0


def test_float_equivalent_removes_binarization(dense):
    model, _ = dense
    flt = export.float_equivalent(model)
    conv = flt.get_layer("bin")
    assert conv.input_quantizer is None and conv.kernel_quantizer is None
    assert model.get_layer("bin").input_quantizer is not None  # original untouched
    x = inputs(model, 4)
    latent = model.get_layer("bin").kernel.latent_variable.numpy()
    sub = tf.keras.Model(flt.inputs, conv.output)
    np.testing.assert_allclose(sub(x), tf.nn.conv2d(x, latent, 1, "SAME"), atol=1e-5)
    ops = export.op_counts(export.convert_float(model))
    assert ops["CONV_2D"] == 1 and not any(k.startswith("Lce") for k in ops)


def test_benchmark_reports_every_kernel(grouped32):
    model, fb = grouped32
    result = export.benchmark(
        fb, export.convert_float(model), inputs(model, 1), threads=(1,), repeats=3, warmup=1
    )
    (run,) = result["runs"]
    assert run["lce"]["bgemm"] == {"error": "rejects grouped binary convolutions"}
    assert run["lce_best"] in (
        "indirect_bgemm",
        "indirect_bgemm+xnnpack",
        "reference",
        "reference+xnnpack",
    )
    assert run["lce_ms"] > 0 and run["float_ms"] > 0 and run["float_xnnpack"] is True
    assert result["size_ratio"] > 1
    text = export.format_benchmark(result)
    assert "1 thread(s)" in text
    # x86 latencies carry the caveat beside them; ARM ones do not
    assert result["machine"] == platform.machine()
    x86 = {**result, "machine": "x86_64"}
    lines = export.format_benchmark(x86).splitlines()
    assert lines[1] == export.timing.X86_CAVEAT
    assert all(line.endswith("see the caveat]") for line in lines if "thread(s)" in line)
    arm = export.format_benchmark({**result, "machine": "aarch64"})
    assert "x86" not in arm and "1 thread(s)" in arm


# --------------------------------------------------------------------------- errors and files


def test_model_without_binary_layers_is_refused():
    inp = tf.keras.Input((8, 8, 3))
    model = tf.keras.Model(inp, tf.keras.layers.Conv2D(4, 3)(inp))
    with pytest.raises(ExportError, match="no binary layers.*allow_float=True"):
        export.convert(model)
    ops = export.op_counts(export.convert(model, allow_float=True))
    assert ops == {"CONV_2D": 1}


def test_unknown_target_lists_targets(dense):
    with pytest.raises(ExportError, match="Unknown target 'riscv'.*'arm', 'xcore'"):
        export.convert(dense[0], target="riscv")


@pytest.mark.parametrize("where", ["missing_dir", "under_a_file", "a_directory"])
def test_unwritable_output_path(dense, tmp_path, where):
    (tmp_path / "file.txt").write_text("x")
    path = {
        "missing_dir": tmp_path / "no" / "model.tflite",
        "under_a_file": tmp_path / "file.txt" / "model.tflite",
        "a_directory": tmp_path,
    }[where]
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ExportError, match="Cannot write"):
        export.convert(dense[0], path)
    assert sorted(os.listdir(tmp_path)) == before


def test_failed_write_leaves_no_file(dense, tmp_path, monkeypatch):
    model, fb = dense
    report = export.conversion_report(model, fb, compare_float=False)

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(ExportError, match="No space left"):
        report.to_json(tmp_path / "report.json")
    assert os.listdir(tmp_path) == []


def test_save_tflite_writes_the_flatbuffer(dense, tmp_path):
    model, _ = dense
    path = export.save_tflite(model, tmp_path / "m.tflite")
    data = path.read_bytes()
    assert export.op_counts(data)["LceBconv2d"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["m.tflite"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_strict_refuses_grouped3(grouped3, tmp_path):
    model, _ = grouped3
    out = tmp_path / "m.tflite"
    with pytest.raises(
        ExportError, match=r"(?s)Strict export: 1 of 1 binary layers.*g3.*groups=12"
    ):
        export.convert(model, out, strict=True)
    assert not out.exists()


def test_report_json(mixed, tmp_path):
    model, fb = mixed
    path = export.conversion_report(model, fb, compare_float=False).to_json(tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert data["summary"] == {
        "binary_layers": 5,
        "converted": 3,
        "float": 2,
        "size_ratio": None,
    }
    assert data["op_counts"]["LceBconv2d"] == 2
    assert {d["name"]: d["converted"] for d in data["layers"]}["real_weights"] is False


def test_strict_names_float_layers_but_not_pools(mixed):
    model, fb = mixed
    report = export.conversion_report(model, fb, target="xcore", compare_float=False)
    report.layer("pool").converted = False  # as an xcore flatbuffer would have it
    with pytest.raises(ExportError, match="2 of 4 binary layers") as info:
        report.check_strict()
    assert "real_weights (QuantConv2D): kernel_quantizer is None" in str(info.value)
    assert "classifier (QuantDense)" in str(info.value)
    assert "pool" not in str(info.value)


@tf.keras.utils.register_keras_serializable(package="test_export")
class ConvBlock(tf.keras.layers.Layer):
    """A custom layer holding a Larq conv, as bnas_tf's cells do."""

    def __init__(self, filters, groups=1, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.groups = filters, groups
        self.conv = qconv("conv", filters, groups=groups)
        self.bn = tf.keras.layers.BatchNormalization()

    def call(self, inputs):
        return self.bn(self.conv(inputs))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "groups": self.groups}


def test_nested_layers_are_reported_and_stripped():
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((8, 8, 64))
    x = ConvBlock(64, name="block_a")(inp)
    x = ConvBlock(64, groups=16, name="block_b")(x)
    model = tf.keras.Model(inp, x, name="nested")
    fb = export.convert(model)
    report = export.conversion_report(model, fb)
    assert [r.name for r in report.layers] == ["block_a/conv", "block_b/conv"]
    assert report.layer("block_a/conv").converted
    assert "groups=16 with 4 input channels" in report.layer("block_b/conv").reason
    flt = export.float_equivalent(model)
    nested = flt.get_layer("block_a").conv
    assert nested.input_quantizer is None and nested.kernel.quantizer is None
    assert report.float_size_bytes > report.size_bytes


# --------------------------------------------------------------------------- command line


def test_cli_rejects_a_path_that_is_not_a_model(tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("not a model")
    out = tmp_path / "out.tflite"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(junk), "--output", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Could not load a Keras model from" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def _script():
    spec = importlib.util.spec_from_file_location("to_tflite", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_strict_refuses_then_verify_writes(grouped3, tmp_path, capsys):
    model, _ = grouped3
    saved = tmp_path / "g3.keras"
    model.save(saved)
    out, report = tmp_path / "g3.tflite", tmp_path / "report.json"
    script = _script()
    args = [str(saved), "--output", str(out), "--report", str(report)]
    assert script.main([*args, "--strict"]) == 1
    assert not out.exists()
    assert "Strict export" in capsys.readouterr().err

    x = inputs(model, 20)
    labels = model.predict(x, verbose=0).argmax(1)

    def load_data(name, data_dir, n):
        assert (name, data_dir, n) == ("synthetic", None, 20)
        return x, labels

    argv = [*args, "--verify", "20", "--dataset", "synthetic"]
    assert script.main(argv, load_data=load_data) == 0
    assert export.op_counts(out.read_bytes())["CONV_2D"] == 1
    data = json.loads(report.read_text())
    assert data["verification"]["top1_agreement"] == 1.0
    assert data["verification"]["tflite_accuracy"] == 1.0
    assert "g3" in capsys.readouterr().out


def test_cli_refuses_failed_verification(dense, tmp_path, capsys, monkeypatch):
    """The flatbuffer verified is another model's (as a broken converter would give): the
    export exits with 1 and writes nothing."""
    from bnas_tf.export import pipeline

    model, _ = dense
    saved = tmp_path / "m.keras"
    model.save(saved)
    out = tmp_path / "m.tflite"
    x = inputs(model, 32)
    wrong = export.convert(different_model(model))
    real_verify = pipeline.verify
    monkeypatch.setattr(pipeline, "verify", lambda m, fb, *a, **kw: real_verify(m, wrong, *a, **kw))

    def load_data(name, data_dir, n):
        return x[:n], np.zeros(n, int)

    argv = [str(saved), "--output", str(out), "--verify", "32"]
    assert _script().main(argv, load_data=load_data) == 1
    assert "Verification failed" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("value, hint", [("99", "(0.99 for 99 %?)"), ("-0.1", ""),
                                         ("1.01", "(0.0101 for 1.01 %?)"), ("high", "")])
def test_cli_top1_threshold_outside_zero_to_one_is_a_usage_error(tmp_path, capsys, value,
                                                                 hint):
    out = tmp_path / "m.tflite"
    with pytest.raises(SystemExit) as exit_info:
        _script().main(["m.keras", "--output", str(out), "--verify", "4",
                        "--top1-threshold", value])
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.endswith(f"argument --top1-threshold: expected a share in [0, 1], got "
                         f"{value!r}" + (f" {hint}" if hint else "")), line
    assert not out.exists()


# --------------------------------------------------------------------------- derived networks


def edge(op_name, source):
    return bn.Edge(source, ((op_name, 1.0),))


# Every op kind of the `lce` space but `none`: in the reduction cell, edges from the cell
# inputs run at stride 2, so the dilated convs there are undilated convs on one phase of
# their padded input (PhaseSubsample).
FULL_NORMAL = bn.Cell(
    nodes=(
        (edge("bin_conv_3x3", 0), edge("skip_connect", 1)),
        (edge("bin_dil_conv_3x3", 2), edge("max_pool_3x3", 1)),
    ),
    concat=(2, 3),
)
FULL_REDUCE = bn.Cell(
    nodes=(
        (edge("bin_dil_conv_3x3", 0), edge("bin_conv_5x5", 1)),
        (edge("bin_dil_conv_5x5", 1), edge("avg_pool_3x3", 2)),
    ),
    concat=(2, 3),
)
SMALL_CELL = bn.Cell(nodes=((edge("bin_conv_3x3", 0), edge("bin_dil_conv_3x3", 1)),), concat=(2,))


def network(space, normal, reduce, *, nodes, layers, channels, binary_weights=True):
    """A randomly initialized network of the genotype, with trained-like BN statistics."""
    config = bn.SearchSpace.get(space, nodes=nodes).get_config()
    genotype = bn.Genotype(normal=normal, reduce=reduce, space=config)
    tf.keras.utils.set_random_seed(0)
    model = bn.build_network(
        genotype, num_classes=10, layers=layers, channels=channels, binary_weights=binary_weights
    )
    return randomize_bn(model)


def binary_convs(model):
    return [
        layer.name
        for layer in model.layers
        if isinstance(layer, lq.layers.QuantConv2D) and layer.input_quantizer is not None
    ]


@pytest.fixture(scope="module")
def lce_net():
    """Stage-2 `lce` network: 3 cells (32, 64, 128 channels), binary weights."""
    model = network("lce", FULL_NORMAL, FULL_REDUCE, nodes=2, layers=3, channels=32)
    fb = export.convert(model)
    return model, fb, export.conversion_report(model, fb)


def test_lce_network_converts_every_binary_conv(lce_net):
    model, fb, report = lce_net
    convs = binary_convs(model)
    # 8 op convs, plus the binary cell-input convs of the `lce` space: 1x1 pre0/pre1 in
    # every cell, and in cell 2 (after a reduction) a factorized reduce of two 1x1 convs.
    assert len(convs) == 8 + 7
    assert {c for c in convs if "_pre" in c} == {
        "cell0_pre0_conv", "cell0_pre1_conv", "cell1_pre0_conv", "cell1_pre1_conv",
        "cell2_pre0_conv_a", "cell2_pre0_conv_b", "cell2_pre1_conv"}
    assert sorted(r.name for r in report.layers) == sorted(convs)
    assert report.all_converted and {r.op for r in report.layers} == {"LceBconv2d"}
    report.check_strict()  # what convert(..., strict=True) runs: passes
    assert report.op_counts["LceBconv2d"] == 15 and report.unattributed_ops == []
    # 64 and 128 channels form 2 and 4 groups of 32: LCE's grouped kernel runs them.
    assert {r.details["groups"] for r in report.layers} == {1, 2, 4}
    # Binary kernels pack 32 weights to a word; the skips of the reduction cells repeat
    # channels, so only the stem, cell 0's skip projection and the classifier hold floats.
    assert report.size_ratio >= 10
    result = export.verify(model, fb, inputs(model, 16))
    assert result.passed and result.top1_agreement == 1.0


@pytest.mark.parametrize("size", [16, 15])
def test_phase_subsampled_dilated_binary_conv_matches_lce_exactly(size):
    """Stride 2, dilation 2 as PhaseSubsample + valid binary conv: LCE computes the
    same integers as Keras (no sign-boundary cascade in a single layer)."""
    from bnas_tf.export._runtime import lce_interpreter

    op = bn.ops.BinaryConvBN(32, 3, strides=2, dilation_rate=2, kernel_quantizer="ste_sign")
    inp = tf.keras.Input((size, size, 32))
    model = tf.keras.Model(inp, op.conv(op.phase(inp)))
    x = np.random.default_rng(0).normal(size=(3, size, size, 32)).astype("float32")
    fb = export.convert(model)
    report = export.conversion_report(model, fb, compare_float=False)
    assert report.op_counts.get("LceBconv2d") == 1
    interpreter = lce_interpreter(fb, use_indirect_bgemm=True)
    lce = np.concatenate([interpreter.predict(x[i:i + 1]) for i in range(3)])
    np.testing.assert_allclose(lce, model.predict(x, verbose=0), atol=1e-4)
    assert lce.shape == (3, (size + 1) // 2, (size + 1) // 2, 32)


def test_lce_network_strided_dilated_convs_convert(lce_net):
    model, _, report = lce_net
    phases = [layer for layer in model.layers if type(layer).__name__ == "PhaseSubsample"]
    assert len(phases) == 4  # 2 reduction cells x (dil 3x3 from s0, dil 5x5 from s1)
    for layer in phases:
        conv = report.layer(layer.name.removesuffix("_phase") + "_conv")
        assert conv.converted and conv.op == "LceBconv2d"
        # stride 2, dilation 2 runs as an undilated valid conv on one phase of the input
        assert conv.details["strides"] == [1, 1] and conv.details["dilation_rate"] == [1, 1]
    assert report.op_counts["STRIDED_SLICE"] >= 4  # the phase selection stays a float slice


def test_bats_network_keeps_grouped_convs_float():
    """36 channels in groups of 3 (BATS): no binary conv converts, and the report says why."""
    model = network("bats", SMALL_CELL, SMALL_CELL, nodes=1, layers=3, channels=36)
    report = export.conversion_report(model, export.convert(model), compare_float=False)
    assert "LceBconv2d" not in report.op_counts
    assert sorted(r.name for r in report.float_layers) == sorted(binary_convs(model))
    first = [r for r in report.layers if r.name.startswith("cell0_")]
    assert len(first) == 2
    for layer in report.float_layers:
        assert layer.op == "CONV_2D"
        assert "3 input channels per group: LCE needs a multiple of 32" in layer.reason
        assert layer.fix == "use the `lce` search space or group_channels=32"
    assert all("groups=12 with 3 input channels" in r.reason for r in first)
    # What convert(..., strict=True) and `to_tflite.py --strict` run on this flatbuffer:
    with pytest.raises(ExportError, match=r"(?s)Strict export: 6 of 6.*cell0_n2_e0.*groups=12"):
        report.check_strict()


def test_stage1_network_reports_real_weights_then_stage2_exports(tmp_path, capsys):
    """Stage 1 stays float with the fix "train stage 2"; its stage-2 copy, saved as a
    .keras file (as `bnas-tf train` saves TRAIN/model.keras), exports strictly through the
    script."""
    stage1 = network(
        "lce", SMALL_CELL, SMALL_CELL, nodes=1, layers=1, channels=32, binary_weights=False
    )
    report = export.conversion_report(stage1, export.convert(stage1), compare_float=False)
    assert len(report.layers) == 4 and not report.converted_layers  # 2 ops + 2 cell inputs
    for layer in report.layers:
        assert layer.reason == "kernel_quantizer is None: the layer has real weights"
        assert layer.fix == "train stage 2 (binary weights) before export"

    stage2 = binarize_weights(stage1)
    stage2.save(tmp_path / "model.keras")
    out, report_path = tmp_path / "model.tflite", tmp_path / "report.json"
    x = inputs(stage2, 16)

    def load_data(name, data_dir, n):
        return x, stage2.predict(x, verbose=0).argmax(1)

    argv = [str(tmp_path / "model.keras"), "--output", str(out), "--report",
            str(report_path)]
    assert _script().main([*argv, "--strict", "--verify", "16"], load_data=load_data) == 0
    assert export.op_counts(out.read_bytes())["LceBconv2d"] == 4
    data = json.loads(report_path.read_text())
    assert data["summary"]["converted"] == data["summary"]["binary_layers"] == 4
    assert data["verification"]["top1_agreement"] == 1.0
    assert "Wrote" in capsys.readouterr().out


def test_masked_grouped_convs_export_as_real_grouped_convs():
    """build_network trains grouped convs as masked dense convs; export swaps them back."""
    model = network("lce", SMALL_CELL, SMALL_CELL, nodes=1, layers=3, channels=64)
    masked = [layer for layer in model.layers if isinstance(layer, bn.ops.GroupMaskedQuantConv2D)]
    assert masked and {layer.mask_groups for layer in masked} == {2, 4, 8}
    assert export.has_masked_groups(model)
    native = export.native_groups(model)
    assert not export.has_masked_groups(native) and [x.name for x in native.layers] == [
        x.name for x in model.layers]
    for layer in masked:
        swapped = native.get_layer(layer.name)
        assert type(swapped) is lq.layers.QuantConv2D and swapped.groups == layer.mask_groups
        np.testing.assert_array_equal(swapped.kernel.latent_variable.numpy(),
                                      layer.grouped_kernel())
    x = inputs(model, 8)
    np.testing.assert_allclose(native.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-4)
    assert export.native_groups(native) is native  # nothing left to swap
    # parameters as deployed: the masked zeros do not count
    assert bn.count_params(model) == native.count_params() < model.count_params()
    fb = export.convert(model)
    report = export.conversion_report(model, fb)
    assert report.all_converted
    grouped = {r.name for r in report.layers if r.details["groups"] > 1}
    assert grouped == {layer.name for layer in masked}
    assert export.verify(model, fb, x).top1_agreement == 1.0


def test_magnitude_aware_sign_on_masked_groups_exports_the_trained_function():
    """XNOR-style per-channel scale on a grouped conv trained masked: the scale is mean |W|
    over the real (in-block) entries, as for the real grouped conv export swaps in, so the
    trained Keras model, its `native_groups` copy and the LCE flatbuffer agree."""
    conv = bn.ops.GroupMaskedQuantConv2D(
        64, 3, mask_groups=2, padding="same", pad_values=1.0, input_quantizer="ste_sign",
        kernel_quantizer="magnitude_aware_sign", kernel_constraint="weight_clip",
        use_bias=False, name="g32_scaled")
    model = one_conv(conv, 64, "grouped32_scaled")
    with lq.context.quantized_scope(True):
        kernel = conv.kernel.numpy() * conv._mask.numpy()
    blocks = conv.grouped_kernel()  # [3, 3, 32, 64]: each output channel's real entries
    np.testing.assert_allclose(np.abs(kernel).max(axis=(0, 1, 2)),
                               np.abs(blocks).mean(axis=(0, 1, 2)), rtol=1e-5)
    x = inputs(model, 16)
    native = export.native_groups(model)
    np.testing.assert_allclose(native.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-4)
    fb = export.convert(model)
    assert export.conversion_report(model, fb, compare_float=False).all_converted
    result = export.verify(model, fb, x)
    assert result.top1_agreement == 1.0 and result.max_abs_diff < 1e-3 * result.max_abs_output


def test_default_pipeline_converts_every_binary_conv():
    """No recipe, no flags: the space `bnas-tf search` uses and the width, cell template and
    weight quantizer of `bnas-tf train` give a network whose binary convs all become
    `LceBconv2d`."""
    from bnas_tf.search_run import SearchConfig
    from bnas_tf.train_run import TrainConfig

    search, train = SearchConfig(), TrainConfig()
    space = bn.SearchSpace.get(search.space, nodes=2)
    genotype = bn.Genotype(normal=FULL_NORMAL, reduce=FULL_REDUCE, space=space.get_config())
    tf.keras.utils.set_random_seed(0)
    stage1 = bn.build_network(genotype, num_classes=10, layers=3, channels=train.channels,
                              cell_skip=train.cell_skip)
    stage2 = randomize_bn(binarize_weights(stage1, train.kernel_quantizer
                                           or space.weight_quantizer))
    report = export.conversion_report(stage2, export.convert(stage2), compare_float=False)
    assert sorted(r.name for r in report.layers) == sorted(binary_convs(stage2))
    assert report.all_converted and report.op_counts["LceBconv2d"] == len(report.layers)
