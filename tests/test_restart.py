"""Kill the real bot process at each point of a task, restart it, and check nothing is lost.

The bot runs as `python -m bot` against the fakes in this test's event loop; SIGKILL gives it no
chance to tidy up. After a restart on the same database: one image posted, one charge, no task
left unfinished.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BOT_TOKEN
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.evolink_server import FakeEvoLink, TaskPlan

ROOT = Path(__file__).resolve().parents[1]
EVOLINK_KEY = "test-evolink-key"


class BotProcess:
    """`python -m bot` with the settings pointing at the fakes; its log goes to a file."""

    def __init__(self, discord_fake: FakeDiscord, evolink: FakeEvoLink, tmp_path: Path) -> None:
        self.database = tmp_path / "imagine.sqlite3"
        self.log = tmp_path / "bot.log"
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(ROOT),
            "DISCORD_TOKEN": BOT_TOKEN,
            "EVOLINK_API_KEY": EVOLINK_KEY,
            "EVOLINK_BASE_URL": evolink.base_url,
            "DISCORD_API_BASE_URL": discord_fake.api_base,
            "DISCORD_GATEWAY_URL": discord_fake.gateway_url,
            "DATABASE_PATH": str(self.database),
            "POLL_MIN_INTERVAL": "0.05",
            "EVOLINK_RETRY_BASE_DELAY": "0.01",
            "EVOLINK_RETRY_MAX_DELAY": "0.05",
            "EVOLINK_TIMEOUT": "3",
            "LOG_LEVEL": "DEBUG",
        }
        self.cwd = tmp_path
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, **env: str) -> None:
        with self.log.open("a") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot",
                cwd=self.cwd, env={**self.env, **env}, stdout=log, stderr=log,
            )  # fmt: skip

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def terminate(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), timeout=15)

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Read the bot's database from outside (WAL lets us read while it writes)."""
        if not self.database.exists():
            return []
        with sqlite3.connect(self.database, timeout=5) as conn:
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError:
                return []


@pytest.fixture
async def process(
    discord_fake: FakeDiscord, evolink: FakeEvoLink, tmp_path: Path
) -> AsyncIterator[BotProcess]:
    bot = BotProcess(discord_fake, evolink, tmp_path)
    yield bot
    if bot.process is not None and bot.process.returncode is None:
        await bot.kill()
    log = bot.log.read_text() if bot.log.exists() else ""
    assert BOT_TOKEN not in log and EVOLINK_KEY not in log, "a secret reached the log"
    assert not discord_fake.spec_errors, discord_fake.spec_errors
    assert not evolink.spec_errors, evolink.spec_errors


