"""Faults of Discord and EvoLink, and bad input: each ends in a clear message and loses nothing."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.core import ImagineBot
from storage.ledger import Entry
from storage.tasks import TaskRecord, TaskStatus
from tests.conftest import BOT_TOKEN, BotRunner, all_tasks, png_bytes, wait_for_task
from tests.fakes.discord_server import FakeDiscord, FakeInteraction
from tests.fakes.evolink_server import FakeEvoLink, TaskPlan

WEBHOOK_ORIGINAL = "/webhooks/{application_id}/{token}/messages/@original"
CHANNEL_MESSAGE = "/channels/{channel_id}/messages/{message_id}"
CREATE = "/v1/images/generations"


async def imagine(
    discord_fake: FakeDiscord, member: int, prompt: str = "a kite"
) -> FakeInteraction:
    return await discord_fake.invoke_slash("imagine", {"prompt": prompt}, user_id=member)


async def progress_shown(discord_fake: FakeDiscord, interaction: FakeInteraction) -> dict:
    return await discord_fake.wait_for(
        lambda: (
            interaction.original
            if interaction.original and interaction.original.get("content")
            else None
        )
    )


async def refunded(bot: ImagineBot, task: TaskRecord) -> bool:
    entries = await bot.budget.ledger.task_entries(task.id)
    return Entry.RELEASE in entries and Entry.SETTLE not in entries


# ---------------------------------------------------------------- Discord faults


async def test_expired_token_switches_to_the_channel_route(
    runner: BotRunner, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    evolink.plan = lambda request: TaskPlan(duration=0.6, estimated_time=1)
    bot = await runner.start()
    interaction = await imagine(discord_fake, member)
    await progress_shown(discord_fake, interaction)
    discord_fake.expire_interaction(interaction.token)
    task = await wait_for_task(bot, TaskStatus.POSTED)
    assert discord_fake.files_of(task.result_message_id or 0)
    channel_edits = [c for c in discord_fake.calls_to("PATCH", CHANNEL_MESSAGE) if c.files]
    assert len(channel_edits) == 1
    token_calls = [c for c in discord_fake.calls if interaction.token in c.path]
    assert sum(c.status == 401 for c in token_calls) <= 1  # a dead token is never used again
    assert token_calls[-1].status == 401 or all(c.status < 400 for c in token_calls)


async def test_deleted_progress_message_gets_a_new_message(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    evolink.plan = lambda request: TaskPlan(duration=0.6, estimated_time=1)
    interaction = await imagine(discord_fake, member)
    original = await progress_shown(discord_fake, interaction)
    discord_fake.delete_message_as_user(int(original["id"]))
    task = await wait_for_task(bot, TaskStatus.POSTED)
    assert task.result_message_id != int(original["id"])
    posted = discord_fake.messages[task.result_message_id or 0]
    assert discord_fake.files_of(int(posted["id"]))
    assert posted["nonce"].startswith(f"imagine-{task.id}-")  # a repeat post is deduplicated
    assert Entry.SETTLE in await bot.budget.ledger.task_entries(task.id)


async def test_missing_permission_tells_the_member_privately_and_refunds(
    bot: ImagineBot,
    discord_fake: FakeDiscord,
    evolink: FakeEvoLink,
    member: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    evolink.plan = lambda request: TaskPlan(duration=0.5, estimated_time=1)
    interaction = await imagine(discord_fake, member)
    await progress_shown(discord_fake, interaction)
    discord_fake.expire_interaction(interaction.token)
    discord_fake.deny_channel(discord_fake.channel_id)
    task = await wait_for_task(bot, TaskStatus.FAILED)
    assert await refunded(bot, task)
    dm = await discord_fake.wait_for(
        lambda: discord_fake.channel_messages(discord_fake.dm_channel(member))
    )
    assert "lack permission" in dm[-1]["content"]
    assert "may not post in channel" in caplog.text


async def test_rate_limited_edits_are_waited_out(
    bot: ImagineBot, discord_fake: FakeDiscord, member: int
) -> None:
    discord_fake.fail_next("PATCH", WEBHOOK_ORIGINAL, status=429, times=2, retry_after=0.05)
    await imagine(discord_fake, member)
    task = await wait_for_task(bot, TaskStatus.POSTED)
    assert discord_fake.files_of(task.result_message_id or 0)
    assert any(c.status == 429 for c in discord_fake.calls)


async def test_upload_too_large_is_reencoded_and_retried(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    evolink.plan = lambda request: TaskPlan(duration=0.3, result=png_bytes(256, 256))
    interaction = await imagine(discord_fake, member)
    await progress_shown(discord_fake, interaction)
    discord_fake.fail_next(
        "PATCH",
        WEBHOOK_ORIGINAL,
        status=413,
        code=40005,
        message="Request entity too large",
        with_files=True,
    )
    task = await wait_for_task(bot, TaskStatus.POSTED)
    ((name, _data),) = discord_fake.files_of(task.result_message_id or 0)
    assert name.endswith(".webp")
    assert "Re-encoded" in discord_fake.messages[task.result_message_id or 0]["content"]


# ---------------------------------------------------------------- EvoLink faults


async def test_poll_errors_are_backed_off_and_the_task_finishes(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    evolink.fail_next("GET", "/v1/tasks/", status=503, times=6)
    evolink.fail_next("GET", "/v1/tasks/", status=500, times=2)
    await imagine(discord_fake, member)
    task = await wait_for_task(bot, TaskStatus.POSTED)
    assert evolink.creates == 1
    assert Entry.SETTLE in await bot.budget.ledger.task_entries(task.id)


@pytest.mark.parametrize(
    ("status", "operator_line"),
    [
        (401, "EvoLink refused the API key"),
        (403, "EvoLink refused the API key"),
        (402, "out of credit"),
    ],
)
async def test_account_problems_refund_and_pause(
    bot: ImagineBot,
    discord_fake: FakeDiscord,
    evolink: FakeEvoLink,
    member: int,
    caplog: pytest.LogCaptureFixture,
    status: int,
    operator_line: str,
) -> None:
    evolink.fail_next("POST", CREATE, status=status)
    interaction = await imagine(discord_fake, member)
    task = await wait_for_task(bot, TaskStatus.FAILED)
    assert await refunded(bot, task)
    assert interaction.original is not None
    assert "can't generate images right now" in interaction.original["content"]
    assert operator_line in caplog.text
    posts_before = sum(r.method == "POST" for r in evolink.requests)
    second = await imagine(discord_fake, member, "another")
    await second.wait_done()
    await discord_fake.wait_for(lambda: second.ephemeral_reply)
    assert "can't generate images right now" in (second.ephemeral_reply or "")
    assert sum(r.method == "POST" for r in evolink.requests) == posts_before  # no hammering
    assert len(await all_tasks(bot)) == 1


@pytest.mark.parametrize(
    ("plan", "settings", "reason"),
    [
        (
            TaskPlan(duration=60, progress_stall=True),
            {"stall_timeout": 0.4},
            "stopped making progress",
        ),
        (TaskPlan(duration=60, estimated_time=60), {"task_deadline": 0.5}, "far too long"),
        (TaskPlan(duration=0.2, result_status=404), {}, "could not be downloaded"),
        (TaskPlan(duration=0.2, result=b"not an image at all"), {}, "could not be downloaded"),
        (
            TaskPlan(duration=0.2, result=png_bytes(64, 64)),
            {"max_result_bytes": 100},
            "could not be downloaded",
        ),
    ],
    ids=["stalled", "deadline", "result-404", "result-not-image", "result-over-cap"],
)
async def test_broken_tasks_end_failed_with_a_reason(
    runner: BotRunner,
    discord_fake: FakeDiscord,
    evolink: FakeEvoLink,
    member: int,
    plan: TaskPlan,
    settings: dict[str, float],
    reason: str,
) -> None:
    evolink.plan = lambda request: plan
    bot = await runner.start(**settings)
    interaction = await imagine(discord_fake, member)
    task = await wait_for_task(bot, TaskStatus.FAILED)
    assert await refunded(bot, task)
    assert interaction.original is not None
    assert reason in interaction.original["content"]
    assert "credits were not spent" in interaction.original["content"]


async def test_malformed_answers_end_the_task_without_a_crash_loop(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    evolink.fail_next("GET", "/v1/tasks/", status=200, raw_body=b"{not json", times=20)
    interaction = await imagine(discord_fake, member)
    task = await wait_for_task(bot, TaskStatus.FAILED)
    assert await refunded(bot, task)
    assert interaction.original is not None
    assert "cannot read" in interaction.original["content"]
    assert sum(r.method == "GET" and r.path.startswith("/v1/tasks/") for r in evolink.requests) <= 4


async def test_create_timeout_is_never_retried(
    runner: BotRunner, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    evolink.hang_next("POST", CREATE, seconds=5, create=True)
    bot = await runner.start(evolink_timeout=0.5)
    interaction = await imagine(discord_fake, member)
    task = await wait_for_task(bot, TaskStatus.FAILED)
    assert await refunded(bot, task)
    assert sum(r.method == "POST" for r in evolink.requests) == 1
    assert interaction.original is not None
    assert "did not answer in time" in interaction.original["content"]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("", "the prompt is empty"),
        ("    \n\t ", "the prompt is empty"),
        ("x" * 2001, "2001 characters long"),
        ("a cat\x00\x07", "control characters"),
    ],
    ids=["empty", "whitespace", "too-long", "control-chars"],
)
async def test_bad_prompts_are_refused(
    bot: ImagineBot,
    discord_fake: FakeDiscord,
    evolink: FakeEvoLink,
    member: int,
    prompt: str,
    message: str,
) -> None:
    interaction = await imagine(discord_fake, member, prompt)
    await interaction.wait_done()
    assert message in (interaction.ephemeral_reply or "")
    assert evolink.requests == [] and await all_tasks(bot) == []
    assert await bot.db.fetchall("SELECT * FROM ledger") == []


@pytest.mark.parametrize(
    ("name", "data", "content_type", "size", "message"),
    [
        ("doc.pdf", b"%PDF-1.4", "application/pdf", None, "PNG, JPEG or WebP"),
        ("empty.png", b"", "image/png", 0, "is empty"),
        ("huge.png", b"\x89PNG", "image/png", 60 * 1024 * 1024, "larger than 50 MB"),
        ("anim.gif", b"GIF89a", "image/gif", None, "PNG, JPEG or WebP"),
    ],
)
async def test_bad_attachments_are_refused(
    bot: ImagineBot,
    discord_fake: FakeDiscord,
    evolink: FakeEvoLink,
    member: int,
    name: str,
    data: bytes,
    content_type: str,
    size: int | None,
    message: str,
) -> None:
    attachment = discord_fake.add_attachment(name, data, content_type, size=size)
    interaction = await discord_fake.invoke_slash(
        "imagine", {"prompt": "p"}, user_id=member, attachments={"image": attachment}
    )
    await interaction.wait_done()
    reply = interaction.ephemeral_reply or ""
    assert message in reply and name in reply
    assert evolink.requests == [] and await all_tasks(bot) == []


async def test_the_same_interaction_delivered_twice_starts_one_task(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    interaction = await imagine(discord_fake, member)
    await interaction.wait_done()
    await discord_fake.redeliver_interaction(interaction)
    await wait_for_task(bot, TaskStatus.POSTED)
    assert evolink.creates == 1 and len(await all_tasks(bot)) == 1
    assert len([m for m in discord_fake.channel_messages() if m.get("attachments")]) == 1


# ---------------------------------------------------------------- security


async def test_secrets_never_reach_logs_or_messages(
    runner: BotRunner,
    discord_fake: FakeDiscord,
    evolink: FakeEvoLink,
    member: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    bot = await runner.start(log_level="DEBUG")
    evolink.fail_next("POST", CREATE, status=401)
    await imagine(discord_fake, member)
    await wait_for_task(bot, TaskStatus.FAILED)
    key = bot.settings.evolink_api_key.get_secret_value()
    assert key not in caplog.text and BOT_TOKEN not in caplog.text
    for message in discord_fake.messages.values():
        assert key not in message.get("content", "") and BOT_TOKEN not in message.get("content", "")


async def test_prompts_are_stored_and_shown_intact_and_never_ping(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    prompt = "Robert'); DROP TABLE tasks;-- @everyone <@123456789012345678> **bold** `code`"
    interaction = await imagine(discord_fake, member, prompt)
    task = await wait_for_task(bot, TaskStatus.POSTED)
    assert task.prompt == prompt
    (fake_task,) = evolink.tasks.values()
    assert fake_task.request["prompt"] == prompt
    assert interaction.original is not None
    content = interaction.original["content"]
    assert "\\*\\*bold\\*\\*" in content and "DROP TABLE tasks;" in content
    sent = [c.json for c in discord_fake.calls if isinstance(c.json, dict) and "content" in c.json]
    assert sent and all(body.get("allowed_mentions") == {"parse": []} for body in sent)


async def test_token_is_left_before_it_expires(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    """A token a second short of the bot's margin: first edit by token, then the channel."""
    evolink.plan = lambda request: TaskPlan(duration=1.5, estimated_time=2)
    usable_for = 1.0  # seconds until the token is within a minute of its 15-minute expiry
    interaction = await discord_fake.invoke_slash(
        "imagine", {"prompt": "late"}, user_id=member, created_ago=14 * 60 - usable_for
    )
    task = await wait_for_task(bot, TaskStatus.POSTED)
    by_token = [
        c
        for c in discord_fake.calls
        if c.path.startswith("/webhooks/") and interaction.token in c.path
    ]
    by_channel = discord_fake.calls_to("PATCH", CHANNEL_MESSAGE)
    assert by_token and by_channel
    assert max(c.time for c in by_token) < min(c.time for c in by_channel)
    assert all(c.status < 400 for c in by_token)  # left before Discord refused it
    assert [c for c in by_channel if c.files] and discord_fake.files_of(task.result_message_id or 0)


