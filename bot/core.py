"""The bot: one typed `commands.Bot` that holds the shared resources and the domain services."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import aiohttp
import discord
import yarl
from discord.ext import commands

from bot.budget import Budget
from bot.cadence import CadenceConfig
from bot.evolink import EvoLinkClient, RetryPolicy
from bot.generation import GenerationConfig, Generator
from bot.presenter import DiscordPresenter
from bot.pricing import PriceTable, to_milli
from bot.requests import RequestBuilder
from bot.settings import Settings
from bot.tree import ImagineTree
from storage.database import Database
from storage.meta import MetaStore

log = logging.getLogger(__name__)

EXTENSIONS = ("cogs.imagine",)


def point_discord_at(settings: Settings) -> None:
    """Send discord.py's REST and gateway traffic to a proxy (or the tests' fake) if set."""
    if settings.discord_api_base_url:
        discord.http.Route.BASE = settings.discord_api_base_url.rstrip("/")
    if settings.discord_gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


def generation_config(settings: Settings) -> GenerationConfig:
    return GenerationConfig(
        model=settings.imagine_model,
        cadence=CadenceConfig(
            min_interval=settings.poll_min_interval, max_interval=settings.poll_max_interval
        ),
        progress_edit_interval=settings.progress_edit_interval,
        task_deadline=settings.task_deadline,
        stall_timeout=settings.stall_timeout,
        max_result_bytes=settings.max_result_bytes,
    )


class ImagineBot(commands.Bot):
    """Receives the opened HTTP session and database from the entry point; owns nothing else."""

    def __init__(
        self,
        *,
        settings: Settings,
        session: aiohttp.ClientSession,
        db: Database,
        **options: Any,
    ) -> None:
        intents = discord.Intents.default()
        intents.message_content = settings.message_content_intent
        super().__init__(
            command_prefix=commands.when_mentioned,
            help_command=None,
            intents=intents,
            tree_cls=ImagineTree,
            allowed_mentions=discord.AllowedMentions.none(),
            chunk_guilds_at_startup=False,
            **options,
        )
        self.settings = settings
        self.session = session
        self.db = db
        self.meta = MetaStore(db)
        self.prices = PriceTable.default(settings.model_prices)
        self.budget = Budget(db, default_allowance=to_milli(settings.default_allowance))
        self.evolink = EvoLinkClient(
            session,
            base_url=settings.evolink_base_url,
            api_key=settings.evolink_api_key.get_secret_value(),
            retry=RetryPolicy(
                attempts=settings.evolink_retry_attempts,
                base_delay=settings.evolink_retry_base_delay,
                max_delay=settings.evolink_retry_max_delay,
            ),
            request_timeout=settings.evolink_timeout,
        )
        self.requests = RequestBuilder(self.prices, settings.imagine_model)
        self.presenter = DiscordPresenter(self)
        self.generator = Generator(
            db=db,
            budget=self.budget,
            client=self.evolink,
            presenter=self.presenter,
            config=generation_config(settings),
        )

    async def setup_hook(self) -> None:
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        await self.sync_commands()
        await self.generator.resume()

    async def sync_commands(self) -> bool:
        """Sync application commands only when their definitions changed since the last sync."""
        guild = discord.Object(self.settings.dev_guild_id) if self.settings.dev_guild_id else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        commands_here = self.tree.get_commands(guild=guild)
        definitions = [command.to_dict(self.tree) for command in commands_here]
        digest = hashlib.sha256(json.dumps(definitions, sort_keys=True).encode()).hexdigest()
        key = f"commands:{guild.id if guild else 'global'}"
        if await self.meta.get(key) == digest:
            log.info("Application commands unchanged; not syncing")
            return False
        synced = await self.tree.sync(guild=guild)
        await self.meta.set(key, digest)
        log.info("Synced %d application command(s) %s", len(synced), key)
        return True

    async def close(self) -> None:
        await self.generator.stop()
        await super().close()
