"""Budgets end to end: /balance, /budget and /imagine through the fake Discord and fake EvoLink."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import discord
import pytest

from bot.budget import Period, period_bounds
from bot.budget_text import NOT_A_MANAGER, credits
from bot.core import ImagineBot
from bot.permissions import NOT_A_MODERATOR
from storage.tasks import TaskRecord, TaskStatus
from tests.conftest import BotRunner, all_tasks, wait_for_task
from tests.fakes.discord_server import FakeDiscord, FakeInteraction, MessageFlags
from tests.fakes.evolink_server import FakeEvoLink, TaskPlan

ENDED = (TaskStatus.POSTED, TaskStatus.FAILED, TaskStatus.CANCELLED)


def resets(period: Period = Period.MONTH) -> str:
    return f"<t:{int(period_bounds(period, time.time())[1])}:R>"


async def answer(discord_fake: FakeDiscord, interaction: FakeInteraction) -> str:
    """The private answer the member got (a direct reply, or a follow-up after a deferral)."""
    return await discord_fake.wait_for(lambda: interaction.ephemeral_reply)


async def balance(discord_fake: FakeDiscord, user_id: int) -> str:
    return await answer(discord_fake, await discord_fake.invoke_slash("balance", user_id=user_id))


async def budget(
    discord_fake: FakeDiscord, sub: str, options: dict[str, object] | None = None, *, user_id: int
) -> str:
    interaction = await discord_fake.invoke_slash(
        "budget", options or {}, subcommand=sub, user_id=user_id
    )
    return await answer(discord_fake, interaction)


async def imagine(
    discord_fake: FakeDiscord, user_id: int, quality: str = "medium"
) -> FakeInteraction:
    return await discord_fake.invoke_slash(
        "imagine", {"prompt": "a lighthouse at dusk", "quality": quality}, user_id=user_id
    )


async def all_ended(bot: ImagineBot, count: int, timeout: float = 10.0) -> list[TaskRecord]:
    """Wait until exactly `count` tasks exist and every one has ended."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        tasks = await all_tasks(bot)
        if len(tasks) == count and all(t.status in ENDED for t in tasks):
            return tasks
        await asyncio.sleep(0.02)
    raise AssertionError(f"expected {count} ended tasks: {await all_tasks(bot)}")


def balance_text(
    allowance: str, granted: str, spent: str, pending: str, left: str, when: str = "this month"
) -> str:
    period = {"this month": Period.MONTH, "this week": Period.WEEK, "today": Period.DAY}[when]
    return (
        f"**Your image credits {when}**\n"
        f"Allowance: {allowance} per {period}\n"
        f"Extra granted: {granted}\n"
        f"Spent: {spent}\n"
        f"Pending: {pending}\n"
        f"**Left: {left}** · resets {resets(period)}"
    )


async def ledger_rows(bot: ImagineBot) -> list[Any]:
    return list(await bot.db.fetchall("SELECT kind, user_id, amount, actor_id FROM ledger"))


async def test_over_budget_is_refused_then_a_raised_allowance_lets_it_through(
    runner: BotRunner, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int, moderator: int
) -> None:
    bot = await runner.start(default_allowance=5)
    refused = await imagine(discord_fake, member, quality="high")
    assert await answer(discord_fake, refused) == (
        "This image would cost about 7.657 credits, but you have 5 left this month "
        f"(it resets {resets()})."
    )
    assert refused.original is None  # the public "thinking…" placeholder was removed
    assert evolink.creates == 0
    assert await all_tasks(bot) == []
    assert await ledger_rows(bot) == []

    reply = await budget(discord_fake, "set", {"member": member, "credits": 10}, user_id=moderator)
    assert reply == (
        f"<@{member}>'s allowance is now 10 credits per month. "
        f"They have 10 credits left this month (it resets {resets()})."
    )
    await imagine(discord_fake, member, quality="high")
    task = await wait_for_task(bot, TaskStatus.POSTED)
    assert evolink.creates == 1 and task.charged == 7657
    assert await balance(discord_fake, member) == balance_text(
        "10 credits", "0 credits", "7.657 credits", "0 credits", "2.343 credits"
    )


class Caller:
    """Who calls /budget without being a moderator."""

    PLAIN = "a plain member"
    # A server admin could override the command's permissions in Discord so that this member
    # sees /budget; they still lack Manage Server, so the bot refuses.
    OVERRIDDEN = "a member with other staff permissions"