async def test_progress_edits_wait_while_an_image_is_posted_in_the_channel(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    """On the shared channel route, an image goes first; other tasks' progress waits."""
    evolink.plan = lambda request: (
        TaskPlan(duration=0.6, estimated_time=1)
        if request["prompt"] == "quick"
        else TaskPlan(duration=6.0, estimated_time=6)
    )
    quick = await imagine(discord_fake, member, "quick")
    slow = await imagine(discord_fake, member, "slow")
    for interaction in (quick, slow):
        await progress_shown(discord_fake, interaction)
        discord_fake.expire_interaction(interaction.token)
    slow_task = next(t for t in await all_tasks(bot) if t.prompt == "slow")
    # The image's first upload fails with a 500: discord.py waits a second and tries again.
    discord_fake.fail_next("PATCH", CHANNEL_MESSAGE, status=500, with_files=True)

    async def keep_polling_the_slow_task() -> None:
        while True:  # each poll sees new progress, which the bot would like to show
            bot.generator.wake(slow_task.id)
            await asyncio.sleep(0.1)

    poller = asyncio.create_task(keep_polling_the_slow_task())
    try:
        await wait_for_task(bot, TaskStatus.POSTED)
    finally:
        poller.cancel()
    edits = discord_fake.calls_to("PATCH", CHANNEL_MESSAGE)
    uploads = [c for c in edits if c.files]
    assert [c.status for c in uploads] == [500, 200]
    started, done = uploads[0].time, uploads[1].time
    slow_edits = [c for c in edits if str(slow_task.progress_message_id) in c.path]
    assert not [c for c in slow_edits if started <= c.time <= done]
    # ...and it is shown again once the image is out.
    poller = asyncio.create_task(keep_polling_the_slow_task())
    try:
        await discord_fake.wait_for(
            lambda: [
                c
                for c in discord_fake.calls_to("PATCH", CHANNEL_MESSAGE)
                if c.time > done and str(slow_task.progress_message_id) in c.path
            ]
        )
    finally:
        poller.cancel()