async def until(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError("timed out waiting")


async def ask_for_image(discord_fake: FakeDiscord, process: BotProcess, user_id: int) -> None:
    await until(lambda: discord_fake.commands_global, timeout=20)  # the bot has synced
    await discord_fake.invoke_slash("imagine", {"prompt": "a lighthouse"}, user_id=user_id)


def images_posted(discord_fake: FakeDiscord) -> list[dict[str, Any]]:
    return [m for m in discord_fake.channel_messages() if m.get("attachments")]


def ledger(process: BotProcess, kind: str) -> int:
    return len(process.rows("SELECT id FROM ledger WHERE kind = ?", (kind,)))


async def assert_settled_once(discord_fake: FakeDiscord, process: BotProcess) -> None:
    await until(lambda: process.rows("SELECT id FROM tasks WHERE status = 'posted'"))
    assert len(images_posted(discord_fake)) == 1
    assert ledger(process, "settle") == 1
    assert ledger(process, "release") == 0
    assert process.rows(
        "SELECT id FROM tasks WHERE status IN ('submitting','pending','processing','completed')"
    ) == []


@pytest.mark.parametrize("created_at_evolink", [False, True])
async def test_killed_during_the_create_call(
    process: BotProcess, discord_fake: FakeDiscord, evolink: FakeEvoLink, created_at_evolink: bool
) -> None:
    member = discord_fake.add_member(name="alice")
    evolink.hang_next("POST", "/v1/images/generations", seconds=30, create=created_at_evolink)
    await process.start()
    await ask_for_image(discord_fake, process, member)
    await until(lambda: any(r.method == "POST" for r in evolink.requests))
    await process.kill()
    assert process.rows("SELECT status FROM tasks") == [("submitting",)]

    await process.start()
    await until(lambda: process.rows("SELECT id FROM tasks WHERE status = 'interrupted'"))
    assert ledger(process, "release") == 1 and ledger(process, "settle") == 0
    assert images_posted(discord_fake) == []
    told = await until(
        lambda: [m for m in discord_fake.channel_messages() if "interrupted" in m["content"]]
    )
    assert "run it again" in told[0]["content"]
    assert evolink.creates == int(created_at_evolink)  # never a second create
    log = process.log.read_text()
    assert "interrupted around its create call" in log


@pytest.mark.parametrize("point", ["after-create", "mid-poll"])
async def test_killed_while_following_the_task(
    process: BotProcess, discord_fake: FakeDiscord, evolink: FakeEvoLink, point: str
) -> None:
    member = discord_fake.add_member(name="alice")
    evolink.plan = lambda request: TaskPlan(duration=2.0, pending_for=0.1, estimated_time=2)
    await process.start()
    await ask_for_image(discord_fake, process, member)
    await until(lambda: process.rows("SELECT id FROM tasks WHERE evolink_task_id IS NOT NULL"))
    if point == "mid-poll":
        await until(lambda: any(t.polls for t in evolink.tasks.values()))
    await process.kill()

    await process.start()
    await assert_settled_once(discord_fake, process)
    assert evolink.creates == 1


async def test_killed_after_the_download(
    process: BotProcess, discord_fake: FakeDiscord, evolink: FakeEvoLink
) -> None:
    member = discord_fake.add_member(name="alice")
    await process.start()
    await ask_for_image(discord_fake, process, member)
    await until(lambda: process.rows("SELECT id FROM tasks WHERE progress_message_id IS NOT NULL"))
    # Hold the upload: discord.py retries a 500 after a second's sleep, in which we kill.
    route = "/webhooks/{application_id}/{token}/messages/@original"
    discord_fake.fail_next("PATCH", route, status=500, times=3, with_files=True)
    await until(lambda: any(t.downloads for t in evolink.tasks.values()))
    await process.kill()
    assert images_posted(discord_fake) == []
    assert process.rows("SELECT status FROM tasks") == [("completed",)]

    await process.start()
    await assert_settled_once(discord_fake, process)
    assert evolink.creates == 1


async def test_killed_right_after_the_post(
    process: BotProcess, discord_fake: FakeDiscord, evolink: FakeEvoLink
) -> None:
    member = discord_fake.add_member(name="alice")
    await process.start()
    await ask_for_image(discord_fake, process, member)
    await until(lambda: images_posted(discord_fake))
    await process.kill()

    await process.start()
    await assert_settled_once(discord_fake, process)
    assert evolink.creates == 1


async def test_sigterm_stops_cleanly_and_the_next_start_finishes(
    process: BotProcess, discord_fake: FakeDiscord, evolink: FakeEvoLink
) -> None:
    member = discord_fake.add_member(name="alice")
    evolink.plan = lambda request: TaskPlan(duration=3.0, estimated_time=3)
    await process.start()
    await ask_for_image(discord_fake, process, member)
    await until(lambda: process.rows("SELECT id FROM tasks WHERE evolink_task_id IS NOT NULL"))
    assert await process.terminate() == 0
    assert "Stopped cleanly" in process.log.read_text()
    assert process.rows("SELECT status FROM tasks")[0][0] in ("pending", "processing")

    await process.start()
    await assert_settled_once(discord_fake, process)
