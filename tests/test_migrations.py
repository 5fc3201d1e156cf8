"""Alembic revisions: one head, upgrade from empty on both dialects, models == migrated schema."""

from __future__ import annotations

import json

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from quantum_db import QuantumDatabase, SchemaError, SchemaOutOfDateError
from quantum_db.registry import Registry, check_schema, head_revision, upgrade
from quantum_db.registry.migrate import alembic_config
from quantum_db.registry.schema import Base


def test_single_head() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1
    assert head_revision() == script.get_heads()[0]


async def test_upgrade_from_empty_and_models_equal_schema(database_url: str) -> None:
    registry = Registry(database_url)
    try:
        assert await upgrade(registry) == head_revision()
        async with registry.engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))

            def diff(c: object) -> list[object]:
                return compare_metadata(
                    MigrationContext.configure(c, opts={"compare_type": True}),  # type: ignore[arg-type]
                    Base.metadata,
                )

            differences = await conn.run_sync(diff)
        assert set(Base.metadata.tables) <= tables
        assert differences == []
    finally:
        await registry.aclose()


async def test_connect_upgrades_an_empty_database(database_url: str) -> None:
    async with QuantumDatabase(database_url).connect() as db:
        assert await db.list_datasets() == []
    registry = Registry(database_url)
    try:
        assert await check_schema(registry, upgrade_empty=False) == head_revision()
    finally:
        await registry.aclose()


async def _set_revision(url: str, revision: str) -> None:
    registry = Registry(url)
    try:
        async with registry.engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    finally:
        await registry.aclose()


async def test_tables_without_a_version_are_refused(database_url: str) -> None:
    registry = Registry(database_url)
    await upgrade(registry)
    async with registry.engine.begin() as conn:
        await conn.execute(text("DELETE FROM alembic_version"))
    await registry.aclose()
    with pytest.raises(SchemaError, match="no quantum-db schema version"):
        async with QuantumDatabase(database_url).connect():
            pass


async def test_an_unknown_newer_revision_is_refused(database_url: str) -> None:
    registry = Registry(database_url)
    await upgrade(registry)
    await registry.aclose()
    await _set_revision(database_url, "9999_from_the_future")
    with pytest.raises(SchemaError, match="newer version"):
        async with QuantumDatabase(database_url).connect():
            pass


async def test_a_foreign_database_is_not_touched(database_url: str) -> None:
    registry = Registry(database_url)
    async with registry.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE someone_elses (id INTEGER PRIMARY KEY)"))
    await registry.aclose()
    with pytest.raises(SchemaError, match="no quantum-db schema"):
        async with QuantumDatabase(database_url).connect():
            pass
    registry = Registry(database_url)
    try:
        async with registry.engine.connect() as conn:
            tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
        assert tables == ["someone_elses"]
    finally:
        await registry.aclose()


async def test_an_empty_database_without_auto_upgrade_asks_for_qdb_init(tmp_path: object) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/empty.sqlite"
    with pytest.raises(SchemaOutOfDateError, match="qdb init"):
        async with QuantumDatabase(url, upgrade_empty=False).connect():
            pass


async def test_upgrading_a_0001_database_keeps_its_data(database_url: str) -> None:
    """0001 -> head on a database that holds data: rows survive, ids move to the JSON list,
    and the widened columns take a 64-bit value on both dialects."""
    registry = Registry(database_url)
    try:
        assert await upgrade(registry, "0001") == "0001"
        async with registry.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO runs (id, status, config, seed, created_at, updated_at) "
                    "VALUES ('r1', 'completed', '{}', 7, 1.0, 1.0)"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO metrics (run_id, key, step, value, timestamp) "
                    "VALUES ('r1', 'loss', 3, 0.5, 2.0)"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO jobs (id, run_id, backend, circuit_hash, shots, batch_size, "
                    "status, provider_job_id, estimated_cost, created_at, updated_at) VALUES "
                    "('j1', 'r1', 'ionq-aria', 'h', 100, 1, 'completed', 'a,b', 1.5, 1.0, 1.0)"
                )
            )
        assert await upgrade(registry) == head_revision()
        async with registry.engine.begin() as conn:
            assert (await conn.execute(text("SELECT seed FROM runs"))).scalar_one() == 7
            assert (await conn.execute(text("SELECT step, value FROM metrics"))).one() == (3, 0.5)
            ids = (await conn.execute(text("SELECT provider_job_ids FROM jobs"))).scalar_one()
            assert (json.loads(ids) if isinstance(ids, str) else ids) == ["a", "b"]
            await conn.execute(
                text(
                    "INSERT INTO metrics (run_id, key, step, value, timestamp) "
                    "VALUES ('r1', 'loss', :step, 0.25, 3.0)"
                ),
                {"step": 2**63 - 1},
            )
            steps = (await conn.execute(text("SELECT step FROM metrics ORDER BY step"))).scalars()
            assert list(steps) == [3, 2**63 - 1]
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        assert {"leases", "dataset_writes"} <= tables
    finally:
        await registry.aclose()
