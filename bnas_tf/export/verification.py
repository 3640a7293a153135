"""Check an LCE flatbuffer against Keras: run both on the same inputs and compare."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from bnas_tf.errors import ExportError
from bnas_tf.export._runtime import lce_interpreter


@dataclass
class VerifyResult:
    """Agreement between Keras and the LCE flatbuffer on the same inputs.

    Attributes:
        num_samples: inputs compared.
        top1_agreement: fraction of inputs whose arg-max output (over the flattened
            per-sample output) is the same in both.
        max_abs_diff: largest absolute output difference.
        mean_abs_diff: mean absolute output difference.
        max_abs_output: largest absolute Keras output (the scale of the diffs).
        top1_threshold: the agreement required.
        passed: `top1_agreement >= top1_threshold` and outputs finite.
        keras_accuracy: Keras top-1 accuracy on the labels, if given.
        tflite_accuracy: flatbuffer top-1 accuracy on the labels, if given.
        interpreter: the LCE interpreter options used.
        disagreement_gap: median gap between the two largest Keras outputs over the
            inputs whose top-1 differs (None if none differs).
        median_gap: the same median over all inputs. A disagreement gap far below it
            means the flips are near ties: a binary network's Keras and LCE outputs
            differ by float rounding where a value meets a binarization threshold.
    """

    num_samples: int
    top1_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    max_abs_output: float
    top1_threshold: float
    passed: bool
    keras_accuracy: float | None = None
    tflite_accuracy: float | None = None
    interpreter: dict[str, Any] = field(default_factory=dict)
    disagreement_gap: float | None = None
    median_gap: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    def format(self) -> str:
        """One-paragraph summary."""
        s = (
            f"Verification on {self.num_samples} inputs: top-1 agreement "
            f"{self.top1_agreement:.4f} (need >= {self.top1_threshold}), max |diff| "
            f"{self.max_abs_diff:.3g}, mean |diff| {self.mean_abs_diff:.3g} (outputs up to "
            f"{self.max_abs_output:.3g})"
        )
        if self.keras_accuracy is not None:
            s += f"; accuracy Keras {self.keras_accuracy:.4f}, TFLite {self.tflite_accuracy:.4f}"
        if self.disagreement_gap is not None:
            flips = round((1.0 - self.top1_agreement) * self.num_samples)
            s += (f"; {flips} top-1 flips, median Keras top-2 gap {self.disagreement_gap:.3g} "
                  f"there (all inputs: {self.median_gap:.3g})")
        return s + (": PASSED" if self.passed else ": FAILED")


def _flat(out) -> np.ndarray:
    if isinstance(out, list | tuple):
        return np.concatenate([np.asarray(o).reshape(len(o), -1) for o in out], axis=1)
    out = np.asarray(out)
    return out.reshape(len(out), -1)


def verify(
    model: tf.keras.Model,
    tflite_bytes: bytes,
    x: np.ndarray,
    *,
    y: np.ndarray | None = None,
    top1_threshold: float = 0.99,
    batch_size: int = 64,
    interpreter_kwargs: dict[str, Any] | None = None,
) -> VerifyResult:
    """Run the flatbuffer with LCE's interpreter on `x` and compare with Keras.

    Args:
        model: the Keras model that was converted.
        tflite_bytes: its LCE flatbuffer.
        x: inputs, float32, with a batch axis (each sample runs with batch size 1).
        y: optional integer labels, to report both accuracies.
        top1_threshold: top-1 agreement needed for `passed`.
        batch_size: Keras batch size.
        interpreter_kwargs: options of `larq_compute_engine...Interpreter`; default
            `use_indirect_bgemm=True`, the x86-fast kernel that also runs grouped convs.

    Returns:
        A `VerifyResult` (check `.passed`; this function does not raise on disagreement).

    Raises:
        ExportError: empty `x`, or the interpreter cannot run the flatbuffer.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 2 or len(x) == 0:
        raise ExportError(f"Expected a non-empty batch of inputs, got shape {x.shape}.")
    kwargs = {"use_indirect_bgemm": True, **(interpreter_kwargs or {})}
    try:
        got = _flat(lce_interpreter(tflite_bytes, **kwargs).predict(x))
    except Exception as e:  # noqa: BLE001 - the C++ wrapper raises RuntimeError/ValueError
        raise ExportError(
            f"LCE's interpreter could not run the flatbuffer with {kwargs}: {e}"
        ) from e
    want = _flat(model.predict(x, batch_size=batch_size, verbose=0))
    if got.shape != want.shape:
        raise ExportError(
            f"Output shapes differ: Keras {want.shape}, TFLite {got.shape}. Was the flatbuffer "
            "converted from this model?"
        )
    diff = np.abs(got - want)
    same = got.argmax(1) == want.argmax(1)
    agree = float(np.mean(same))
    top2 = np.sort(want, axis=1)[:, -2:] if want.shape[1] > 1 else np.zeros((len(want), 2))
    gaps = top2[:, 1] - top2[:, 0]
    acc_k = acc_t = None
    if y is not None:
        y = np.asarray(y).reshape(-1)
        acc_k = float(np.mean(want.argmax(1) == y))
        acc_t = float(np.mean(got.argmax(1) == y))
    return VerifyResult(
        num_samples=len(x),
        top1_agreement=agree,
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        max_abs_output=float(np.abs(want).max()),
        top1_threshold=float(top1_threshold),
        passed=bool(np.isfinite(got).all()) and agree >= top1_threshold,
        keras_accuracy=acc_k,
        tflite_accuracy=acc_t,
        interpreter=kwargs,
        disagreement_gap=None if same.all() else float(np.median(gaps[~same])),
        median_gap=float(np.median(gaps)),
    )
