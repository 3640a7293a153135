"""Checks of what a user or a file controls: arrays, labels, class counts, image files.

Every check raises `bnas_tf.errors.DataError` with the problem and the fix, at
load time or when a pipeline is built, never inside a training step.

Image files are checked in two tiers (see `bnas_tf.data` for the design):

* `scan_files` reads a few bytes of each file (no decoding): non-empty, a
  known image signature (JPEG, PNG, GIF, BMP), a parseable header that gives
  the image size, and an end marker where the format has one (JPEG `FFD9`,
  PNG `IEND`, GIF `;`). Files that fail are *suspects*; each suspect is then
  decoded by TensorFlow, and only files that TensorFlow cannot decode count
  as broken (a JPEG with trailing bytes after its end marker decodes fine).
* `decode_failures` decodes every file (parallel tf.data), for
  `verify="decode"`.
"""

from __future__ import annotations

import logging
import os
import re
import struct
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from bnas_tf.errors import DataError

log = logging.getLogger(__name__)

BAD_FILE_POLICIES = ("raise", "skip")
"""What to do with image files that cannot be decoded: raise a DataError, or skip them."""

VERIFY_MODES = ("header", "decode", "none")
"""How image files are checked at load time (see `scan_files`, `decode_failures`)."""

_LISTED = 10  # files named in one message

# --------------------------------------------------------------------------- arrays


def check_images(x, what: str = "x") -> np.ndarray:
    """Images `(N, height, width, channels)`, uint8 or finite floats, as a numpy array."""
    if tf.is_tensor(x):
        x = x.numpy()
    x = np.asarray(x)
    if x.ndim != 4:
        fix = " Add a channel axis, e.g. x[..., None]." if x.ndim == 3 else ""
        raise DataError(
            f"Expected {what} of shape (N, height, width, channels), got shape {x.shape}.{fix}"
        )
    if min(x.shape[1:]) < 1:
        raise DataError(f"Expected {what} with non-empty images, got shape {x.shape}.")
    if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
        raise DataError(
            f"Expected {what} as uint8 pixels (0..255) or floats used as given, got dtype "
            f"{x.dtype}. Convert with x.astype('uint8') or x.astype('float32')."
        )
    if np.issubdtype(x.dtype, np.floating):
        check_finite(x, what)
    return x


def check_finite(x: np.ndarray, what: str = "x", chunk: int = 1024) -> None:
    """Raise if any float image holds NaN or an infinity (checked in chunks of images)."""
    bad: list[int] = []
    wide = x.dtype.itemsize > 4  # float64 values beyond float32's range become inf in training
    limit = np.finfo(np.float32).max
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk]
        ok = np.isfinite(part)
        if wide:
            ok &= np.abs(np.where(ok, part, 0)) <= limit
        ok = ok.reshape(len(part), -1).all(axis=1)
        bad += (np.flatnonzero(~ok) + start).tolist()
    if bad:
        listed = ", ".join(str(i) for i in bad[:_LISTED]) + (", ..." if len(bad) > _LISTED else "")
        beyond = " (or beyond the float32 range)" if wide else ""
        raise DataError(
            f"{what} holds NaN or infinite pixel values{beyond} in {len(bad)} image(s) "
            f"(indices {listed}); they would train to loss: nan. Fix the preprocessing that "
            "produced them, or drop those images (e.g. keep = "
            f"np.isfinite({what}).all(axis=(1, 2, 3)))."
        )


def check_uint8_images(x, what: str) -> np.ndarray:
    x = check_images(x, what)
    if x.dtype != np.uint8:
        raise DataError(
            f"Expected {what} as uint8 pixels in ImageData, got {x.dtype}. "
            "Convert with np.clip(x, 0, 255).astype('uint8')."
        )
    return x


