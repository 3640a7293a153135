"""What a new user meets first (issue #25): importing bnas_tf after TensorFlow, what the
import does to the process, `bnas-tf export` and `--version`, `make demo`'s output folder,
and the declared dependencies (ranges, a constraints file, LCE only for export)."""

import argparse
import configparser
import json
import os
import re
import stat
import subprocess
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path

import larq as lq
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bnas_tf as bn
from bnas_tf import cli

ROOT = Path(__file__).resolve().parents[1]


def python(code: str, *, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter that finds this checkout's bnas_tf."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_USE_LEGACY_KERAS", "TF_CPP_MIN_LOG_LEVEL")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_main(*argv) -> int:
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as exit_info:
        return exit_info.code


# ----------------------------------------------------------------- 1. import after TensorFlow

def test_import_after_tensorflow_trains_saves_and_reloads_a_larq_model(tmp_path):
    done = python(f"""
        import tensorflow as tf          # the first line of most Keras notebooks
        import bnas_tf as bn
        import larq as lq
        import numpy as np
        assert tf.keras.layers.Layer.__module__.startswith("tf_keras"), tf.keras.layers.Layer
        from tensorflow.keras.optimizers.legacy import Adam   # how Larq imports Keras
        assert Adam.__module__.startswith("tf_keras"), Adam.__module__
        tf.keras.utils.set_random_seed(0)
        space = bn.SearchSpace.get("lce")
        model = bn.build_network(bn.random_genotype(space, rng=0), num_classes=3, layers=2,
                                 channels=8, input_shape=(8, 8, 3))
        model.compile(tf.keras.optimizers.legacy.Adam(1e-2), "sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        # A learnable task (class c brightens channel c): on pure noise a few steps of a
        # binary network need not lower the loss, and that test failed in CI.
        y = np.arange(48) % 3
        x = (np.random.default_rng(0).standard_normal((48, 8, 8, 3))
             + 2 * np.eye(3)[y][:, None, None, :]).astype("float32")
        first_loss, _ = model.evaluate(x, y, verbose=0)
        model.fit(x, y, epochs=10, batch_size=8, verbose=0)
        loss, accuracy = model.evaluate(x, y, verbose=0)
        assert loss < first_loss and accuracy >= 0.9, (first_loss, loss, accuracy)
        model.save(r"{tmp_path / 'm.keras'}")
        again = bn.load_model(r"{tmp_path / 'm.keras'}")
        print(float(np.abs(again(x).numpy() - model(x).numpy()).max()))
        net = bn.SuperNet("lce", num_classes=3, layers=2, channels=8)
        net.compile(metrics=["accuracy"])
        print(type(net.optimizer).__module__)
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    difference, optimizer_module = done.stdout.split()
    assert float(difference) == 0.0
    assert optimizer_module.startswith("tf_keras")


@pytest.mark.parametrize("first", [
    "import larq",                                   # Larq imports tensorflow.keras first
    "import tensorflow as tf\ntf.keras.layers.Dense(1)",
    "from tensorflow.keras import layers",
])
def test_import_after_keras2_use_with_the_variable_set_is_accepted(first):
    done = python("import os\nos.environ['TF_USE_LEGACY_KERAS'] = '1'\n" + first + """
import tensorflow as tf
import bnas_tf as bn
print(tf.keras.layers.Layer.__module__, type(bn.SuperNet("lce", num_classes=3, layers=2,
                                                         channels=8)).__mro__[1].__module__)
""")
    assert done.returncode == 0, done.stderr[-3000:]
    layer_module, model_module = done.stdout.split()
    assert layer_module.startswith("tf_keras") and model_module.startswith("tf_keras")


@pytest.mark.parametrize("first", [
    "import tensorflow as tf\ntf.keras.layers.Dense",
    "from tensorflow.keras import layers",
    "import tensorflow as tf\nmodel = tf.keras.Sequential()",
])
def test_import_after_keras3_use_fails_with_one_line_naming_the_fix(first):
    done = python(first + "\nimport bnas_tf\n")
    assert done.returncode == 1
    line = last_line(done.stderr)
    assert line.startswith("ImportError: bnas_tf needs Keras 2 (tf-keras), but tf.keras"), line
    assert "Restart the Python process (or Jupyter kernel) and import bnas_tf before" in line
    assert "TF_USE_LEGACY_KERAS=1" in line


def test_an_explicit_keras3_setting_is_refused_with_the_fix():
    env_code = "import os\nos.environ['TF_USE_LEGACY_KERAS'] = '0'\nimport bnas_tf\n"
    line = last_line(python(env_code).stderr)
    assert line == ("ImportError: bnas_tf needs Keras 2 (tf-keras), but TF_USE_LEGACY_KERAS='0':"
                    " unset it or set it to 1 before starting Python.")


# ---------------------------------------------------------- 4. import leaves the process alone

def test_import_selects_keras2_and_nothing_else():
    done = python("""
        import os, sys
        before = os.fstat(2).st_ino
        import bnas_tf as bn
        print("tensorflow" in sys.modules, os.environ.get("TF_USE_LEGACY_KERAS"),
              os.environ.get("TF_CPP_MIN_LOG_LEVEL"), os.fstat(2).st_ino == before)
        bn.SuperNet                    # first use loads TensorFlow, unfiltered
        from bnas_tf import _startup
        print("tensorflow" in sys.modules, os.environ.get("TF_CPP_MIN_LOG_LEVEL"),
              len(_startup.hidden_lines()), sorted(set(bn.__all__) - set(dir(bn))))
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["False 1 None True", "True None 0 []"]


def test_every_public_name_resolves():
    for name in bn.__all__:
        assert getattr(bn, name) is not None, name
    assert bn.SuperNet is __import__("bnas_tf.supernet").supernet.SuperNet
    assert bn.training.Distiller is not None  # other submodules load on first use too
    with pytest.raises(AttributeError, match="has no attribute 'not_a_name'"):
        bn.not_a_name  # noqa: B018


# ------------------------------------------------------------- 3. bnas-tf export, --version

def test_version_prints_one_line_with_the_stack(capsys):
    assert run_main("--version") == 0
    out = capsys.readouterr().out
    assert out == (f"bnas-tf {bn.__version__} (tensorflow {version('tensorflow')}, tf-keras "
                   f"{version('tf-keras')}, larq {version('larq')}, larq-compute-engine "
                   f"{version('larq-compute-engine')})\n")


def _options(parser: argparse.ArgumentParser) -> dict:
    return {a.dest: (tuple(a.option_strings), a.default, a.choices) for a in parser._actions
            if a.dest not in ("help", "verbose")}


def test_export_command_takes_the_flags_of_the_script():
    spec = __import__("importlib.util").util.spec_from_file_location(
        "to_tflite", ROOT / "export" / "to_tflite.py")
    script = __import__("importlib.util").util.module_from_spec(spec)
    spec.loader.exec_module(script)
    sub = next(a for a in cli.build_parser()._actions
               if isinstance(a, argparse._SubParsersAction)).choices["export"]
    script_parser = argparse.ArgumentParser()
    __import__("bnas_tf.export.command").export.command.add_arguments(script_parser)
    assert _options(sub) == _options(script_parser)
    args = script.parse_args(["M.keras", "--output", "o.tflite", "--verify", "5", "--strict"])
    assert (args.model_path, args.output, args.verify, args.strict) == ("M.keras", "o.tflite",
                                                                        5, True)


@pytest.fixture(scope="module")
def binary_model(tmp_path_factory):
    pytest.importorskip("larq_compute_engine")
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((8, 8, 32))
    x = lq.layers.QuantConv2D(32, 3, padding="same", pad_values=1.0, input_quantizer="ste_sign",
                              kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
                              use_bias=False)(inp)
    x = tf.keras.layers.BatchNormalization()(x)
    x = tf.keras.layers.Dense(4)(tf.keras.layers.GlobalAveragePooling2D()(x))
    model = tf.keras.Model(inp, x)
    path = tmp_path_factory.mktemp("export") / "model.keras"
    model.save(path)
    return path


def test_export_command_writes_a_verified_flatbuffer_and_report(binary_model, tmp_path, capsys):
    out, report = tmp_path / "m.tflite", tmp_path / "r.json"
    assert run_main("export", binary_model, "--output", out, "--report", report, "--strict") == 0
    assert bn.export.op_counts(out.read_bytes())["LceBconv2d"] == 1
    summary = json.loads(report.read_text())["summary"]
    assert (summary["binary_layers"], summary["converted"], summary["float"]) == (1, 1, 0)
    assert "LceBconv2d" in capsys.readouterr().out


def test_export_command_refuses_bad_input_in_one_line_writing_nothing(tmp_path, capsys):
    out = tmp_path / "m.tflite"
    assert run_main("export", tmp_path / "missing.keras", "--output", out) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: No model at ") and err.count("\n") == 1, err
    assert not out.exists() and list(tmp_path.iterdir()) == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(min_size=1, max_size=8).filter(lambda t: not t.startswith("-")))
def test_export_command_rejects_any_non_positive_or_non_integer_verify(text, capsys):
    if re.fullmatch(r"\s*\+?0*[1-9]\d*\s*", text):  # a positive integer: not bad input
        return
    assert run_main("export", "m.keras", "--output", "o.tflite", "--verify", text) == 2
    err = capsys.readouterr().err
    assert err.startswith("bnas-tf export: error: argument --verify: expected a positive "
                          "integer"), err
    assert err.count("\n") == 1


# ------------------------------------------------------------ 6. make demo's output folder

def fake_venv(root: Path) -> Path:
    """A venv whose bnas-tf and python only record their arguments (the demo's logic alone)."""
    bin_dir = root / "venv" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in ("bnas-tf", "python"):
        tool = bin_dir / name
        tool.write_text(f'#!/bin/sh\necho "{name} $*" >> "{root}/calls.log"\n')
        tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return root / "venv"


def demo(tmp_path: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VENV": str(fake_venv(tmp_path)), "OUT": str(out),
           "DATA_DIR": str(tmp_path / "data")}
    (tmp_path / "data" / "cifar-10-batches-py").mkdir(parents=True, exist_ok=True)
    return subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], capture_output=True,
                          text=True, timeout=60, env=env)


