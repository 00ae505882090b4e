"""Edits end to end: replies to images and Apps → Edit image, via the fake Discord and EvoLink."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bot.core import ImagineBot
from bot.edits import HIDDEN_IMAGES, NO_IMAGE
from bot.presenter import message_link
from bot.pricing import to_milli
from storage.tasks import ENDED, TaskRecord, TaskStatus
from tests.conftest import BotRunner, all_tasks, png_bytes
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.evolink_server import FakeEvoLink

Message = dict[str, Any]


async def ended_task(
    bot: ImagineBot, matches: Callable[[TaskRecord], bool], timeout: float = 10.0
) -> TaskRecord:
    """The task that `matches`, once it has ended."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        for task in await all_tasks(bot):
            if matches(task) and task.status in ENDED:
                return task
        await asyncio.sleep(0.02)
    raise AssertionError(f"no matching task ended: {await all_tasks(bot)}")


async def edit_of(bot: ImagineBot, reply: Message) -> TaskRecord:
    task = await ended_task(bot, lambda t: t.source_message_id == int(reply["id"]))
    assert task.status is TaskStatus.POSTED, task
    return task


async def make_result(
    bot: ImagineBot, discord_fake: FakeDiscord, member: int, prompt: str = "a lighthouse"
) -> tuple[TaskRecord, Message]:
    """An image made with /imagine: its task and its result message."""
    interaction = await discord_fake.invoke_slash(
        "imagine", {"prompt": prompt, "quality": "medium", "size": "3:2"}, user_id=member
    )
    task = await ended_task(bot, lambda t: t.interaction_id == interaction.id)
    assert task.status is TaskStatus.POSTED and task.result_message_id is not None
    return task, discord_fake.messages[task.result_message_id]


def bot_replies_to(discord_fake: FakeDiscord, message: Message) -> list[Message]:
    """The bot's messages that answer `message` (as a reply)."""
    return [
        m
        for m in discord_fake.channel_messages(int(message["channel_id"]))
        if m["author"]["id"] == str(discord_fake.bot_user_id)
        and (m.get("message_reference") or {}).get("message_id") == message["id"]
    ]


def image_url(message: Message) -> str:
    (attachment,) = message["attachments"]
    return str(attachment["url"])


async def settle(bot: ImagineBot, discord_fake: FakeDiscord, member: int) -> None:
    """A barrier: a reply that must be acted on, posted after events that must be ignored.

    Gateway events are handled in order of arrival and an ignored one takes fewer steps than an
    edit, so once this edit has ended, whatever the earlier events would have done has shown.
    """
    own = discord_fake.add_attachment("barrier.png", png_bytes(color=(9, 9, 9)))
    upload = await discord_fake.post_message(
        author_id=member, content=f"<@{discord_fake.bot_user_id}> barrier", attachments=[own]
    )
    reply = await discord_fake.post_message(
        author_id=member, content="barrier edit", reply_to=upload, mention_bot=True
    )
    await ended_task(bot, lambda t: t.source_message_id == int(reply["id"]))


# ---------------------------------------------------------------------- replies to results


