"""The ``qdb`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
import traceback
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from backends.errors import QuantumDBError

from .demo import run_demo

__all__ = ["main"]

#: How much of a run's reason fits a line of ``qdb runs``.
_REASON_WIDTH = 48


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
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks and debug logs on errors"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    init = commands.add_parser("init", help="create or upgrade the registry schema")
    init.add_argument(
        "--url", help="database URL (default: QDB_DATABASE_URL or ./quantum_db.sqlite)"
    )
    datasets = commands.add_parser("datasets", help="list stored datasets")
    datasets.add_argument(
        "--url", help="database URL (default: QDB_DATABASE_URL or ./quantum_db.sqlite)"
    )
    runs = commands.add_parser(
        "runs",
        help="list training runs (runs whose process is gone are marked interrupted first)",
    )
    runs.add_argument(
        "--url", help="database URL (default: QDB_DATABASE_URL or ./quantum_db.sqlite)"
    )
    runs.add_argument(
        "--status",
        help="only runs in this status: running, finished, stopped, failed or interrupted",
    )
    health = commands.add_parser(
        "health", help="check that the database is reachable and its schema up to date"
    )
    health.add_argument(
        "--url", help="database URL (default: QDB_DATABASE_URL or ./quantum_db.sqlite)"
    )
    gc = commands.add_parser(
        "gc",
        help="reclaim the reservations, jobs and dataset writes of processes that are gone",
    )
    gc.add_argument("--url", help="database URL (default: QDB_DATABASE_URL or ./quantum_db.sqlite)")
    gc.add_argument(
        "--cancel-running",
        action="store_true",
        help="also ask providers to cancel such jobs still queued or running (they stay "
        "reserved until the provider reports them ended)",
    )
    commands.add_parser("backends", help="list backends with their capabilities and prices")
    estimate = commands.add_parser(
        "estimate", help="cost plan of a training configuration, before anything runs"
    )
    estimate.add_argument("--qubits", type=int, default=4)
    estimate.add_argument("--layers", type=int, default=2)
    shots = estimate.add_mutually_exclusive_group()
    shots.add_argument("--shots", type=int, default=1000, help="shots per circuit (default 1000)")
    shots.add_argument(
        "--exact", action="store_true", help="exact expectations (backends with an exact mode)"
    )
    estimate.add_argument("--epochs", type=int, default=20)
    estimate.add_argument("--samples", type=int, default=120, help="training samples per epoch")
    estimate.add_argument("--batch-size", type=int, default=16)
    estimate.add_argument(
        "--validation-samples",
        type=int,
        default=0,
        help="validation samples, each evaluated once per epoch (default 0)",
    )
    estimate.add_argument(
        "--error-mitigation",
        choices=("on", "off", "default"),
        default="default",
        help="IonQ error mitigation (default: on from 500 shots, as IonQ does)",
    )
    estimate.add_argument(
        "--qgan",
        action="store_true",
        help="price a Born-machine QGAN instead: H then --layers RY/CZ reps on --qubits, "
        "--steps steps per epoch",
    )
    estimate.add_argument("--steps", type=int, default=1, help="QGAN steps per epoch (default 1)")
    estimate.add_argument(
        "--g-steps", type=int, default=1, help="QGAN generator updates per step (default 1)"
    )
    demo = commands.add_parser(
        "demo", help="the main job: store a dataset, train a hybrid classifier, register it"
    )
    demo.add_argument(
        "kind",
        nargs="?",
        choices=("classifier", "hybrid", "qgan"),
        default="classifier",
        help="classifier (default), hybrid (Linear -> TorchQuantumLayer -> Linear) or qgan "
        "(a Born machine learns a log-normal distribution)",
    )
    demo.add_argument(
        "--url", help="database URL (default: QDB_DATABASE_URL or ./quantum_db.sqlite)"
    )
    demo.add_argument(
        "--budget",
        type=float,
        default=5.0,
        help="USD the demo may spend: every circuit evaluation reserves its cost first",
    )
    demo.add_argument(
        "--backend", help="backend to train on (default: the cheapest that fits the budget)"
    )
    demo.add_argument(
        "--hybrid",
        action="store_true",
        help="train a torch model, Linear -> TorchQuantumLayer -> Linear, instead",
    )
    tour = commands.add_parser("tour", help="a tour of the built-in simulator")
    tour.add_argument("--qubits", type=int, default=6, help="width of the demo circuit (2-20)")
    tour.add_argument("--layers", type=int, default=3, help="variational layers (1-10)")
    tour.add_argument("--seed", type=int, default=7, help="seed for weights, data and shots")
    return parser


def _database_url(url: str | None) -> str:
    from quantum_db.settings import Settings

    return url or Settings().resolved_database_url()


def _make_database_folder(url: str | None) -> None:
    """Create the folder of a SQLite database: only commands that write do this."""
    from quantum_db.errors import ConfigurationError
    from quantum_db.registry import async_database_url, sqlite_path

    path = sqlite_path(async_database_url(_database_url(url)))
    if path is None or path.parent.is_dir():
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create the folder {path.parent} for the database {path.name}: "
            f"{exc.strerror or exc}"
        ) from exc


async def _init(url: str | None) -> int:
    from quantum_db.registry import Registry, redact_url, upgrade

    _make_database_folder(url)
    target = _database_url(url)
    registry = Registry(target)
    try:
        revision = await upgrade(registry)
    finally:
        await registry.aclose()
    print(f"{redact_url(target)}: schema at revision {revision}")
    return 0


async def _datasets(url: str | None) -> int:
    from quantum_db import QuantumDatabase

    # Reading never creates: a mistyped --url must not leave a new empty database behind.
    async with QuantumDatabase(url, create=False).connect() as db:
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


async def _runs(url: str | None, status: str | None) -> int:
    from quantum_db import RUN_STATUSES, QuantumDatabase

    if status is not None and status not in RUN_STATUSES:
        print(
            f"qdb runs: --status must be one of {', '.join(RUN_STATUSES)}, got {status!r}",
            file=sys.stderr,
        )
        return 2
    # Like `qdb datasets`: never creates a database. Marking the runs of dead processes
    # interrupted is the one write, so that the table tells the truth.
    async with QuantumDatabase(url, create=False).connect() as db:
        await db.runs.detect_interrupted()
        infos = await db.runs.list(status)
        last = await db.runs.last_steps()
    if not infos:
        print("no runs stored" if status is None else f"no {status} runs")
        return 0
    print(
        f"{'run':<28} {'status':<11} {'reason':<{_REASON_WIDTH}} {'backend':<16} "
        f"{'last step':>9} created"
    )
    for i in infos:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(i.created_at))
        step = last.get(i.id)
        reason = _shorten(i.reason or "-", _REASON_WIDTH)
        print(
            f"{i.id:<28} {i.status:<11} {reason:<{_REASON_WIDTH}} {i.backend or '-':<16} "
            f"{'-' if step is None else step:>9} {created}"
        )
    return 0


def _shorten(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters (ending in "...")."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


async def _gc(url: str | None, cancel_running: bool) -> int:
    from quantum_db import QuantumDatabase
    from quantum_db.settings import Settings
    from quantum_db.sweeper import sweep

    # The sweep below is the one that runs (and reports); it never creates a database.
    settings = Settings(sweep_on_connect=False)
    async with QuantumDatabase(url, settings=settings, create=False).connect() as db:
        summary = await sweep(
            db.registry,
            backends=db.backend_manager,
            vectors=db.vector_store,
            unknown_expiry_s=settings.unknown_job_expiry_s,
            cancel_running=cancel_running,
        )
    print(f"qdb gc: {summary.describe()}")
    return 0


async def _health(url: str | None) -> int:
    from quantum_db.registry import Registry, check_schema, redact_url
    from quantum_db.settings import Settings

    settings = Settings()
    target = url or settings.resolved_database_url()
    registry = Registry(target, create=False)
    try:
        revision = await check_schema(registry, upgrade_empty=False)
    finally:
        await registry.aclose()
    store: str = settings.vector_store
    if store == "pinecone":
        from quantum_db.vectorstores.pinecone import PineconeVectorStore

        async with PineconeVectorStore(settings) as vectors:
            store = f"pinecone index {vectors.index_name or vectors.index_host} (dim {vectors.dim})"
    print(f"{redact_url(target)}: schema at revision {revision} (up to date); vector store {store}")
    return 0


def _backends() -> int:
    from quantum_db.settings import Settings

    from .backend_report import catalogue, catalogue_lines

    for line in catalogue_lines(catalogue(ionq_configured=Settings().ionq_api_key is not None)):
        print(line)
    return 0


def _estimate(args: argparse.Namespace) -> int:
    from quantum_db.settings import Settings

    from .backend_report import estimate_lines

    for name in ("qubits", "layers", "shots", "epochs", "samples", "batch_size"):
        if getattr(args, name) < 1:
            print(f"qdb estimate: --{name.replace('_', '-')} must be positive", file=sys.stderr)
            return 2
    if args.validation_samples < 0:
        print("qdb estimate: --validation-samples must be 0 or more", file=sys.stderr)
        return 2
    # Bounds that keep the plan's circuit buildable in a moment: wider than any backend
    # (36 qubits at most) is already answered by "cannot run" at 64.
    for name, limit in (("qubits", 64), ("layers", 1000)):
        if getattr(args, name) > limit:
            print(f"qdb estimate: --{name} must be at most {limit}", file=sys.stderr)
            return 2
    mitigation = {"on": True, "off": False, "default": None}[args.error_mitigation]
    if args.qgan:
        from .backend_report import qgan_estimate_lines

        if args.exact:
            print(
                "qdb estimate: --qgan prices measured distributions: give --shots", file=sys.stderr
            )
            return 2
        for name in ("steps", "g_steps"):
            if getattr(args, name) < 1:
                print(f"qdb estimate: --{name.replace('_', '-')} must be positive", file=sys.stderr)
                return 2
        for line in qgan_estimate_lines(
            qubits=args.qubits,
            reps=args.layers,
            shots=args.shots,
            epochs=args.epochs,
            steps_per_epoch=args.steps,
            g_steps=args.g_steps,
            error_mitigation=mitigation,
            ionq_configured=Settings().ionq_api_key is not None,
        ):
            print(line)
        return 0
    for line in estimate_lines(
        qubits=args.qubits,
        layers=args.layers,
        shots=None if args.exact else args.shots,
        epochs=args.epochs,
        samples=args.samples,
        batch_size=args.batch_size,
        validation_samples=args.validation_samples,
        error_mitigation=mitigation,
        ionq_configured=Settings().ionq_api_key is not None,
    ):
        print(line)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .training_demo import check_demo_options, run_training_demo

    # Every option is checked before a folder is made or the database opened.
    asyncio.run(check_demo_options(budget_usd=args.budget, backend=args.backend))
    _make_database_folder(args.url)
    if args.kind == "qgan":
        from .qgan_demo import run_qgan_demo

        qgan = asyncio.run(run_qgan_demo(args.url))
        return 0 if qgan.relative_entropy < qgan.initial_relative_entropy else 1
    if args.hybrid or args.kind == "hybrid":
        from .hybrid_demo import run_hybrid_demo

        hybrid = asyncio.run(
            run_hybrid_demo(args.url, budget_usd=args.budget, backend=args.backend)
        )
        if hybrid.test_accuracy is None:
            print(
                f"qdb demo: stopped by the budget after spending ${hybrid.cost_usd:.4f} "
                f"of ${args.budget:g}",
                file=sys.stderr,
            )
            return 1
        return 0 if hybrid.test_accuracy >= 0.9 else 1
    result = asyncio.run(run_training_demo(args.url, budget_usd=args.budget, backend=args.backend))
    if result.test_accuracy is None:
        print(
            f"qdb demo: stopped by the budget after spending ${result.cost_usd:.4f} "
            f"of ${result.budget_usd:g}",
            file=sys.stderr,
        )
        return 1
    return 0 if result.test_accuracy >= 0.9 else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.debug:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        for package in ("backends", "quantum_db", "quantum_ml"):
            logging.getLogger(package).setLevel(logging.DEBUG)
    else:
        # Retry attempts and sweep notes are for whoever debugs (--debug); the user gets
        # the command's output and, on failure, one line.
        logging.basicConfig(level=logging.ERROR, format="qdb: %(message)s")
    try:
        if getattr(args, "url", None) is not None and not args.url.strip():
            from quantum_db.errors import ConfigurationError

            raise ConfigurationError(
                "--url is empty: give a database URL, or leave --url out for the default"
            )
        return _dispatch(args)
    except QuantumDBError as exc:
        # One line for the user; the traceback is for whoever debugs (--debug).
        if args.debug:
            traceback.print_exc()
        print(f"qdb {args.command}: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qdb {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `qdb estimate | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines) or type(exc).__name__


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "backends":
        return _backends()
    if args.command == "estimate":
        return _estimate(args)
    if args.command == "init":
        return asyncio.run(_init(args.url))
    if args.command == "datasets":
        return asyncio.run(_datasets(args.url))
    if args.command == "runs":
        return asyncio.run(_runs(args.url, args.status))
    if args.command == "health":
        return asyncio.run(_health(args.url))
    if args.command == "gc":
        return asyncio.run(_gc(args.url, args.cancel_running))
    if args.command == "demo":
        return _demo(args)
    if args.command == "tour":
        if not 2 <= args.qubits <= 20 or not 1 <= args.layers <= 10:
            print("qdb tour: --qubits must be 2..20 and --layers 1..10", file=sys.stderr)
            return 2
        if not 0 <= args.seed < 2**63:
            print("qdb tour: --seed must be an integer from 0 to 2**63 - 1", file=sys.stderr)
            return 2
        return asyncio.run(run_demo(args.qubits, args.layers, args.seed))
    return 2  # pragma: no cover - argparse enforces a command


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
