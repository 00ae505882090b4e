"""The buttons under progress and result messages, end to end, including after a restart."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bot.controls import (
    DELETED,
    EDIT_FORM,
    EDIT_PROMPT,
    EXPIRED_REFERENCES,
    NOT_YOURS_CANCEL,
    NOT_YOURS_DELETE,
    VARY_FORM,
    VARY_QUALITY,
    VARY_SIZE,
    expired_links,
)
from bot.core import ImagineBot
from storage.community import CommunityStore
from storage.ledger import Entry
from storage.tasks import TaskRecord, TaskStatus, TaskStore
from tests.conftest import BotRunner, png_bytes
from tests.fakes.discord_server import FakeDiscord, FakeInteraction, MessageFlags, _walk_components
from tests.fakes.evolink_server import FakeEvoLink, TaskPlan

RUNNING = (TaskStatus.PENDING, TaskStatus.PROCESSING)


def custom_ids(message: dict[str, Any] | None) -> list[str]:
    if message is None:
        return []
    return [
        str(c["custom_id"]) for c in _walk_components(message["components"]) if "custom_id" in c
    ]


async def task_reaching(
    bot: ImagineBot, task_id: int, *statuses: TaskStatus, timeout: float = 10.0
) -> TaskRecord:
    """Task `task_id` once it is in one of `statuses`."""
    store = TaskStore(bot.db)
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        task = await store.get(task_id)
        if task is not None and task.status in statuses:
            return task
        await asyncio.sleep(0.02)
    raise AssertionError(f"task {task_id} did not reach {statuses}: {await store.get(task_id)}")


async def answer(discord_fake: FakeDiscord, interaction: FakeInteraction) -> str:
    """The private answer the clicker got."""
    return await discord_fake.wait_for(lambda: interaction.ephemeral_reply)


async def posted_image(
    discord_fake: FakeDiscord, bot: ImagineBot, user_id: int, **options: Any
) -> tuple[TaskRecord, dict[str, Any]]:
    """Run /imagine and wait for its image: the task and its result message."""
    attachments = options.pop("attachments", None)
    values = {"prompt": "a lighthouse at dusk", "quality": "low", **options}
    interaction = await discord_fake.invoke_slash(
        "imagine", values, user_id=user_id, attachments=attachments
    )
    store = TaskStore(bot.db)
    deadline = asyncio.get_running_loop().time() + 10
    while asyncio.get_running_loop().time() < deadline:
        result = interaction.original
        task = await store.by_result_message(int(result["id"])) if result else None
        if result is not None and task is not None and task.status is TaskStatus.POSTED:
            return task, result
        await asyncio.sleep(0.02)
    raise AssertionError(f"no image was posted for {interaction}")


async def running_image(
    discord_fake: FakeDiscord, bot: ImagineBot, evolink: FakeEvoLink, user_id: int
) -> tuple[TaskRecord, FakeInteraction]:
    """Start an image that takes long at EvoLink; wait until its progress shows Cancel."""
    evolink.plan = lambda request: TaskPlan(duration=60, pending_for=0.05)
    interaction = await discord_fake.invoke_slash(
        "imagine", {"prompt": "a slow sunrise"}, user_id=user_id
    )
    task = await task_reaching(bot, 1, *RUNNING)
    await discord_fake.wait_for(
        lambda: f"imagine:cancel:{task.id}" in custom_ids(interaction.original)
    )
    return task, interaction


async def ledger_kinds(bot: ImagineBot, task_id: int) -> set[Entry]:
    return set(await bot.budget.ledger.task_entries(task_id))


# ---------------------------------------------------------------------- Re-roll


async def test_reroll_makes_a_second_task_with_the_same_request(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    hat = discord_fake.add_attachment("hat.png", png_bytes(), "image/png")
    first, result = await posted_image(
        discord_fake, bot, member, size="3:2", attachments={"image": hat}
    )
    assert custom_ids(result) == [
        f"imagine:reroll:{first.id}",
        f"imagine:vary:{first.id}",
        f"imagine:edit:{first.id}",
        f"imagine:delete:{first.id}",
    ]
    assert "3:2 · low quality" in result["content"] and "0.749 credits" in result["content"]

    click = await discord_fake.click_button(result, f"imagine:reroll:{first.id}", user_id=member)
    second = await task_reaching(bot, 2, TaskStatus.POSTED)

    assert click.callbacks[0]["type"] == 5  # a public "thinking…" that becomes the progress
    assert second.origin == "button" and second.interaction_id == click.id
    assert (second.prompt, second.size, second.quality, second.reference_urls) == (
        first.prompt,
        first.size,
        first.quality,
        (hat["url"],),
    )
    requests = [evolink.tasks[t.evolink_task_id or ""].request for t in (first, second)]
    assert requests[0] == requests[1]
    assert requests[1]["image_urls"] == [hat["url"]]
    assert click.original is not None
    assert int(click.original["id"]) == second.result_message_id != first.result_message_id
    assert not click.original["flags"] & MessageFlags.EPHEMERAL
    assert custom_ids(click.original)[0] == f"imagine:reroll:{second.id}"
    standing = await bot.budget.standing(discord_fake.guild_id, member)
    assert standing.spent == 2 * 749


async def test_reroll_by_another_member_is_their_request(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    other = discord_fake.add_member(name="bob")
    first, result = await posted_image(discord_fake, bot, member)
    await discord_fake.click_button(result, f"imagine:reroll:{first.id}", user_id=other)
    second = await task_reaching(bot, 2, TaskStatus.POSTED)
    assert second.user_id == other and second.prompt == first.prompt
    assert (await bot.budget.standing(discord_fake.guild_id, other)).spent == 509
    assert (await bot.budget.standing(discord_fake.guild_id, member)).spent == 509


async def test_reroll_over_budget_is_refused_like_the_command(
    runner: BotRunner, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    bot = await runner.start(default_allowance=3)
    first, result = await posted_image(discord_fake, bot, member, quality="medium")
    command = await discord_fake.invoke_slash(
        "imagine", {"prompt": "a lighthouse at dusk", "quality": "medium"}, user_id=member
    )
    refusal = await answer(discord_fake, command)
    assert "you have 1.042 left" in refusal

    click = await discord_fake.click_button(result, f"imagine:reroll:{first.id}", user_id=member)
    assert await answer(discord_fake, click) == refusal
    assert click.original is None  # the public placeholder was removed
    assert evolink.creates == 1
    assert len(await bot.db.fetchall("SELECT id FROM tasks")) == 1


async def test_reroll_with_expired_reference_links_is_refused_before_any_cost(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    hat = discord_fake.add_attachment("hat.png", png_bytes(), "image/png")
    first, result = await posted_image(discord_fake, bot, member, attachments={"image": hat})
    stale = "https://cdn.discordapp.com/attachments/1/2/hat.png?ex=5f5e1000&is=5f5cbe80&hm=ab&"
    await bot.db.execute(
        "UPDATE tasks SET reference_urls = ? WHERE id = ?", (json.dumps([stale]), first.id)
    )
    click = await discord_fake.click_button(result, f"imagine:reroll:{first.id}", user_id=member)
    assert await answer(discord_fake, click) == EXPIRED_REFERENCES
    assert click.callbacks[0]["type"] == 4  # answered privately at once, nothing public
    assert evolink.creates == 1
    assert (await bot.budget.standing(discord_fake.guild_id, member)).pending == 0


def test_expired_links_reads_discords_signature_only() -> None:
    now = 1_700_000_000.0
    fresh = f"https://cdn.discordapp.com/a.png?ex={int(now + 3600):x}&is=0&hm=1"
    old = f"https://cdn.discordapp.com/b.png?ex={int(now - 1):x}&is=0&hm=1"
    unsigned = "https://example.com/c.png"
    assert expired_links([fresh, old, unsigned], now) == [old]
    assert expired_links([f"https://x/d.png?ex={int(now + 30):x}"], now) != []  # too close


# ---------------------------------------------------------------------- Vary


async def test_vary_runs_the_request_again_at_another_size_and_quality(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    hat = discord_fake.add_attachment("hat.png", png_bytes(), "image/png")
    first, result = await posted_image(discord_fake, bot, member, attachments={"image": hat})
    click = await discord_fake.click_button(result, f"imagine:vary:{first.id}", user_id=member)
    await click.wait_done()
    form = VARY_FORM.format(task_id=first.id)
    assert click.modal is not None and click.modal["custom_id"] == form
    picked = {
        c["component"]["custom_id"]: [
            o["value"] for o in c["component"]["options"] if o.get("default")
        ]
        for c in click.modal["components"]
    }
    assert picked == {VARY_SIZE: ["1:1"], VARY_QUALITY: ["low"]}  # the current settings

    submit = await discord_fake.submit_modal(
        form, {VARY_SIZE: ["3:2"], VARY_QUALITY: ["medium"]}, user_id=member
    )
    second = await task_reaching(bot, 2, TaskStatus.POSTED)
    assert (second.size, second.quality, second.origin) == ("3:2", "medium", "button")
    assert (second.prompt, second.reference_urls) == (first.prompt, first.reference_urls)
    request = evolink.tasks[second.evolink_task_id or ""].request
    assert (request["size"], request["quality"], request["image_urls"]) == (
        "3:2",
        "medium",
        [hat["url"]],
    )
    assert submit.original is not None and "2.879 credits" in submit.original["content"]


# ---------------------------------------------------------------------- Edit


async def test_edit_button_opens_a_form_and_edits_this_image(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    first, result = await posted_image(discord_fake, bot, member, size="2:3")
    image_url = result["attachments"][0]["url"]

    click = await discord_fake.click_button(result, f"imagine:edit:{first.id}", user_id=member)
    await click.wait_done()
    form = EDIT_FORM.format(task_id=first.id)
    assert click.modal is not None and click.modal["custom_id"] == form
    assert evolink.creates == 1  # nothing is asked before the form is sent

    submit = await discord_fake.submit_modal(
        form, {EDIT_PROMPT: "make the sky purple"}, user_id=member
    )
    edit = await task_reaching(bot, 2, TaskStatus.POSTED)

    assert edit.prompt == "make the sky purple" and edit.origin == "button"
    assert edit.reference_urls[0] == image_url
    assert (edit.parent_task_id, edit.parent_message_id) == (first.id, int(result["id"]))
    assert (edit.size, edit.quality) == ("2:3", "low")
    request = evolink.tasks[edit.evolink_task_id or ""].request
    assert request["image_urls"][0] == image_url and request["prompt"] == "make the sky purple"
    assert submit.original is not None
    assert int(submit.original["id"]) == edit.result_message_id
    link = f"https://discord.com/channels/{discord_fake.guild_id}/{discord_fake.channel_id}/{result['id']}"
    assert link in submit.original["content"]


# ---------------------------------------------------------------------- Delete


async def test_delete_by_the_member_who_asked(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    task, result = await posted_image(discord_fake, bot, member)
    click = await discord_fake.click_button(result, f"imagine:delete:{task.id}", user_id=member)
    assert await answer(discord_fake, click) == DELETED
    assert int(result["id"]) in discord_fake.deleted_messages
    assert int(result["id"]) not in discord_fake.messages
    kept = await task_reaching(bot, task.id, TaskStatus.POSTED)  # the row stays as it was
    assert kept.result_message_id == task.result_message_id
    assert await ledger_kinds(bot, task.id) == {Entry.RESERVE, Entry.SETTLE}


async def test_delete_by_a_moderator_is_recorded(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int, moderator: int
) -> None:
    log_channel = discord_fake.add_channel(name="imagine-log")
    await CommunityStore(bot.db).set_log_channel(discord_fake.guild_id, log_channel)
    task, result = await posted_image(discord_fake, bot, member)
    click = await discord_fake.click_button(result, f"imagine:delete:{task.id}", user_id=moderator)
    assert await answer(discord_fake, click) == DELETED
    assert int(result["id"]) in discord_fake.deleted_messages
    (logged,) = await bot.db.fetchall("SELECT actor_id, action, detail FROM moderation_log")
    assert (logged["actor_id"], logged["action"]) == (moderator, "delete image")
    assert str(task.id) in logged["detail"]
    posted = await discord_fake.wait_for(
        lambda: [m for m in discord_fake.channel_messages(log_channel) if "deleted" in m["content"]]
    )
    assert f"<@{moderator}> deleted image #{task.id} of <@{member}>" in posted[0]["content"]


async def test_delete_by_a_stranger_is_refused(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    stranger = discord_fake.add_member(name="mallory")
    task, result = await posted_image(discord_fake, bot, member)
    click = await discord_fake.click_button(result, f"imagine:delete:{task.id}", user_id=stranger)
    assert await answer(discord_fake, click) == NOT_YOURS_DELETE
    assert int(result["id"]) in discord_fake.messages
    assert not discord_fake.calls_to("DELETE", "/channels/{channel_id}/messages/{message_id}")


# ---------------------------------------------------------------------- Cancel


async def test_cancel_stops_the_task_and_gives_the_credits_back(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    task, interaction = await running_image(discord_fake, bot, evolink, member)
    assert interaction.original is not None
    assert (await bot.budget.standing(discord_fake.guild_id, member)).pending == 7657

    stranger = discord_fake.add_member(name="mallory")
    refused = await discord_fake.click_button(
        interaction.original, f"imagine:cancel:{task.id}", user_id=stranger
    )
    assert await answer(discord_fake, refused) == NOT_YOURS_CANCEL
    assert (await TaskStore(bot.db).get(task.id)).status in RUNNING  # type: ignore[union-attr]

    click = await discord_fake.click_button(
        interaction.original, f"imagine:cancel:{task.id}", user_id=member
    )
    cancelled = await task_reaching(bot, task.id, TaskStatus.CANCELLED)
    assert await answer(discord_fake, click) == (
        "Cancelled; the 7.657 credits it held were released."
    )
    message = interaction.original
    assert message is not None and "Cancelled" in message["content"]
    assert "credits were not spent" in message["content"]
    assert custom_ids(message) == []  # the Cancel button is gone
    standing = await bot.budget.standing(discord_fake.guild_id, member)
    assert standing.pending == 0 and standing.spent == 0 and standing.left == 20_000
    assert Entry.RELEASE in await ledger_kinds(bot, cancelled.id)
    assert bot.generator.running() == 0


async def test_cancel_by_a_moderator(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int, moderator: int
) -> None:
    task, interaction = await running_image(discord_fake, bot, evolink, member)
    assert interaction.original is not None
    await discord_fake.click_button(
        interaction.original, f"imagine:cancel:{task.id}", user_id=moderator
    )
    await task_reaching(bot, task.id, TaskStatus.CANCELLED)
    assert (await bot.budget.standing(discord_fake.guild_id, member)).pending == 0
    (logged,) = await bot.db.fetchall("SELECT actor_id, action FROM moderation_log")
    assert (logged["actor_id"], logged["action"]) == (moderator, "cancel image")


# ---------------------------------------------------------------------- after a restart


async def test_result_buttons_work_after_a_restart(
    runner: BotRunner, bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    first, result = await posted_image(discord_fake, bot, member)
    await runner.stop()
    bot = await runner.start()

    reroll = await discord_fake.click_button(result, f"imagine:reroll:{first.id}", user_id=member)
    second = await task_reaching(bot, 2, TaskStatus.POSTED)
    assert second.prompt == first.prompt and second.interaction_id == reroll.id
    assert evolink.creates == 2

    edit = await discord_fake.click_button(result, f"imagine:edit:{first.id}", user_id=member)
    await edit.wait_done()
    form = EDIT_FORM.format(task_id=first.id)
    await discord_fake.submit_modal(form, {EDIT_PROMPT: "add a moon"}, user_id=member)
    third = await task_reaching(bot, 3, TaskStatus.POSTED)
    assert third.parent_task_id == first.id
    assert third.reference_urls == (result["attachments"][0]["url"],)

    delete = await discord_fake.click_button(result, f"imagine:delete:{first.id}", user_id=member)
    assert await answer(discord_fake, delete) == DELETED
    assert int(result["id"]) in discord_fake.deleted_messages


async def test_cancel_works_after_a_restart(
    runner: BotRunner, bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    task, interaction = await running_image(discord_fake, bot, evolink, member)
    progress = interaction.original
    assert progress is not None
    await runner.stop()
    bot = await runner.start()

    click = await discord_fake.click_button(progress, f"imagine:cancel:{task.id}", user_id=member)
    await task_reaching(bot, task.id, TaskStatus.CANCELLED)
    assert "credits it held were released" in await answer(discord_fake, click)
    message = discord_fake.messages[int(progress["id"])]
    assert "Cancelled" in message["content"] and custom_ids(message) == []
    assert (await bot.budget.standing(discord_fake.guild_id, member)).pending == 0
