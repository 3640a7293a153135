"""HM-NAS search + continued training vs DARTS-rule search + from-scratch training, same wall time.

On one CIFAR-10 subset, with the same supernet size, search epochs, optimizer
and training data:

* `hmnas`: `bn.HMNASSuperNet` search (`--search-epochs`), then
  `net.derive_model()` (the masked network with the searched weights) is
  trained further for `--train-epochs` epochs;
* `darts`: `bn.SuperNet` search (same epochs), DARTS-rule genotype,
  `bn.build_network` from scratch, trained until its total time (search +
  training) reaches the HM-NAS total (it stops mid-epoch when the budget is
  used up after a batch; the first batch includes graph tracing, so it may
  overshoot by that much: the printed totals are the measured ones).

Both derived networks have the supernet's depth and width and are trained in
stage 1 of the AdamBNN recipe (binary activations, real latent weights,
Adam 1e-3), like the search. Printed per method: test accuracy (HM-NAS also
right after derivation, before any further training), parameter count (and,
for HM-NAS, the binary-conv kernel entries its weight masks pruned), search
time, training time and total time. All times are wall-clock seconds on this
machine and include per-epoch graph tracing.

Usage:
    python benchmarks/hmnas_vs_darts.py --data-dir /tmp/cifar [--limit 1000] [--layers 3] \\
        [--channels 8] [--nodes 2] [--space bnas] [--search-epochs 2] [--train-epochs 2] [--arch-lr 1e-3] \
        [--sparsity 0.05] [--weight-sparsity 0.05] [--json OUT.json]
"""

from __future__ import annotations

import bnas_tf as bn

# isort: split
import argparse
import json
import time

import numpy as np
import tensorflow as tf

from bnas_tf.search_run import SearchConfig, build_supernet


