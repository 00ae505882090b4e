"""Storage on a real SQLite file: schema versions, task records, the ledger's keys."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from storage.database import Database, DatabaseTooNew
from storage.ledger import Entry, LedgerStore
from storage.migrations import MIGRATIONS
from storage.tasks import NewTask, TaskStatus, TaskStore


def new_task(**changes: object) -> NewTask:
    fields: dict[str, object] = {
        "guild_id": 1,
        "channel_id": 2,
        "user_id": 3,
        "origin": "command",
        "prompt": "a 'quoted' prompt; DROP TABLE tasks; -- **bold**",
        "model": "gpt-image-1.5",
        "size": "1:1",
        "quality": "low",
        "reference_urls": ("https://cdn/a.png",),
        "estimate": 509,
        "upload_limit": 10_000_000,
        "interaction_id": 77,
    }
    fields.update(changes)
    return NewTask(**fields)  # type: ignore[arg-type]


async def test_new_database_gets_every_migration_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "bot.sqlite3"
    async with Database.open(path) as db:
        assert await db.user_version() == len(MIGRATIONS)
        row = await db.fetchone("PRAGMA journal_mode")
        assert row is not None
        assert row[0] == "wal"
        row = await db.fetchone("PRAGMA foreign_keys")
        assert row is not None
        assert row[0] == 1
    assert path.exists()


async def test_database_newer_than_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    with pytest.raises(DatabaseTooNew, match="upgrade the bot"):
        async with Database.open(path):
            pass


async def test_failed_migration_leaves_earlier_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = (*MIGRATIONS, ("CREATE TABLE extra (x INTEGER)", "THIS IS NOT SQL"))
    monkeypatch.setattr("storage.database.MIGRATIONS", broken)
    path = tmp_path / "bot.sqlite3"
    with pytest.raises(sqlite3.OperationalError):
        async with Database.open(path):
            pass
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "extra" not in tables  # the half-done migration was rolled back


async def test_task_round_trip_keeps_prompt_intact(tmp_path: Path) -> None:
    async with Database.open(tmp_path / "bot.sqlite3") as db:
        store = TaskStore(db)
        task = await store.insert(new_task(), now=100.0)
        assert task.status is TaskStatus.SUBMITTING
        await store.update(task, 101.0, evolink_task_id="task-1", status=TaskStatus.PENDING)
        again = await store.get(task.id)
        assert again is not None
        assert again.prompt == "a 'quoted' prompt; DROP TABLE tasks; -- **bold**"
        assert again.reference_urls == ("https://cdn/a.png",)
        assert again.status is TaskStatus.PENDING
        assert again.evolink_task_id == "task-1"
        assert [t.id for t in await store.unfinished()] == [task.id]
        assert await store.exists_for_interaction(77)
        with pytest.raises(sqlite3.IntegrityError):
            await store.insert(new_task(), now=102.0)  # the same interaction twice


async def test_ledger_task_entries_are_idempotent(tmp_path: Path) -> None:
    async with Database.open(tmp_path / "bot.sqlite3") as db:
        task = await TaskStore(db).insert(new_task(), now=100.0)
        ledger = LedgerStore(db)
        kwargs = {"guild_id": 1, "user_id": 3, "task_id": task.id, "now": 100.0}
        assert await ledger.add(Entry.RESERVE, amount=509, **kwargs)  # type: ignore[arg-type]
        assert not await ledger.add(Entry.RESERVE, amount=509, **kwargs)  # type: ignore[arg-type]
        totals = await ledger.totals(1, since=0, user_id=3)
        assert totals.pending == 509
        assert totals.spent == 0
        assert await ledger.add(Entry.SETTLE, amount=509, **kwargs)  # type: ignore[arg-type]
        totals = await ledger.totals(1, since=0, user_id=3)
        assert totals.pending == 0
        assert totals.spent == 509