def test_demo_refuses_a_folder_that_is_not_an_earlier_demo(tmp_path):
    out = tmp_path / "experiments"
    (out / "search").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    done = demo(tmp_path, out)
    assert done.returncode == 2
    assert "is a non-empty folder that is not an earlier demo" in done.stderr
    assert "nothing was deleted" in done.stderr
    assert (out / "notes.txt").read_text() == "mine" and (out / "search").is_dir()
    assert not (tmp_path / "calls.log").exists()  # nothing ran


def test_demo_refuses_a_file(tmp_path):
    out = tmp_path / "a_file"
    out.write_text("mine")
    done = demo(tmp_path, out)
    assert done.returncode == 2 and "is a file" in done.stderr
    assert out.read_text() == "mine"


def test_demo_replaces_an_earlier_demo_and_fills_an_empty_folder(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    first = demo(tmp_path, out)  # an empty folder is fine
    assert first.returncode == 0, first.stderr
    (out / "search").mkdir()
    (out / "model.tflite").write_text("old")
    again = demo(tmp_path, out)  # an earlier demo: replaced
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in out.iterdir()) == [".bnas-tf-demo"]
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert [c.split()[:2] for c in calls] == [["bnas-tf", "search"], ["bnas-tf", "train"],
                                               ["bnas-tf", "export"]] * 2
    assert f"{out}/train/model.keras" in calls[2]


