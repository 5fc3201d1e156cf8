"""``qdb demo`` and ``qdb tour``: train a model end to end, or tour the simulator."""

from __future__ import annotations

import asyncio
import sys
from enum import StrEnum
from typing import Annotated

import typer

from .common import UrlOption, UsageProblem, make_database_folder, resolve_url

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command(
        "demo", help="the main job: store a dataset, train a hybrid classifier, register it"
    )(demo)
    app.command("tour", help="a tour of the built-in simulator")(tour)


class DemoKind(StrEnum):
    classifier = "classifier"
    hybrid = "hybrid"
    qgan = "qgan"


def demo(
    kind: Annotated[
        DemoKind,
        typer.Argument(
            help="classifier, hybrid (Linear -> TorchQuantumLayer -> Linear) or qgan "
            "(a Born machine learns a log-normal distribution)"
        ),
    ] = DemoKind.classifier,
    url: UrlOption = None,
    budget: Annotated[
        float,
        typer.Option(
            help="USD the demo may spend: every circuit evaluation reserves its cost first"
        ),
    ] = 5.0,
    backend: Annotated[
        str | None,
        typer.Option(
            help="backend to train on (default: the cheapest that fits the budget)",
            show_default=False,
        ),
    ] = None,
    hybrid: Annotated[
        bool,
        typer.Option(
            "--hybrid", help="train a torch model, Linear -> TorchQuantumLayer -> Linear, instead"
        ),
    ] = False,
    monitors: Annotated[
        bool,
        typer.Option(
            help="quantum metrics every 10 steps, system metrics every 5 s and the training and "
            "budget alerts"
        ),
    ] = True,
) -> int:
    from ..training_demo import check_demo_options, run_training_demo

    chosen = resolve_url(url)
    # Every option is checked before a folder is made or the database opened.
    asyncio.run(check_demo_options(budget_usd=budget, backend=backend))
    make_database_folder(chosen)
    if kind is DemoKind.qgan:
        from ..qgan_demo import run_qgan_demo

        qgan = asyncio.run(run_qgan_demo(chosen))
        return 0 if qgan.relative_entropy < qgan.initial_relative_entropy else 1
    if hybrid or kind is DemoKind.hybrid:
        from ..hybrid_demo import run_hybrid_demo

        result = asyncio.run(
            run_hybrid_demo(chosen, budget_usd=budget, backend=backend, monitors=monitors)
        )
        if result.test_accuracy is None:
            print(
                f"qdb demo: stopped by the budget after spending ${result.cost_usd:.4f} "
                f"of ${budget:g}",
                file=sys.stderr,
            )
            return 1
        return 0 if result.test_accuracy >= 0.9 else 1
    trained = asyncio.run(
        run_training_demo(chosen, budget_usd=budget, backend=backend, monitors=monitors)
    )
    if trained.test_accuracy is None:
        print(
            f"qdb demo: stopped by the budget after spending ${trained.cost_usd:.4f} "
            f"of ${trained.budget_usd:g}",
            file=sys.stderr,
        )
        return 1
    return 0 if trained.test_accuracy >= 0.9 else 1


def tour(
    qubits: Annotated[int, typer.Option(help="width of the demo circuit (2-20)")] = 6,
    layers: Annotated[int, typer.Option(help="variational layers (1-10)")] = 3,
    seed: Annotated[int, typer.Option(help="seed for weights, data and shots")] = 7,
) -> int:
    from ..demo import run_demo

    if not 2 <= qubits <= 20 or not 1 <= layers <= 10:
        raise UsageProblem("--qubits must be 2..20 and --layers 1..10")
    if not 0 <= seed < 2**63:
        raise UsageProblem("--seed must be an integer from 0 to 2**63 - 1")
    return asyncio.run(run_demo(qubits, layers, seed))
