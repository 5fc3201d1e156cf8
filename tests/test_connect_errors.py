"""The error boundary at connect: every bad URL or setting is one typed error, nothing written."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from quantum_db import QuantumDatabase
from quantum_db.errors import (
    ConfigurationError,
    QuantumDBError,
    RegistryUnavailableError,
    SchemaError,
    SchemaOutOfDateError,
)
from quantum_db.registry import Registry, async_database_url, head_revision, redact_url
from quantum_db.settings import Settings
from quantum_ml.cli import main

from .clitools import qdb

PASSWORD = "s3cret-Pa55word"
#: Nothing listens on port 1 of the loopback: the connection is refused at once.
UNREACHABLE = f"postgresql+asyncpg://postgres:{PASSWORD}@127.0.0.1:1/x"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the test alone, never from the machine's environment."""
    for name in list(os.environ):
        if name.startswith(("QDB_", "PINECONE_", "IONQ_")):
            monkeypatch.delenv(name)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (``None`` for folders)."""
    return {
        str(path.relative_to(folder)): None if path.is_dir() else path.read_bytes()
        for path in sorted(folder.rglob("*"))
    }


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def connect_error(url: str, **kwargs: object) -> QuantumDBError:
    with pytest.raises(QuantumDBError) as raised:
        async with QuantumDatabase(url, **kwargs).connect():  # type: ignore[arg-type]
            pass
    return raised.value


def connect_fails(url: str, **kwargs: object) -> QuantumDBError:
    """:func:`connect_error` for a test without an event loop (one that also runs ``main``)."""
    return asyncio.run(connect_error(url, **kwargs))


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``qdb ARGS`` in this process: from a test that runs no event loop (main runs one)."""
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line(err: str, command: str, *needles: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"qdb {command}: "), err
    for needle in needles:
        assert needle in lines[0], err
    assert "Traceback" not in err


# ---------------------------------------------------------------- an unreachable server


async def test_unreachable_postgres_is_registry_unavailable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    error = await connect_error(UNREACHABLE)
    assert isinstance(error, RegistryUnavailableError)
    message = str(error)
    assert message.startswith(
        "cannot reach the database server at postgresql+asyncpg://postgres:***@127.0.0.1:1/x"
    )
    assert "check that it is running" in message
    assert PASSWORD not in message + repr(error)
    assert PASSWORD not in caplog.text
    # The same through the pieces the CLI uses directly.
    registry = Registry(UNREACHABLE)
    try:
        from quantum_db.registry import upgrade

        with pytest.raises(RegistryUnavailableError) as raised:
            await upgrade(registry)
        assert PASSWORD not in str(raised.value) + repr(registry)
        with pytest.raises(RegistryUnavailableError, match="nothing was changed") as raised:
            async with registry.session() as session:
                await session.execute(text("SELECT 1"))
        assert PASSWORD not in str(raised.value)
    finally:
        await registry.aclose()


def test_unreachable_postgres_in_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in ("datasets", "init", "health"):
        code, out, err = run_cli(capsys, command, "--url", UNREACHABLE)
        assert code == 2 and out == ""
        assert_one_line(err, command, "cannot reach the database server", "127.0.0.1:1")
        assert PASSWORD not in err


def test_the_real_cli_prints_one_line_and_debug_the_traceback(tmp_path: Path) -> None:
    plain = qdb("datasets", "--url", UNREACHABLE, cwd=tmp_path)
    assert plain.returncode == 2
    assert_one_line(plain.stderr, "datasets", "cannot reach the database server")
    debug = qdb("--debug", "datasets", "--url", UNREACHABLE, cwd=tmp_path)
    assert debug.returncode == 2
    assert "Traceback (most recent call last)" in debug.stderr
    assert "ConnectionRefusedError" in debug.stderr  # the cause is shown, chained
    assert debug.stderr.splitlines()[-1] == plain.stderr.strip()
    assert PASSWORD not in plain.stdout + plain.stderr + debug.stdout + debug.stderr
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- files that are not ours


