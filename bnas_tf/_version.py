"""`bnas-tf --version`: the versions of bnas-tf and of the stack it runs on, from metadata.

Example:
    >>> version_text()
    'bnas-tf 0.1.0 (tensorflow 2.21.0, tf-keras 2.21.0, larq 0.14.0, larq-compute-engine 0.16.0)'
"""

from __future__ import annotations

import argparse
from importlib.metadata import PackageNotFoundError, version

__all__ = ["VersionAction", "version_text"]

STACK = ("tensorflow", "tf-keras", "larq", "larq-compute-engine")
"""The packages whose versions `--version` prints beside bnas-tf's."""


def _installed(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def version_text() -> str:
    """`bnas-tf X (tensorflow X, tf-keras X, larq X, larq-compute-engine X)`."""
    import bnas_tf

    stack = ", ".join(f"{name} {_installed(name)}" for name in STACK)
    return f"bnas-tf {bnas_tf.__version__} ({stack})"


class VersionAction(argparse.Action):
    """`--version`: one unwrapped line on stdout, then exit 0 (argparse's own wraps it)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()
