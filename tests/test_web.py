"""The bot's web endpoint: /healthz, and EvoLink's callbacks as hints that wake a task."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.cadence import Cadence, CadenceConfig
from bot.core import ImagineBot
from bot.web import CallbackTokens, WebServer
from storage.database import Database
from storage.tasks import TaskRecord, TaskStatus
from tests.conftest import BotRunner, all_tasks, make_settings, wait_for_task
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.evolink_server import FakeEvoLink, TaskPlan


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def start_with_callbacks(runner: BotRunner, **overrides: object) -> tuple[ImagineBot, str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    bot = await runner.start(web_host="127.0.0.1", web_port=port, public_base_url=base, **overrides)
    return bot, base


async def wait_until_created(bot: ImagineBot, count: int) -> list[TaskRecord]:
    """The first `count` tasks, once each has its EvoLink id."""
    for _ in range(250):
        tasks = [task for task in await all_tasks(bot) if task.evolink_task_id]
        if len(tasks) >= count:
            return tasks[:count]
        await asyncio.sleep(0.02)
    raise AssertionError(f"{count} task(s) not created: {await all_tasks(bot)}")


async def test_healthz_is_ok_when_connected_and_the_database_takes_a_write(
    runner: BotRunner, http: aiohttp.ClientSession
) -> None:
    bot = await runner.start(web_host="127.0.0.1", web_port=0)
    assert bot.web is not None and bot.web.port
    async with http.get(f"http://127.0.0.1:{bot.web.port}/healthz") as resp:
        body = await resp.json()
        assert resp.status == 200, body
    assert body["status"] == "ok" and body["gateway"] and body["database"]
    assert body["problems"] == []
    assert await bot.meta.get("healthz") is not None  # the write really happened


async def test_healthz_is_503_with_the_reason_when_the_gateway_is_not_connected(
    discord_fake: FakeDiscord,
    evolink: FakeEvoLink,
    tmp_path: Path,
    http: aiohttp.ClientSession,
) -> None:
    settings = make_settings(discord_fake, evolink, tmp_path / "imagine.sqlite3")
    async with Database.open(settings.database_path) as db:
        bot = ImagineBot(settings=settings, session=http, db=db)  # never logged in
        web = WebServer(bot, await CallbackTokens.load(bot.meta))
        await web.start("127.0.0.1", 0)
        try:
            async with http.get(f"http://127.0.0.1:{web.port}/healthz") as resp:
                body = await resp.json()
                assert resp.status == 503
        finally:
            await web.stop()
    assert body["status"] == "unhealthy"
    assert body["gateway"] is False and body["database"] is True
    assert body["problems"] == ["not connected to the Discord gateway"]


async def test_callback_with_a_wrong_token_is_404_and_wakes_nothing(
    runner: BotRunner,
    discord_fake: FakeDiscord,
    evolink: FakeEvoLink,
    member: int,
    http: aiohttp.ClientSession,
) -> None:
    evolink.plan = lambda request: TaskPlan(duration=60, estimated_time=60)
    bot, base = await start_with_callbacks(runner)
    await discord_fake.invoke_slash("imagine", {"prompt": "first"}, user_id=member)
    await discord_fake.invoke_slash("imagine", {"prompt": "second"}, user_id=member)
    first, second = await wait_until_created(bot, 2)
    assert bot.web is not None
    tokens = bot.web.tokens
    wrong = [
        f"{base}/evolink/callback/{first.id}/{tokens.token(second.id)}",
        f"{base}/evolink/callback/{first.id}/{'0' * 32}",
        f"{base}/evolink/callback/{first.id}",
        f"{base}/evolink/callback/x{first.id}/{tokens.token(first.id)}",
    ]
    for url in wrong:
        async with http.post(url, json={"status": "completed"}) as resp:
            assert resp.status == 404, url
    # A right one, for the other task: it is polled; the first one was not woken.
    right = tokens.url(base, second.id)
    assert evolink.tasks[second.evolink_task_id or ""].request["callback_url"] == right
    async with http.post(right, json={"status": "completed"}) as resp:
        assert resp.status == 200
    await evolink.wait_for(lambda: evolink.polls(second.evolink_task_id or "") == 1)
    assert evolink.polls(first.evolink_task_id or "") == 0


async def test_callback_urls_stay_valid_across_a_restart(runner: BotRunner) -> None:
    bot = await runner.start(web_host="127.0.0.1", web_port=0)
    assert bot.web is not None
    before = bot.web.tokens.token(42)
    await runner.stop()
    bot = await runner.start(web_host="127.0.0.1", web_port=0)
    assert bot.web is not None
    assert bot.web.tokens.token(42) == before
    assert bot.web.tokens.token(43) != before


async def test_imagine_in_callback_mode_is_delivered_on_the_callback(
    runner: BotRunner,
    discord_fake: FakeDiscord,
    evolink: FakeEvoLink,
    member: int,
) -> None:
    evolink.plan = lambda request: TaskPlan(duration=0.4, estimated_time=1)
    # Without the callback, the safety poll would come after 30 s: far beyond this test.
    bot, base = await start_with_callbacks(runner, callback_safety_interval=30)
    interaction = await discord_fake.invoke_slash("imagine", {"prompt": "a kite"}, user_id=member)
    task = await wait_for_task(bot, TaskStatus.POSTED, timeout=5)
    fake_task = evolink.tasks[task.evolink_task_id or ""]
    assert fake_task.request["callback_url"].startswith(f"{base}/evolink/callback/{task.id}/")
    assert [attempt.status for attempt in fake_task.callback_posts] == [200]
    assert 1 <= fake_task.polls <= 2
    assert interaction.original is not None
    assert discord_fake.files_of(int(interaction.original["id"]))


async def test_without_a_public_url_no_callback_is_asked(
    runner: BotRunner, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    bot = await runner.start(web_host="127.0.0.1", web_port=0)
    await discord_fake.invoke_slash("imagine", {"prompt": "a boat"}, user_id=member)
    task = await wait_for_task(bot, TaskStatus.POSTED)
    assert "callback_url" not in evolink.tasks[task.evolink_task_id or ""].request


def test_with_a_callback_the_cadence_polls_only_as_a_safety_net() -> None:
    cadence = Cadence(CadenceConfig(callback_safety_interval=30), estimated_time=60, callback=True)
    assert cadence.next_delay(0.0) == 90  # not near the predicted end: 30 s after it
    assert cadence.next_delay(95.0) == 30  # overdue: every safety interval
    assert Cadence(CadenceConfig(), estimated_time=60).next_delay(0.0) < 60  # polling: sooner
