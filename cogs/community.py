"""/imagine-admin: the moderators' controls. Blocked terms, allowed channels, barred members and
the log channel. The rules themselves live in `bot.community`; this cog only speaks Discord."""

from __future__ import annotations

import io

import discord
from discord import app_commands
from discord.ext import commands

from bot.community import MAX_TERM_LENGTH, PATTERN_PREFIX, hidden_term, quoted_term
from bot.core import ImagineBot
from bot.permissions import require_moderator
from bot.render import shown_prompt

NO_MENTIONS = discord.AllowedMentions.none()
MESSAGE_LIMIT = 2000
TermText = app_commands.Range[str, 1, MAX_TERM_LENGTH + len(PATTERN_PREFIX) + 10]
Reason = app_commands.Range[str, 1, 200]
RawChannel = app_commands.AppCommandChannel | app_commands.AppCommandThread
THREADS = (
    discord.ChannelType.public_thread,
    discord.ChannelType.private_thread,
    discord.ChannelType.news_thread,
)
POSTABLE = (discord.ChannelType.text, discord.ChannelType.news, discord.ChannelType.voice)


class ChannelOption(app_commands.Transformer):
    """A channel option offering only some kinds of channel, given as Discord sent it (so a
    channel the bot has not cached works too)."""

    def __init__(self, *kinds: discord.ChannelType) -> None:
        super().__init__()
        self.kinds = list(kinds)

    @property
    def type(self) -> discord.AppCommandOptionType:
        return discord.AppCommandOptionType.channel

    @property
    def channel_types(self) -> list[discord.ChannelType]:
        return self.kinds

    async def transform(self, interaction: discord.Interaction, value: RawChannel) -> RawChannel:
        return value


# Where members may use the bot: a forum or stage counts, its threads follow their channel.
UsableChannel = app_commands.Transform[
    RawChannel,
    ChannelOption(*POSTABLE, discord.ChannelType.stage_voice, discord.ChannelType.forum, *THREADS),
]
LogChannel = app_commands.Transform[RawChannel, ChannelOption(*POSTABLE, *THREADS)]
TERMS_HELP = (
    "Words and phrases match whole words, in any case; `*` stands for any letters in a word "
    "(`fox*`); `re:` starts a regular expression."
)


async def reply(interaction: discord.Interaction, text: str) -> None:
    """Answer only the moderator, pinging nobody the text names."""
    await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)


async def reply_list(
    interaction: discord.Interaction, header: str, lines: list[str], raw: list[str], name: str
) -> None:
    """A list in one message; when it would not fit, the start of it and the whole as a file."""
    text = "\n".join([header, *lines])
    if len(text) <= MESSAGE_LIMIT:
        await reply(interaction, text)
        return
    shown, room = [header], MESSAGE_LIMIT - 100
    for line in lines:
        if sum(len(s) + 1 for s in shown) + len(line) > room:
            break
        shown.append(line)
    rest = len(lines) - (len(shown) - 1)
    shown.append(f"…and {rest} more: the whole list is attached.")
    await interaction.response.send_message(
        "\n".join(shown),
        file=discord.File(io.BytesIO("\n".join(raw).encode()), filename=name),
        ephemeral=True,
        allowed_mentions=NO_MENTIONS,
    )


def guild_of(interaction: discord.Interaction) -> int:
    assert interaction.guild_id is not None  # the commands are guild-only
    return interaction.guild_id


def allowed_text(allowed: list[int]) -> str:
    if not allowed:
        return "The bot may be used in every channel."
    where = ", ".join(f"<#{channel_id}>" for channel_id in allowed)
    return f"The bot may be used only in: {where} (and their threads)."