def check_labels(y, n: int, num_classes: int | None, what: str = "y") -> np.ndarray:
    """Labels as int64 `(n,)`; `(n, 1)` is flattened. Range-checked when num_classes is known."""
    if tf.is_tensor(y):
        y = y.numpy()
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise DataError(
            f"Expected {what} of shape ({n},) (one integer label per image), got shape {y.shape}."
        )
    if not np.issubdtype(y.dtype, np.integer):
        integral = np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y))
        integral = integral and np.all(np.mod(y, 1) == 0) and np.all(np.abs(y) < 2**62)
        if not integral:
            raise DataError(
                f"Expected integer class indices in {what}, got dtype {y.dtype}"
                + (" with non-integer values" if np.issubdtype(y.dtype, np.floating) else "")
                + ". Convert with y.astype('int64') after fixing the labels."
            )
    elif y.dtype == np.uint64 and y.size and y.max() >= 2**63:
        raise DataError(f"{what} holds labels >= 2**63; labels must be class indices.")
    y = y.astype(np.int64)
    high = num_classes if num_classes is not None else np.iinfo(np.int64).max
    bad = np.flatnonzero((y < 0) | (y >= high))
    if bad.size:
        bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
        hint = ""
        if num_classes is not None and y.min() >= 1 and y.max() == num_classes:
            hint = " The labels look 1-based: subtract 1."
        raise DataError(
            f"{what}[{bad[0]}] = {y[bad[0]]} is outside the label range {bound} "
            f"({bad.size} bad labels). Labels must be class indices; fix the labels or "
            f"num_classes.{hint}"
        )
    return y


def check_num_classes(num_classes, what: str = "num_classes") -> int | None:
    """None, or an int >= 2 (a classifier needs two classes)."""
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or int(num_classes) != num_classes:
        raise DataError(f"Expected an integer {what}, got {num_classes!r}.")
    if num_classes < 2:
        raise DataError(
            f"Expected at least 2 classes, got {what}={num_classes}. A classifier needs two or "
            "more classes; check the labels or the dataset."
        )
    return int(num_classes)


def check_class_counts(labels: np.ndarray, class_names: Sequence[str], where: str) -> None:
    """Raise unless at least 2 classes have images; warn about classes without any."""
    counts = np.bincount(labels, minlength=len(class_names)) if len(labels) else np.zeros(0)
    present = [c for c, k in zip(class_names, counts, strict=False) if k > 0]
    if len(present) < 2:
        found = f"only class {present[0]!r}" if present else "no labelled images"
        raise DataError(
            f"Expected images of at least 2 classes in {where}, found {found}. An image "
            "classifier needs one folder (or label) per class: add images of the other classes."
        )
    empty = [c for c, k in zip(class_names, counts, strict=False) if k == 0]
    if empty:
        log.warning(
            "%d class(es) have no images in %s: %s. The model still gets an output for them.",
            len(empty), where, ", ".join(map(repr, empty[:_LISTED])),
        )


def check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise DataError(f"Expected a positive integer batch_size, got {batch_size!r}.")
    return int(batch_size)


def check_image_size(image_size) -> tuple[int, int] | None:
    """None, an int (square) or `(height, width)` of positive ints, as a pair."""
    if image_size is None:
        return None
    size = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    if len(size) != 2 or any(isinstance(s, bool) or int(s) != s or s < 1 for s in size):
        raise DataError(
            f"Expected image_size=(height, width) of positive ints (or one int), got "
            f"{image_size!r}."
        )
    return int(size[0]), int(size[1])


def check_fraction(fraction, what: str = "fraction") -> float:
    if isinstance(fraction, bool) or not 0.0 < float(fraction) < 1.0:
        raise DataError(f"Expected 0 < {what} < 1, got {fraction!r}.")
    return float(fraction)


