#!/usr/bin/env bash
# The main job on a small default: search -> two-stage training -> TFLite export.
# Run through `make demo` (which sets up .venv first). Settings via environment:
#   DATA_DIR (default data/)  OUT (default runs/demo)  LIMIT (training images, default 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
DATA_DIR=${DATA_DIR:-data}
OUT=${OUT:-runs/demo}
LIMIT=${LIMIT:-2000}

# The offline CIFAR-10 copy beside the repository, if any; else bnas-tf downloads it.
bash scripts/cifar10.sh "$VENV/bin/python" "$DATA_DIR"
rm -rf "$OUT"

# Defaults: the lce space (every binary conv converts to LceBconv2d), partial-channel search
# with the budget-aware schedule (bnas_tf.budget), training width 32.
"$VENV/bin/bnas-tf" search --dataset cifar10 --data-dir "$DATA_DIR" --limit "$LIMIT" \
  --layers 5 --channels 16 --epochs 3 --output "$OUT/search"
"$VENV/bin/bnas-tf" train --genotype "$OUT/search/genotype.json" --dataset cifar10 \
  --data-dir "$DATA_DIR" --limit "$LIMIT" --layers 5 --epochs 2,2 \
  --output "$OUT/train"
# The demo network is trained briefly and many of its predictions are near ties; where
# a value meets a binarization threshold, float rounding in LCE's fused kernels can flip
# it and with it a near-tie prediction (measured: 0.988-0.998 top-1 agreement on 1,000
# images, the flips at a median top-2 gap of 0.07 against 0.51 overall), so the demo
# asks for 0.98 instead of the default 0.99; the printed line gives the flips' gap.
# See benchmarks/README.md (make demo).
"$VENV/bin/python" export/to_tflite.py "$OUT/train/model" --output "$OUT/model.tflite" \
  --verify 1000 --top1-threshold 0.98 --dataset cifar10 --data-dir "$DATA_DIR" --benchmark \
  --report "$OUT/conversion_report.json"
echo "demo finished: $OUT/model.tflite"
