"""The ``qdb`` command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from backends.errors import QuantumDBError

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
    init = commands.add_parser("init", help="create or upgrade the registry schema")
    init.add_argument(
        "--url", help="database URL (default: QDB_DATABASE_URL or ./quantum_db.sqlite)"
    )
    datasets = commands.add_parser("datasets", help="list stored datasets")
    datasets.add_argument(
        "--url", help="database URL (default: QDB_DATABASE_URL or ./quantum_db.sqlite)"
    )
    commands.add_parser("backends", help="list backends with their capabilities and prices")
    estimate = commands.add_parser(
        "estimate", help="cost plan of a training configuration, before anything runs"
    )
    estimate.add_argument("--qubits", type=int, default=4)
    estimate.add_argument("--layers", type=int, default=2)
    estimate.add_argument("--shots", type=int, default=1000)
    estimate.add_argument("--epochs", type=int, default=20)
    estimate.add_argument("--samples", type=int, default=120, help="training samples per epoch")
    estimate.add_argument("--batch-size", type=int, default=16)
    estimate.add_argument(
        "--error-mitigation",
        choices=("on", "off", "default"),
        default="default",
        help="IonQ error mitigation (default: on from 500 shots, as IonQ does)",
    )
    demo = commands.add_parser(
        "demo", help="the main job: store a dataset, train a hybrid classifier, register it"
    )
    demo.add_argument(
        "--url", help="database URL (default: QDB_DATABASE_URL or ./quantum_db.sqlite)"
    )
    demo.add_argument("--budget", type=float, default=5.0, help="USD the demo may spend")
    tour = commands.add_parser("tour", help="a tour of the built-in simulator")
    tour.add_argument("--qubits", type=int, default=6, help="width of the demo circuit (2-20)")
    tour.add_argument("--layers", type=int, default=3, help="variational layers (1-10)")
    tour.add_argument("--seed", type=int, default=7, help="seed for weights, data and shots")
    return parser


async def _init(url: str | None) -> int:
    from quantum_db.registry import Registry, redact_url, upgrade
    from quantum_db.settings import Settings

    target = url or Settings().resolved_database_url()
    registry = Registry(target)
    try:
        revision = await upgrade(registry)
    finally:
        await registry.aclose()
    print(f"{redact_url(target)}: schema at revision {revision}")
    return 0


async def _datasets(url: str | None) -> int:
    from quantum_db import QuantumDatabase

    async with QuantumDatabase(url).connect() as db:
        infos = await db.list_datasets()
    if not infos:
        print("no datasets stored")
        return 0
    print(f"{'name':<24} {'version':>7} {'samples':>9} {'dim':>5} {'labels':<10} created")
    for i in infos:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(i.created_at))
        print(
            f"{i.name:<24} {i.version:>7} {i.n_samples:>9} {i.dim:>5} {i.label_kind:<10} {created}"
        )
    return 0


def _backends() -> int:
    from quantum_db.settings import Settings

    from .backend_report import catalogue, describe_price

    entries = catalogue(ionq_configured=Settings().ionq_api_key is not None)
    print(f"{'backend':<18} {'qubits':>6}  {'modes':<12} {'status':<26} price")
    for e in entries:
        price = describe_price(e.price)
        print(f"{e.name:<18} {e.max_qubits:>6}  {e.modes:<12} {e.status:<26} {price}")
    return 0


def _estimate(args: argparse.Namespace) -> int:
    from .backend_report import estimate_lines

    for name in ("qubits", "layers", "shots", "epochs", "samples", "batch_size"):
        if getattr(args, name) < 1:
            print(f"qdb estimate: --{name.replace('_', '-')} must be positive", file=sys.stderr)
            return 2
    mitigation = {"on": True, "off": False, "default": None}[args.error_mitigation]
    for line in estimate_lines(
        qubits=args.qubits,
        layers=args.layers,
        shots=args.shots,
        epochs=args.epochs,
        samples=args.samples,
        batch_size=args.batch_size,
        error_mitigation=mitigation,
    ):
        print(line)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except QuantumDBError as exc:
        print(f"qdb {args.command}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `qdb estimate | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "backends":
        return _backends()
    if args.command == "estimate":
        return _estimate(args)
    if args.command == "init":
        return asyncio.run(_init(args.url))
    if args.command == "datasets":
        return asyncio.run(_datasets(args.url))
    if args.command == "demo":
        from .training_demo import run_training_demo

        result = asyncio.run(run_training_demo(args.url, budget_usd=args.budget))
        return 0 if result.test_accuracy >= 0.9 else 1
    if args.command == "tour":
        if not 2 <= args.qubits <= 20 or not 1 <= args.layers <= 10:
            print("qdb tour: --qubits must be 2..20 and --layers 1..10", file=sys.stderr)
            return 2
        return asyncio.run(run_demo(args.qubits, args.layers, args.seed))
    return 2  # pragma: no cover - argparse enforces a command


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