# ------------------------------------------------------------------------ 7. dependencies

def _setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config


def _requirements(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=~!;\s]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_install_requires_are_ranges_without_lce():
    config = _setup_cfg()
    required = _requirements(config["options"]["install_requires"])
    assert {_name(r) for r in required} == {"tensorflow", "tf-keras", "tensorboard", "larq",
                                           "numpy"}
    assert all("==" not in r and "<" in r for r in required), required
    export_extra = _requirements(config["options.extras_require"]["export"])
    assert [_name(r) for r in export_extra] == ["larq-compute-engine"]


def test_constraints_pin_every_declared_package_to_what_is_installed():
    pins = {}
    for line in _requirements((ROOT / "constraints.txt").read_text()):
        name, pinned = line.split("==")
        pins[_name(name)] = pinned
    config = _setup_cfg()
    declared = _requirements(config["options"]["install_requires"])
    for extra in config["options.extras_require"].values():
        declared += _requirements(extra)
    missing = {_name(r) for r in declared} - set(pins)
    assert not missing, f"constraints.txt pins no version of {sorted(missing)}"
    for name, pinned in pins.items():
        assert version(name) == pinned, f"{name}: installed {version(name)}, pinned {pinned}"
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()


def test_search_and_training_run_without_lce_and_export_says_how_to_install_it(tmp_path):
    done = python(f"""
        import sys
        sys.modules["larq_compute_engine"] = None      # as on a machine without LCE
        import numpy as np
        import tensorflow as tf
        import bnas_tf as bn
        net = bn.SuperNet("lce", num_classes=2, layers=2, channels=8, mixing="partial")
        net.compile()
        x = np.zeros((4, 8, 8, 3), "float32"); y = np.array([0, 1, 0, 1])
        net.fit(tf.data.Dataset.from_tensors(((x, y), (x, y))), epochs=1, verbose=0)
        model = bn.build_network(net.genotype(warn=False), num_classes=2, layers=2, channels=8,
                                 input_shape=(8, 8, 3))
        try:
            bn.export.convert(model)
        except bn.errors.ExportError as error:
            print(error)
        from bnas_tf import cli
        print(cli.main(["export", "nothing.keras", "--output", r"{tmp_path / 'o.tflite'}"]))
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    message, code = done.stdout.splitlines()[-2:]
    assert message.startswith("Exporting needs larq-compute-engine, which is not importable")
    assert 'pip install "bnas_tf[export]"' in message
    assert code == "2"
    assert "error: Exporting needs larq-compute-engine" in done.stderr
    assert not (tmp_path / "o.tflite").exists()


def test_load_model_in_a_fresh_process_registers_every_bnas_tf_layer(tmp_path):
    """`import bnas_tf` imports no layer module, so `bn.load_model` must register them all."""
    net = bn.HMNASSuperNet("lce", num_classes=2, layers=2, channels=8)
    x = tf.random.stateless_normal((2, 8, 8, 3), seed=(1, 2))
    net(x)
    models = {"hmnas": net.derive_model(input_shape=(8, 8, 3)),
              "quicknet": bn.baselines.get("quicknet", num_classes=2, input_shape=(8, 8, 3),
                                           width=8)}
    expected = {}
    for name, model in models.items():
        model.save(tmp_path / f"{name}.keras")
        expected[name] = model(x, training=False).numpy()
    np_path = tmp_path / "x.npy"
    np.save(np_path, x.numpy())
    done = python(f"""
        import numpy as np
        import bnas_tf as bn
        x = np.load(r"{np_path}")
        for name in ("hmnas", "quicknet"):
            model = bn.load_model(r"{tmp_path}/" + name + ".keras")
            np.save(r"{tmp_path}/" + name + "_out.npy", model(x, training=False).numpy())
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    for name, outputs in expected.items():
        assert (np.load(tmp_path / f"{name}_out.npy") == outputs).all(), name
