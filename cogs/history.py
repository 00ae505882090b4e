"""/history: a member's recent images, five to a page, only to the one who asked."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.controls import (
    HISTORY_COG,
    HISTORY_PAGE_SIZE,
    NOT_YOUR_PAGES,
    OTHERS_HISTORY,
    HistoryButton,
    HistoryPage,
    answering_errors,
    clamp,
    history_text,
    history_view,
)
from bot.core import ImagineBot
from bot.errors import NotAllowed
from bot.permissions import interaction_is_moderator
from storage.community import CommunityStore
from storage.tasks import TaskStore

NO_MENTIONS = discord.AllowedMentions.none()


class History(commands.Cog, name=HISTORY_COG):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        self.tasks = TaskStore(bot.db)
        self.community = CommunityStore(bot.db)

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(HistoryButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(HistoryButton)

    @app_commands.command(name="history", description="Your recent images (moderators: anyone's)")
    @app_commands.guild_only()
    @app_commands.describe(member="Whose images to show (moderators only; default: yours)")
    async def history(
        self, interaction: discord.Interaction, member: discord.Member | None = None
    ) -> None:
        viewer = interaction.user.id
        page = HistoryPage(viewer_id=viewer, member_id=member.id if member else viewer)
        await self._check_viewer(interaction, page)
        await interaction.response.defer(ephemeral=True, thinking=True)
        text, view = await self._page(interaction, page)
        if view is None:
            await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
        else:
            await interaction.followup.send(
                text, view=view, ephemeral=True, allowed_mentions=NO_MENTIONS
            )

    async def show_page(self, interaction: discord.Interaction, page: HistoryPage) -> None:
        """Previous / Next: the page replaces the message the button is on."""
        async with answering_errors(interaction, "the /history buttons"):
            if interaction.user.id != page.viewer_id:
                raise NotAllowed(NOT_YOUR_PAGES)
            await self._check_viewer(interaction, page)
            text, view = await self._page(interaction, page)
            await interaction.response.edit_message(
                content=text, view=view, allowed_mentions=NO_MENTIONS
            )

    async def _check_viewer(self, interaction: discord.Interaction, page: HistoryPage) -> None:
        if not page.own and not await interaction_is_moderator(interaction, self.community):
            raise NotAllowed(OTHERS_HISTORY)

    async def _page(
        self, interaction: discord.Interaction, page: HistoryPage
    ) -> tuple[str, discord.ui.View | None]:
        assert interaction.guild_id is not None  # guild-only command, and its buttons
        tasks, total = await self.tasks.history(
            interaction.guild_id, page.member_id, limit=HISTORY_PAGE_SIZE, offset=page.offset
        )
        if not tasks and total:  # the page is past the end now: show the last one
            page = clamp(page, total)
            tasks, total = await self.tasks.history(
                interaction.guild_id, page.member_id, limit=HISTORY_PAGE_SIZE, offset=page.offset
            )
        return history_text(page, tasks, total), history_view(page, total)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(History(bot))