def check_stats(mean, std, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean = tuple(float(m) for m in np.atleast_1d(mean))
    std = tuple(float(s) for s in np.atleast_1d(std))
    if len(mean) != channels or len(std) != channels:
        raise DataError(
            f"Expected {channels} per-channel mean and std values for images with {channels} "
            f"channels, got mean={mean}, std={std}."
        )
    if not all(np.isfinite(mean + std)):
        raise DataError(f"Expected finite normalization statistics, got mean={mean}, std={std}.")
    if min(std) <= 0:
        raise DataError(f"Expected positive standard deviations, got std={std}.")
    return mean, std


def check_choice(value, choices: Sequence[str], what: str) -> str:
    if value not in choices:
        raise DataError(f"Expected {what} in {', '.join(map(repr, choices))}, got {value!r}.")
    return value


# --------------------------------------------------------------------------- image files


@dataclass(frozen=True)
class FileInfo:
    """What a file's header says: format and size (0 when the header does not tell)."""

    format: str
    height: int
    width: int


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def sniff(path: str) -> tuple[FileInfo | None, str | None]:
    """`(info, problem)` of one file from its header and end, without decoding it.

    `problem` is None for a structurally sound file; `info` is None when the
    format or size could not be read.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return None, "is empty (0 bytes)"
            head = f.read(32)
            if head.startswith(b"\xff\xd8"):
                return _sniff_jpeg(f, size)
            if head.startswith(_PNG_SIGNATURE):
                return _sniff_png(f, head, size)
            if head[:6] in (b"GIF87a", b"GIF89a"):
                if len(head) < 10:
                    return None, "ends inside the GIF header (truncated)"
                width, height = struct.unpack("<HH", head[6:10])
                f.seek(size - 1)
                end_ok = f.read(1) == b";"
                return FileInfo("gif", height, width), (
                    None if end_ok else "does not end with the GIF trailer (truncated?)"
                )
            if head.startswith(b"BM"):
                return _sniff_bmp(head, size)
            return None, f"is not a JPEG, PNG, GIF or BMP image (starts with {head[:8]!r})"
    except OSError as e:
        return None, f"cannot be read ({e.strerror or e})"


def _sniff_jpeg(f, size: int) -> tuple[FileInfo | None, str | None]:
    f.seek(2)
    info = None
    while True:
        marker = f.read(2)
        if len(marker) < 2:
            return info, "ends inside the JPEG header (truncated)"
        if marker[0] != 0xFF:
            return info, f"has a damaged JPEG header (byte {marker[0]:#04x} at offset {f.tell() - 2})"
        code = marker[1]
        while code == 0xFF:  # fill bytes
            byte = f.read(1)
            if not byte:
                return info, "ends inside the JPEG header (truncated)"
            code = byte[0]
        if code == 0x01 or 0xD0 <= code <= 0xD8:  # markers without a length
            continue
        if code == 0xD9:
            return info, "ends (JPEG end marker) before any image data"
        length_bytes = f.read(2)
        if len(length_bytes) < 2:
            return info, "ends inside the JPEG header (truncated)"
        (length,) = struct.unpack(">H", length_bytes)
        if length < 2:
            return info, "has a damaged JPEG header (segment length < 2)"
        if code == 0xDA:  # start of scan: the header is complete
            if info is None:
                return None, "has image data but no JPEG frame header (SOF)"
            break
        payload = f.read(min(length - 2, 6))
        if code in _SOF:
            if len(payload) < 6:
                return None, "ends inside the JPEG frame header (truncated)"
            height, width = struct.unpack(">HH", payload[1:5])
            info = FileInfo("jpeg", height, width)
        f.seek(length - 2 - len(payload), 1)
        if f.tell() > size:
            return info, "ends inside the JPEG header (truncated)"
    f.seek(max(size - 2, 0))
    if f.read(2) != b"\xff\xd9":
        return info, "does not end with the JPEG end marker FFD9 (truncated?)"
    return info, None


def _sniff_png(f, head: bytes, size: int) -> tuple[FileInfo | None, str | None]:
    if len(head) < 24 or head[12:16] != b"IHDR":
        return None, "has a damaged PNG header (no IHDR chunk)"
    width, height = struct.unpack(">II", head[16:24])
    f.seek(max(size - 12, 0))
    if f.read(12) != _PNG_IEND:
        return FileInfo("png", height, width), "does not end with the PNG IEND chunk (truncated?)"
    return FileInfo("png", height, width), None


def _sniff_bmp(head: bytes, size: int) -> tuple[FileInfo | None, str | None]:
    if len(head) < 26:
        return None, "ends inside the BMP header (truncated)"
    (declared,) = struct.unpack("<I", head[2:6])
    (header_size,) = struct.unpack("<I", head[14:18])
    info = None
    if header_size >= 40:
        width, height = struct.unpack("<ii", head[18:26])
        info = FileInfo("bmp", abs(height), abs(width))
    if declared > size:
        return info, f"is shorter ({size} bytes) than its BMP header says ({declared})"
    return info, None


def scan_files(
    paths: Sequence[str], *, workers: int = 8, chunk: int = 4096
) -> Iterator[tuple[int, FileInfo | None, str | None]]:
    """`(index, info, problem)` of `sniff` for every file, in order.

    Files are read by a few threads (the reads release the GIL), `chunk` at a
    time, so memory stays flat however many files there are.
    """
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(paths), chunk):
            part = paths[start : start + chunk]
            for offset, (info, problem) in enumerate(pool.map(sniff, part)):
                yield start + offset, info, problem


def tf_message(error: Exception) -> str:
    """TensorFlow's error text without its graph-function and op decorations."""
    text = getattr(error, "message", None) or str(error)
    marker = text.find("bnas_tf.data: ")
    if marker >= 0:  # our own assertion from inside a pipeline
        text = text[marker + len("bnas_tf.data: ") :].split("]\n")[0].rstrip("]").strip()
        return text.replace("\\'", "'")
    text = re.sub(r"\{\{function_node [^}]*\}\}", "", text)
    text = re.sub(r"\s*\[Op:[^\]]*\].*", "", text, flags=re.S)
    return text.split("\n")[0].strip()


def decode_error(path: str, channels: int) -> str | None:
    """TensorFlow's message when `path` does not decode, else None."""
    from bnas_tf.data.transforms import decode

    try:
        decode(tf.io.read_file(path), channels)
    except (tf.errors.OpError, ValueError) as e:
        return tf_message(e)
    return None


def decode_failures(paths: Sequence[str], channels: int) -> dict[str, str]:
    """Every file of `paths` that TensorFlow cannot read or decode, with its message.

    All files are decoded in parallel by tf.data; the failures (dropped by
    `ignore_errors`) are then decoded once more, one by one, for the message.
    """
    from bnas_tf.data.transforms import decode

    if not paths:
        return {}
    ds = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64), list(paths)))
    ds = ds.map(
        lambda i, p: (i, tf.shape(decode(tf.io.read_file(p), channels))[0]),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).ignore_errors()
    decoded = np.zeros(len(paths), bool)
    for index, _ in ds.as_numpy_iterator():
        decoded[index] = True
    failures = {}
    for i in np.flatnonzero(~decoded):
        failures[paths[i]] = decode_error(paths[i], channels) or "could not be read"
    return failures


def report_bad_files(bad: dict[str, str], policy: str, where: str) -> None:
    """Raise a DataError naming the broken files, or (policy "skip") log a warning."""
    if not bad:
        return
    listed = "\n".join(f"  {p}: {why}" for p, why in list(bad.items())[:_LISTED])
    more = f"\n  ... and {len(bad) - _LISTED} more" if len(bad) > _LISTED else ""
    if policy == "skip":
        log.warning(
            "Skipping %d unreadable image file(s) in %s:\n%s%s", len(bad), where, listed, more
        )
        return
    raise DataError(
        f"{len(bad)} image file(s) in {where} cannot be decoded:\n{listed}{more}\n"
        "Remove or re-save them, or pass bad_files='skip' to leave them out with a warning."
    )