async def test_reply_with_text_edits_the_result(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    parent, result = await make_result(bot, discord_fake, member)
    reply = await discord_fake.post_message(
        author_id=member, content="make the sky purple", reply_to=result
    )
    task = await edit_of(bot, reply)

    request = evolink.tasks[task.evolink_task_id or ""].request
    assert request["prompt"] == "make the sky purple"
    assert request["image_urls"] == [image_url(result)]
    assert (request["size"], request["quality"]) == ("3:2", "medium")  # the parent's
    fetches = discord_fake.calls_to("GET", "/channels/{channel_id}/messages/{message_id}")
    assert [c.path.rsplit("/", 1)[1] for c in fetches] == [result["id"]]  # fresh links
    assert (task.origin, task.interaction_id) == ("reply", None)
    assert (task.parent_task_id, task.parent_message_id) == (parent.id, int(result["id"]))

    (answer,) = bot_replies_to(discord_fake, reply)  # the progress reply, edited into the image
    assert answer["id"] == str(task.result_message_id)
    assert answer["type"] == 19
    assert discord_fake.files_of(int(answer["id"]))
    link = message_link(discord_fake.guild_id, discord_fake.channel_id, int(result["id"]))
    assert f"Edited from {link}" in answer["content"]
    assert "Edit · 3:2 · medium quality · 1 reference image(s)" in answer["content"]
    assert answer["mentions"] == []  # the bot pings no one


async def test_reply_with_two_images_puts_the_result_first(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    _, result = await make_result(bot, discord_fake, member)
    logo = discord_fake.add_attachment("logo.png", png_bytes(color=(1, 2, 3)))
    style = discord_fake.add_attachment("style.webp", png_bytes(color=(4, 5, 6)), "image/webp")
    reply = await discord_fake.post_message(
        author_id=member,
        content=f"<@{discord_fake.bot_user_id}> add the logo, in this style",
        reply_to=result,
        attachments=[logo, style],
    )
    task = await edit_of(bot, reply)
    request = evolink.tasks[task.evolink_task_id or ""].request
    assert request["image_urls"] == [image_url(result), logo["url"], style["url"]]
    assert request["prompt"] == "add the logo, in this style"  # the mention is not sent


async def test_a_chain_of_two_edits(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    first, result = await make_result(bot, discord_fake, member)
    reply1 = await discord_fake.post_message(
        author_id=member, content="add a full moon", reply_to=result
    )
    second = await edit_of(bot, reply1)
    assert second.result_message_id is not None
    result2 = discord_fake.messages[second.result_message_id]
    reply2 = await discord_fake.post_message(
        author_id=member, content="now make it winter", reply_to=result2
    )
    third = await edit_of(bot, reply2)

    assert (second.parent_task_id, second.parent_message_id) == (first.id, int(result["id"]))
    assert (third.parent_task_id, third.parent_message_id) == (second.id, int(result2["id"]))
    assert evolink.tasks[third.evolink_task_id or ""].request["image_urls"] == [image_url(result2)]
    assert third.result_message_id is not None
    result3 = discord_fake.messages[third.result_message_id]
    link2 = message_link(discord_fake.guild_id, discord_fake.channel_id, int(result2["id"]))
    assert f"Edited from {link2}" in result3["content"]
    assert [m["id"] for m in bot_replies_to(discord_fake, reply2)] == [result3["id"]]
    assert evolink.creates == 3


# ---------------------------------------------------------------------- Apps → Edit image


async def test_edit_image_menu_opens_a_modal_and_edits(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    photo = discord_fake.add_attachment("beach.png", png_bytes(width=30, height=20))
    target = await discord_fake.post_message(
        author_id=member, content="my beach", attachments=[photo]
    )
    menu = await discord_fake.invoke_message_command("Edit image", target, user_id=member)
    await menu.wait_done()
    assert menu.modal is not None and menu.modal["title"] == "Edit image"
    assert evolink.creates == 0
    submit = await discord_fake.submit_modal(
        menu.modal["custom_id"], {"edit:prompt": "add a sunset"}, user_id=member
    )
    await submit.wait_done()
    assert submit.callbacks[0]["type"] == 5  # a public "thinking…" that becomes the image
    task = await ended_task(bot, lambda t: t.interaction_id == submit.id)

    assert task.status is TaskStatus.POSTED
    request = evolink.tasks[task.evolink_task_id or ""].request
    assert request["image_urls"] == [photo["url"]]
    assert request["prompt"] == "add a sunset"
    assert (request["size"], request["quality"]) == ("3:2", "auto")  # the photo's shape
    assert (task.origin, task.source_message_id) == ("menu", None)
    assert (task.parent_task_id, task.parent_message_id) == (None, int(target["id"]))
    fetches = discord_fake.calls_to("GET", "/channels/{channel_id}/messages/{message_id}")
    assert [c.path.rsplit("/", 1)[1] for c in fetches] == [target["id"]]
    assert submit.original is not None and submit.original["id"] == str(task.result_message_id)
    link = message_link(discord_fake.guild_id, discord_fake.channel_id, int(target["id"]))
    assert f"Edited from {link}" in submit.original["content"]


async def test_edit_image_menu_on_a_result_keeps_its_settings(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    parent, result = await make_result(bot, discord_fake, member)
    menu = await discord_fake.invoke_message_command("Edit image", result, user_id=member)
    await menu.wait_done()
    assert menu.modal is not None
    submit = await discord_fake.submit_modal(
        menu.modal["custom_id"], {"edit:prompt": "paint it red"}, user_id=member
    )
    task = await ended_task(bot, lambda t: t.interaction_id == submit.id)
    assert (task.parent_task_id, task.size, task.quality) == (parent.id, "3:2", "medium")
    assert evolink.tasks[task.evolink_task_id or ""].request["image_urls"] == [image_url(result)]


async def test_edit_image_menu_without_images_is_refused_privately(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    target = await discord_fake.post_message(author_id=member, content="just words")
    menu = await discord_fake.invoke_message_command("Edit image", target, user_id=member)
    await menu.wait_done()
    assert menu.modal is None
    assert menu.ephemeral_reply == NO_IMAGE
    assert (evolink.creates, await all_tasks(bot)) == (0, [])


async def test_edit_image_form_refusal_is_private_and_costs_nothing(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    photo = discord_fake.add_attachment("cat.png", png_bytes())
    target = await discord_fake.post_message(author_id=member, attachments=[photo])
    menu = await discord_fake.invoke_message_command("Edit image", target, user_id=member)
    await menu.wait_done()
    assert menu.modal is not None
    await bot.budget.set_allowance(discord_fake.guild_id, member, to_milli(1), actor_id=member)
    submit = await discord_fake.submit_modal(
        menu.modal["custom_id"], {"edit:prompt": "make it a lion"}, user_id=member
    )
    reply = await discord_fake.wait_for(lambda: submit.ephemeral_reply)
    assert "would cost about" in reply and "you have 1 left" in reply
    assert submit.original is None  # the "thinking…" placeholder was removed
    assert (evolink.creates, await all_tasks(bot)) == (0, [])


# ---------------------------------------------------------------------- replies to other images


async def test_reply_mentioning_the_bot_edits_a_members_own_image(
    runner: BotRunner, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    bot = await runner.start(message_content_intent=True)
    photo = discord_fake.add_attachment("dog.jpg", png_bytes(width=20, height=30), "image/jpeg")
    upload = await discord_fake.post_message(author_id=member, attachments=[photo])
    reply = await discord_fake.post_message(
        author_id=member, content="give the dog a hat", reply_to=upload, mention_bot=True
    )
    task = await edit_of(bot, reply)
    request = evolink.tasks[task.evolink_task_id or ""].request
    assert request["image_urls"] == [photo["url"]]
    assert (request["prompt"], request["size"]) == ("give the dog a hat", "2:3")
    assert (task.parent_task_id, task.parent_message_id) == (None, int(upload["id"]))
    (answer,) = bot_replies_to(discord_fake, reply)
    assert answer["id"] == str(task.result_message_id)


async def test_without_the_intent_a_members_image_is_out_of_sight(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    photo = discord_fake.add_attachment("dog.png", png_bytes())
    upload = await discord_fake.post_message(author_id=member, attachments=[photo])
    reply = await discord_fake.post_message(
        author_id=member, content="give the dog a hat", reply_to=upload, mention_bot=True
    )
    (refusal,) = await discord_fake.wait_for(lambda: bot_replies_to(discord_fake, reply))
    assert refusal["content"] == HIDDEN_IMAGES
    assert (evolink.creates, await all_tasks(bot)) == (0, [])


# ---------------------------------------------------------------------- what is ignored


async def test_ignored_messages_get_no_answer(
    runner: BotRunner, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    bot = await runner.start(message_content_intent=True)  # the bot sees every message
    _, result = await make_result(bot, discord_fake, member)
    other_bot = discord_fake.add_member(name="otherbot", bot=True)
    words = await discord_fake.post_message(author_id=member, content="what do we draw?")
    photo = discord_fake.add_attachment("cat.png", png_bytes())
    upload = await discord_fake.post_message(author_id=member, attachments=[photo])
    ignored = [
        # another bot, even mentioning the bot on its result
        await discord_fake.post_message(
            author_id=other_bot, content="make it blue", reply_to=result, mention_bot=True
        ),
        # a reply to a message without images that does not mention the bot
        await discord_fake.post_message(author_id=member, content="a castle", reply_to=words),
        # a reply to an image that neither is a result nor mentions the bot
        await discord_fake.post_message(author_id=member, content="cute!", reply_to=upload),
    ]
    await settle(bot, discord_fake, member)

    assert evolink.creates == 2  # the first image and the barrier's edit
    assert [t.origin for t in await all_tasks(bot)] == ["command", "reply"]
    for message in [*ignored, words, upload]:
        assert bot_replies_to(discord_fake, message) == []
    # The bot's own messages (its progress replies and results, echoed by the gateway,
    # some replying to members and showing their mentions) started nothing either.
    assert len([m for m in discord_fake.channel_messages() if m["type"] == 19]) >= 2


async def test_reply_to_a_text_message_mentioning_the_bot_is_refused(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    words = await discord_fake.post_message(
        author_id=member, content=f"<@{discord_fake.bot_user_id}> hello"
    )
    reply = await discord_fake.post_message(
        author_id=member, content="draw this", reply_to=words, mention_bot=True
    )
    (refusal,) = await discord_fake.wait_for(lambda: bot_replies_to(discord_fake, reply))
    assert refusal["content"] == NO_IMAGE
    assert (evolink.creates, await all_tasks(bot)) == (0, [])


# ---------------------------------------------------------------------- once, and only if allowed


async def test_a_duplicate_message_create_starts_one_task(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    _, result = await make_result(bot, discord_fake, member)
    reply = await discord_fake.post_message(author_id=member, content="add birds", reply_to=result)
    await discord_fake.dispatch_message_create(reply)  # while the first is being handled
    await edit_of(bot, reply)
    await discord_fake.dispatch_message_create(reply)  # and once it is done
    await settle(bot, discord_fake, member)

    edits = [t for t in await all_tasks(bot) if t.source_message_id == int(reply["id"])]
    assert len(edits) == 1
    assert len(bot_replies_to(discord_fake, reply)) == 1
    assert evolink.creates == 3  # the image, one edit, the barrier


async def test_over_budget_reply_is_refused_once_without_api_call(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    _, result = await make_result(bot, discord_fake, member)  # 2.879 credits
    await bot.budget.set_allowance(discord_fake.guild_id, member, to_milli(3), actor_id=member)
    reply = await discord_fake.post_message(author_id=member, content="again", reply_to=result)
    (refusal,) = await discord_fake.wait_for(lambda: bot_replies_to(discord_fake, reply))
    assert "would cost about 2.879 credits" in refusal["content"]
    assert "you have 0.121 left" in refusal["content"]
    assert refusal["mentions"] == []
    await discord_fake.dispatch_message_create(reply)  # a repeated event: the same answer
    await discord_fake.wait_for(
        lambda: len(discord_fake.calls_to("POST", "/channels/{channel_id}/messages")) >= 2
    )
    assert [m["id"] for m in bot_replies_to(discord_fake, reply)] == [refusal["id"]]
    assert evolink.creates == 1
    assert len(await all_tasks(bot)) == 1


async def test_invalid_attachment_is_refused_with_a_reply(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    _, result = await make_result(bot, discord_fake, member)
    notes = discord_fake.add_attachment("notes.txt", b"hello", "text/plain")
    reply = await discord_fake.post_message(
        author_id=member, content="use my notes", reply_to=result, attachments=[notes]
    )
    (refusal,) = await discord_fake.wait_for(lambda: bot_replies_to(discord_fake, reply))
    assert "notes.txt" in refusal["content"] and "PNG, JPEG or WebP" in refusal["content"]
    assert evolink.creates == 1
    assert len(await all_tasks(bot)) == 1


async def test_too_long_prompt_is_refused_with_a_reply(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    _, result = await make_result(bot, discord_fake, member)
    reply = await discord_fake.post_message(author_id=member, content="x" * 2001, reply_to=result)
    (refusal,) = await discord_fake.wait_for(lambda: bot_replies_to(discord_fake, reply))
    assert "2001 characters" in refusal["content"]
    assert evolink.creates == 1


# ---------------------------------------------------------------------- the Message Content intent


async def test_without_the_intent_an_unpinged_reply_is_not_seen(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    _, result = await make_result(bot, discord_fake, member)
    quiet = await discord_fake.post_message(
        author_id=member, content="make it blue", reply_to=result, reply_ping=False
    )
    await settle(bot, discord_fake, member)
    assert not any(t.source_message_id == int(quiet["id"]) for t in await all_tasks(bot))
    assert bot_replies_to(discord_fake, quiet) == []


async def test_with_the_intent_an_unpinged_reply_edits(
    runner: BotRunner, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    bot = await runner.start(message_content_intent=True)
    _, result = await make_result(bot, discord_fake, member)
    quiet = await discord_fake.post_message(
        author_id=member, content="make it blue", reply_to=result, reply_ping=False
    )
    task = await edit_of(bot, quiet)
    assert evolink.tasks[task.evolink_task_id or ""].request["prompt"] == "make it blue"


async def test_more_than_sixteen_references_are_refused(
    runner: BotRunner, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    bot = await runner.start(message_content_intent=True)
    album = [discord_fake.add_attachment(f"a{i}.png", png_bytes()) for i in range(10)]
    upload = await discord_fake.post_message(author_id=member, attachments=album)
    extra = [discord_fake.add_attachment(f"b{i}.png", png_bytes()) for i in range(7)]
    reply = await discord_fake.post_message(
        author_id=member, content="merge them all", reply_to=upload, mention_bot=True,
        attachments=extra,
    )  # fmt: skip
    (refusal,) = await discord_fake.wait_for(lambda: bot_replies_to(discord_fake, reply))
    assert refusal["content"] == "That is 17 images; at most 16 can be used at once."
    assert (evolink.creates, await all_tasks(bot)) == (0, [])
