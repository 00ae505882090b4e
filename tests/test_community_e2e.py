"""Community controls end to end: /imagine-admin through the fake Discord, the gate in front of
every request, the log channel, and EvoLink's content-policy refusals."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.community import BARRED, BLOCKED_TERM
from bot.core import ImagineBot
from bot.permissions import NOT_A_MODERATOR
from bot.presenter import message_link
from storage.community import CommunityStore
from storage.ledger import Entry
from storage.tasks import ENDED, TaskStatus
from tests.conftest import all_tasks, wait_for_task
from tests.fakes.discord_server import FakeDiscord, FakeInteraction
from tests.fakes.evolink_server import FakeEvoLink, TaskPlan

CONTENT_POLICY = "EvoLink refused this prompt under its content policy."


async def admin(discord_fake: FakeDiscord, command: str, user_id: int, **options: Any) -> str:
    """Run `/imagine-admin <command>` and return the private answer."""
    interaction = await discord_fake.invoke_slash(
        "imagine-admin", options, subcommand=command, user_id=user_id
    )
    return await answer_of(discord_fake, interaction)


async def answer_of(discord_fake: FakeDiscord, interaction: FakeInteraction) -> str:
    return await discord_fake.wait_for(lambda: interaction.ephemeral_reply)


async def imagine(
    discord_fake: FakeDiscord, prompt: str, user_id: int, channel_id: int | None = None
) -> FakeInteraction:
    return await discord_fake.invoke_slash(
        "imagine", {"prompt": prompt, "quality": "low"}, user_id=user_id, channel_id=channel_id
    )


async def posted(bot: ImagineBot, interaction: FakeInteraction, timeout: float = 10.0) -> None:
    """Wait until the request of `interaction` has been posted (and fail fast if it ended)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        task = next((t for t in await all_tasks(bot) if t.interaction_id == interaction.id), None)
        if task is not None and task.status in ENDED:
            assert task.status is TaskStatus.POSTED, task
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the request was not posted: {await all_tasks(bot)}")


def bot_messages(discord_fake: FakeDiscord, channel_id: int | None = None) -> list[str]:
    """Contents of the bot's public messages in a channel."""
    return [
        str(m["content"])
        for m in discord_fake.channel_messages(channel_id)
        if m["author"]["id"] == str(discord_fake.bot_user_id)
    ]


async def log_lines(discord_fake: FakeDiscord, log_channel: int, count: int) -> list[str]:
    """The log channel's messages, once there are `count` of them."""
    await discord_fake.wait_for(lambda: len(bot_messages(discord_fake, log_channel)) >= count)
    return bot_messages(discord_fake, log_channel)


async def assert_refused(
    bot: ImagineBot,
    discord_fake: FakeDiscord,
    evolink: FakeEvoLink,
    interaction: FakeInteraction,
    text: str,
) -> None:
    """Refused privately, before anything was recorded, reserved or asked of EvoLink."""
    assert await answer_of(discord_fake, interaction) == text
    assert interaction.original is None  # the public "thinking…" placeholder is gone
    assert evolink.creates == 0
    assert await all_tasks(bot) == []
    assert await bot.db.fetchall("SELECT * FROM ledger WHERE task_id IS NOT NULL") == []


# ---------------------------------------------------------------------- blocked terms


async def test_blocked_term_is_refused_before_any_api_call(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int, moderator: int
) -> None:
    added = await admin(discord_fake, "terms add", moderator, term="Red  Fox")
    assert added == "Blocked `red fox`: prompts containing it are now refused."
    listed = await admin(discord_fake, "terms list", moderator)
    assert listed.startswith("Blocked terms (1).") and listed.endswith("\n• `red fox`")

    refused = await imagine(discord_fake, "a RED fox, asleep in the snow", member)
    await assert_refused(bot, discord_fake, evolink, refused, BLOCKED_TERM)
    assert "fox" not in BLOCKED_TERM.lower()
    assert bot_messages(discord_fake) == []  # nothing public about it

    removed = await admin(discord_fake, "terms remove", moderator, term="red fox")
    assert removed == "`red fox` is no longer blocked."
    again = await admin(discord_fake, "terms remove", moderator, term="red fox")
    assert again.startswith("`red fox` is not blocked here")
    assert (await admin(discord_fake, "terms list", moderator)).startswith("No terms are blocked")

    allowed = await imagine(discord_fake, "a RED fox, asleep in the snow", member)
    await posted(bot, allowed)
    assert evolink.creates == 1