@pytest.mark.parametrize("caller", [Caller.PLAIN, Caller.OVERRIDDEN])
async def test_a_non_moderator_is_refused_and_nothing_changes(
    bot: ImagineBot, discord_fake: FakeDiscord, member: int, caller: str
) -> None:
    permissions = discord.Permissions(
        send_messages=True,
        use_application_commands=True,
        manage_messages=caller == Caller.OVERRIDDEN,
        kick_members=caller == Caller.OVERRIDDEN,
        manage_roles=caller == Caller.OVERRIDDEN,
    )
    role = discord_fake.add_role(name="helpers", permissions=permissions.value)
    outsider = discord_fake.add_member(name="eve", roles=[role])
    (definition,) = [c for c in discord_fake.commands_global if c["name"] == "budget"]
    assert definition["default_member_permissions"] == str(discord.Permissions.manage_guild.flag)
    (set_command,) = [o for o in definition["options"] if o["name"] == "set"]
    (amount,) = [o for o in set_command["options"] if o["name"] == "credits"]
    assert (amount["type"], amount["min_value"]) == (10, 0)  # a number, at least 0
    before = await balance(discord_fake, member)
    attempts: list[tuple[str, dict[str, object]]] = [
        ("set", {"member": member, "credits": 500}),
        ("set", {"member": outsider, "credits": 500}),
        ("default", {"credits": 500}),
        ("period", {"period": "day"}),
        ("grant", {"member": outsider, "credits": 500}),
        ("cap", {"credits": 1}),
        ("show", {"member": member}),
        ("usage", {}),
    ]
    for sub, options in attempts:
        assert await budget(discord_fake, sub, options, user_id=outsider) == NOT_A_MODERATOR
    reply = await budget(discord_fake, "modrole", {"role": role}, user_id=outsider)
    assert reply == NOT_A_MANAGER
    assert await ledger_rows(bot) == []
    assert await bot.db.fetchall("SELECT * FROM guild_config") == []
    assert await bot.db.fetchall("SELECT * FROM moderation_log") == []
    assert await balance(discord_fake, member) == before


async def test_the_moderator_role_grants_moderator_rights_but_not_the_role_itself(
    runner: BotRunner, discord_fake: FakeDiscord, member: int, moderator: int
) -> None:
    role = discord_fake.add_role(name="imagine mods")
    helper = discord_fake.add_member(name="hal", roles=[role])
    bot = await runner.start()
    assert await budget(discord_fake, "usage", user_id=helper) == NOT_A_MODERATOR

    reply = await budget(discord_fake, "modrole", {"role": role}, user_id=moderator)
    assert reply == f"<@&{role}> is now the bot's moderator role."
    (logged,) = await bot.db.fetchall("SELECT actor_id, action, detail FROM moderation_log")
    assert tuple(logged) == (moderator, "moderator_role", f"role {role}")

    reply = await budget(discord_fake, "grant", {"member": member, "credits": 2.5}, user_id=helper)
    assert reply == (
        f"<@{member}> got 2.5 credits extra for this month. "
        f"They have 22.5 credits left this month (it resets {resets()})."
    )
    assert [tuple(r) for r in await ledger_rows(bot)] == [("grant", member, 2500, helper)]
    # A holder of the moderator role can't hand the role around, nor clear it.
    assert await budget(discord_fake, "modrole", {}, user_id=helper) == NOT_A_MANAGER
    assert (await bot.db.fetchall("SELECT moderator_role_id FROM guild_config"))[0][0] == role

    reply = await budget(discord_fake, "modrole", {}, user_id=moderator)
    assert reply == (
        "The bot's moderator role is cleared: only members with the Manage Server "
        "permission are moderators."
    )
    assert await budget(discord_fake, "usage", user_id=helper) == NOT_A_MODERATOR
    assert len(await bot.db.fetchall("SELECT * FROM moderation_log")) == 2


