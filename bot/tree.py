"""The one place that turns errors into what a member reads."""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bot.errors import ImagineError

if TYPE_CHECKING:
    from bot.core import ImagineBot  # noqa: F401 - named in the base class below

log = logging.getLogger(__name__)


def user_message_for(error: BaseException, where: str) -> str:
    """The short text for an error; the unexpected is logged with an id the member can quote."""
    original = getattr(error, "original", None) or error
    if isinstance(original, ImagineError):
        return original.user_message
    if isinstance(original, app_commands.TransformerError):
        if original.type is discord.AppCommandOptionType.user:
            return "That member is not in this server."
        return "That value can't be used for this option."
    if isinstance(original, app_commands.NoPrivateMessage):
        return "This works only in a server."
    if isinstance(original, app_commands.CheckFailure):
        return "You can't use this here."
    error_id = uuid.uuid4().hex[:8]
    log.error("Unexpected error in %s (error id %s)", where, error_id, exc_info=original)
    return f"Sorry, something went wrong on our side (error id {error_id})."


async def reply_privately(interaction: discord.Interaction, text: str) -> None:
    """Answer only the member, through the response or a follow-up, whatever state it is in.

    A public "thinking…" placeholder left by a deferral is removed, so a refusal leaves no
    trace in the channel.
    """
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(text, ephemeral=True)
            return
        if interaction.extras.pop("placeholder", False):
            try:
                await interaction.delete_original_response()
            except discord.HTTPException:
                log.debug("Could not remove the placeholder of interaction %d", interaction.id)
        await interaction.followup.send(text, ephemeral=True)
    except discord.HTTPException as exc:
        log.warning("Could not tell the member (interaction %d): %s", interaction.id, exc)


class ImagineTree(app_commands.CommandTree["ImagineBot"]):
    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        name = interaction.command.qualified_name if interaction.command else "a command"
        await reply_privately(interaction, user_message_for(error, f"/{name}"))
