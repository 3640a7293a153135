"""TensorBoard view of a search: op-probability histograms, entropies and cell diagrams.

`ArchitectureBoard` is a Keras callback for `SuperNet.fit`. After every epoch
(or every `every` epochs) it writes, into `log_dir/architecture`:

* `op_probabilities/normal`, `op_probabilities/reduce` – histograms of all
  edges' op probabilities `softmax(α/T)` (they move to 0 and 1 as the search
  commits); with `per_edge=True` also one histogram per edge,
  `op_probabilities/normal/c_{k-2}->0`, ...,
* `entropy/normal`, `entropy/reduce` – scalars: mean edge entropy (nats),
* `op_probability/normal/<op>` – scalars: mean probability of each op,
* `genotype` – the current cell diagrams (`bnas_tf.plot.plot_genotype`) as
  an image (needs matplotlib: `pip install bnas_tf[plot]`),
* `genotype_json` – the current genotype as text.

Example:
    >>> net.fit(pairs, epochs=50, callbacks=[bn.callbacks.ArchitectureBoard("RUN/logs")])
    >>> # tensorboard --logdir RUN/logs   (Histograms, Images, Scalars, Text tabs)
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import tensorflow as tf

__all__ = ["ArchitectureBoard"]

log = logging.getLogger(__name__)

_KINDS = ("normal", "reduce")


def _edge_tags(num_edges: int) -> list[str]:
    names = {0: "c_{k-2}", 1: "c_{k-1}"}
    tags, j = [], 0
    while len(tags) < num_edges:
        tags += [f"{names.get(i, i - 2)}->{j}" for i in range(j + 2)]
        j += 1
    return tags[:num_edges]


class ArchitectureBoard(tf.keras.callbacks.Callback):
    """Write op-probability histograms and the current cell diagrams to TensorBoard.

    Use it with a `bnas_tf.SuperNet` (it reads `op_probabilities()` and
    `genotype()`); see the module docstring for the summaries written.

    Args:
        log_dir: TensorBoard log directory (summaries go to `log_dir/architecture`).
        every: write every `every` epochs (and always after the last one).
        images: write the cell diagrams as an image (needs matplotlib).
        per_edge: also write one op-probability histogram per edge.
        engine: cell-diagram engine, see `bnas_tf.plot.plot_cell`.
        dpi: resolution of the diagram image (size: the figure's inches × dpi).

    Raises:
        ValueError: `every` < 1.
        ImportError: `images=True` and matplotlib is not installed.

    Example:
        >>> board = ArchitectureBoard("logs", per_edge=True)
        >>> net.fit(pairs, epochs=3, callbacks=[board])
    """

    def __init__(self, log_dir: str | os.PathLike, *, every: int = 1, images: bool = True,
                 per_edge: bool = False, engine: str = "auto", dpi: float = 80):
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"Expected every >= 1 (epochs between summaries), got {every!r}.")
        if not isinstance(log_dir, str | os.PathLike):
            raise TypeError(f"Expected `log_dir` to be a path, got {log_dir!r}.")
        self.log_dir = os.fspath(log_dir)
        self.every, self.images, self.per_edge = every, bool(images), bool(per_edge)
        self.engine, self.dpi = engine, dpi
        if self.images:
            from bnas_tf import plot

            plot._matplotlib()  # a clear ImportError now rather than after the first epoch
            plot._resolve_engine(engine)
        self._writer = None
        self._epochs: int | None = None

    def _check_model(self):
        if not (hasattr(self.model, "op_probabilities") and hasattr(self.model, "genotype")):
            raise ValueError(f"ArchitectureBoard expects a bnas_tf.SuperNet, got "
                             f"{type(self.model).__name__}.")

    def on_train_begin(self, logs=None):
        self._check_model()
        self._epochs = self.params.get("epochs") if self.params else None
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(
                os.path.join(self.log_dir, "architecture"))

    def on_epoch_end(self, epoch, logs=None):
        last = self._epochs is not None and epoch + 1 >= self._epochs
        if (epoch + 1) % self.every and not last:
            return
        self.write(epoch)

    def write(self, step: int) -> None:
        """Write all summaries for `step` (the epoch) now."""
        self._check_model()
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(
                os.path.join(self.log_dir, "architecture"))
        probs = {k: np.asarray(v) for k, v in self.model.op_probabilities().items()}
        op_names = list(self.model.space.op_names)
        genotype = self.model.genotype(warn=False)
        with self._writer.as_default(step=int(step)):
            for kind in _KINDS:
                table = probs[kind]
                tf.summary.histogram(f"op_probabilities/{kind}", table.ravel(),
                                     description=f"op probabilities of all {kind}-cell edges")
                if self.per_edge:
                    for tag, row in zip(_edge_tags(len(table)), table, strict=True):
                        tf.summary.histogram(f"op_probabilities/{kind}/{tag}", row)
                clipped = np.clip(table, 1e-12, 1.0)
                entropy = float(-(clipped * np.log(clipped)).sum(axis=-1).mean())
                tf.summary.scalar(f"entropy/{kind}", entropy)
                for name, mean in zip(op_names, table.mean(axis=0), strict=True):
                    tf.summary.scalar(f"op_probability/{kind}/{name}", float(mean))
            tf.summary.text("genotype_json", genotype.to_json(indent=None))
            if self.images:
                image = self._diagram(genotype)
                tf.summary.image("genotype", image[None], max_outputs=1,
                                 description="normal and reduction cell")
        self._writer.flush()

    def _diagram(self, genotype) -> tf.Tensor:
        from bnas_tf import plot

        fig = plot.plot_genotype(genotype, engine=self.engine, dpi=self.dpi)
        png = plot.figure_to_png(fig, dpi=self.dpi)
        return tf.image.decode_png(png, channels=4)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def get_config(self) -> dict[str, Any]:
        return {"log_dir": self.log_dir, "every": self.every, "images": self.images,
                "per_edge": self.per_edge, "engine": self.engine, "dpi": self.dpi}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ArchitectureBoard:
        return cls(**config)