async def test_a_failed_task_gives_its_credits_back(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    evolink.plan = lambda request: TaskPlan(
        duration=0.2, outcome="failed", error_code="content_policy_violation"
    )
    before = await balance(discord_fake, member)
    assert before == balance_text("20 credits", "0 credits", "0 credits", "0 credits", "20 credits")
    await imagine(discord_fake, member, quality="high")
    task = await wait_for_task(bot, TaskStatus.PROCESSING, TaskStatus.PENDING)
    assert "Pending: 7.657 credits" in await balance(discord_fake, member)
    await wait_for_task(bot, TaskStatus.FAILED)
    assert evolink.creates == 1 and task.estimate == 7657
    assert await balance(discord_fake, member) == before


async def test_the_charge_is_settled_to_the_apis_credits_reserved(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    evolink.plan = lambda request: TaskPlan(duration=0.2, credits_reserved=2.5)
    interaction = await imagine(discord_fake, member, quality="auto")  # estimated at 7.657
    task = await wait_for_task(bot, TaskStatus.POSTED)
    assert task.estimate == 7657 and task.charged == 2500
    assert await balance(discord_fake, member) == balance_text(
        "20 credits", "0 credits", "2.5 credits", "0 credits", "17.5 credits"
    )
    assert interaction.original is not None
    assert "2.5 credits" in interaction.original["content"]


async def test_period_show_and_usage(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int, moderator: int
) -> None:
    week = Period.WEEK
    reply = await budget(discord_fake, "period", {"period": "week"}, user_id=moderator)
    assert reply == (
        f"Allowances and the server cap now run per week; the current week ends {resets(week)}."
    )
    reply = await budget(discord_fake, "default", {"credits": 8}, user_id=moderator)
    assert reply == (
        "The default allowance is now 8 credits per week "
        "(for members without an allowance of their own)."
    )
    other = discord_fake.add_member(name="bob")
    await budget(discord_fake, "set", {"member": member, "credits": 12.5}, user_id=moderator)
    await budget(discord_fake, "grant", {"member": member, "credits": 1}, user_id=moderator)
    await imagine(discord_fake, member, quality="high")
    await imagine(discord_fake, other, quality="low")
    await all_ended(bot, 2)

    interaction = await discord_fake.invoke_slash(
        "budget", {"member": member}, subcommand="show", user_id=moderator
    )
    shown = await answer(discord_fake, interaction)
    expected = (
        rf"\*\*<@{member}>'s image credits this week\*\*\n"
        r"Allowance: 12\.5 credits per week \(set for them\)\n"
        r"Extra granted: 1 credit\n"
        r"Spent: 7\.657 credits\n"
        r"Pending: 0 credits\n"
        rf"\*\*Left: 5\.843 credits\*\* · resets {re.escape(resets(week))}\n"
        r"\*\*Last changes\*\*\n"
        rf"• <t:\d+:f> <@{moderator}> granted 1 credit\n"
        rf"• <t:\d+:f> <@{moderator}> set the allowance to 12\.5 credits"
    )
    assert re.fullmatch(expected, shown), shown
    assert interaction.original is not None
    assert interaction.original["mentions"] == []  # nobody is pinged

    shown = await budget(discord_fake, "show", {"member": other}, user_id=moderator)
    assert shown == (
        f"**<@{other}>'s image credits this week**\n"
        "Allowance: 8 credits per week (the server default)\n"
        "Extra granted: 0 credits\n"
        "Spent: 0.509 credits\n"
        "Pending: 0 credits\n"
        f"**Left: 7.491 credits** · resets {resets(week)}\n"
        "**Last changes**\n"
        "None yet."
    )

    usage = await budget(discord_fake, "usage", user_id=moderator)
    assert usage == (
        f"**Spending this week** · resets {resets(week)}\n"
        "Server total: 8.166 credits spent, 0 credits pending\n"
        "**Top spenders**\n"
        f"1. <@{member}>: 7.657 credits spent\n"
        f"2. <@{other}>: 0.509 credits spent"
    )
    assert await balance(discord_fake, other) == balance_text(
        "8 credits", "0 credits", "0.509 credits", "0 credits", "7.491 credits", "this week"
    )


async def test_usage_of_a_quiet_server_and_the_cap_commands(
    bot: ImagineBot, discord_fake: FakeDiscord, member: int, moderator: int
) -> None:
    assert await budget(discord_fake, "usage", user_id=moderator) == (
        f"**Spending this month** · resets {resets()}\n"
        "Server total: 0 credits spent, 0 credits pending\n"
        "Nobody has spent any credits this month."
    )
    reply = await budget(discord_fake, "cap", {"credits": 50}, user_id=moderator)
    assert (
        reply
        == "The server can now spend at most 50 credits per month; 50 credits left this month."
    )
    assert await balance(discord_fake, member) == (
        balance_text("20 credits", "0 credits", "0 credits", "0 credits", "20 credits")
        + "\nServer cap: 50 of 50 credits left this month"
    )
    for options in ({"credits": 0}, {}):
        reply = await budget(discord_fake, "cap", options, user_id=moderator)
        assert reply == "The server cap is removed: only each member's allowance limits spending."
    assert "Server cap" not in await balance(discord_fake, member)
    caps = [tuple(r) for r in await ledger_rows(bot)]
    assert caps == [("cap", None, 50000, moderator)] + [("cap", None, 0, moderator)] * 2


@pytest.mark.parametrize(
    ("sub", "options", "refusal"),
    [
        ("set", {"credits": -1}, "The allowance can't be negative."),
        ("set", {"credits": float("nan")}, "The allowance must be a number."),
        ("default", {"credits": 5e9}, "The default allowance can be at most 1000000 credits."),
        ("grant", {"credits": 1e300}, "The grant can be at most 1000000 credits."),
        ("grant", {"credits": 0}, "A grant must be more than 0 credits."),
        ("cap", {"credits": -0.5}, "The cap can't be negative."),
    ],
)
async def test_bad_amounts_are_refused_and_change_nothing(
    bot: ImagineBot,
    discord_fake: FakeDiscord,
    member: int,
    moderator: int,
    sub: str,
    options: dict[str, object],
    refusal: str,
) -> None:
    if sub in ("set", "grant"):
        options = {"member": member, **options}
    assert await budget(discord_fake, sub, options, user_id=moderator) == refusal
    assert await ledger_rows(bot) == []


async def refusals_once_all_answered(
    discord_fake: FakeDiscord, interactions: list[FakeInteraction]
) -> list[str]:
    """Wait until every request was refused or got its progress message; the refusals."""

    def answered(interaction: FakeInteraction) -> bool:
        original = interaction.original
        loading = original is None or original["flags"] & MessageFlags.LOADING
        return bool(interaction.ephemeral_reply) or not loading

    return await discord_fake.wait_for(
        lambda: (
            [r for i in interactions if (r := i.ephemeral_reply)]
            if all(answered(i) for i in interactions)
            else None
        )
    )


async def test_twenty_simultaneous_requests_with_room_for_three(
    runner: BotRunner, discord_fake: FakeDiscord, evolink: FakeEvoLink, member: int
) -> None:
    bot = await runner.start(default_allowance=3 * 1.958)
    interactions = await asyncio.gather(*(imagine(discord_fake, member) for _ in range(20)))
    refusals = await refusals_once_all_answered(discord_fake, interactions)
    tasks = await all_ended(bot, 3)
    assert evolink.creates == 3
    assert all(t.status is TaskStatus.POSTED for t in tasks)
    assert (
        refusals
        == [
            "This image would cost about 1.958 credits, but you have 0 left this month "
            f"(it resets {resets()})."
        ]
        * 17
    )
    assert await balance(discord_fake, member) == balance_text(
        "5.874 credits", "0 credits", "5.874 credits", "0 credits", "0 credits"
    )


async def test_the_server_cap_holds_across_members(
    bot: ImagineBot, discord_fake: FakeDiscord, evolink: FakeEvoLink, moderator: int
) -> None:
    await budget(discord_fake, "cap", {"credits": 3 * 1.958}, user_id=moderator)
    members = [discord_fake.add_member(name=f"m{n}") for n in range(5)]
    interactions = await asyncio.gather(
        *(imagine(discord_fake, m) for m in members for _ in range(4))
    )
    refusals = await refusals_once_all_answered(discord_fake, interactions)
    tasks = await all_ended(bot, 3)
    assert evolink.creates == 3
    assert all(t.status is TaskStatus.POSTED for t in tasks)
    assert (
        refusals
        == [
            "This image would cost about 1.958 credits, but the server has 0 left this month "
            f"(it resets {resets()})."
        ]
        * 17
    )
    lucky = tasks[0].user_id
    spent = sum(t.charged for t in tasks if t.user_id == lucky)
    assert await balance(discord_fake, lucky) == (
        balance_text(
            "20 credits", "0 credits", credits(spent), "0 credits", credits(20_000 - spent)
        )
        + "\nServer cap: 0 of 5.874 credits left this month"
    )


async def test_budget_changes_are_posted_to_the_log_channel(
    bot: ImagineBot, discord_fake: FakeDiscord, member: int, moderator: int
) -> None:
    log = discord_fake.add_channel(name="mod-log")
    chosen = await discord_fake.invoke_slash(
        "imagine-admin", {"channel": log}, subcommand="logchannel set", user_id=moderator
    )
    await answer(discord_fake, chosen)

    def lines() -> list[str]:
        return [m["content"] for m in discord_fake.channel_messages(log)]

    await discord_fake.wait_for(lambda: len(lines()) >= 1)
    await budget(discord_fake, "set", {"member": member, "credits": 12.5}, user_id=moderator)
    await budget(discord_fake, "grant", {"member": member, "credits": 1}, user_id=moderator)
    await budget(discord_fake, "cap", {"credits": 0}, user_id=moderator)
    await discord_fake.wait_for(lambda: len(lines()) >= 4)
    assert lines()[1:] == [
        f"🛠️ <@{moderator}> set <@{member}>'s allowance to {credits(12500)}.",
        f"🛠️ <@{moderator}> granted <@{member}> {credits(1000)} extra.",
        f"🛠️ <@{moderator}> removed the cap.",
    ]


async def test_a_member_who_left_cannot_be_given_an_allowance(
    bot: ImagineBot, discord_fake: FakeDiscord, member: int, moderator: int
) -> None:
    discord_fake.remove_member(member)
    text = await budget(discord_fake, "set", {"member": member, "credits": 5}, user_id=moderator)
    assert text == "That member is not in this server."
    assert await ledger_rows(bot) == []