def test_a_file_that_is_not_sqlite(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "random.db"
    path.write_bytes(rng.bytes(8192))
    before = snapshot(tmp_path)
    error = connect_fails(sqlite_url(path))
    assert isinstance(error, ConfigurationError)
    assert f"{path} is not a SQLite database" in str(error)
    for command in ("datasets", "init", "health"):
        code, _, err = run_cli(capsys, command, "--url", sqlite_url(path))
        assert code == 2
        assert_one_line(err, command, "is not a SQLite database")
    assert snapshot(tmp_path) == before


def test_a_sqlite_file_of_another_program_is_left_byte_identical(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "theirs.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE inventory (id INTEGER PRIMARY KEY, item TEXT)")
        conn.executemany("INSERT INTO inventory (item) VALUES (?)", [("a",), ("b",)])
    conn.close()
    before = snapshot(tmp_path)
    for kwargs in ({}, {"create": False}):
        error = connect_fails(sqlite_url(path), **kwargs)
        assert isinstance(error, SchemaError)
        assert "no quantum-db schema version" in str(error)
        assert "another program owns it" in str(error)
    # `qdb init` must refuse it too, rather than add our tables to someone else's file.
    for command in ("init", "datasets", "health"):
        code, _, err = run_cli(capsys, command, "--url", f"sqlite:///{path}")
        assert code == 2
        assert_one_line(err, command, "another program owns it")
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- missing files and folders


async def test_a_folder_that_does_not_exist(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "missing" / "q.sqlite")
    error = await connect_error(url)
    assert isinstance(error, ConfigurationError)
    assert f"the folder {tmp_path / 'missing'} does not exist" in str(error)
    error = await connect_error(url, create=False)
    assert isinstance(error, ConfigurationError)
    assert f"no database at {tmp_path / 'missing' / 'q.sqlite'}; run `qdb init`" in str(error)
    assert list(tmp_path.iterdir()) == []


async def test_read_only_use_never_creates_a_database(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    error = await connect_error(sqlite_url(path), create=False)
    assert isinstance(error, ConfigurationError)
    assert str(error).startswith(f"no database at {path}; run `qdb init`")
    assert list(tmp_path.iterdir()) == []
    path.touch()  # an empty file is an empty database: refused, not upgraded
    error = await connect_error(sqlite_url(path), create=False)
    assert isinstance(error, SchemaOutOfDateError)
    assert "run `qdb init`" in str(error)
    assert path.read_bytes() == b""


def test_read_commands_on_a_missing_database_create_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for args in (["datasets"], ["health"], ["datasets", "--url", "sqlite:///typo/q.sqlite"]):
        code, out, err = run_cli(capsys, *args)
        assert code == 2 and out == ""
        assert_one_line(err, args[0], "no database at ", "; run `qdb init`")
    assert list(tmp_path.iterdir()) == []


def test_init_creates_the_folder_and_then_reads_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'nested' / 'q.sqlite'}"
    code, out, err = run_cli(capsys, "init", "--url", url)
    assert code == 0, err
    assert f"schema at revision {head_revision()}" in out
    assert (tmp_path / "new" / "nested" / "q.sqlite").is_file()
    code, out, err = run_cli(capsys, "datasets", "--url", url)
    assert (code, out.strip(), err) == (0, "no datasets stored", "")
    code, out, err = run_cli(capsys, "health", "--url", url)
    assert code == 0, err
    assert f"schema at revision {head_revision()} (up to date); vector store local" in out


def test_health_refuses_a_database_that_is_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:  # what `qdb init` of an older release left
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('0001')")
    conn.close()
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "health", "--url", f"sqlite:///{path}")
    assert code == 2
    assert_one_line(err, "health", "revision 0001", "qdb init")
    assert snapshot(tmp_path) == before


def test_health_opens_the_pinecone_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from .pinecone_emulator import PineconeEmulator

    url = f"sqlite:///{tmp_path / 'q.sqlite'}"
    assert run_cli(capsys, "init", "--url", url)[0] == 0
    with PineconeEmulator(api_key="pc-" + PASSWORD) as emulator:
        emulator.create_index("qdb", dimension=4, metric="cosine")
        monkeypatch.setenv("QDB_VECTOR_STORE", "pinecone")
        monkeypatch.setenv("PINECONE_API_KEY", "pc-" + PASSWORD)
        monkeypatch.setenv("PINECONE_CONTROLLER_HOST", emulator.url)
        monkeypatch.setenv("QDB_PINECONE_INDEX", "qdb")
        code, out, err = run_cli(capsys, "health", "--url", url)
        assert code == 0, err
        assert out.strip().endswith("vector store pinecone index qdb (dim 4)")
        monkeypatch.setenv("QDB_PINECONE_INDEX", "no-such-index")
        code, out, err = run_cli(capsys, "health", "--url", url)
        assert code == 2
        assert_one_line(err, "health", "no-such-index")
        assert PASSWORD not in out + err


