"""Property-based tests (Hypothesis) of `bnas-tf` argument values, as a user types them.

A tiny valid command gets one to three of its flags replaced by values drawn
from a valid range or from the mistakes users make (0, negatives, NaN, inf,
words, fractions for integers, a second value where one is expected). Run in
this process on tiny synthetic data, every command either runs (exit 0, a
finite genotype or model) or exits with status 2 and exactly one error line,
no traceback, and leaves no file or directory behind. Bounded example counts,
derandomized, no example database; most drawn commands fail in their checks,
the few that run take seconds each.
"""

from __future__ import annotations

import bnas_tf as bn  # first: selects Keras 2 before TensorFlow is imported

# isort: split
import contextlib
import io
import json
import math
import shutil
import tempfile
from pathlib import Path

import pytest
import tensorflow as tf

from bnas_tf import cli

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SETTINGS = settings(deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ordinary mistakes; sizes never get huge valid values (a 10**22-channel network is legal)
MISTAKES = ["0", "-1", "-0.5", "nan", "inf", "-inf", "x", "", "1e400", "2.5", "1,2", "None"]
HUGE = "10000000000000000000000"

SEARCH = ["search", "--dataset", "synthetic", "--limit", "64", "--layers", "1", "--nodes", "1",
          "--channels", "4", "--batch-size", "16", "--epochs", "1", "--no-augment"]
SEARCH_FLAGS = {
    "--layers": ["1", "2"], "--nodes": ["1", "2"], "--channels": ["2", "4", "8"],
    "--batch-size": ["8", "16", "48"], "--limit": ["5", "40", "64"], "--epochs": ["1"],
    "--warmup-epochs": ["0", "1"], "--seed": ["0", "7", HUGE],
    "--lr": ["1e-3", "0.05", "1e30"], "--arch-lr": ["3e-4", "1e30"],
    "--temperature": ["0.2", "5"], "--anneal-from": ["0", "2"], "--diversity": ["0", "1"],
    "--tau": ["1", "7.7"], "--temperature-regularizer": ["0", "0.1"],
    "--arch-beta1": ["0", "0.5", "1"], "--arch-weight-decay": ["0", "1e-3"],
    "--validation-fraction": ["0.1", "0.5", "1"], "--space": ["lce", "bats", "bnas"],
    "--mixing": ["all", "partial", "gumbel"], "--partial-channels": ["1", "2", "3"],
    "--gumbel-temperature": ["10,0.1", "1,1", "0,1"], "--method": ["darts", "hmnas"],
    "--input-quantizer": ["ste_sign", "approx_sign"], "--dataset": ["synthetic", "tfds:"],
    "--recipe": ["bats", "bnas", "adambnn"],
}
SIZES = {"--layers", "--nodes", "--channels", "--epochs", "--warmup-epochs", "--limit",
         "--partial-channels", "--image-size", "--width"}

TRAIN = ["train", "--dataset", "synthetic", "--limit", "64", "--layers", "2", "--channels", "4",
         "--batch-size", "16", "--epochs", "1,0", "--no-augment"]
TRAIN_FLAGS = {
    "--layers": ["1", "2"], "--channels": ["2", "4", "8"], "--batch-size": ["8", "100"],
    "--epochs": ["1,0", "0,1", "0,0", "1", "a,b", "-1,1"], "--lr": ["1e-3", "1e30"],
    "--weight-decay": ["0", "5e-6"], "--image-size": ["1", "8", "16"],
    "--validation-fraction": ["0.2"], "--kernel-quantizer": ["ste_sign", "magnitude_aware_sign"],
    "--stem": ["cifar", "imagenet"], "--seed": ["3"], "--recipe": ["bats", "hmnas"],
    "--width": ["8"], "--limit": ["5", "40"],
}


def commands(base: list[str], flags: dict[str, list[str]], max_flags: int):
    """`base` with 1..max_flags flags set to a valid value or a mistake (3 in 5)."""

    def value(flag):
        mistakes = [m for m in MISTAKES if not (flag in SIZES and m == "1e400")]
        if flag not in SIZES:
            mistakes.append(HUGE)
        return st.one_of(st.sampled_from(flags[flag]), st.sampled_from(mistakes),
                         st.sampled_from(mistakes))

    chosen = st.lists(st.sampled_from(sorted(flags)), min_size=1, max_size=max_flags,
                      unique=True)
    return chosen.flatmap(lambda names: st.tuples(*(st.tuples(st.just(n), value(n))
                                                    for n in names))).map(
        lambda pairs: [*base, *(f"{flag}={v}" for flag, v in pairs)])


def run(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exit_info:
            code = exit_info.code
    tf.keras.backend.clear_session()  # many supernets in one process
    return code, err.getvalue()


def check(argv: list[str], command: str, written: str) -> None:
    parent = Path(tempfile.mkdtemp(prefix="bnas_cli_property_"))
    out = parent / "runs" / "OUT"
    try:
        code, err = run([*argv, "--output", str(out)])
        assert code in (0, 2), (argv, code, err[-3000:])
        assert "Traceback" not in err, (argv, err[-3000:])
        if code == 0:
            assert (out / written).exists(), argv
            if command == "search":
                probabilities = json.loads((out / "genotype.json").read_text())["probabilities"]
                assert all(math.isfinite(p) for rows in probabilities.values()
                           for row in rows for p in row)
            else:
                assert math.isfinite(json.loads((out / "metrics.json").read_text())["val_loss"])
        else:
            lines = [line for line in err.splitlines() if line.strip()]
            errors = [line for line in lines if ": error: " in line]
            assert len(errors) == 1 and lines[-1] == errors[0], (argv, err)
            assert errors[0].startswith(("bnas-tf search: error: ", "bnas-tf train: error: ",
                                         "bnas-tf: error: ")), (argv, err)
            assert list(parent.iterdir()) == [], (argv, err)  # nothing left behind
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@settings(SETTINGS, max_examples=25)
@given(commands(SEARCH, SEARCH_FLAGS, max_flags=3))
def test_random_search_arguments_run_or_fail_in_one_line_leaving_nothing(argv):
    check(argv, "search", "genotype.json")


@pytest.fixture(scope="module")
def genotype_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("genotype") / "genotype.json"
    space = bn.SearchSpace.get("lce", nodes=1)
    bn.SuperNet(space, num_classes=10, layers=1, channels=4, seed=0).genotype().save(path)
    return path


@settings(SETTINGS, max_examples=12,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_random_train_arguments_run_or_fail_in_one_line_leaving_nothing(genotype_file, data):
    argv = data.draw(commands([*TRAIN, "--genotype", str(genotype_file)], TRAIN_FLAGS, 2))
    check(argv, "train", "metrics.json")
