"""/imagine: a prompt, a size, a quality and up to four reference images."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.core import ImagineBot
from bot.requests import Origin
from bot.validation import ReferenceImage

SIZES = [
    app_commands.Choice(name="Square (1024×1024)", value="1:1"),
    app_commands.Choice(name="Portrait (1024×1536)", value="2:3"),
    app_commands.Choice(name="Landscape (1536×1024)", value="3:2"),
]
QUALITIES = [
    app_commands.Choice(name="Auto", value="auto"),
    app_commands.Choice(name="Low (cheapest)", value="low"),
    app_commands.Choice(name="Medium", value="medium"),
    app_commands.Choice(name="High", value="high"),
]


def reference_of(attachment: discord.Attachment) -> ReferenceImage:
    return ReferenceImage(
        url=attachment.url,
        filename=attachment.filename,
        content_type=attachment.content_type,
        size=attachment.size,
    )


def origin_of(interaction: discord.Interaction, kind: str) -> Origin:
    """Where an interaction came from; commands are guild-only, so the ids are there."""
    assert interaction.guild_id is not None
    assert interaction.channel_id is not None
    return Origin(
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        user_id=interaction.user.id,
        kind=kind,
        upload_limit=interaction.filesize_limit,
        interaction_id=interaction.id,
    )


async def defer_publicly(interaction: discord.Interaction) -> None:
    """Acknowledge at once with a public "thinking…" message that becomes the progress message."""
    await interaction.response.defer(thinking=True)
    interaction.extras["placeholder"] = True


class Imagine(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="imagine", description="Make an image from a prompt")
    @app_commands.guild_only()
    @app_commands.describe(
        prompt="What to draw (or how to change the reference images)",
        size="Shape of the image (default: square)",
        quality="Higher quality costs more credits (default: auto)",
        image="A reference image (PNG, JPEG or WebP)",
        image2="Another reference image",
        image3="Another reference image",
        image4="Another reference image",
    )
    @app_commands.choices(size=SIZES, quality=QUALITIES)
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: str,
        size: str = "1:1",
        quality: str = "auto",
        image: discord.Attachment | None = None,
        image2: discord.Attachment | None = None,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
    ) -> None:
        attachments = [a for a in (image, image2, image3, image4) if a is not None]
        new = self.bot.requests.build(
            origin_of(interaction, "command"),
            prompt=prompt,
            size=size,
            quality=quality,
            references=[reference_of(a) for a in attachments],
        )
        await defer_publicly(interaction)
        await self.bot.generator.start(new, interaction)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Imagine(bot))