class Community(commands.Cog):
    admin = app_commands.Group(
        name="imagine-admin",
        description="Moderate the image bot: blocked terms, channels, members, log channel",
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),  # a hint; checked in the bot
    )
    terms = app_commands.Group(
        name="terms", description="Words and patterns prompts may not contain", parent=admin
    )
    channels = app_commands.Group(
        name="channels", description="Channels where the bot may be used", parent=admin
    )
    members = app_commands.Group(
        name="members", description="Members barred from using the bot", parent=admin
    )
    logchannel = app_commands.Group(
        name="logchannel",
        description="Where the bot records each request and each moderator change",
        parent=admin,
    )

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        self.rules = bot.community
        self.log = bot.moderation_log

    async def cog_unload(self) -> None:
        await self.log.drain()  # let the last log posts out before the connection closes

    async def moderator_guild(self, interaction: discord.Interaction) -> int:
        """The server's id once the caller is known to be one of its moderators."""
        await require_moderator(interaction, self.rules.store)
        return guild_of(interaction)

    # ------------------------------------------------------------------ blocked terms

    @terms.command(name="add", description="Refuse prompts that contain a word, phrase or pattern")
    @app_commands.describe(
        term="A word or phrase (* = any letters in a word), or re: and a regular expression"
    )
    async def terms_add(self, interaction: discord.Interaction, term: TermText) -> None:
        guild_id = await self.moderator_guild(interaction)
        actor = interaction.user.id
        added, changed = await self.rules.add_term(guild_id, actor, term)
        if not changed:
            await reply(interaction, f"{quoted_term(added.text)} is already blocked.")
            return
        await reply(
            interaction,
            f"Blocked {quoted_term(added.text)}: prompts containing it are now refused.",
        )
        self.log.change(guild_id, actor, f"blocked the term {hidden_term(added.text)}.")

    @terms.command(name="remove", description="Allow a blocked term again")
    @app_commands.describe(term="The term as /imagine-admin terms list shows it")
    async def terms_remove(self, interaction: discord.Interaction, term: TermText) -> None:
        guild_id = await self.moderator_guild(interaction)
        actor = interaction.user.id
        text, removed = await self.rules.remove_term(guild_id, actor, term)
        if not removed:
            await reply(
                interaction,
                f"{quoted_term(text)} is not blocked here; "
                "`/imagine-admin terms list` shows the blocked terms.",
            )
            return
        await reply(interaction, f"{quoted_term(text)} is no longer blocked.")
        self.log.change(guild_id, actor, f"unblocked the term {hidden_term(text)}.")

    @terms.command(name="list", description="The blocked terms of this server")
    async def terms_list(self, interaction: discord.Interaction) -> None:
        guild_id = await self.moderator_guild(interaction)
        terms = await self.rules.terms(guild_id)
        if not terms:
            await reply(
                interaction,
                f"No terms are blocked here. Add one with `/imagine-admin terms add`.\n"
                f"{TERMS_HELP}",
            )
            return
        header = f"Blocked terms ({len(terms)}). {TERMS_HELP}"
        lines = [f"• {quoted_term(term)}" for term in terms]
        await reply_list(interaction, header, lines, terms, "blocked-terms.txt")

    # ------------------------------------------------------------------ channels

    @channels.command(name="allow", description="Let the bot be used in a channel (and only there)")
    @app_commands.describe(channel="A channel (its threads count too)")
    async def channels_allow(
        self, interaction: discord.Interaction, channel: UsableChannel
    ) -> None:
        guild_id = await self.moderator_guild(interaction)
        actor = interaction.user.id
        added = await self.rules.allow_channel(guild_id, actor, channel.id)
        allowed = await self.rules.allowed_channels(guild_id)
        if not added:
            await reply(interaction, f"<#{channel.id}> is already allowed. {allowed_text(allowed)}")
            return
        await reply(interaction, f"Allowed <#{channel.id}>. {allowed_text(allowed)}")
        self.log.change(guild_id, actor, f"allowed the bot in <#{channel.id}>.")

    @channels.command(name="disallow", description="Take a channel off the allowed ones")
    @app_commands.describe(channel="An allowed channel")
    async def channels_disallow(
        self, interaction: discord.Interaction, channel: UsableChannel
    ) -> None:
        guild_id = await self.moderator_guild(interaction)
        actor = interaction.user.id
        removed = await self.rules.disallow_channel(guild_id, actor, channel.id)
        allowed = await self.rules.allowed_channels(guild_id)
        if not removed:
            if not allowed:
                text = (
                    "The bot may be used in every channel. To keep it to some channels, "
                    "name them with `/imagine-admin channels allow`."
                )
            else:
                text = f"<#{channel.id}> is not an allowed channel. {allowed_text(allowed)}"
            await reply(interaction, text)
            return
        await reply(interaction, f"Disallowed <#{channel.id}>. {allowed_text(allowed)}")
        self.log.change(guild_id, actor, f"disallowed the bot in <#{channel.id}>.")

    @channels.command(name="list", description="Where the bot may be used")
    async def channels_list(self, interaction: discord.Interaction) -> None:
        guild_id = await self.moderator_guild(interaction)
        await reply(interaction, allowed_text(await self.rules.allowed_channels(guild_id)))

    @channels.command(name="everywhere", description="Let the bot be used in every channel again")
    async def channels_everywhere(self, interaction: discord.Interaction) -> None:
        guild_id = await self.moderator_guild(interaction)
        actor = interaction.user.id
        if not await self.rules.allow_everywhere(guild_id, actor):
            await reply(interaction, "The bot may already be used in every channel.")
            return
        await reply(interaction, "The bot may now be used in every channel.")
        self.log.change(guild_id, actor, "allowed the bot in every channel.")

    # ------------------------------------------------------------------ barred members

    @members.command(name="bar", description="Stop a member from making images here")
    @app_commands.describe(member="Who", reason="Why (shown in the log channel)")
    async def members_bar(
        self, interaction: discord.Interaction, member: discord.User, reason: Reason | None = None
    ) -> None:
        guild_id = await self.moderator_guild(interaction)
        actor = interaction.user.id
        if not await self.rules.bar(guild_id, actor, member.id, reason or ""):
            await reply(interaction, f"<@{member.id}> is already barred.")
            return
        await reply(interaction, f"<@{member.id}> may no longer make images here.")
        why = f" Reason: {shown_prompt(reason, 200)}" if reason else ""  # escaped, one line
        self.log.change(guild_id, actor, f"barred <@{member.id}>.{why}")

    @members.command(name="unbar", description="Let a barred member make images again")
    @app_commands.describe(member="Who")
    async def members_unbar(self, interaction: discord.Interaction, member: discord.User) -> None:
        guild_id = await self.moderator_guild(interaction)
        actor = interaction.user.id
        if not await self.rules.unbar(guild_id, actor, member.id):
            await reply(interaction, f"<@{member.id}> is not barred.")
            return
        await reply(interaction, f"<@{member.id}> may make images here again.")
        self.log.change(guild_id, actor, f"lifted the bar on <@{member.id}>.")

    @members.command(name="barred", description="Members barred from making images")
    async def members_barred(self, interaction: discord.Interaction) -> None:
        guild_id = await self.moderator_guild(interaction)
        barred = await self.rules.barred(guild_id)
        if not barred:
            await reply(interaction, "No one is barred here.")
            return
        lines = [f"• <@{user_id}>" for user_id in barred]
        raw = [str(user_id) for user_id in barred]
        await reply_list(
            interaction, f"Barred members ({len(barred)}):", lines, raw, "barred-members.txt"
        )

    # ------------------------------------------------------------------ the log channel

    @logchannel.command(name="set", description="Record each request and moderator change here")
    @app_commands.describe(channel="A text channel the bot can post in")
    async def logchannel_set(self, interaction: discord.Interaction, channel: LogChannel) -> None:
        guild_id = await self.moderator_guild(interaction)
        actor = interaction.user.id
        await interaction.response.defer(ephemeral=True, thinking=True)
        previous = await self.rules.set_log_channel(guild_id, actor, channel.id)
        text = f"I'll record each request and each moderator change in <#{channel.id}>."
        if previous != channel.id:
            problem = await self.log.post(
                guild_id,
                f"🛠️ <@{actor}> made this the image bot's log channel.",
                channel_id=channel.id,
            )
            if problem is not None:
                text += f" But I couldn't post there ({problem}): let me send messages in it."
            if previous is not None:
                self.log.change(
                    guild_id, actor, f"moved the log to <#{channel.id}>.", channel_id=previous
                )
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)

    @logchannel.command(name="clear", description="Stop recording requests in a channel")
    async def logchannel_clear(self, interaction: discord.Interaction) -> None:
        guild_id = await self.moderator_guild(interaction)
        actor = interaction.user.id
        previous = await self.rules.set_log_channel(guild_id, actor, None)
        if previous is None:
            await reply(interaction, "No log channel is set.")
            return
        await reply(interaction, f"<#{previous}> is no longer the log channel.")
        self.log.change(guild_id, actor, "stopped the log here.", channel_id=previous)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Community(bot))
