"""Output files of an export: check the path before slow work, then write atomically."""

from __future__ import annotations

import os
from pathlib import Path

from bnas_tf._io import atomic_write_bytes
from bnas_tf.errors import ExportError


def check_writable(path: str | os.PathLike) -> Path:
    """Raise `ExportError` unless a file can be created at `path` (run before slow work).

    Returns:
        `path` as a `Path`.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ExportError(f"Cannot write {str(path)!r}: it is a directory. Pass a file path.")
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise ExportError(
            f"Cannot write {str(path)!r}: its directory {str(parent)!r} {what}. "
            "Create the directory first or choose another output path."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(
            f"Cannot write {str(path)!r}: directory {str(parent)!r} is not writable. "
            "Choose another output path."
        )
    return path


def write_file(path: str | os.PathLike, data: bytes) -> Path:
    """Check `path`, then write `data` atomically (`bnas_tf._io.atomic_write_bytes`).

    Readers never see a partial file, and a failed write leaves nothing behind.

    Raises:
        ExportError: `path` is not writable, or the write failed.
    """
    path = check_writable(path)
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise ExportError(
            f"Cannot write {str(path)!r}: {e.strerror or e}. Choose another output path."
        ) from e
    return path
