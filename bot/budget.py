"""Credit budgets: what each member may spend per period, held and settled through the ledger.

Plain Python over `storage.ledger`; nothing here knows Discord.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from bot.errors import InvalidRequest, OverBudget
from bot.pricing import format_credits, to_milli
from storage.database import Database
from storage.ledger import Change, Entry, LedgerStore, Spender
from storage.tasks import TaskRecord

MAX_CREDITS = to_milli(1_000_000)  # no allowance, grant or cap above a million credits


class Period(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"

    @property
    def current(self) -> str:
        """How members read the period they are in: "today", "this week", "this month"."""
        return "today" if self is Period.DAY else f"this {self.value}"


def period_bounds(period: Period, now: float) -> tuple[float, float]:
    """The UTC start and end of the period that contains `now`."""
    moment = datetime.fromtimestamp(now, UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period is Period.DAY:
        start, end = day, day + timedelta(days=1)
    elif period is Period.WEEK:
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(weeks=1)
    else:
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    return start.timestamp(), end.timestamp()


@dataclass(frozen=True, slots=True)
class Standing:
    """Where a member stands this period, in thousandths of a credit."""

    allowance: int
    grants: int
    spent: int
    pending: int
    period: Period
    resets_at: float
    cap: int | None
    server_used: int

    @property
    def left(self) -> int:
        return max(0, self.allowance + self.grants - self.spent - self.pending)

    @property
    def server_left(self) -> int | None:
        return None if self.cap is None else max(0, self.cap - self.server_used)

    @property
    def can_spend(self) -> int:
        """The most one more request may cost: the member's room, within the server's."""
        server_left = self.server_left
        return self.left if server_left is None else min(self.left, server_left)


@dataclass(frozen=True, slots=True)
class Usage:
    period: Period
    resets_at: float
    spent: int
    pending: int
    cap: int | None
    top: list[Spender]


def credits_argument(value: float, what: str = "amount") -> int:
    """A moderator's number of credits, checked and turned into thousandths."""
    if math.isnan(value):
        raise InvalidRequest(f"The {what} must be a number.")
    if value < 0:
        raise InvalidRequest(f"The {what} can't be negative.")
    if math.isinf(value) or to_milli(round(value, 3)) > MAX_CREDITS:
        raise InvalidRequest(f"The {what} can be at most {format_credits(MAX_CREDITS)} credits.")
    return to_milli(round(value, 3))


