"""The one SQLite connection, its pragmas, its schema version and its transactions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from storage.migrations import MIGRATIONS

log = logging.getLogger(__name__)

Params = tuple[Any, ...] | dict[str, Any]


class DatabaseTooNew(Exception):
    """The database was written by a newer version of the bot than this one."""


class Database:
    """One aiosqlite connection shared by the whole bot.

    Every statement runs under one asyncio lock, and `transaction()` holds it from BEGIN to
    COMMIT, so no coroutine ever sees another one's half-written transaction. A transaction
    opened inside another one by the same asyncio task joins it.
    """

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path | str) -> AsyncIterator[Database]:
        """Open (creating folders and schema as needed) and close the database."""
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(str(path), isolation_level=None)
        try:
            conn.row_factory = aiosqlite.Row
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute("PRAGMA foreign_keys=ON")
            await conn.execute("PRAGMA busy_timeout=5000")
            db = cls(conn)
            await db.migrate()
            yield db
        finally:
            await conn.close()

    async def migrate(self) -> None:
        """Bring the schema up to date, one numbered migration per transaction."""
        version = await self.user_version()
        latest = len(MIGRATIONS)
        if version > latest:
            raise DatabaseTooNew(
                f"the database is at schema version {version}, but this bot knows only up to "
                f"{latest}: upgrade the bot or use another DATABASE_PATH"
            )
        for number in range(version + 1, latest + 1):
            async with self.transaction():
                for statement in MIGRATIONS[number - 1]:
                    await self._conn.execute(statement)
                await self._conn.execute(f"PRAGMA user_version={number}")
            log.info("Database migrated to schema version %d", number)

    async def user_version(self) -> int:
        row = await self.fetchone("PRAGMA user_version")
        return int(row[0]) if row else 0

    def _held_here(self) -> bool:
        return self._owner is not None and self._owner is asyncio.current_task()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
        if self._held_here():
            yield
            return
        async with self._lock:
            self._owner = asyncio.current_task()
            try:
                await self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    await asyncio.shield(self._conn.rollback())
                    raise
                await asyncio.shield(self._conn.commit())
            finally:
                self._owner = None

    @asynccontextmanager
    async def _statement(self) -> AsyncIterator[None]:
        if self._held_here():
            yield
        else:
            async with self._lock:
                yield

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; returns the last inserted row id."""
        async with self._statement():
            cursor = await self._conn.execute(sql, params)
            rowid = cursor.lastrowid or 0
            await cursor.close()
            return rowid

    async def execute_changes(self, sql: str, params: Params = ()) -> int:
        """Run one statement; returns how many rows it changed."""
        async with self._statement():
            cursor = await self._conn.execute(sql, params)
            count = cursor.rowcount
            await cursor.close()
            return count

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        async with self._statement():
            await self._conn.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Params = ()) -> aiosqlite.Row | None:
        async with self._statement():
            cursor = await self._conn.execute(sql, params)
            row = await cursor.fetchone()
            await cursor.close()
            return row

    async def fetchall(self, sql: str, params: Params = ()) -> list[aiosqlite.Row]:
        async with self._statement():
            cursor = await self._conn.execute(sql, params)
            rows = await cursor.fetchall()
            await cursor.close()
            return list(rows)