async def test_patterns_block_and_risky_patterns_are_refused(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int, moderator: int
) -> None:
    risky = await admin(discord_fake, "terms add", moderator, term="re:(a+)+$")
    assert "may follow only a single character" in risky
    broken = await admin(discord_fake, "terms add", moderator, term="re:[unclosed")
    assert broken.startswith("That is not a valid regular expression")
    assert await CommunityStore(bot.db).blocked_terms(discord_fake.guild_id) == []

    added = await admin(discord_fake, "terms add", moderator, term="re:dr[a@4]gons?")
    assert added == "Blocked `re:dr[a@4]gons?`: prompts containing it are now refused."
    refused = await imagine(discord_fake, "Two DR@GONS fighting", member)
    await assert_refused(bot, discord_fake, evolink, refused, BLOCKED_TERM)


async def test_a_reply_edit_with_a_blocked_term_is_refused(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int, moderator: int
) -> None:
    first = await imagine(discord_fake, "a lighthouse", member)
    await posted(bot, first)
    (task,) = await all_tasks(bot)
    assert task.result_message_id is not None
    result = discord_fake.messages[task.result_message_id]
    await admin(discord_fake, "terms add", moderator, term="kite*")

    reply = await discord_fake.post_message(
        author_id=member, content="add two red kites", reply_to=result
    )

    def refusal() -> list[str]:
        return [
            str(m["content"])
            for m in discord_fake.channel_messages()
            if (m.get("message_reference") or {}).get("message_id") == reply["id"]
        ]

    assert await discord_fake.wait_for(refusal) == [BLOCKED_TERM]
    assert evolink.creates == 1 and len(await all_tasks(bot)) == 1


# ---------------------------------------------------------------------- channels and members


async def test_requests_only_in_allowed_channels(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int, moderator: int
) -> None:
    general, art = discord_fake.channel_id, discord_fake.add_channel(name="art")
    assert (await admin(discord_fake, "channels list", moderator)) == (
        "The bot may be used in every channel."
    )
    allowed = await admin(discord_fake, "channels allow", moderator, channel=art)
    assert (
        allowed == f"Allowed <#{art}>. The bot may be used only in: <#{art}> (and their threads)."
    )

    refused = await imagine(discord_fake, "a fox", member, channel_id=general)
    await assert_refused(
        bot, discord_fake, evolink, refused, f"Images can't be made in this channel. Try <#{art}>."
    )
    in_art = await imagine(discord_fake, "a fox", member, channel_id=art)
    await posted(bot, in_art)

    await admin(discord_fake, "channels allow", moderator, channel=general)
    in_general = await imagine(discord_fake, "a fox", member, channel_id=general)
    await posted(bot, in_general)
    assert evolink.creates == 2

    assert (await admin(discord_fake, "channels disallow", moderator, channel=art)).startswith(
        f"Disallowed <#{art}>. The bot may be used only in: <#{general}>"
    )
    last = await admin(discord_fake, "channels disallow", moderator, channel=general)
    assert last.startswith(f"<#{general}> is the only channel where the bot may be used.")
    assert await CommunityStore(bot.db).allowed_channels(discord_fake.guild_id) == [general]
    everywhere = await admin(discord_fake, "channels everywhere", moderator)
    assert everywhere == "The bot may now be used in every channel."
    assert await CommunityStore(bot.db).allowed_channels(discord_fake.guild_id) == []


async def test_barred_member_is_refused_until_unbarred(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int, moderator: int
) -> None:
    barred = await admin(discord_fake, "members bar", moderator, member=member, reason="spam")
    assert barred == f"<@{member}> may no longer make images here."
    assert await admin(discord_fake, "members barred", moderator) == (
        f"Barred members (1):\n• <@{member}>"
    )
    refused = await imagine(discord_fake, "a fox", member)
    await assert_refused(bot, discord_fake, evolink, refused, BARRED)

    unbarred = await admin(discord_fake, "members unbar", moderator, member=member)
    assert unbarred == f"<@{member}> may make images here again."
    assert await admin(discord_fake, "members barred", moderator) == "No one is barred here."
    await posted(bot, await imagine(discord_fake, "a fox", member))