class _WallClockBudget(tf.keras.callbacks.Callback):
    """Stop training once `seconds` of wall time have passed since `on_train_begin`."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def on_train_begin(self, logs=None):
        self.start = time.time()

    def on_train_batch_end(self, batch, logs=None):
        if time.time() - self.start >= self.seconds:
            self.model.stop_training = True


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="/tmp/cifar")
    p.add_argument("--limit", type=int, default=1000)
    # bnas: dense binary convs. The bats/lce spaces' derived networks use real grouped
    # convs, which TensorFlow runs 10-30x slower on CPU (an epoch of 1000 images took
    # over 5 minutes on the shared 2-core machine), too slow for this budget.
    p.add_argument("--space", default="bnas", choices=bn.SearchSpace.names())
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--search-epochs", type=int, default=2)
    p.add_argument("--train-epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--arch-lr", type=float, default=1e-3,
                   help="architecture Adam learning rate (both methods)")
    p.add_argument("--sparsity", type=float, default=0.05, help="HM-NAS op/edge score L1")
    p.add_argument("--weight-sparsity", type=float, default=0.05, help="HM-NAS kernel score L1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the figures here")
    return p.parse_args(argv)


def _search(method: str, args, data) -> tuple[bn.SuperNet, float]:
    config = SearchConfig(dataset="cifar10", data_dir=args.data_dir, limit=args.limit,
                          space=args.space, nodes=args.nodes, layers=args.layers,
                          channels=args.channels, epochs=args.search_epochs,
                          batch_size=args.batch_size, augment=False, seed=args.seed,
                          arch_learning_rate=args.arch_lr,
                          method=method, sparsity=args.sparsity,
                          weight_sparsity=args.weight_sparsity)
    tf.keras.utils.set_random_seed(args.seed)
    start = time.time()
    net = build_supernet(config, data.num_classes)
    pairs = bn.data.search_pairs(data, batch_size=args.batch_size, seed=args.seed)
    net.fit(pairs, epochs=args.search_epochs, verbose=2)
    return net, time.time() - start


def _train(model, args, data, *, epochs: int, budget: float | None = None):
    model.compile(optimizer=tf.keras.optimizers.legacy.Adam(1e-3),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    train = bn.data.make_dataset(data, batch_size=args.batch_size, training=True,
                                 augment=False, seed=args.seed)
    callbacks = [] if budget is None else [_WallClockBudget(budget)]
    start = time.time()
    model.fit(train, epochs=epochs, callbacks=callbacks, verbose=2)
    return time.time() - start


def _test_accuracy(model, data) -> float:
    test = bn.data.make_dataset(data, batch_size=128)
    correct = total = 0
    for x, y in test:
        pred = np.argmax(model(x, training=False).numpy(), axis=1)
        correct += int(np.sum(pred == y.numpy()))
        total += len(pred)
    return correct / total


def _binary_kernel_zeros(model) -> int:
    import larq as lq

    return int(sum(np.sum(layer.kernel.numpy() == 0.0) for layer in model.layers
                   if isinstance(layer, lq.layers.QuantConv2D)))


def _in_degrees(genotype) -> dict:
    return {kind: [len(edges) if not (len(edges) == 1 and edges[0].op_names == ("none",))
                   else 0 for edges in getattr(genotype, kind).nodes]
            for kind in ("normal", "reduce")}


def main(argv=None) -> dict:
    args = _parse(argv)
    data = bn.data.load("cifar10", args.data_dir, limit=args.limit, download=False,
                        seed=args.seed)
    shape = data.x_train.shape[1:]
    results = {"settings": vars(args)}

    # ---- HM-NAS: search, derive (searched weights), continue training
    net, hm_search = _search("hmnas", args, data)
    genotype = net.genotype()
    derived = net.derive_model(input_shape=shape)
    zeros = _binary_kernel_zeros(derived)
    acc_derived = _test_accuracy(derived, data)
    acc_supernet = _test_accuracy(net, data)
    hm_train = _train(derived, args, data, epochs=args.train_epochs)
    results["hmnas"] = {
        "test_accuracy": _test_accuracy(derived, data),
        "test_accuracy_at_derivation": acc_derived,
        "supernet_test_accuracy": acc_supernet,
        "params": derived.count_params(),
        "pruned_binary_kernel_entries_at_derivation": zeros,
        "in_degrees": _in_degrees(genotype),
        "ops": sorted(genotype.op_names - {"none"}),
        "search_seconds": hm_search, "train_seconds": hm_train,
        "total_seconds": hm_search + hm_train,
    }
    total = hm_search + hm_train

    # ---- DARTS rule: search, derive by the rule, train from scratch for the rest of the time
    net, d_search = _search("darts", args, data)
    genotype = net.genotype()
    tf.keras.utils.set_random_seed(args.seed)
    model = bn.build_network(genotype, num_classes=data.num_classes, layers=args.layers,
                             channels=args.channels, input_shape=shape)
    budget = max(total - d_search, 0.0)
    d_train = _train(model, args, data, epochs=1000, budget=budget)
    results["darts"] = {
        "test_accuracy": _test_accuracy(model, data), "params": model.count_params(),
        "in_degrees": _in_degrees(genotype), "ops": sorted(genotype.op_names),
        "search_seconds": d_search, "train_seconds": d_train,
        "total_seconds": d_search + d_train, "train_budget_seconds": budget,
    }

    print("\n== HM-NAS vs DARTS rule on CIFAR-10 "
          f"(limit {args.limit}, {args.space}, layers {args.layers}, channels {args.channels}, "
          f"nodes {args.nodes}, search epochs {args.search_epochs})")
    hm, d = results["hmnas"], results["darts"]
    print(f"{'':8} {'test acc':>9} {'params':>8} {'search s':>9} {'train s':>8} {'total s':>8}")
    for name, r in (("hmnas", hm), ("darts", d)):
        print(f"{name:8} {r['test_accuracy']:9.4f} {r['params']:8d} {r['search_seconds']:9.1f} "
              f"{r['train_seconds']:8.1f} {r['total_seconds']:8.1f}")
    print(f"hmnas: test accuracy right after derive_model() {hm['test_accuracy_at_derivation']:.4f} "
          f"(masked supernet: {hm['supernet_test_accuracy']:.4f}); "
          f"{args.train_epochs} epochs of "
          f"continued training; zero binary-kernel entries at derivation: "
          f"{hm['pruned_binary_kernel_entries_at_derivation']}")
    print(f"hmnas in-degrees {hm['in_degrees']}, ops {hm['ops']}")
    print(f"darts in-degrees {d['in_degrees']}, ops {d['ops']}; from-scratch training budget "
          f"{d['train_budget_seconds']:.1f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2, default=float)
    return results


if __name__ == "__main__":
    main()
