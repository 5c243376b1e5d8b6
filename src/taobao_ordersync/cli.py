"""The ``taobao-ordersync`` command line (placeholder until the sync engine lands)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from taobao_ordersync import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taobao-ordersync",
        description="Keep a complete copy of Taobao sellers' orders.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    build_parser().parse_args(argv)
    return 0
