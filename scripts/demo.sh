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

# OUT is replaced only when it is an earlier demo (it holds the marker file written below);
# any other non-empty folder or file is refused, so `OUT=~/experiments` deletes nothing.
MARKER=.bnas-tf-demo
if [ -e "$OUT" ] && [ ! -d "$OUT" ]; then
  echo "demo: OUT=$OUT is a file; give a new or empty folder, or an earlier demo's." >&2
  exit 2
fi
if [ -d "$OUT" ] && [ -n "$(ls -A "$OUT")" ]; then
  if [ ! -f "$OUT/$MARKER" ]; then
    echo "demo: OUT=$OUT is a non-empty folder that is not an earlier demo (no $MARKER);" \
      "nothing was deleted. Give a new or empty folder, or delete it yourself." >&2
    exit 2
  fi
  rm -rf "$OUT"
fi
mkdir -p "$OUT"
echo "written by scripts/demo.sh; the next make demo with this OUT replaces this folder" \
  > "$OUT/$MARKER"

# The offline CIFAR-10 copy beside the repository, if any; else bnas-tf downloads it.
bash scripts/cifar10.sh "$VENV/bin/python" "$DATA_DIR"

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
"$VENV/bin/bnas-tf" export "$OUT/train/model.keras" --output "$OUT/model.tflite" \
  --verify 1000 --top1-threshold 0.98 --dataset cifar10 --data-dir "$DATA_DIR" --benchmark \
  --report "$OUT/conversion_report.json"
echo "demo finished: $OUT/model.tflite"
