"""Task records: every request the bot accepted, from before the API call to its end."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aiosqlite

from storage.database import Database


class TaskStatus(StrEnum):
    SUBMITTING = "submitting"  # written before the create call; no EvoLink id yet
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"  # the image exists at EvoLink but is not posted yet
    POSTED = "posted"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # the process died around the create call: outcome unknown
    CANCELLED = "cancelled"


UNFINISHED = (
    TaskStatus.SUBMITTING,
    TaskStatus.PENDING,
    TaskStatus.PROCESSING,
    TaskStatus.COMPLETED,
)
ENDED = (TaskStatus.POSTED, TaskStatus.FAILED, TaskStatus.INTERRUPTED, TaskStatus.CANCELLED)


@dataclass(frozen=True, slots=True)
class NewTask:
    """What is known of a request when it is accepted."""

    guild_id: int
    channel_id: int
    user_id: int
    origin: str  # command | reply | menu | button
    prompt: str
    model: str
    size: str
    quality: str
    reference_urls: tuple[str, ...]
    estimate: int
    upload_limit: int
    interaction_id: int | None = None
    source_message_id: int | None = None
    parent_task_id: int | None = None
    parent_message_id: int | None = None


@dataclass(slots=True)
class TaskRecord:
    id: int
    guild_id: int
    channel_id: int
    user_id: int
    origin: str
    prompt: str
    model: str
    size: str
    quality: str
    reference_urls: tuple[str, ...]
    estimate: int
    upload_limit: int
    status: TaskStatus
    progress: int = 0
    interaction_id: int | None = None
    source_message_id: int | None = None
    parent_task_id: int | None = None
    parent_message_id: int | None = None
    progress_message_id: int | None = None
    result_message_id: int | None = None
    evolink_task_id: str | None = None
    estimated_time: float | None = None
    cost: int | None = None
    result_url: str | None = None
    error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    submitted_at: float | None = None
    completed_at: float | None = None
    ended_at: float | None = None

    @classmethod
    def from_row(cls, row: aiosqlite.Row) -> TaskRecord:
        data = dict(row)
        data["reference_urls"] = tuple(json.loads(data["reference_urls"]))
        data["status"] = TaskStatus(data["status"])
        return cls(**data)

    @property
    def charged(self) -> int:
        """What the task holds of the member's allowance: the API's figure once known."""
        return self.cost if self.cost is not None else self.estimate

    @property
    def is_edit(self) -> bool:
        return self.parent_message_id is not None


class TaskStore:
    """SQL for the `tasks` table. Each method is one statement (callers group them)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, new: NewTask, now: float) -> TaskRecord:
        task_id = await self.db.execute(
            """
            INSERT INTO tasks (guild_id, channel_id, user_id, origin, interaction_id,
                source_message_id, parent_task_id, parent_message_id, upload_limit, prompt, model,
                size, quality, reference_urls, status, estimate, created_at, updated_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            (
                new.guild_id,
                new.channel_id,
                new.user_id,
                new.origin,
                new.interaction_id,
                new.source_message_id,
                new.parent_task_id,
                new.parent_message_id,
                new.upload_limit,
                new.prompt,
                new.model,
                new.size,
                new.quality,
                json.dumps(list(new.reference_urls)),
                TaskStatus.SUBMITTING,
                new.estimate,
                now,
                now,
            ),
        )
        task = await self.get(task_id)
        assert task is not None
        return task

    async def get(self, task_id: int) -> TaskRecord | None:
        row = await self.db.fetchone("SELECT * FROM tasks WHERE id = ?", (task_id,))
        return TaskRecord.from_row(row) if row else None

    async def exists_for_interaction(self, interaction_id: int) -> bool:
        row = await self.db.fetchone(
            "SELECT 1 FROM tasks WHERE interaction_id = ?", (interaction_id,)
        )
        return row is not None

    async def exists_for_source_message(self, message_id: int) -> bool:
        row = await self.db.fetchone(
            "SELECT 1 FROM tasks WHERE source_message_id = ?", (message_id,)
        )
        return row is not None

    async def by_result_message(self, message_id: int) -> TaskRecord | None:
        row = await self.db.fetchone(
            "SELECT * FROM tasks WHERE result_message_id = ? ORDER BY id DESC LIMIT 1",
            (message_id,),
        )
        return TaskRecord.from_row(row) if row else None

    async def unfinished(self) -> list[TaskRecord]:
        rows = await self.db.fetchall(
            "SELECT * FROM tasks WHERE status IN (?, ?, ?, ?) ORDER BY id", UNFINISHED
        )
        return [TaskRecord.from_row(row) for row in rows]

    async def update(self, task: TaskRecord, now: float, **changes: Any) -> None:
        """Write the given columns and apply them to `task`."""
        for name, value in changes.items():
            setattr(task, name, value)
        task.updated_at = now
        columns = ", ".join(f"{name} = ?" for name in changes)
        await self.db.execute(
            f"UPDATE tasks SET {columns}, updated_at = ? WHERE id = ?",  # noqa: S608 - names are ours
            (*changes.values(), now, task.id),
        )

    async def history(
        self, guild_id: int, user_id: int, *, limit: int, offset: int
    ) -> tuple[list[TaskRecord], int]:
        """A member's tasks in this server, newest first, and how many there are in all."""
        rows = await self.db.fetchall(
            "SELECT * FROM tasks WHERE guild_id = ? AND user_id = ? ORDER BY id DESC "
            "LIMIT ? OFFSET ?",
            (guild_id, user_id, limit, offset),
        )
        total = await self.db.fetchone(
            "SELECT COUNT(*) FROM tasks WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
        )
        return [TaskRecord.from_row(row) for row in rows], int(total[0]) if total else 0
