"""What the run layer checks before it writes, and how it undoes a failed run.

`run_search` and `run_training` check their settings (`check_int`,
`check_float`, `check_choice`), their data and their output directory
(`check_output_dir`) before the first `mkdir`; then `RunDirectory` creates the
directory and, if the run fails anyway, removes what the run created (never a
directory or file that was there before).
"""

from __future__ import annotations

import math
import numbers
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from bnas_tf.errors import NonFiniteError

__all__ = ["SettingError", "check_int", "check_float", "check_choice", "check_output_dir",
           "RunDirectory", "MAX_SEED", "keep_after_a_checkpoint"]

MAX_SEED = 2**32 - 1
"""Largest seed: `tf.keras.utils.set_random_seed` seeds NumPy's legacy generator."""


class SettingError(ValueError):
    """A bad run setting; `describe(name)` words it with other names (the CLI's flags).

    Args:
        template: the message, with `{0}`, `{1}`, ... where the settings go.
        settings: the names of the settings involved.
    """

    def __init__(self, template: str, *settings: str):
        self.template, self.settings = template, settings
        super().__init__(self.describe())

    def describe(self, name=lambda setting: setting) -> str:
        return self.template.format(*(name(s) for s in self.settings))


def _escape(value) -> str:
    return repr(value).replace("{", "{{").replace("}", "}}")


def check_int(value, name: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """`value` as an int in `[minimum, maximum]`, else SettingError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SettingError(f"Expected {{0}} to be an integer, got {_escape(value)}.", name)
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise SettingError(f"Expected {{0}} {bound}, got {value}.", name)
    return value


def check_float(value, name: str, *, minimum: float | None = None, above: float | None = None,
                below: float | None = None, none: bool = False) -> float | None:
    """`value` as a finite float with `minimum <= value`, `above < value < below`.

    Raises:
        SettingError: naming `name`, the bounds and the value (None only if `none`).
    """
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value):
        raise SettingError(f"Expected {{0}} to be a finite number, got {_escape(value)}.", name)
    value = float(value)
    for bound, op, bad in ((minimum, ">=", lambda b: value < b), (above, ">", lambda b: value <= b),
                           (below, "<", lambda b: value >= b)):
        if bound is not None and bad(bound):
            raise SettingError(f"Expected {{0}} {op} {bound:g}, got {value:g}.", name)
    return value


def check_choice(value, name: str, choices: Iterable, *, none: bool = False):
    """`value` if it is one of `choices` (or None when `none`), else SettingError."""
    choices = tuple(choices)
    if (value is None and none) or (isinstance(value, str | bool) and value in choices):
        return value
    raise SettingError(f"Expected {{0}} to be one of {_escape(choices)[1:-1]}, got "
                       f"{_escape(value)}.", name)


def _nearest_existing(path: Path) -> Path:
    for parent in (path, *path.parents):
        if os.path.lexists(parent):
            return parent
    return Path(".")


def check_output_dir(path: str | os.PathLike, *, marker: str, kind: str,
                     resume: bool = False) -> Path:
    """Check that a run may write `path`, before anything is written.

    `path` may be missing (it is created, with its parents), an empty
    directory, or (with `resume`) a directory holding `marker`.

    Args:
        marker: the file that makes a directory a run of `kind` (`config.json`).
        kind: "search" or "training run", for the messages.
        resume: the run continues in an existing directory.

    Raises:
        FileExistsError: `path` is a file, a non-empty directory that is not a
            run, or (without `resume`) already a run.
        FileNotFoundError: `resume`, but `path` holds no run.
        NotADirectoryError: a parent of `path` is a file.
        PermissionError: `path` or its parent cannot be written.
    """
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise FileExistsError(f"--output {path} is an existing file; give the path of a new or "
                              "empty directory (it is created).")
    if resume:
        if not path.exists():
            raise FileNotFoundError(f"--resume: {path} does not exist, so there is no {kind} to "
                                    "continue. Run without --resume to start one.")
        if not (path / marker).is_file():
            raise FileNotFoundError(f"--resume: {path} holds no {kind} (no {marker}). Run "
                                    "without --resume to start one.")
    elif path.is_dir():
        if (path / marker).exists():
            raise FileExistsError(f"{path} already holds a {kind}. Pass --resume to continue "
                                  "it, or choose another --output.")
        try:
            entries = sorted(p.name for p in path.iterdir())
        except OSError as error:
            raise PermissionError(f"Cannot read --output {path}: {error.strerror}.") from None
        if entries:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise FileExistsError(
                f"--output {path} is a non-empty directory that holds no bnas-tf run ({shown}); "
                "give a new or empty directory, so that nothing of yours is overwritten.")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise NotADirectoryError(f"Cannot create --output {path}: {existing} is a file, not a "
                                 "directory.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"Cannot write --output {path}: no permission to write in "
                              f"{existing}.")
    return path


class RunDirectory:
    """Create a run directory; on failure, remove what this run created in it.

    A directory that did not exist is removed with everything in it (and the
    parents this run created); in a directory that existed (an empty one, or
    the run being resumed) only the files and folders that were not there
    before are removed, unless `keep` is set (a resumed run keeps what it
    adds: its finished epochs). An interruption (`KeyboardInterrupt`) keeps
    everything when `keep_on_interrupt` is set (a search resumes from it), and
    so does any other failure for which `keep_on_error(exception)` is true
    (a crash after a stored checkpoint: `--resume` continues from it).

    Example:
        >>> with RunDirectory("RUN"):
        ...     run()          # raises: RUN is gone
    """

    def __init__(self, path: str | os.PathLike, *, keep: bool = False,
                 keep_on_interrupt: bool = False,
                 keep_on_error: Callable[[BaseException], bool] | None = None):
        self.path = Path(path)
        self.keep, self.keep_on_interrupt = keep, keep_on_interrupt
        self.keep_on_error = keep_on_error
        self._created: Path | None = None
        self._before: set[str] = set()

    def __enter__(self) -> Path:
        missing = [p for p in (self.path, *self.path.parents) if not os.path.lexists(p)]
        self._created = missing[-1] if missing else None
        if self._created is None:
            self._before = {p.name for p in self.path.iterdir()}
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise type(error)(f"Cannot create --output {self.path}: "
                              f"{error.strerror or error}.") from None
        return self.path

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None or self.keep:
            return False
        if issubclass(exc_type, KeyboardInterrupt) and self.keep_on_interrupt:
            return False
        if self.keep_on_error is not None and self.keep_on_error(exc):
            return False
        self.remove()
        return False

    def remove(self) -> None:
        """Remove what this run created (see the class docstring)."""
        if self._created is not None:
            shutil.rmtree(self._created, ignore_errors=True)
            return
        if not self.path.is_dir():
            return
        for entry in self.path.iterdir():
            if entry.name not in self._before:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)


def keep_after_a_checkpoint(checkpoint_dir: str | os.PathLike) -> Callable[[BaseException], bool]:
    """`RunDirectory(keep_on_error=...)` of a resumable run: keep it after a crash once a
    checkpoint is stored in `checkpoint_dir` (any depth), so `--resume` continues from it;
    a diverged run (`NonFiniteError`) is removed all the same.

    Example:
        >>> with RunDirectory("RUN", keep_on_error=keep_after_a_checkpoint("RUN/checkpoints")):
        ...     run()          # fails after an epoch: RUN keeps it
    """
    def keep(error: BaseException) -> bool:
        if isinstance(error, NonFiniteError):
            return False
        root = Path(checkpoint_dir)
        return root.is_dir() and any(root.rglob("checkpoint"))
    return keep
