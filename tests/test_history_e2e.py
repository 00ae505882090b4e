"""/history end to end: pages of five, Previous / Next that keep working, who may see what."""

from __future__ import annotations

import time
from typing import Any

from bot.controls import NOT_YOUR_PAGES, OTHERS_HISTORY
from bot.core import ImagineBot
from storage.tasks import NewTask, TaskRecord, TaskStatus, TaskStore
from tests.conftest import BotRunner, wait_for_task
from tests.fakes.discord_server import (
    DEFAULT_UPLOAD_LIMIT,
    FakeDiscord,
    FakeInteraction,
    MessageFlags,
    _walk_components,
)
from tests.fakes.evolink_server import FakeEvoLink


async def seed(
    bot: ImagineBot, discord_fake: FakeDiscord, user_id: int, count: int, prompt: str = "picture"
) -> list[TaskRecord]:
    """`count` finished tasks of a member, oldest first: every third failed, the rest posted."""
    store = TaskStore(bot.db)
    tasks = []
    for number in range(1, count + 1):
        new = NewTask(
            guild_id=discord_fake.guild_id,
            channel_id=discord_fake.channel_id,
            user_id=user_id,
            origin="command",
            prompt=f"{prompt} {number}",
            model="gpt-image-1.5",
            size="1:1",
            quality="low",
            reference_urls=(),
            estimate=509,
            upload_limit=DEFAULT_UPLOAD_LIMIT,
        )
        task = await store.insert(new, time.time())
        if number % 3 == 0:
            await store.update(task, time.time(), status=TaskStatus.FAILED, error="no")
        else:
            await store.update(
                task, time.time(), status=TaskStatus.POSTED, cost=509, result_message_id=number
            )
        tasks.append(task)
    return tasks


def buttons(message: dict[str, Any]) -> dict[str, bool]:
    """custom_id -> disabled, for the buttons of a message."""
    return {
        str(c["custom_id"]): bool(c.get("disabled"))
        for c in _walk_components(message["components"])
        if c.get("type") == 2
    }


def shown_ids(message: dict[str, Any]) -> list[int]:
    return [
        int(line.split("**#")[1].split("**")[0])
        for line in message["content"].splitlines()
        if line.startswith("**#")
    ]


async def history(
    discord_fake: FakeDiscord, user_id: int, member: int | None = None
) -> FakeInteraction:
    options = {"member": str(member)} if member is not None else {}
    interaction = await discord_fake.invoke_slash("history", options, user_id=user_id)
    await discord_fake.wait_for(
        lambda: interaction.original and not interaction.original["flags"] & MessageFlags.LOADING
    )
    return interaction


async def click(
    discord_fake: FakeDiscord, message: dict[str, Any], custom_id: str, user_id: int
) -> FakeInteraction:
    interaction = await discord_fake.click_button(message, custom_id, user_id=user_id)
    await interaction.wait_done()
    return interaction


async def test_twelve_images_make_three_pages(
    bot: ImagineBot, discord_fake: FakeDiscord, member: int
) -> None:
    await seed(bot, discord_fake, member, 12)
    interaction = await history(discord_fake, member)
    page = interaction.original
    assert page is not None and page["flags"] & MessageFlags.EPHEMERAL
    assert page["content"].startswith("**Your images** · page 1 of 3 · 12 in all")
    assert shown_ids(page) == [12, 11, 10, 9, 8]
    assert buttons(page) == {
        f"imagine:history:{member}:{member}:0:prev": True,
        f"imagine:history:{member}:{member}:1:next": False,
    }
    guild, channel = discord_fake.guild_id, discord_fake.channel_id
    assert "**#11** · posted · 0.509 credits · <t:" in page["content"]
    assert f"[message](https://discord.com/channels/{guild}/{channel}/11)" in page["content"]
    assert "**#12** · failed · not charged" in page["content"]
    assert "> picture 12" in page["content"]

    second = await click(discord_fake, page, f"imagine:history:{member}:{member}:1:next", member)
    assert second.callbacks[0]["type"] == 7  # the same message is replaced
    page = discord_fake.messages[int(page["id"])]
    assert "page 2 of 3" in page["content"] and shown_ids(page) == [7, 6, 5, 4, 3]

    await click(discord_fake, page, f"imagine:history:{member}:{member}:2:next", member)
    page = discord_fake.messages[int(page["id"])]
    assert "page 3 of 3" in page["content"] and shown_ids(page) == [2, 1]
    assert buttons(page)[f"imagine:history:{member}:{member}:2:next"] is True

    await click(discord_fake, page, f"imagine:history:{member}:{member}:1:prev", member)
    page = discord_fake.messages[int(page["id"])]
    assert "page 2 of 3" in page["content"] and shown_ids(page) == [7, 6, 5, 4, 3]


async def test_someone_elses_click_is_refused(
    bot: ImagineBot, discord_fake: FakeDiscord, member: int
) -> None:
    stranger = discord_fake.add_member(name="mallory")
    await seed(bot, discord_fake, member, 6)
    page = (await history(discord_fake, member)).original
    assert page is not None
    before = page["content"]
    refused = await click(discord_fake, page, f"imagine:history:{member}:{member}:1:next", stranger)
    assert refused.ephemeral_reply == NOT_YOUR_PAGES
    assert discord_fake.messages[int(page["id"])]["content"] == before


async def test_pages_keep_working_after_a_restart(
    runner: BotRunner, bot: ImagineBot, discord_fake: FakeDiscord, member: int
) -> None:
    await seed(bot, discord_fake, member, 7)
    page = (await history(discord_fake, member)).original
    assert page is not None
    await runner.stop()
    await runner.start()
    await click(discord_fake, page, f"imagine:history:{member}:{member}:1:next", member)
    page = discord_fake.messages[int(page["id"])]
    assert "page 2 of 2" in page["content"] and shown_ids(page) == [2, 1]


async def test_only_moderators_see_another_members_images(
    bot: ImagineBot, discord_fake: FakeDiscord, member: int, moderator: int
) -> None:
    other = discord_fake.add_member(name="bob")
    await seed(
        bot, discord_fake, member, 2, prompt="**loud** <@&123456789012345678> " + "long " * 60
    )

    refused = await history(discord_fake, other, member)
    assert refused.ephemeral_reply == OTHERS_HISTORY
    assert "loud" not in str(refused.original)

    shown = (await history(discord_fake, moderator, member)).original
    assert shown is not None
    assert shown["content"].startswith(f"**Images by <@{member}>** · page 1 of 1 · 2 in all")
    assert buttons(shown) == {}  # one page: no buttons
    assert "\\*\\*loud\\*\\*" in shown["content"]  # markdown shown as typed
    assert "<@&123456789012345678>" not in shown["content"]  # no mention survives
    assert "…" in shown["content"] and len(shown["content"]) < 600  # prompts are cut short


async def test_a_real_image_links_to_its_message(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    empty = (await history(discord_fake, member)).original
    assert empty is not None and empty["content"] == "You have made no images here yet."
    await discord_fake.invoke_slash(
        "imagine", {"prompt": "a red fox", "quality": "medium"}, user_id=member
    )
    task = await wait_for_task(bot, TaskStatus.POSTED)
    shown = (await history(discord_fake, member)).original
    assert shown is not None
    link = (
        f"https://discord.com/channels/{discord_fake.guild_id}/{discord_fake.channel_id}/"
        f"{task.result_message_id}"
    )
    assert f"**#{task.id}** · posted · 1.958 credits" in shown["content"]
    assert f"[message]({link})" in shown["content"] and "> a red fox" in shown["content"]
