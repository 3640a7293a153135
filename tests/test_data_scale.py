"""Memory of a streamed image folder does not grow with the number of images (issue 15).

A reduced run of `benchmarks/data_throughput.py scale`: the offline CIFAR-10
copy unpacked as a folder of 60,000 JPEGs and as one of 6,000, each resized
on the fly to 64x64, feeds a small derived network (3 cells, 8 channels) in
its own subprocess; the large run's peak RSS must stay within 1.2x of the
small run's. The test trains 20 steps per run to stay near a minute on two
cores; the full check (200 steps) is the benchmark script itself:
`python benchmarks/data_throughput.py scale`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = ROOT.parent / "shared"  # as in conftest.py
SCRIPT = Path("datasets") / "cifar10" / "make_cifar10.py"


@pytest.fixture(scope="module")
def shared_dir() -> Path:
    """conftest's shared folder, or $BNAS_SHARED_DIR (a git worktree sits elsewhere)."""
    for candidate in (SHARED_DIR, Path(os.environ.get("BNAS_SHARED_DIR", SHARED_DIR))):
        if (candidate / SCRIPT).is_file():
            return candidate
    pytest.skip(f"shared datasets not found at {SHARED_DIR}/datasets or $BNAS_SHARED_DIR")


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_folder(shared_dir):
    with tempfile.TemporaryDirectory(prefix="bnas_scale_") as tmp:
        large, small = Path(tmp) / "large", Path(tmp) / "small"
        for folder, limit in ((large, []), (small, ["--limit", "5000"])):
            subprocess.run([sys.executable, str(shared_dir / SCRIPT), "folder", str(folder),
                            *limit], check=True, capture_output=True)
        done = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "data_throughput.py"), "scale",
             "--large", str(large), "--small", str(small), "--steps", "20",
             "--batch-size", "16", "--image-size", "64", "--layers", "3", "--channels", "8"],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 3, done.stderr[-3000:]
    runs = {line["run"]: line for line in lines[:2]}
    assert runs["large"]["images_in_folder"] == 60000 and runs["small"]["images_in_folder"] == 6000
    assert runs["large"]["input_shape"] == [64, 64, 3] and runs["large"]["steps"] == 20
    summary = lines[2]
    assert summary["passed"] and summary["peak_rss_ratio_large_over_small"] <= 1.2, lines
    assert done.returncode == 0
