"""Where a derived network's OPs go: the searched ops against the fixed float parts.

For each genotype file given, builds the network (`--layers` x `--channels`,
32x32x3 inputs, 10 classes, binary weights as deployed) and prints its OPs
(`bnas_tf.cost.genotype_cost`: float MACs + binary MACs / 64) split into the
OPs, binary and float MACs per part of the network: the stem, the BNAS
inter-cell skips (`cell_skip`), the cell-input convs, the searched edges and
the classifier. MACs per layer are Larq's (`lq.models.ModelProfile`: 1-bit and
32-bit MACs), grouped by layer name; they add up to `genotype_cost`'s (the
script says so when they do not).

Usage:
    python benchmarks/cost_breakdown.py RUN_DIR/search_0/genotype.json RUN_DIR/random_0.genotype.json
"""

from __future__ import annotations

import bnas_tf as bn

# isort: split
import argparse
import re
from collections import Counter

import larq as lq

from bnas_tf import cost as bn_cost

PARTS = (("stem", r"^stem"), ("cell skips (cell_skip)", r"^cell\d+_skip"),
         ("cell-input convs", r"^cell\d+_pre"), ("searched edges", r"^cell\d+_n\d+_e\d+_"),
         ("classifier", r"^classifier"))


def ops_by_part(model) -> dict[str, Counter]:
    """Larq's profile of `model`: `{"binary": ..., "float": ...}` MACs summed per part of
    `PARTS` (layer names; "other" for the rest)."""
    macs = {"binary": Counter(), "float": Counter()}

    def visit(profile):
        for layer in profile.layer_profiles:
            if hasattr(layer, "layer_profiles"):
                visit(layer)
                continue
            part = next((p for p, pattern in PARTS if re.match(pattern, layer.name)), "other")
            for op in layer.op_profiles:
                if op.precision in (1, 32):
                    macs["binary" if op.precision == 1 else "float"][part] += op.n

    visit(lq.models.ModelProfile(model))
    return macs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("genotypes", nargs="+", help="genotype.json files")
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--channels", type=int, default=16)
    args = p.parse_args(argv)
    for path in args.genotypes:
        genotype = bn.Genotype.load(path)
        total = bn_cost.genotype_cost(genotype, layers=args.layers, channels=args.channels,
                                      input_shape=(32, 32, 3), num_classes=10,
                                      binary_weights=True)
        model = bn.build_network(genotype, num_classes=10, layers=args.layers,
                                 channels=args.channels, input_shape=(32, 32, 3),
                                 binary_weights=True, masked_groups=False)
        macs = ops_by_part(model)
        print(f"\n{path}: {total.ops / 1e6:.2f} M OPs = {total.binary_macs / 1e6:.1f} M binary "
              f"MACs / 64 ({total.binary_macs / 64e6:.2f} M OPs) + {total.float_macs / 1e6:.2f} M "
              "float MACs")
        ops = Counter({part: macs["float"][part] + macs["binary"][part] / 64
                       for part in set(macs["float"]) | set(macs["binary"])})
        for part, value in ops.most_common():
            print(f"  {part:<24} {value / 1e6:5.2f} M OPs ({value / total.ops:5.1%}): "
                  f"{macs['binary'][part] / 1e6:6.1f} M binary + "
                  f"{macs['float'][part] / 1e6:5.2f} M float MACs")
        for kind, expected in (("binary", total.binary_macs), ("float", total.float_macs)):
            if sum(macs[kind].values()) != expected:
                print(f"  (Larq's {kind} MACs add up to {sum(macs[kind].values()) / 1e6:.2f} M, "
                      "not genotype_cost's: the split is approximate)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
