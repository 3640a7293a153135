"""`benchmarks/cost_breakdown.py`: the per-part split adds up to `bn.cost.genotype_cost`."""

from __future__ import annotations

import bnas_tf as bn  # first: selects Keras 2 before TensorFlow is imported

# isort: split
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import cost_breakdown  # noqa: E402


@pytest.mark.parametrize("seed", [0, 1])
def test_the_parts_add_up_to_the_genotype_cost_and_name_the_cell_skips(seed, tmp_path, capsys):
    genotype = bn.random_genotype(bn.SearchSpace.get("lce"), rng=seed)
    total = bn.cost.genotype_cost(genotype, layers=3, channels=8, input_shape=(32, 32, 3),
                                  num_classes=10, binary_weights=True)
    model = bn.build_network(genotype, num_classes=10, layers=3, channels=8,
                             input_shape=(32, 32, 3), binary_weights=True, masked_groups=False)
    macs = cost_breakdown.ops_by_part(model)
    assert sum(macs["binary"].values()) == total.binary_macs
    assert sum(macs["float"].values()) == total.float_macs
    assert macs["float"]["stem"] > 0 and macs["float"]["cell skips (cell_skip)"] > 0
    assert macs["float"]["searched edges"] == 0 < macs["binary"]["searched edges"]
    path = tmp_path / "g.json"
    genotype.save(path)
    assert cost_breakdown.main([str(path), "--layers", "3", "--channels", "8"]) == 0
    out = capsys.readouterr().out
    assert f"{total.ops / 1e6:.2f} M OPs" in out and "approximate" not in out
