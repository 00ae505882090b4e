"""/balance for every member, and /budget for moderators: allowances, grants, period and cap."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot import budget_text
from bot.budget import Period, credits_argument
from bot.core import ImagineBot
from bot.errors import InvalidRequest, NotAllowed
from bot.permissions import is_moderator, require_moderator
from storage.community import CommunityStore

# Discord's own form refuses amounts outside this; the bot checks them again (credits_argument).
Credits = app_commands.Range[float, 0, 1_000_000]
PERIODS = [
    app_commands.Choice(name="Day (resets at 00:00 UTC)", value=Period.DAY.value),
    app_commands.Choice(name="Week (resets Monday 00:00 UTC)", value=Period.WEEK.value),
    app_commands.Choice(name="Month (resets on the 1st, 00:00 UTC)", value=Period.MONTH.value),
]
NO_MENTIONS = discord.AllowedMentions.none()


async def reply(interaction: discord.Interaction, text: str) -> None:
    """Answer only the caller, pinging nobody the text names."""
    await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)


def guild_of(interaction: discord.Interaction) -> int:
    assert interaction.guild_id is not None  # the commands are guild-only
    return interaction.guild_id


class Budgets(commands.Cog):
    budget = app_commands.Group(
        name="budget",
        description="Decide what members may spend on images (moderators)",
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),  # a hint; checked in the bot
    )

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        self.community = CommunityStore(bot.db)

    async def moderator_guild(self, interaction: discord.Interaction) -> int:
        """The server's id once the caller is known to be one of its moderators."""
        await require_moderator(interaction, self.community)
        return guild_of(interaction)

    @app_commands.command(name="balance", description="Your image credits: what is left and when")
    @app_commands.guild_only()
    async def balance(self, interaction: discord.Interaction) -> None:
        standing = await self.bot.budget.standing(guild_of(interaction), interaction.user.id)
        await reply(interaction, budget_text.balance_text(standing))

    @budget.command(name="set", description="Set a member's allowance per period")
    @app_commands.describe(member="Whose allowance", credits="Credits per period (0 = none)")
    async def set_allowance(
        self, interaction: discord.Interaction, member: discord.Member, credits: Credits
    ) -> None:
        guild_id = await self.moderator_guild(interaction)
        amount = credits_argument(credits, "allowance")
        await self.bot.budget.set_allowance(guild_id, member.id, amount, interaction.user.id)
        self.log_change(
            interaction, f"set <@{member.id}>'s allowance to {budget_text.credits(amount)}."
        )
        standing = await self.bot.budget.standing(guild_id, member.id)
        await reply(interaction, budget_text.allowance_set(member.id, amount, standing))

    @budget.command(name="default", description="Set the allowance of members with none set")
    @app_commands.describe(credits="Credits per period")
    async def set_default(self, interaction: discord.Interaction, credits: Credits) -> None:
        guild_id = await self.moderator_guild(interaction)
        amount = credits_argument(credits, "default allowance")
        await self.bot.budget.set_default(guild_id, amount, interaction.user.id)
        self.log_change(interaction, f"set the default allowance to {budget_text.credits(amount)}.")
        period = await self.bot.budget.period(guild_id)
        await reply(interaction, budget_text.default_set(amount, period))

    @budget.command(name="period", description="How often allowances and the cap reset (UTC)")
    @app_commands.describe(period="Day, week or month")
    @app_commands.choices(period=PERIODS)
    async def set_period(self, interaction: discord.Interaction, period: str) -> None:
        guild_id = await self.moderator_guild(interaction)
        try:
            chosen = Period(period)
        except ValueError:
            raise InvalidRequest("The period must be day, week or month.") from None
        await self.bot.budget.set_period(guild_id, chosen, interaction.user.id)
        self.log_change(interaction, f"made budgets run per {chosen.value}.")
        usage = await self.bot.budget.usage(guild_id)
        await reply(interaction, budget_text.period_set(chosen, usage.resets_at))

    @budget.command(name="grant", description="Give a member extra credits for this period")
    @app_commands.describe(member="Who gets them", credits="Extra credits, this period only")
    async def grant(
        self, interaction: discord.Interaction, member: discord.Member, credits: Credits
    ) -> None:
        guild_id = await self.moderator_guild(interaction)
        amount = credits_argument(credits, "grant")
        await self.bot.budget.grant(guild_id, member.id, amount, interaction.user.id)
        self.log_change(interaction, f"granted <@{member.id}> {budget_text.credits(amount)} extra.")
        standing = await self.bot.budget.standing(guild_id, member.id)
        await reply(interaction, budget_text.grant_given(member.id, amount, standing))

    @budget.command(name="cap", description="The most the whole server may spend per period")
    @app_commands.describe(credits="Credits per period; 0 or empty removes the cap")
    async def set_cap(
        self, interaction: discord.Interaction, credits: Credits | None = None
    ) -> None:
        guild_id = await self.moderator_guild(interaction)
        amount = 0 if credits is None else credits_argument(credits, "cap")
        await self.bot.budget.set_cap(guild_id, amount, interaction.user.id)
        cap = (
            f"set the server cap to {budget_text.credits(amount)}."
            if amount
            else "removed the cap."
        )
        self.log_change(interaction, cap)
        usage = await self.bot.budget.usage(guild_id)
        await reply(interaction, budget_text.cap_set(amount or None, usage))

    @budget.command(name="show", description="A member's figures and the last changes to them")
    @app_commands.describe(member="Whose budget")
    async def show(self, interaction: discord.Interaction, member: discord.Member) -> None:
        guild_id = await self.moderator_guild(interaction)
        budget = self.bot.budget
        standing = await budget.standing(guild_id, member.id)
        own = await budget.own_allowance(guild_id, member.id)
        changes = await budget.changes_for(guild_id, member.id)
        await reply(interaction, budget_text.member_text(member.id, standing, own, changes))

    @budget.command(name="usage", description="This period's top spenders and the server total")
    async def usage(self, interaction: discord.Interaction) -> None:
        guild_id = await self.moderator_guild(interaction)
        await reply(interaction, budget_text.usage_text(await self.bot.budget.usage(guild_id)))

    @budget.command(name="modrole", description="The role whose members moderate the bot")
    @app_commands.describe(role="The moderators' role; leave empty to clear it")
    async def moderator_role(
        self, interaction: discord.Interaction, role: discord.Role | None = None
    ) -> None:
        # Manage Server only: a holder of the moderator role cannot hand the role around.
        if not is_moderator(interaction.permissions, (), None):
            raise NotAllowed(budget_text.NOT_A_MANAGER)
        guild_id = guild_of(interaction)
        if role is not None and role.is_default():
            raise InvalidRequest(budget_text.EVERYONE_CANNOT_MODERATE)
        role_id = role.id if role is not None else None
        async with self.bot.db.transaction():
            await self.community.set_moderator_role(guild_id, role_id)
            await self.community.record_action(
                guild_id,
                interaction.user.id,
                "moderator_role",
                f"role {role_id}" if role_id is not None else "cleared",
                self.bot.budget.clock(),
            )
        chosen = (
            f"made <@&{role_id}> the moderator role." if role_id else "cleared the moderator role."
        )
        self.log_change(interaction, chosen)
        await reply(interaction, budget_text.moderator_role_set(role_id))

    def log_change(self, interaction: discord.Interaction, what: str) -> None:
        """Post a moderator's change to the server's log channel, if it has one."""
        self.bot.moderation_log.change(guild_of(interaction), interaction.user.id, what)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Budgets(bot))
