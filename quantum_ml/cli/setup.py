"""``qdb init``, ``qdb health``, ``qdb gc``: the database itself."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from .common import UrlOption, database_url, make_database_folder

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("init", help="create or upgrade the registry schema")(init)
    app.command("health", help="check that the database is reachable and its schema up to date")(
        health
    )
    app.command(
        "gc", help="reclaim the reservations, jobs and dataset writes of processes that are gone"
    )(gc)


def init(url: UrlOption = None) -> int:
    from quantum_db.registry import Registry, redact_url, upgrade

    make_database_folder(url)
    target = database_url(url)

    async def go() -> str:
        registry = Registry(target)
        try:
            return await upgrade(registry)
        finally:
            await registry.aclose()

    revision = asyncio.run(go())
    typer.echo(f"{redact_url(target)}: schema at revision {revision}")
    return 0


def health(url: UrlOption = None) -> int:
    from quantum_db.registry import Registry, check_schema, redact_url
    from quantum_db.settings import Settings

    settings = Settings()
    target = database_url(url)

    async def go() -> tuple[str, str]:
        registry = Registry(target, create=False)
        try:
            revision = await check_schema(registry, upgrade_empty=False)
        finally:
            await registry.aclose()
        store: str = settings.vector_store
        if store == "pinecone":
            from quantum_db.vectorstores.pinecone import PineconeVectorStore

            async with PineconeVectorStore(settings) as vectors:
                store = (
                    f"pinecone index {vectors.index_name or vectors.index_host} (dim {vectors.dim})"
                )
        return revision, store

    revision, store = asyncio.run(go())
    typer.echo(
        f"{redact_url(target)}: schema at revision {revision} (up to date); vector store {store}"
    )
    return 0


def gc(
    url: UrlOption = None,
    cancel_running: Annotated[
        bool,
        typer.Option(
            "--cancel-running",
            help="also ask providers to cancel such jobs still queued or running (they stay "
            "reserved until the provider reports them ended)",
        ),
    ] = False,
) -> int:
    from quantum_db import QuantumDatabase
    from quantum_db.settings import Settings
    from quantum_db.sweeper import sweep

    from .common import resolve_url

    async def go() -> str:
        # The sweep below is the one that runs (and reports); it never creates a database.
        settings = Settings(sweep_on_connect=False)
        db = QuantumDatabase(resolve_url(url), settings=settings, create=False)
        async with db.connect():
            summary = await sweep(
                db.registry,
                backends=db.backend_manager,
                vectors=db.vector_store,
                unknown_expiry_s=settings.unknown_job_expiry_s,
                cancel_running=cancel_running,
            )
        return summary.describe()

    typer.echo(f"qdb gc: {asyncio.run(go())}")
    return 0