async def test_members_cannot_use_the_moderators_commands(
    bot: ImagineBot, discord_fake: FakeDiscord, member: int
) -> None:
    other = discord_fake.add_channel(name="other")
    attempts = [
        ("terms add", {"term": "fox"}),
        ("terms list", {}),
        ("channels allow", {"channel": other}),
        ("members bar", {"member": member}),
        ("logchannel set", {"channel": other}),
        ("logchannel clear", {}),
    ]
    for command, options in attempts:
        assert await admin(discord_fake, command, member, **options) == NOT_A_MODERATOR, command
    store = CommunityStore(bot.db)
    guild = discord_fake.guild_id
    assert await store.blocked_terms(guild) == []
    assert await store.allowed_channels(guild) == []
    assert await store.barred_members(guild) == []
    assert (await store.config(guild)).log_channel_id is None
    assert await bot.db.fetchall("SELECT * FROM moderation_log") == []
    assert bot_messages(discord_fake, other) == []

    # The server's moderator role is enough, without Manage Server.
    role = discord_fake.add_role(name="image mods")
    discord_fake.add_member_role(member, role)
    await store.set_moderator_role(guild, role)
    added = await admin(discord_fake, "terms add", member, term="fox")
    assert added == "Blocked `fox`: prompts containing it are now refused."


# ---------------------------------------------------------------------- the log channel


async def test_log_channel_records_requests_and_moderator_changes(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int, moderator: int
) -> None:
    general, log = discord_fake.channel_id, discord_fake.add_channel(name="mod-log")
    answer = await admin(discord_fake, "logchannel set", moderator, channel=log)
    assert answer == f"I'll record each request and each moderator change in <#{log}>."
    lines = await log_lines(discord_fake, log, 1)
    assert lines == [f"🛠️ <@{moderator}> made this the image bot's log channel."]

    await admin(discord_fake, "terms add", moderator, term="wolf")
    lines = await log_lines(discord_fake, log, 2)
    assert lines[1] == f"🛠️ <@{moderator}> blocked the term ||`wolf`||."

    request = await imagine(discord_fake, "a *fox* for <@&123456789012345678>", member)
    await posted(bot, request)
    (task,) = await all_tasks(bot)
    assert task.result_message_id is not None
    lines = await log_lines(discord_fake, log, 3)
    link = message_link(discord_fake.guild_id, general, task.result_message_id)
    assert lines[2] == (
        f"✅ **Posted** · <@{member}> in <#{general}> · 0.509 credits · {link}\n"
        "> a \\*fox\\* for <@\u200b&123456789012345678>"  # no markdown, no mention
    )

    refused = await imagine(discord_fake, "a WOLF", member)
    assert await answer_of(discord_fake, refused) == BLOCKED_TERM
    lines = await log_lines(discord_fake, log, 4)
    assert lines[3] == (
        f"🚫 **Refused** (blocked term ||`wolf`||) · <@{member}> in <#{general}>\n> a WOLF"
    )

    await admin(discord_fake, "members bar", moderator, member=member, reason="too many *wolves*")
    await admin(discord_fake, "channels allow", moderator, channel=general)
    lines = await log_lines(discord_fake, log, 6)
    assert f"🛠️ <@{moderator}> barred <@{member}>. Reason: too many \\*wolves\\*" in lines
    assert f"🛠️ <@{moderator}> allowed the bot in <#{general}>." in lines

    # Nobody is ever pinged from the log channel.
    posts = [
        c
        for c in discord_fake.calls_to("POST", "/channels/{channel_id}/messages")
        if c.path == f"/channels/{log}/messages"
    ]
    assert len(posts) == 6
    assert all(c.json["allowed_mentions"] == {"parse": []} for c in posts)
    assert all(m["mentions"] == [] for m in discord_fake.channel_messages(log))

    actions = await bot.db.fetchall("SELECT actor_id, action FROM moderation_log ORDER BY id")
    assert [tuple(row) for row in actions] == [
        (moderator, "log_channel_set"),
        (moderator, "term_add"),
        (moderator, "member_bar"),
        (moderator, "channel_allow"),
    ]

    # Moving the log: the old channel is told, the new one gets what follows.
    new_log = discord_fake.add_channel(name="new-log")
    await admin(discord_fake, "logchannel set", moderator, channel=new_log)
    lines = await log_lines(discord_fake, log, 7)
    assert lines[6] == f"🛠️ <@{moderator}> moved the log to <#{new_log}>."
    cleared = await admin(discord_fake, "logchannel clear", moderator)
    assert cleared == f"<#{new_log}> is no longer the log channel."
    new_lines = await log_lines(discord_fake, new_log, 2)
    assert new_lines[1] == f"🛠️ <@{moderator}> stopped the log here."
    assert await admin(discord_fake, "logchannel clear", moderator) == "No log channel is set."


