"""Keep TensorFlow's C++ start-up lines off stderr (run by the command lines before TensorFlow).

Importing TensorFlow prints lines that do not concern a user of a CPU
machine, and every `bnas-tf` command printed them before its own output:

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 ... port.cc:153] oneDNN custom operations are on. ...
    I0000 ... cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
    I0000 ... cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use ...
    E0000 ... cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: ...

`TF_CPP_MIN_LOG_LEVEL` does not hide most of them: absl prints everything
logged before its initialization, the oneDNN and CUDA-stub notices among them,
and the CUDA probe (first listing of the devices) logs an error. So
`import_tensorflow` imports TensorFlow and lists the devices with file
descriptor 2 redirected into a temporary file, then writes back every line a
user should see:

* `TF_CPP_MIN_LOG_LEVEL` not set (the default): bnas_tf sets it to 2 for the
  rest of the process (C++ errors only) and drops the start-up lines below
  that level, the absl notice and the CUDA probing errors of a machine without
  a GPU driver. Python warnings, tracebacks and other errors pass through.
* `TF_CPP_MIN_LOG_LEVEL` set by the user: its level is applied to the start-up
  lines too (TensorFlow prints them before reading it); nothing else is
  dropped, so `TF_CPP_MIN_LOG_LEVEL=0` shows everything.

The dropped lines are kept in `hidden_lines()`; `bnas-tf --verbose` prints
them.

Only the command-line entry points call `import_tensorflow` (`bnas_tf.cli`,
`export/to_tflite.py`), before anything imports TensorFlow: `import bnas_tf`
in a user's program leaves stderr, the logging level and the devices alone.

Example:
    >>> from bnas_tf import _startup       # imports no TensorFlow
    >>> _startup.import_tensorflow()       # now TensorFlow, quietly
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

__all__ = ["import_tensorflow", "hidden_lines", "is_noise"]

_RECORD = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ ([\w.-]+):\d+\] (.*)$")
_LEVELS = {"I": 0, "W": 1, "E": 2, "F": 3}
_ABSL_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_CUDA_PROBE = re.compile(
    r"^cuda_(platform|driver|diagnostics|executor|dnn|fft|blas)\.cc$|^cudart_stub\.cc$")
_CUDA_MESSAGE = re.compile(r"cuInit|Unable to register cu(DNN|FFT|BLAS) factory|"
                           r"[Cc]ould not find cuda drivers|TF-TRT Warning")
_PYTHON_LINE = re.compile(r"^(Traceback |\S.*:\d+: \w*(Warning|Error):|\s)")

_hidden: list[str] = []


def hidden_lines() -> list[str]:
    """The start-up lines `import_tensorflow` kept off stderr (for `--verbose`)."""
    return list(_hidden)


def _user_level() -> int | None:
    value = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return 0  # TensorFlow ignores a value it cannot parse


def is_noise(line: str, level: int | None) -> bool:
    """Whether a start-up `line` stays hidden at `level` (None: bnas_tf's default)."""
    effective = 2 if level is None else level
    if line.strip() == _ABSL_NOTICE:
        return effective >= 1
    record = _RECORD.match(line)
    if record is None:
        return False
    severity, source, message = record.groups()
    if _LEVELS[severity] < effective:
        return True
    return level is None and severity != "F" and bool(
        _CUDA_PROBE.match(source) or _CUDA_MESSAGE.search(message))


def _filter(text: str, level: int | None) -> tuple[str, list[str]]:
    """Split captured stderr into what is shown and what is hidden.

    A line that is not a log record and follows a hidden record continues it
    (e.g. the second line of the CPU-feature notice), unless it looks like
    Python output (a warning, a traceback, an indented line).
    """
    shown, hidden, continuing = [], [], False
    for line in text.splitlines(keepends=True):
        if is_noise(line, level):
            hidden.append(line)
            continuing = _RECORD.match(line) is not None
        elif (continuing and _RECORD.match(line) is None and line.strip()
              and not _PYTHON_LINE.match(line)):
            hidden.append(line)
        else:
            shown.append(line)
            continuing = False
    return "".join(shown), hidden


def import_tensorflow() -> None:
    """Import TensorFlow and list its devices, keeping the start-up noise off stderr.

    Does nothing when TensorFlow is already imported (its lines are printed),
    or when stderr has no file descriptor to redirect.
    """
    if "tensorflow" in sys.modules:
        return
    level = _user_level()
    if level is None:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (AttributeError, OSError, ValueError):  # no fd 2 (some embedded interpreters)
        import tensorflow  # noqa: F401
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # the CUDA probe logs here, once per process
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            shown, hidden = _filter(capture.read().decode("utf-8", "replace"), level)
            _hidden.extend(hidden)
            if shown:
                sys.stderr.write(shown)
                sys.stderr.flush()
