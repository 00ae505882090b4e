"""The append-only ledger: money held, spent and given back, and the budget settings."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import aiosqlite

from storage.database import Database


class Entry(StrEnum):
    RESERVE = "reserve"  # estimate held at submit
    ADJUST = "adjust"  # difference to the API's credits_reserved once the task exists
    SETTLE = "settle"  # the task delivered: what it held is spent
    RELEASE = "release"  # the task failed or never started: what it held is given back
    GRANT = "grant"  # one-off extra credits for a member
    ALLOWANCE = "allowance"  # a member's allowance per period (user_id set)
    DEFAULT = "default"  # the server's default allowance
    CAP = "cap"  # the server's cap per period (0 = none)
    PERIOD = "period"  # the server's period (note = day | week | month)


@dataclass(frozen=True, slots=True)
class Totals:
    """Sums over one period, in thousandths of a credit."""

    grants: int = 0
    spent: int = 0
    pending: int = 0


@dataclass(frozen=True, slots=True)
class Change:
    kind: Entry
    user_id: int | None
    amount: int
    note: str | None
    actor_id: int | None
    created_at: float


@dataclass(frozen=True, slots=True)
class Spender:
    user_id: int
    spent: int
    pending: int


# What open reservations hold: reserve and adjust rows of tasks neither settled nor released.
_SPENT = "COALESCE(SUM(CASE WHEN kind = 'settle' THEN amount END), 0)"
_PENDING = """COALESCE(SUM(CASE WHEN kind IN ('reserve', 'adjust') AND NOT EXISTS (
    SELECT 1 FROM ledger AS done
    WHERE done.task_id = ledger.task_id AND done.kind IN ('settle', 'release')
) THEN amount END), 0)"""
_GRANTS = "COALESCE(SUM(CASE WHEN kind = 'grant' THEN amount END), 0)"


class LedgerStore:
    """SQL for the `ledger` table. Rows are only ever inserted."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(
        self,
        kind: Entry,
        *,
        guild_id: int,
        now: float,
        period_at: float | None = None,
        user_id: int | None = None,
        task_id: int | None = None,
        amount: int = 0,
        note: str | None = None,
        actor_id: int | None = None,
    ) -> bool:
        """Append one row; a task's entry of a kind already there is not added again.

        Returns whether the row was added.
        """
        changed = await self.db.execute_changes(
            """
            INSERT INTO ledger (guild_id, user_id, task_id, kind, amount, note, actor_id,
                                period_at, created_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (task_id, kind) DO NOTHING
            """,
            (
                guild_id,
                user_id,
                task_id,
                kind,
                amount,
                note,
                actor_id,
                now if period_at is None else period_at,
                now,
            ),
        )
        return changed > 0

    async def task_entries(self, task_id: int) -> dict[Entry, int]:
        rows = await self.db.fetchall(
            "SELECT kind, amount FROM ledger WHERE task_id = ?", (task_id,)
        )
        return {Entry(row[0]): int(row[1]) for row in rows}

    async def task_period_at(self, task_id: int) -> float | None:
        row = await self.db.fetchone(
            "SELECT period_at FROM ledger WHERE task_id = ? AND kind = 'reserve'", (task_id,)
        )
        return float(row[0]) if row else None

    async def totals(self, guild_id: int, since: float, user_id: int | None = None) -> Totals:
        """Grants, spent and pending since `since`, for one member or the whole server."""
        sql = f"SELECT {_GRANTS}, {_SPENT}, {_PENDING} FROM ledger WHERE guild_id = ? AND period_at >= ?"  # noqa: S608, E501
        params: tuple[int | float, ...] = (guild_id, since)
        if user_id is not None:
            sql, params = sql + " AND user_id = ?", (*params, user_id)
        row = await self.db.fetchone(sql, params)
        assert row is not None
        return Totals(grants=int(row[0]), spent=int(row[1]), pending=int(row[2]))

    async def latest(self, guild_id: int, kind: Entry, user_id: int | None = None) -> Change | None:
        """The newest setting of a kind (a member's allowance, the default, the cap, the period)."""
        row = await self.db.fetchone(
            "SELECT kind, user_id, amount, note, actor_id, created_at FROM ledger "
            "WHERE guild_id = ? AND kind = ? AND user_id IS ? ORDER BY id DESC LIMIT 1",
            (guild_id, kind, user_id),
        )
        return _change(row) if row else None

    async def changes_for(self, guild_id: int, user_id: int, limit: int = 10) -> list[Change]:
        """The latest moderator changes that touched a member (allowance and grants)."""
        rows = await self.db.fetchall(
            "SELECT kind, user_id, amount, note, actor_id, created_at FROM ledger "
            "WHERE guild_id = ? AND user_id = ? AND kind IN ('allowance', 'grant') "
            "ORDER BY id DESC LIMIT ?",
            (guild_id, user_id, limit),
        )
        return [_change(row) for row in rows]

    async def top_spenders(self, guild_id: int, since: float, limit: int = 10) -> list[Spender]:
        rows = await self.db.fetchall(
            f"SELECT user_id, {_SPENT} AS spent, {_PENDING} AS pending FROM ledger "  # noqa: S608
            "WHERE guild_id = ? AND period_at >= ? AND task_id IS NOT NULL GROUP BY user_id "
            "HAVING spent + pending > 0 ORDER BY spent + pending DESC LIMIT ?",
            (guild_id, since, limit),
        )
        return [Spender(int(r[0]), int(r[1]), int(r[2])) for r in rows]


def _change(row: aiosqlite.Row) -> Change:
    return Change(
        kind=Entry(row["kind"]),
        user_id=row["user_id"],
        amount=int(row["amount"]),
        note=row["note"],
        actor_id=row["actor_id"],
        created_at=float(row["created_at"]),
    )
