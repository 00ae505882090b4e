"""Self-test of FakeDiscord with the real discord.py client (no network beyond 127.0.0.1)."""

import asyncio
import io
import logging
import struct
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import discord
import discord.gateway
import discord.http
import pytest
import yarl
from discord import app_commands
from discord.ext import commands

from tests.fakes.discord_server import FakeDiscord, FakeInteraction, Intents, Permissions


def tiny_png(width: int = 2, height: int = 1) -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    rows = b"".join(b"\x00" + b"\x10\x20\x30" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


OUTPUT_PNG = tiny_png(3, 2)


@dataclass
class Probe:
    """What the test bot saw and did, plus knobs the tests turn."""

    seen_messages: list[discord.Message] = field(default_factory=list)
    errors: list[Exception] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    upload_size: int = 16


class Panel(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Go", custom_id="panel:go", style=discord.ButtonStyle.primary)
    async def go(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        await interaction.response.edit_message(content=f"clicked by {interaction.user.id}")


class Feedback(discord.ui.Modal, title="Feedback"):
    text: discord.ui.TextInput[Any] = discord.ui.TextInput(
        label="Your feedback", custom_id="feedback:text", max_length=50
    )

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"thanks: {self.text.value}", ephemeral=True)


def build_bot(probe: Probe, intents: discord.Intents | None = None) -> commands.Bot:
    bot = commands.Bot(
        command_prefix="!",
        intents=intents or discord.Intents.default(),
        guild_ready_timeout=0.02,
        chunk_guilds_at_startup=False,
    )

    async def setup_hook() -> None:
        bot.add_view(Panel())
        await bot.tree.sync()

    bot.setup_hook = setup_hook  # type: ignore[method-assign]

    @bot.tree.command(name="draw", description="Draw something")
    @app_commands.describe(prompt="What to draw", image="A reference image")
    async def draw(
        interaction: discord.Interaction, prompt: str, image: discord.Attachment | None = None
    ) -> None:
        await interaction.response.defer(thinking=True)
        reference = await image.read() if image else b""
        await interaction.edit_original_response(
            content=f"drew {prompt}",
            attachments=[discord.File(io.BytesIO(OUTPUT_PNG), "out.png")],
        )
        await interaction.followup.send(f"done: {prompt} ({len(reference)} bytes)", ephemeral=True)

    @bot.tree.command(name="panel", description="Show a panel")
    async def panel(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("panel", view=Panel())

    @bot.tree.command(name="feedback", description="Give feedback")
    async def feedback(interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(Feedback())

    @bot.tree.command(name="slow", description="Wait, then edit")
    async def slow(interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        await probe.release.wait()
        try:
            await interaction.edit_original_response(
                content="late",
                attachments=[discord.File(io.BytesIO(b"x" * probe.upload_size), "big.bin")],
            )
        except discord.HTTPException as error:
            probe.errors.append(error)

    settings = app_commands.Group(name="settings", description="Settings")

    @settings.command(name="show", description="Show settings")
    async def settings_show(
        interaction: discord.Interaction, member: discord.Member, count: int = 1
    ) -> None:
        await interaction.response.send_message(f"{member.display_name} x{count}", ephemeral=True)

    bot.tree.add_command(settings)

    @bot.tree.context_menu(name="Wave")
    async def wave(interaction: discord.Interaction, member: discord.Member) -> None:
        await interaction.user.send(f"you waved at {member.name}")
        await interaction.response.send_message("waved", ephemeral=True)

    @bot.tree.context_menu(name="Describe")
    async def describe(interaction: discord.Interaction, message: discord.Message) -> None:
        await interaction.response.send_message(
            f"{message.content!r} with {len(message.attachments)} attachment(s)", ephemeral=True
        )

    @bot.event
    async def on_message(message: discord.Message) -> None:
        if message.author.bot:
            return
        probe.seen_messages.append(message)
        if message.reference is not None and message.attachments:
            await message.reply(f"got {len(message.attachments)} file(s)")

    return bot


@pytest.fixture(autouse=True)
def no_discord_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """discord.py logs (instead of raising) errors in parsers and event handlers."""
    caplog.set_level(logging.WARNING, logger="discord")
    yield
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


@pytest.fixture
def discord_at_fake(fake: FakeDiscord) -> Iterator[None]:
    base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = fake.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    yield
    discord.http.Route.BASE = base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway


async def start_bot(fake: FakeDiscord, bot: commands.Bot) -> asyncio.Task[None]:
    task = asyncio.create_task(bot.start("fake-token"))
    await fake.wait_for(lambda: bot.is_ready() or task.done())
    if task.done():
        task.result()  # surface the startup error
    return task


async def stop_bot(bot: commands.Bot, task: asyncio.Task[None]) -> None:
    await bot.close()
    await asyncio.wait_for(task, 5)


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
async def bot(
    fake: FakeDiscord, discord_at_fake: None, probe: Probe
) -> AsyncIterator[commands.Bot]:
    client = build_bot(probe)
    task = await start_bot(fake, client)
    yield client
    await stop_bot(client, task)


@pytest.fixture
def user(fake: FakeDiscord) -> int:
    return fake.add_member(name="alice")


def channel_of(bot: commands.Bot, fake: FakeDiscord) -> discord.TextChannel:
    channel = bot.get_channel(fake.channel_id)
    assert isinstance(channel, discord.TextChannel)
    return channel


async def test_login_identify_and_command_sync(fake: FakeDiscord, bot: commands.Bot) -> None:
    assert fake.intents == discord.Intents.default().value
    assert not fake.intents & Intents.MESSAGE_CONTENT
    assert bot.user is not None and bot.user.id == fake.bot_user_id
    assert bot.application_id == fake.application_id
    guild = bot.get_guild(fake.guild_id)
    assert guild is not None and guild.me is not None
    assert [c.id for c in guild.text_channels] == [fake.channel_id]
    assert guild.me.guild_permissions.send_messages
    assert sorted(c["name"] for c in fake.commands_global) == [
        "Describe", "Wave", "draw", "feedback", "panel", "settings", "slow",
    ]  # fmt: skip
    draw = next(c for c in fake.commands_global if c["name"] == "draw")
    assert [(o["name"], o["type"]) for o in draw["options"]] == [("prompt", 3), ("image", 11)]
    fetched = await bot.tree.fetch_commands()
    assert {c.name for c in fetched} == {c["name"] for c in fake.commands_global}
    assert [c.status for c in fake.calls_to("GET", "/users/@me")] == [200]
    assert fake.calls_to("GET", "/oauth2/applications/@me")
    assert fake.spec_errors == []


async def test_slash_defers_edits_with_file_and_sends_ephemeral_followup(
    fake: FakeDiscord, bot: commands.Bot, user: int
) -> None:
    reference = fake.add_attachment("ref.png", tiny_png(), size=None)
    interaction = await fake.invoke_slash(
        "draw", {"prompt": "a cat"}, user_id=user, attachments={"image": reference}
    )
    await fake.wait_for(lambda: interaction.followups)

    assert interaction.deferred
    assert [c["type"] for c in interaction.callbacks] == [5]
    original = interaction.original
    assert original is not None
    assert original["content"] == "drew a cat"
    assert original["author"]["id"] == str(fake.bot_user_id)
    assert original["flags"] == 0 and original["edited_timestamp"] is None
    assert original["interaction_metadata"]["user"]["id"] == str(user)
    (attachment,) = original["attachments"]
    assert (attachment["content_type"], attachment["width"], attachment["height"]) == (
        "image/png", 3, 2,
    )  # fmt: skip
    assert attachment["size"] == len(OUTPUT_PNG)
    assert "hm=" in attachment["url"]
    assert fake.files_of(int(original["id"])) == [("out.png", OUTPUT_PNG)]
    async with aiohttp.ClientSession() as session, session.get(attachment["url"]) as response:
        assert response.status == 200
        assert await response.read() == OUTPUT_PNG
    assert interaction.ephemeral_reply == f"done: a cat ({len(tiny_png())} bytes)"
    assert fake.channel_messages() == [original]  # the ephemeral follow-up is not in the channel
    edit = fake.calls_to("PATCH", "/webhooks/{application_id}/{token}/messages/@original")[0]
    assert edit.files == [("out.png", "application/octet-stream", OUTPUT_PNG)]
    assert fake.spec_errors == []


async def test_ephemeral_messages_are_not_reachable_through_channel_routes(
    fake: FakeDiscord, bot: commands.Bot, user: int
) -> None:
    interaction = await fake.invoke_slash("draw", {"prompt": "x"}, user_id=user)
    (followup,) = await fake.wait_for(lambda: interaction.followups)
    with pytest.raises(discord.NotFound) as raised:
        await channel_of(bot, fake).fetch_message(int(followup["id"]))
    assert raised.value.code == 10008
    assert fake.spec_errors == []


async def test_message_context_menu_sees_full_message(
    fake: FakeDiscord, bot: commands.Bot, user: int
) -> None:
    image = fake.add_attachment("photo.png", tiny_png())
    target = await fake.post_message(
        author_id=user, content="hello there", attachments=[image], dispatch=False
    )
    interaction = await fake.invoke_message_command("Describe", target, user_id=user)
    await interaction.wait_done()
    assert interaction.ephemeral_reply == "'hello there' with 1 attachment(s)"
    assert interaction.payload["data"]["type"] == 3
    assert fake.spec_errors == []


async def test_button_click_updates_the_message(
    fake: FakeDiscord, bot: commands.Bot, user: int
) -> None:
    command = await fake.invoke_slash("panel", user_id=user)
    await command.wait_done()
    panel = command.original
    assert panel is not None and panel["components"][0]["components"][0]["custom_id"] == "panel:go"
    click = await fake.click_button(panel, "panel:go", user_id=user)
    await click.wait_done()
    assert [c["type"] for c in click.callbacks] == [7]
    assert fake.messages[int(panel["id"])]["content"] == f"clicked by {user}"
    assert fake.messages[int(panel["id"])]["edited_timestamp"] is not None
    with pytest.raises(ValueError, match="no such component"):
        await fake.click_button(panel, "panel:nope", user_id=user)
    assert fake.spec_errors == []


async def test_modal_round_trip(fake: FakeDiscord, bot: commands.Bot, user: int) -> None:
    command = await fake.invoke_slash("feedback", user_id=user)
    await command.wait_done()
    assert command.modal is not None
    custom_id = command.modal["custom_id"]
    with pytest.raises(ValueError, match="required"):
        await fake.submit_modal(custom_id, {}, user_id=user)
    submit = await fake.submit_modal(custom_id, {"feedback:text": "nice"}, user_id=user)
    await submit.wait_done()
    assert submit.ephemeral_reply == "thanks: nice"
    assert fake.spec_errors == []


async def test_on_message_gets_reply_with_attachments_and_replies(
    fake: FakeDiscord, bot: commands.Bot, user: int, probe: Probe
) -> None:
    other = fake.add_member(name="bob")
    original = await fake.post_message(author_id=other, content="look at this", dispatch=False)
    image = fake.add_attachment("edit-me.png", tiny_png())
    reply = await fake.post_message(
        author_id=user, content="please edit", reply_to=original, attachments=[image],
        mention_bot=True,
    )  # fmt: skip
    answer = await fake.wait_for(
        lambda: next((m for m in fake.channel_messages() if m["type"] == 19
                      and m["author"]["id"] == str(fake.bot_user_id)), None)
    )  # fmt: skip
    seen = probe.seen_messages[-1]
    assert seen.content == f"<@{fake.bot_user_id}> please edit"
    assert seen.reference is not None and seen.reference.message_id == int(original["id"])
    assert [a.filename for a in seen.attachments] == ["edit-me.png"]
    assert await seen.attachments[0].read() == tiny_png()
    assert answer["content"] == "got 1 file(s)"
    assert answer["message_reference"]["message_id"] == reply["id"]
    assert answer["referenced_message"]["id"] == reply["id"]
    assert [u["id"] for u in answer["mentions"]] == [str(user)]

    # Without the message content intent, a plain message arrives stripped.
    await fake.post_message(author_id=other, content="secret", attachments=[image])
    stripped = await fake.wait_for(lambda: len(probe.seen_messages) == 2 and probe.seen_messages[1])
    assert (stripped.content, stripped.attachments) == ("", [])
    assert fake.spec_errors == []


async def test_message_content_intent_gives_full_content(
    fake: FakeDiscord, discord_at_fake: None, probe: Probe, user: int
) -> None:
    intents = discord.Intents.default()
    intents.message_content = True
    client = build_bot(probe, intents)
    task = await start_bot(fake, client)
    try:
        await fake.post_message(author_id=user, content="plain words")
        seen = await fake.wait_for(lambda: probe.seen_messages)
        assert seen[0].content == "plain words"
        assert fake.intents is not None and fake.intents & Intents.MESSAGE_CONTENT
    finally:
        await stop_bot(client, task)


async def test_enforced_nonce_returns_the_existing_message(
    fake: FakeDiscord, bot: commands.Bot
) -> None:
    channel = channel_of(bot, fake)
    first = await channel.send("once", nonce=4242)
    second = await channel.send("once", nonce=4242)
    third = await channel.send("once", nonce=4343)
    assert first.id == second.id != third.id
    assert [m["content"] for m in fake.channel_messages()] == ["once", "once"]
    posts = fake.calls_to("POST", "/channels/{channel_id}/messages")
    assert [(c.json["nonce"], c.json["enforce_nonce"]) for c in posts] == [
        ("4242", True), ("4242", True), ("4343", True),
    ]  # fmt: skip
    assert fake.spec_errors == []


async def test_expired_interaction_token(
    fake: FakeDiscord, bot: commands.Bot, user: int, probe: Probe
) -> None:
    interaction = await fake.invoke_slash("slow", user_id=user)
    await interaction.wait_done()
    fake.expire_interaction(interaction.token)
    probe.release.set()
    (error,) = await fake.wait_for(lambda: probe.errors)
    assert isinstance(error, discord.HTTPException)
    assert (error.status, error.code) == (401, 50027)
    assert fake.spec_errors == []


async def test_oversized_upload_is_rejected_with_413(
    fake: FakeDiscord, bot: commands.Bot, user: int, probe: Probe
) -> None:
    probe.upload_size = 2048
    interaction = await fake.invoke_slash("slow", user_id=user, attachment_size_limit=1024)
    await interaction.wait_done()
    probe.release.set()
    (error,) = await fake.wait_for(lambda: probe.errors)
    assert isinstance(error, discord.HTTPException)
    assert (error.status, error.code) == (413, 40005)

    fake.upload_limit = 100
    with pytest.raises(discord.HTTPException) as raised:
        await channel_of(bot, fake).send(file=discord.File(io.BytesIO(b"y" * 101), "big.png"))
    assert (raised.value.status, raised.value.code) == (413, 40005)
    assert fake.spec_errors == []


async def test_rate_limit_is_retried_by_discord_py(fake: FakeDiscord, bot: commands.Bot) -> None:
    fake.fail_next("POST", "/channels/{channel_id}/messages", status=429, retry_after=0.01)
    message = await channel_of(bot, fake).send("after the limit")
    posts = fake.calls_to("POST", "/channels/{channel_id}/messages")
    assert [c.status for c in posts] == [429, 200]
    assert posts[0].response["retry_after"] == 0.01
    assert [m["id"] for m in fake.channel_messages()] == [str(message.id)]
    assert fake.spec_errors == []


async def test_fail_next_and_permission_errors(
    fake: FakeDiscord, bot: commands.Bot, user: int
) -> None:
    channel = channel_of(bot, fake)
    fake.fail_next(
        "POST", "/channels/{id}/messages", status=403, code=50001, message="Missing Access"
    )
    with pytest.raises(discord.Forbidden) as raised:
        await channel.send("nope")
    assert raised.value.code == 50001

    theirs = await fake.post_message(author_id=user, content="mine", dispatch=False)
    with pytest.raises(discord.Forbidden) as raised:
        await channel.get_partial_message(int(theirs["id"])).edit(content="hijack")
    assert raised.value.code == 50005

    fake.deny_channel(fake.channel_id)
    with pytest.raises(discord.Forbidden) as raised:
        await channel.send("denied")
    assert raised.value.code == 50013
    await fake.wait_for(lambda: not channel.permissions_for(channel.guild.me).send_messages)
    assert fake.spec_errors == []


async def test_edit_keeps_listed_attachments_and_adds_new_files(
    fake: FakeDiscord, bot: commands.Bot
) -> None:
    channel = channel_of(bot, fake)
    sent = await channel.send(
        "two files",
        files=[
            discord.File(io.BytesIO(b"one"), "a.txt"),
            discord.File(io.BytesIO(b"two"), "b.txt"),
        ],
    )
    assert fake.files_of(sent.id) == [("a.txt", b"one"), ("b.txt", b"two")]
    edited = await sent.edit(
        attachments=[sent.attachments[0], discord.File(io.BytesIO(b"three"), "c.txt")]
    )
    assert [a.filename for a in edited.attachments] == ["a.txt", "c.txt"]
    assert edited.attachments[0].id == sent.attachments[0].id
    assert fake.files_of(sent.id) == [("a.txt", b"one"), ("c.txt", b"three")]
    await edited.delete()
    assert sent.id in fake.deleted_messages and sent.id not in fake.messages
    assert fake.spec_errors == []


async def test_second_callback_is_rejected(fake: FakeDiscord, bot: commands.Bot, user: int) -> None:
    interaction = await fake.invoke_slash("panel", user_id=user)
    await interaction.wait_done()
    url = f"{fake.api_base}/interactions/{interaction.id}/{interaction.token}/callback"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={"type": 4, "data": {"content": "again"}}) as response:
            assert response.status == 400
            assert response.headers["Content-Type"] == "application/json"
            assert (await response.json())["code"] == 40060
        async with session.get(f"{fake.api_base}/nowhere") as response:
            assert response.status == 404
    assert fake.spec_errors == ["unhandled GET /nowhere"]


async def test_gateway_resume_and_bot_restart(
    fake: FakeDiscord, discord_at_fake: None, probe: Probe, user: int
) -> None:
    first = build_bot(probe)
    task = await start_bot(fake, first)
    await fake.request_reconnect(resume=True)
    await fake.wait_for(lambda: fake.resume_count == 1)
    interaction = await fake.invoke_slash("panel", user_id=user)
    await interaction.wait_done()
    await stop_bot(first, task)

    second = build_bot(probe)
    task = await start_bot(fake, second)
    try:
        assert fake.identify_count == 2
        again: FakeInteraction = await fake.invoke_slash("panel", user_id=user)
        await again.wait_done()
        assert again.original is not None and again.original["content"] == "panel"
    finally:
        await stop_bot(second, task)
    assert fake.spec_errors == []


async def test_slash_options_follow_the_registered_definition(
    fake: FakeDiscord, bot: commands.Bot, user: int
) -> None:
    with pytest.raises(ValueError, match="required options"):
        await fake.invoke_slash("draw", {}, user_id=user)
    with pytest.raises(ValueError, match="not defined"):
        await fake.invoke_slash("draw", {"prompt": "x", "size": 3}, user_id=user)
    moderator = fake.add_member(
        name="mod", permissions=Permissions.BASIC | Permissions.MANAGE_GUILD
    )
    interaction = await fake.invoke_slash("panel", user_id=moderator)
    member = interaction.payload["member"]
    assert int(member["permissions"]) & Permissions.MANAGE_GUILD
    assert interaction.payload["attachment_size_limit"] == 10 * 1024 * 1024
    await interaction.wait_done()


async def test_subcommands_user_options_and_dms(
    fake: FakeDiscord, bot: commands.Bot, user: int
) -> None:
    carol = fake.add_member(name="carol")
    with pytest.raises(ValueError, match="needs subcommand"):
        await fake.invoke_slash("settings", {"member": carol}, user_id=user)
    shown = await fake.invoke_slash(
        "settings", {"member": carol, "count": 3}, user_id=user, subcommand="show"
    )
    await shown.wait_done()
    assert shown.ephemeral_reply == "Carol x3"
    (group,) = shown.payload["data"]["options"]
    assert (group["type"], group["name"]) == (1, "show")
    assert [(o["name"], o["type"]) for o in group["options"]] == [("member", 6), ("count", 4)]

    waved = await fake.invoke_user_command("Wave", carol, user_id=user)
    await waved.wait_done()
    assert waved.ephemeral_reply == "waved"
    (dm,) = fake.channel_messages(fake.dm_channel(user))
    assert dm["content"] == "you waved at carol"
    assert fake.spec_errors == []
