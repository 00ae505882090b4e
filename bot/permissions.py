"""Who is a moderator: checked in the bot, whatever Discord's `default_permissions` say."""

from __future__ import annotations

from collections.abc import Iterable

import discord

from bot.errors import NotAllowed
from storage.community import CommunityStore

NOT_A_MODERATOR = (
    "Only moderators can do that (Manage Server permission, or the bot's moderator role)."
)


def is_moderator(
    permissions: discord.Permissions, role_ids: Iterable[int], moderator_role_id: int | None
) -> bool:
    """Manage Server (or Administrator), or the role the server named as the bot's moderators."""
    if permissions.manage_guild or permissions.administrator:
        return True
    return moderator_role_id is not None and moderator_role_id in set(role_ids)


async def interaction_is_moderator(
    interaction: discord.Interaction, community: CommunityStore
) -> bool:
    """Whether the member behind an interaction is a moderator of its server."""
    if interaction.guild_id is None:
        return False
    config = await community.config(interaction.guild_id)
    user = interaction.user
    role_ids = [role.id for role in user.roles] if isinstance(user, discord.Member) else []
    return is_moderator(interaction.permissions, role_ids, config.moderator_role_id)


async def require_moderator(interaction: discord.Interaction, community: CommunityStore) -> None:
    """Raise NotAllowed (a short refusal) unless the interaction's user is a moderator."""
    if not await interaction_is_moderator(interaction, community):
        raise NotAllowed(NOT_A_MODERATOR)
