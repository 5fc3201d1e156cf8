"""The ``qdb`` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from .demo import run_demo

__all__ = ["main"]


def _version() -> str:
    try:
        return version("quantum-db")
    except PackageNotFoundError:  # pragma: no cover - running from a plain checkout
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qdb", description="quantum-db: hybrid quantum-classical machine learning as a service"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser("demo", help="run the built-in simulator demo")
    demo.add_argument("--qubits", type=int, default=6, help="width of the demo circuit (2-20)")
    demo.add_argument("--layers", type=int, default=3, help="variational layers (1-10)")
    demo.add_argument("--seed", type=int, default=7, help="seed for weights, data and shots")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        if not 2 <= args.qubits <= 20 or not 1 <= args.layers <= 10:
            print("qdb demo: --qubits must be 2..20 and --layers 1..10", file=sys.stderr)
            return 2
        return asyncio.run(run_demo(args.qubits, args.layers, args.seed))
    return 2  # pragma: no cover - argparse enforces a command


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