async def test_a_broken_log_channel_never_fails_a_request(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int, moderator: int
) -> None:
    log = discord_fake.add_channel(name="locked")
    discord_fake.deny_channel(log)
    answer = await admin(discord_fake, "logchannel set", moderator, channel=log)
    assert answer == (
        f"I'll record each request and each moderator change in <#{log}>. But I couldn't post "
        "there (I'm not allowed to post there): let me send messages in it."
    )
    request = await imagine(discord_fake, "a fox", member)
    await posted(bot, request)
    (task,) = await all_tasks(bot)
    assert Entry.SETTLE in await bot.budget.ledger.task_entries(task.id)

    def refused_posts() -> int:
        return sum(
            1
            for c in discord_fake.calls_to("POST", "/channels/{channel_id}/messages")
            if c.path == f"/channels/{log}/messages" and c.status == 403
        )

    await discord_fake.wait_for(lambda: refused_posts() == 2)  # the set, then the request


# ---------------------------------------------------------------------- content policy


async def test_content_policy_refusal_is_shown_as_such_and_released(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int, moderator: int
) -> None:
    log = discord_fake.add_channel(name="mod-log")
    await admin(discord_fake, "logchannel set", moderator, channel=log)
    evolink.plan = lambda request: TaskPlan(
        duration=0.1, outcome="failed", error_code="content_policy_violation"
    )
    balance = await discord_fake.invoke_slash("balance", user_id=member)
    before = await answer_of(discord_fake, balance)

    request = await imagine(discord_fake, "something EvoLink will refuse", member)
    task = await wait_for_task(bot, TaskStatus.FAILED)

    assert evolink.creates == 1
    assert task.error == CONTENT_POLICY
    assert request.original is not None
    assert f"❌ {CONTENT_POLICY} Your credits were not spent." in request.original["content"]
    entries = await bot.budget.ledger.task_entries(task.id)
    assert Entry.RELEASE in entries and Entry.SETTLE not in entries
    standing = await bot.budget.standing(discord_fake.guild_id, member)
    assert standing.spent == 0 and standing.pending == 0
    balance = await discord_fake.invoke_slash("balance", user_id=member)
    assert await answer_of(discord_fake, balance) == before

    lines = await log_lines(discord_fake, log, 2)
    assert lines[1].startswith(
        f"⛔ **Refused by EvoLink's content policy** · <@{member}> in "
        f"<#{discord_fake.channel_id}> · no charge · "
    )
    assert lines[1].endswith("\n> something EvoLink will refuse")


async def test_a_long_term_list_comes_as_a_file(
    bot: ImagineBot, discord_fake: FakeDiscord, moderator: int
) -> None:
    terms = [f"re:{'x' * 80}{number:03d}" for number in range(10)]
    terms += [f"{'long phrase ' * 7}{number:03d}" for number in range(40)]
    for term in terms:
        await bot.community.add_term(discord_fake.guild_id, moderator, term)
    interaction = await discord_fake.invoke_slash(
        "imagine-admin", subcommand="terms list", user_id=moderator
    )
    text = await answer_of(discord_fake, interaction)
    assert text.startswith("Blocked terms (50).") and len(text) <= 2000
    shown = text.count("\n• ")
    assert 0 < shown < 50
    assert text.endswith(f"…and {50 - shown} more: the whole list is attached.")
    assert interaction.original is not None
    ((name, data),) = discord_fake.files_of(int(interaction.original["id"]))
    assert name == "blocked-terms.txt"
    assert data.decode().split("\n") == await bot.community.terms(discord_fake.guild_id)
