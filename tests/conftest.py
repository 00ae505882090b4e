"""Shared fixtures: fake Discord and fake EvoLink on 127.0.0.1, and the real bot between."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import discord
import pytest

from bot.core import ImagineBot, point_discord_at
from bot.settings import Settings
from storage.database import Database
from storage.tasks import TaskRecord, TaskStatus
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.evolink_server import FakeEvoLink, TaskPlan

BOT_TOKEN = "fake-discord-bot-token-0123456789"
ORIGINAL_BASE = discord.http.Route.BASE
ORIGINAL_GATEWAY = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY


@pytest.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake
    discord.http.Route.BASE = ORIGINAL_BASE
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = ORIGINAL_GATEWAY


@pytest.fixture
async def evolink() -> AsyncIterator[FakeEvoLink]:
    async with FakeEvoLink(plan=lambda request: TaskPlan(duration=0.3, pending_for=0.05)) as fake:
        yield fake


def make_settings(
    discord_fake: FakeDiscord, evolink: FakeEvoLink, database: Path, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "discord_token": BOT_TOKEN,
        "evolink_api_key": "test-evolink-key",
        "evolink_base_url": evolink.base_url,
        "database_path": database,
        "discord_api_base_url": discord_fake.api_base,
        "discord_gateway_url": discord_fake.gateway_url,
        "poll_min_interval": 0.05,
        "progress_edit_interval": 0.05,
        "evolink_retry_base_delay": 0.01,
        "evolink_retry_max_delay": 0.05,
        "evolink_timeout": 2.0,
        "default_allowance": 20,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class BotRunner:
    """Starts and stops the real bot against the fakes, as often as a test likes."""

    def __init__(self, discord_fake: FakeDiscord, evolink: FakeEvoLink, database: Path) -> None:
        self.discord = discord_fake
        self.evolink = evolink
        self.database = database
        self._stack: contextlib.AsyncExitStack | None = None
        self._runner: asyncio.Task[None] | None = None
        self.bot: ImagineBot | None = None

    async def start(self, **overrides: Any) -> ImagineBot:
        settings = make_settings(self.discord, self.evolink, self.database, **overrides)
        point_discord_at(settings)
        stack = contextlib.AsyncExitStack()
        session = await stack.enter_async_context(aiohttp.ClientSession())
        db = await stack.enter_async_context(Database.open(settings.database_path))
        bot = ImagineBot(settings=settings, session=session, db=db, guild_ready_timeout=0.05)
        self._stack, self.bot = stack, bot
        self._runner = asyncio.create_task(bot.start(BOT_TOKEN))
        waiter = asyncio.create_task(bot.wait_until_ready())
        done, _ = await asyncio.wait(
            {waiter, self._runner}, timeout=10, return_when=asyncio.FIRST_COMPLETED
        )
        if self._runner in done:
            waiter.cancel()
            self._runner.result()  # raises why the bot stopped
        assert waiter in done, "the bot did not become ready"
        return bot

    async def stop(self) -> None:
        if self.bot is not None:
            await self.bot.close()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner
        if self._stack is not None:
            await self._stack.aclose()
        self.bot, self._runner, self._stack = None, None, None


@pytest.fixture
async def runner(
    discord_fake: FakeDiscord, evolink: FakeEvoLink, tmp_path: Path
) -> AsyncIterator[BotRunner]:
    bot_runner = BotRunner(discord_fake, evolink, tmp_path / "imagine.sqlite3")
    yield bot_runner
    await bot_runner.stop()
    assert not discord_fake.spec_errors, discord_fake.spec_errors
    assert not evolink.spec_errors, evolink.spec_errors


@pytest.fixture
async def bot(runner: BotRunner) -> ImagineBot:
    return await runner.start()


@pytest.fixture
def member(discord_fake: FakeDiscord) -> int:
    return discord_fake.add_member(name="alice")


@pytest.fixture
def moderator(discord_fake: FakeDiscord) -> int:
    return discord_fake.add_member(
        name="mod", permissions=discord.Permissions(manage_guild=True, send_messages=True).value
    )


def png_bytes(
    width: int = 8, height: int = 8, color: tuple[int, int, int] = (200, 30, 30)
) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


async def all_tasks(bot: ImagineBot) -> list[TaskRecord]:
    rows = await bot.db.fetchall("SELECT * FROM tasks ORDER BY id")
    return [TaskRecord.from_row(row) for row in rows]


async def wait_for_task(
    bot: ImagineBot, *statuses: TaskStatus, timeout: float = 10.0
) -> TaskRecord:
    """The first task (by id) that reaches one of `statuses`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        for task in await all_tasks(bot):
            if task.status in statuses:
                return task
        await asyncio.sleep(0.02)
    raise AssertionError(f"no task reached {statuses}: {await all_tasks(bot)}")
