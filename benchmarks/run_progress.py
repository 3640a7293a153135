"""Resumable benchmark runs: what a run has finished, kept in RUN_DIR/progress.json.

A benchmark that takes hours on 2 cores records every finished step (a
search, a trained network) as soon as it finishes. Started again with the same
`--output` and the same settings, it takes the finished steps from the file
and runs only the rest; with other settings it stops before doing anything and
names the settings that differ. The file is rewritten atomically
(`bnas_tf._io.atomic_write_text`): a kill leaves the previous version.

Example:
    >>> progress = Progress.open(Path("RUN"), {"seed": 0, "epochs": [2, 2]})
    >>> progress.get("row random 0") is None
    True
    >>> progress.put("row random 0", {"stage2_acc": 0.41})
    >>> Progress.open(Path("RUN"), {"seed": 0, "epochs": [2, 2]}).get("row random 0")
    {'stage2_acc': 0.41}
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bnas_tf._io import atomic_write_text

PROGRESS_NAME = "progress.json"


class SettingsMismatchError(ValueError):
    """The run directory holds a run with other settings than the ones given."""


def _normalized(settings: dict) -> dict:
    """`settings` as JSON would give them back (tuples become lists)."""
    return json.loads(json.dumps(settings))


class Progress:
    """The finished steps of one run, by name, and the run's seconds so far."""

    def __init__(self, path: Path, settings: dict, steps: dict, seconds: float):
        self.path, self.settings, self.steps = path, settings, steps
        self._seconds_before, self._opened = seconds, time.time()

    @classmethod
    def open(cls, run_dir: Path, settings: dict) -> Progress:
        """The progress of the run in `run_dir`, or a new one; `settings` must match it.

        Raises:
            SettingsMismatchError: `run_dir` holds a run with other settings, or
                a finished run written before runs recorded their progress.
        """
        path = Path(run_dir) / PROGRESS_NAME
        settings = _normalized(settings)
        if not path.is_file():
            if (Path(run_dir) / "results.json").is_file():
                raise SettingsMismatchError(
                    f"{run_dir} holds a finished run without {PROGRESS_NAME}; print it with "
                    "--report, or pass another --output")
            progress = cls(path, settings, {}, 0.0)
            progress.save()  # the settings hold from the start, before any step finished
            return progress
        try:
            stored = read_progress(run_dir)
            stored_settings, steps, seconds = (stored["settings"], stored["steps"],
                                               stored["seconds"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise SettingsMismatchError(
                f"{path} is not a progress file this script wrote ({type(error).__name__}: "
                f"{error}); pass another --output") from None
        differ = sorted(k for k in set(settings) | set(stored_settings)
                        if settings.get(k) != stored_settings.get(k))
        if differ:
            listed = "; ".join(f"{k}: {stored_settings.get(k)!r} there, {settings.get(k)!r} now"
                               for k in differ)
            raise SettingsMismatchError(
                f"{run_dir} holds a run with other settings ({listed}). Rerun with that run's "
                "settings to continue it, or pass another --output")
        return cls(path, settings, steps, seconds)

    def get(self, name: str):
        """The stored result of step `name`, or None when it has not finished."""
        return self.steps.get(name)

    def put(self, name: str, result) -> None:
        """Record step `name` as finished with `result` (JSON data) and rewrite the file."""
        self.steps[name] = _normalized(result)
        self.save()

    def seconds(self) -> float:
        """Wall-clock seconds of the run so far, over every time it was started."""
        return self._seconds_before + time.time() - self._opened

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(
            {"settings": self.settings, "steps": self.steps, "seconds": self.seconds()},
            indent=2) + "\n")


def read_progress(run_dir: Path) -> dict:
    """`{"settings", "steps", "seconds"}` of the run in `run_dir`, to report it.

    Raises:
        FileNotFoundError: `run_dir` has no progress file.
        ValueError: the file is not one this module wrote.
    """
    path = Path(run_dir) / PROGRESS_NAME
    stored = json.loads(path.read_text())
    if not (isinstance(stored, dict) and isinstance(stored.get("settings"), dict)
            and isinstance(stored.get("steps"), dict)):
        raise ValueError(f"{path} holds no settings and steps")
    return {"settings": stored["settings"], "steps": stored["steps"],
            "seconds": float(stored.get("seconds", 0.0))}