# ---------------------------------------------------------------- a read-only folder


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Make ``folder`` refuse new files, in a way that holds for root as well.

    Root ignores permission bits, so as root the folder is made immutable (chattr +i),
    which the kernel enforces for every user; as anyone else a chmod is enough.
    """
    if os.geteuid() == 0:
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"running as root and chattr +i failed: {done.stderr!r}")
        undo = ["chattr", "-i", str(folder)]
    else:
        folder.chmod(0o555)
        undo = []
    try:
        try:
            (folder / "probe").touch()
        except OSError:
            pass
        else:
            (folder / "probe").unlink()
            pytest.skip("this file system lets the process write into a read-only folder")
        yield
    finally:
        if undo:
            subprocess.run(undo, check=True)
        else:
            folder.chmod(0o755)


def test_a_read_only_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    existing = folder / "q.sqlite"
    assert run_cli(capsys, "init", "--url", sqlite_url(existing))[0] == 0
    before = snapshot(tmp_path)
    with read_only(folder):
        error = connect_fails(sqlite_url(folder / "new.sqlite"))
        assert isinstance(error, ConfigurationError)
        assert f"the folder {folder} is not writable" in str(error)
        # SQLite in WAL mode writes -wal and -shm files next to the database.
        error = connect_fails(sqlite_url(existing))
        assert isinstance(error, ConfigurationError)
        assert "must exist and be writable" in str(error)
        for args in (
            ["init", "--url", f"sqlite:///{folder / 'new.sqlite'}"],
            ["datasets", "--url", f"sqlite:///{existing}"],
        ):
            code, _, err = run_cli(capsys, *args)
            assert code == 2
            assert_one_line(err, args[0], "writable")
        assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- standard URLs


def test_standard_sqlite_urls_use_the_async_driver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "plain.sqlite"

    async def store() -> None:
        async with QuantumDatabase(f"sqlite:///{path}").connect() as db:
            assert db.registry.url == sqlite_url(path)
            await db.store_training_data("d", np.zeros((10, 2)), np.arange(10) % 2)

    asyncio.run(store())
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "datasets", "--url", "sqlite:///plain.sqlite")
    assert code == 0, err
    assert out.splitlines()[1].split()[:2] == ["d", "1"]


def test_url_mapping_and_refusals() -> None:
    assert async_database_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert async_database_url("postgresql://u:p@h:5433/db") == "postgresql+asyncpg://u:p@h:5433/db"
    assert async_database_url("postgres://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert (
        async_database_url("postgresql://u@h/db?sslmode=require")
        == "postgresql+asyncpg://u@h/db?ssl=require"
    )
    keep = "postgresql+asyncpg://u@h/db"
    assert async_database_url(keep) == keep
    with pytest.raises(ConfigurationError, match=r"synchronous driver 'psycopg2'.*asyncpg"):
        Registry(f"postgresql+psycopg2://u:{PASSWORD}@h/db")
    with pytest.raises(ConfigurationError, match="unsupported database 'mysql'"):
        Registry("mysql://u@h/db")
    with pytest.raises(ConfigurationError, match="not a database URL") as raised:
        Registry(f"no url with {PASSWORD}")
    assert PASSWORD not in str(raised.value)
    assert redact_url(f"postgresql://u@h/db?password={PASSWORD}") == (
        "postgresql://u@h/db?password=***"
    )


@pytest.mark.postgres
def test_standard_postgresql_urls_use_asyncpg(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = postgres_url.replace("postgresql+asyncpg://", "postgresql://")
    error = connect_fails(plain, create=False)  # an empty database: not created
    assert isinstance(error, SchemaOutOfDateError)
    code, out, err = run_cli(capsys, "init", "--url", plain)
    assert code == 0, err
    assert f"schema at revision {head_revision()}" in out

    async def read() -> None:
        async with QuantumDatabase(plain, create=False).connect() as db:
            assert db.registry.url == postgres_url
            assert await db.list_datasets() == []

    asyncio.run(read())
    code, out, err = run_cli(capsys, "health", "--url", plain)
    assert code == 0, err


@pytest.mark.postgres
def test_a_postgres_database_that_does_not_exist(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = postgres_url.rsplit("/", 1)[0] + "/qdb_no_such_database"
    error = connect_fails(missing)
    assert isinstance(error, ConfigurationError)
    assert "no such database" in str(error) and "createdb" in str(error)
    code, _, err = run_cli(capsys, "datasets", "--url", missing)
    assert code == 2
    assert_one_line(err, "datasets", "no such database")


# ---------------------------------------------------------------- settings


def test_unknown_settings_values_name_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QDB_VECTOR_STORE", "foo")
    with pytest.raises(ConfigurationError) as raised:
        Settings()
    assert "QDB_VECTOR_STORE='foo'" in str(raised.value)
    assert "'local' or 'pinecone'" in str(raised.value)
    with pytest.raises(ConfigurationError, match="QDB_VECTOR_STORE"):
        QuantumDatabase()
    code, _, err = run_cli(capsys, "datasets")
    assert code == 2
    assert_one_line(err, "datasets", "QDB_VECTOR_STORE='foo'", "'local' or 'pinecone'")
    monkeypatch.delenv("QDB_VECTOR_STORE")
    monkeypatch.setenv("QDB_PINECONE_MAX_ATTEMPTS", "0")
    with pytest.raises(ConfigurationError, match=r"QDB_PINECONE_MAX_ATTEMPTS='0': .*1"):
        Settings()
    monkeypatch.setenv("QDB_PINECONE_MAX_ATTEMPTS", "many")
    with pytest.raises(ConfigurationError, match="QDB_PINECONE_MAX_ATTEMPTS='many'"):
        Settings()
    with pytest.raises(ConfigurationError, match="QDB_CHECKPOINT_KEEP_LAST"):
        Settings(checkpoint_keep_last=0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
@pytest.mark.parametrize("variable", ["PINECONE_API_KEY", "QDB_PINECONE_API_KEY", "IONQ_API_KEY"])
def test_blank_api_keys_are_refused(
    variable: str, blank: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(variable, blank)
    with pytest.raises(ConfigurationError) as raised:
        Settings()
    assert variable in str(raised.value)
    assert "empty or only whitespace" in str(raised.value)
    code, _, err = run_cli(capsys, "backends")
    assert code == 2
    assert_one_line(err, "backends", variable, "empty or only whitespace")


def test_blank_api_key_passed_in_code_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"PINECONE_API_KEY.*empty"):
        Settings(pinecone_api_key="  ")


# ---------------------------------------------------------------- secrets


def test_settings_repr_redacts_the_database_password(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"postgresql+asyncpg://u:{PASSWORD}@h/db"
    monkeypatch.setenv("QDB_DATABASE_URL", url)
    monkeypatch.setenv("PINECONE_API_KEY", "pc-" + PASSWORD)
    settings = Settings()
    assert settings.database_url == url  # still usable
    for shown in (repr(settings), str(settings), repr(QuantumDatabase())):
        assert PASSWORD not in shown
        assert "u:***@h/db" in shown


def test_no_password_in_any_error_or_log_across_connect_failures(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    urls = [
        UNREACHABLE,
        f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/x",
        f"postgresql+psycopg2://postgres:{PASSWORD}@127.0.0.1/x",
        f"mysql://postgres:{PASSWORD}@127.0.0.1/x",
        f"postgresql://postgres@127.0.0.1:1/x?password={PASSWORD}",
    ]
    for url in urls:
        error = connect_fails(url)
        assert isinstance(error, ConfigurationError | RegistryUnavailableError), error
        chain: BaseException | None = error
        while chain is not None:  # what --debug would print
            assert PASSWORD not in str(chain) + repr(chain), url
            chain = chain.__cause__
        code, out, err = run_cli(capsys, "datasets", "--url", url)
        assert code == 2
        assert PASSWORD not in out + err
    assert PASSWORD not in caplog.text
