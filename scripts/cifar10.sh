#!/usr/bin/env bash
# Make sure DATA_DIR/cifar-10-batches-py exists when an offline copy is at hand.
# Usage (from the repository root): bash scripts/cifar10.sh PYTHON DATA_DIR
# On the development machines and in CI an offline CIFAR-10 copy sits beside the
# repository (../shared/datasets); elsewhere this does nothing and bnas_tf downloads
# CIFAR-10 into DATA_DIR the way Keras does.
set -euo pipefail
PYTHON=${1:?usage: cifar10.sh PYTHON DATA_DIR}
DATA_DIR=${2:?usage: cifar10.sh PYTHON DATA_DIR}
if [ ! -d "$DATA_DIR/cifar-10-batches-py" ] && [ -f ../shared/datasets/cifar10/make_cifar10.py ]; then
  "$PYTHON" ../shared/datasets/cifar10/make_cifar10.py batches "$DATA_DIR"
fi
