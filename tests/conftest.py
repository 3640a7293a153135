"""Shared pytest fixtures: offline copies of real datasets.

The project's shared folder sits beside the repository (`../shared`, as on the
development machines and in CI). Tests that need it skip with a clear reason
when it is absent.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import bnas_tf  # noqa: F401  (selects Keras 2 before any test touches tf.keras)

SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared data folder beside the repository; skips when absent."""
    if not (SHARED_DIR / "datasets" / "cifar10" / "make_cifar10.py").is_file():
        pytest.skip(
            f"shared datasets not found at {SHARED_DIR}/datasets (clone or mount the "
            "shared folder beside the repository to run real-data tests)"
        )
    return SHARED_DIR


def _make_cifar10(shared_dir: Path, layout: str, out: Path, limit: int) -> Path:
    script = shared_dir / "datasets" / "cifar10" / "make_cifar10.py"
    subprocess.run(
        [sys.executable, str(script), layout, str(out), "--limit", str(limit)],
        check=True,
        capture_output=True,
        text=True,
    )
    return out


@pytest.fixture(scope="session")
def cifar10_dir(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding `cifar-10-batches-py/` with 1000 train and 200 test images."""
    return _make_cifar10(shared_dir, "batches", tmp_path_factory.mktemp("cifar10_batches"), 1000)


@pytest.fixture(scope="session")
def cifar10_folder_dir(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image folder `train/<class>/*.jpg`, `test/<class>/*.jpg`: 500 train, 100 test."""
    return _make_cifar10(shared_dir, "folder", tmp_path_factory.mktemp("cifar10_folder"), 500)


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> Path:
    """The Fashion-MNIST IDX files of the Debian package; skips when not installed."""
    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(
            f"Fashion-MNIST not installed at {FASHION_MNIST_DIR} "
            "(apt-get install dataset-fashion-mnist)"
        )
    return FASHION_MNIST_DIR
