"""Edits: reply to an image with what to change, or use Apps → Edit image on it.

A reply to one of the bot's results edits that result; a reply that mentions the bot edits the
images of whatever message it answers. Without the Message Content intent Discord shows the bot
only the replies that ping or mention it (and the targets of its context-menu command), which is
exactly what both routes need.
"""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.core import ImagineBot
from bot.edits import GONE, NO_IMAGE, UNREADABLE, EditRequests, EditTarget, SourceImage, mentions
from bot.errors import InvalidRequest
from bot.requests import Origin
from bot.tree import reply_privately, user_message_for
from bot.validation import MAX_PROMPT
from cogs.imagine import defer_publicly, origin_of, reference_of
from storage.tasks import TaskRecord, TaskStore

log = logging.getLogger(__name__)

MODAL_TIMEOUT = 15 * 60.0  # as long as the menu's interaction lives


def target_of(message: discord.Message, *, visible: bool = True) -> EditTarget:
    return EditTarget(
        message_id=message.id,
        attachments=tuple(
            SourceImage(reference_of(a), width=a.width, height=a.height)
            for a in message.attachments
        ),
        visible=visible,
    )


class EditPromptModal(discord.ui.Modal, title="Edit image"):
    """Asks what to change in the image the Edit image menu was used on."""

    def __init__(self, cog: Edit, target: discord.Message) -> None:
        super().__init__(timeout=MODAL_TIMEOUT)
        self.cog = cog
        self.target = target
        self.prompt: discord.ui.TextInput[EditPromptModal] = discord.ui.TextInput(
            custom_id="edit:prompt",
            style=discord.TextStyle.paragraph,
            placeholder="e.g. make the sky purple and add a small red kite",
            max_length=MAX_PROMPT,
        )
        self.add_item(discord.ui.Label(text="What should change?", component=self.prompt))

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self.cog.edit_from_menu(interaction, self.target, self.prompt.value)

    async def on_error(  # type: ignore[override]  # Modal's own signature, narrower than View's
        self, interaction: discord.Interaction, error: Exception, /
    ) -> None:
        await reply_privately(interaction, user_message_for(error, "the Edit image form"))


class Edit(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        self.edits = EditRequests(bot.requests, TaskStore(bot.db))
        self.menu = app_commands.ContextMenu(name="Edit image", callback=self.edit_image)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    # ------------------------------------------------------------------ replies

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        me = self.bot.user
        reference = message.reference
        if (
            me is None
            or message.guild is None
            or message.author.bot
            or message.webhook_id is not None
            or message.type is not discord.MessageType.reply
            or reference is None
            or reference.message_id is None
            or not (message.content or message.attachments)  # all Discord let the bot see
        ):
            return
        parent = await self.edits.parent_task(reference.message_id)
        if parent is None and not mentions(message.content, me.id):
            return  # members talking among themselves
        if await self.edits.already_taken(message.id):
            return  # a repeated event for a request already running or done
        try:
            await self._edit_from_reply(message, reference.message_id, parent)
        except Exception as error:  # every refusal, expected or not, is told the same way
            await self._refuse(message, user_message_for(error, "an edit reply"))

    async def _edit_from_reply(
        self, message: discord.Message, replied_id: int, parent: TaskRecord | None
    ) -> None:
        assert message.guild is not None
        assert self.bot.user is not None
        replied = await self._fetch(message.channel, replied_id)  # fresh attachment links
        origin = Origin(
            guild_id=message.guild.id,
            channel_id=message.channel.id,
            user_id=message.author.id,
            kind="reply",
            upload_limit=message.guild.filesize_limit,
            source_message_id=message.id,
        )
        new = self.edits.build(
            origin,
            prompt=message.content,
            bot_id=self.bot.user.id,
            target=target_of(replied, visible=self._can_see(replied)),
            added=[reference_of(a) for a in message.attachments],
            parent=parent,
        )
        await self.bot.generator.start(new)

    async def _refuse(self, message: discord.Message, text: str) -> None:
        """A short public reply; its nonce makes a repeated event return the same message."""
        try:
            await message.reply(text, nonce=f"r{message.id}", mention_author=False)
        except discord.HTTPException as exc:
            log.warning("Could not refuse message %d: %s %s", message.id, exc.status, exc.code)

    # ------------------------------------------------------------------ the Edit image menu

    @app_commands.guild_only()
    async def edit_image(self, interaction: discord.Interaction, message: discord.Message) -> None:
        if not target_of(message).images:
            raise InvalidRequest(NO_IMAGE)
        await interaction.response.send_modal(EditPromptModal(self, message))

    async def edit_from_menu(
        self, interaction: discord.Interaction, target: discord.Message, prompt: str
    ) -> None:
        assert self.bot.user is not None
        await defer_publicly(interaction)
        fresh = await self._fetch(target.channel, target.id)
        # Without the Message Content intent a fetched member's message comes without its
        # attachments, but the menu's own copy of its target always has them.
        chosen = fresh if self._can_see(fresh) else target
        new = self.edits.build(
            origin_of(interaction, "menu"),
            prompt=prompt,
            bot_id=self.bot.user.id,
            target=target_of(chosen),
            added=[],
            parent=await self.edits.parent_task(target.id),
        )
        await self.bot.generator.start(new, interaction)

    # ------------------------------------------------------------------ helpers

    async def _fetch(self, channel: discord.abc.Messageable, message_id: int) -> discord.Message:
        try:
            return await channel.fetch_message(message_id)
        except discord.NotFound:
            raise InvalidRequest(GONE) from None
        except discord.Forbidden:
            raise InvalidRequest(UNREADABLE) from None

    def _can_see(self, message: discord.Message) -> bool:
        """Whether Discord shows the bot this message's attachments."""
        me = self.bot.user
        if self.bot.intents.message_content or me is None:
            return True
        return message.author.id == me.id or any(user.id == me.id for user in message.mentions)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Edit(bot))