class Budget:
    """The budget rules of every server, over the ledger."""

    def __init__(
        self,
        db: Database,
        *,
        default_allowance: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.ledger = LedgerStore(db)
        self.default_allowance = default_allowance
        self.clock = clock

    async def period(self, guild_id: int) -> Period:
        change = await self.ledger.latest(guild_id, Entry.PERIOD)
        return Period(change.note) if change and change.note else Period.MONTH

    async def allowance(self, guild_id: int, user_id: int) -> int:
        own = await self.ledger.latest(guild_id, Entry.ALLOWANCE, user_id)
        if own is not None:
            return own.amount
        default = await self.ledger.latest(guild_id, Entry.DEFAULT)
        return default.amount if default is not None else self.default_allowance

    async def own_allowance(self, guild_id: int, user_id: int) -> int | None:
        """The allowance a moderator set for this member; None when the default applies."""
        own = await self.ledger.latest(guild_id, Entry.ALLOWANCE, user_id)
        return own.amount if own is not None else None

    async def cap(self, guild_id: int) -> int | None:
        change = await self.ledger.latest(guild_id, Entry.CAP)
        return change.amount if change and change.amount > 0 else None

    async def standing(self, guild_id: int, user_id: int) -> Standing:
        period = await self.period(guild_id)
        start, end = period_bounds(period, self.clock())
        mine = await self.ledger.totals(guild_id, start, user_id)
        cap = await self.cap(guild_id)
        server_used = 0
        if cap is not None:
            server = await self.ledger.totals(guild_id, start)
            server_used = server.spent + server.pending
        return Standing(
            allowance=await self.allowance(guild_id, user_id),
            grants=mine.grants,
            spent=mine.spent,
            pending=mine.pending,
            period=period,
            resets_at=end,
            cap=cap,
            server_used=server_used,
        )

    async def ensure_affordable(self, guild_id: int, user_id: int, estimate: int) -> None:
        """Refuse a request that would overspend. Call inside the transaction that reserves."""
        standing = await self.standing(guild_id, user_id)
        if estimate <= standing.can_spend:
            return
        when = f"<t:{int(standing.resets_at)}:R>"
        if standing.server_left is not None and estimate > standing.server_left:
            raise OverBudget(
                f"This image would cost about {format_credits(estimate)} credits, but the server "
                f"has {format_credits(standing.server_left)} left {standing.period.current} "
                f"(it resets {when})."
            )
        raise OverBudget(
            f"This image would cost about {format_credits(estimate)} credits, but you have "
            f"{format_credits(standing.left)} left {standing.period.current} (it resets {when})."
        )

    # A task's money: reserve at submit, adjust to the API's figure, then settle or release.

    async def reserve(self, task: TaskRecord) -> None:
        await self.ledger.add(
            Entry.RESERVE,
            guild_id=task.guild_id,
            user_id=task.user_id,
            task_id=task.id,
            amount=task.estimate,
            now=self.clock(),
        )

    async def adjust(self, task: TaskRecord, cost: int) -> None:
        """Hold the API's `credits_reserved` instead of the estimate."""
        if cost != task.estimate:
            await self._task_entry(task, Entry.ADJUST, cost - task.estimate)

    async def settle(self, task: TaskRecord) -> bool:
        """The image was delivered: what the task holds is spent. Once per task."""
        return await self._close(task, Entry.SETTLE)

    async def release(self, task: TaskRecord) -> bool:
        """The task failed or never started: give back what it holds. Once per task."""
        return await self._close(task, Entry.RELEASE)

    async def _close(self, task: TaskRecord, kind: Entry) -> bool:
        """End a reservation as settled or released; a task ends one way, once."""
        async with self.db.transaction():
            entries = await self.ledger.task_entries(task.id)
            if Entry.SETTLE in entries or Entry.RELEASE in entries or Entry.RESERVE not in entries:
                return False
            held = entries[Entry.RESERVE] + entries.get(Entry.ADJUST, 0)
            return await self._task_entry(task, kind, held)

    async def _task_entry(self, task: TaskRecord, kind: Entry, amount: int) -> bool:
        async with self.db.transaction():
            period_at = await self.ledger.task_period_at(task.id)
            return await self.ledger.add(
                kind,
                guild_id=task.guild_id,
                user_id=task.user_id,
                task_id=task.id,
                amount=amount,
                now=self.clock(),
                period_at=period_at,
            )

    # Moderator changes, each an appended row with who made it.

    async def set_allowance(self, guild_id: int, user_id: int, amount: int, actor_id: int) -> None:
        await self._setting(Entry.ALLOWANCE, guild_id, actor_id, amount=amount, user_id=user_id)

    async def set_default(self, guild_id: int, amount: int, actor_id: int) -> None:
        await self._setting(Entry.DEFAULT, guild_id, actor_id, amount=amount)

    async def set_cap(self, guild_id: int, amount: int, actor_id: int) -> None:
        await self._setting(Entry.CAP, guild_id, actor_id, amount=amount)

    async def set_period(self, guild_id: int, period: Period, actor_id: int) -> None:
        await self._setting(Entry.PERIOD, guild_id, actor_id, note=period.value)

    async def grant(self, guild_id: int, user_id: int, amount: int, actor_id: int) -> None:
        if amount <= 0:
            raise InvalidRequest("A grant must be more than 0 credits.")
        await self._setting(Entry.GRANT, guild_id, actor_id, amount=amount, user_id=user_id)

    async def _setting(
        self,
        kind: Entry,
        guild_id: int,
        actor_id: int,
        *,
        amount: int = 0,
        user_id: int | None = None,
        note: str | None = None,
    ) -> None:
        await self.ledger.add(
            kind,
            guild_id=guild_id,
            user_id=user_id,
            amount=amount,
            note=note,
            actor_id=actor_id,
            now=self.clock(),
        )

    async def changes_for(self, guild_id: int, user_id: int) -> list[Change]:
        return await self.ledger.changes_for(guild_id, user_id)

    async def usage(self, guild_id: int) -> Usage:
        period = await self.period(guild_id)
        start, end = period_bounds(period, self.clock())
        server = await self.ledger.totals(guild_id, start)
        return Usage(
            period=period,
            resets_at=end,
            spent=server.spent,
            pending=server.pending,
            cap=await self.cap(guild_id),
            top=await self.ledger.top_spenders(guild_id, start),
        )
