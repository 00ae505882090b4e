"""/imagine end to end: the real bot, the fake Discord, the fake EvoLink, a real SQLite file."""

from __future__ import annotations

import io
import itertools
import os
import re

import pytest
from PIL import Image

from bot.core import ImagineBot
from storage.ledger import Entry
from storage.tasks import TaskStatus
from tests.conftest import BotRunner, png_bytes, wait_for_task
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.evolink_server import FakeEvoLink, TaskPlan


async def test_text_only_imagine_posts_the_image(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    interaction = await discord_fake.invoke_slash(
        "imagine", {"prompt": "a red fox in *snow*", "quality": "medium"}, user_id=member
    )
    task = await wait_for_task(bot, TaskStatus.POSTED)
    assert interaction.deferred
    assert interaction.callbacks[0]["type"] == 5  # acknowledged by deferring
    original = interaction.original
    assert original is not None
    files = discord_fake.files_of(int(original["id"]))
    assert len(files) == 1
    fake_task = evolink.tasks[task.evolink_task_id or ""]
    assert files[0][1] == (fake_task.plan.result or files[0][1])
    Image.open(io.BytesIO(files[0][1])).verify()
    assert "a red fox in \\*snow\\*" in original["content"]  # markdown shown as typed
    assert "1.958 credits" in original["content"]
    assert evolink.creates == 1
    request = fake_task.request
    assert request["prompt"] == "a red fox in *snow*"
    assert request["model"] == "gpt-image-1.5" and request["quality"] == "medium"
    assert "image_urls" not in request
    assert task.result_message_id == int(original["id"])
    entries = await bot.budget.ledger.task_entries(task.id)
    assert entries[Entry.SETTLE] == 1958 and Entry.RELEASE not in entries
    # Progress was shown in between, and no edit repeated the same text.
    edits = [
        c for c in discord_fake.calls if c.method == "PATCH" and c.json and "content" in c.json
    ]
    contents = [c.json["content"] for c in edits]
    assert all(a != b for a, b in itertools.pairwise(contents))


async def test_two_attachments_become_image_urls_in_order(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    first = discord_fake.add_attachment("cat.png", png_bytes(color=(1, 2, 3)), "image/png")
    second = discord_fake.add_attachment("hat.jpg", png_bytes(color=(4, 5, 6)), "image/jpeg")
    await discord_fake.invoke_slash(
        "imagine",
        {"prompt": "put the hat on the cat"},
        user_id=member,
        attachments={"image": first, "image3": second},
    )
    await wait_for_task(bot, TaskStatus.POSTED)
    (fake_task,) = evolink.tasks.values()
    assert fake_task.request["image_urls"] == [first["url"], second["url"]]


async def test_failed_task_shows_reason_and_refunds(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    evolink.plan = lambda request: TaskPlan(
        duration=0.2, outcome="failed", error_code="content_policy_violation"
    )
    before = await bot.budget.standing(discord_fake.guild_id, member)
    interaction = await discord_fake.invoke_slash(
        "imagine", {"prompt": "something"}, user_id=member
    )
    task = await wait_for_task(bot, TaskStatus.FAILED)
    assert interaction.original is not None
    assert "content policy" in interaction.original["content"]
    assert not interaction.original.get("attachments")
    after = await bot.budget.standing(discord_fake.guild_id, member)
    assert after.left == before.left and after.pending == 0
    assert Entry.RELEASE in await bot.budget.ledger.task_entries(task.id)


async def test_invalid_attachment_is_refused_without_api_call(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    notes = discord_fake.add_attachment("notes.txt", b"hello", "text/plain")
    interaction = await discord_fake.invoke_slash(
        "imagine", {"prompt": "use my notes"}, user_id=member, attachments={"image": notes}
    )
    await interaction.wait_done()
    assert interaction.ephemeral_reply is not None
    assert (
        "notes.txt" in interaction.ephemeral_reply
        and "PNG, JPEG or WebP" in interaction.ephemeral_reply
    )
    assert evolink.creates == 0
    assert await bot.db.fetchall("SELECT * FROM tasks") == []
    assert await bot.db.fetchall("SELECT * FROM ledger") == []


async def test_over_long_prompt_is_refused_without_api_call(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    interaction = await discord_fake.invoke_slash("imagine", {"prompt": "x" * 2001}, user_id=member)
    await interaction.wait_done()
    assert interaction.ephemeral_reply is not None
    assert "2001 characters" in interaction.ephemeral_reply
    assert interaction.original is not None
    assert interaction.original["flags"] & 64  # the only answer is ephemeral
    assert evolink.creates == 0
    assert await bot.db.fetchall("SELECT * FROM tasks") == []


async def test_result_larger_than_upload_limit_is_reencoded_to_fit(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    noise = Image.frombytes("RGB", (1024, 1024), os.urandom(1024 * 1024 * 3))
    out = io.BytesIO()
    noise.save(out, "PNG")
    big = out.getvalue()
    assert len(big) > 3_000_000
    evolink.plan = lambda request: TaskPlan(duration=0.2, result=big)
    limit = 1_000_000
    interaction = await discord_fake.invoke_slash(
        "imagine", {"prompt": "static"}, user_id=member, attachment_size_limit=limit
    )
    await wait_for_task(bot, TaskStatus.POSTED)
    assert interaction.original is not None
    ((name, data),) = discord_fake.files_of(int(interaction.original["id"]))
    assert len(data) <= limit
    assert name.endswith(".webp")
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "WEBP"
    assert "Re-encoded" in interaction.original["content"]


async def test_commands_are_synced_only_when_they_change(
    runner: BotRunner, discord_fake: FakeDiscord
) -> None:
    route = "/applications/{application_id}/commands"
    await runner.start()
    assert len(discord_fake.calls_to("PUT", route)) == 1
    names = {command["name"] for command in discord_fake.commands_global}
    assert {"imagine", "balance", "budget", "history", "imagine-admin", "Edit image"} <= names
    await runner.stop()
    await runner.start()  # same definitions: no second sync
    assert len(discord_fake.calls_to("PUT", route)) == 1
    await runner.stop()
    guild_route = "/applications/{application_id}/guilds/{guild_id}/commands"
    await runner.start(dev_guild_id=discord_fake.guild_id)  # a development guild instead
    assert len(discord_fake.calls_to("PUT", guild_route)) == 1


async def test_unexpected_error_gives_an_apology_with_an_id_in_the_log(
    bot: ImagineBot,
    discord_fake: FakeDiscord,
    evolink: FakeEvoLink,
    member: int,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(bot.requests, "build", broken)
    interaction = await discord_fake.invoke_slash("imagine", {"prompt": "x"}, user_id=member)
    reply = await discord_fake.wait_for(lambda: interaction.ephemeral_reply)
    match = re.fullmatch(
        r"Sorry, something went wrong on our side \(error id ([0-9a-f]{8})\)\.", reply
    )
    assert match is not None, reply
    assert f"error id {match[1]}" in caplog.text and "RuntimeError: boom" in caplog.text
    assert "boom" not in reply and evolink.creates == 0
