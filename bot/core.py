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
from bot.community import CommunityRules, ModerationLog, thread_parent_in
from bot.controls import progress_view, result_view
from bot.evolink import EvoLinkClient, RetryPolicy
from bot.generation import GenerationConfig, Generator
from bot.presenter import DiscordPresenter
from bot.pricing import PriceTable, to_milli
from bot.requests import RequestBuilder
from bot.settings import Settings
from bot.tree import ImagineTree
from bot.web import CallbackTokens, WebServer
from storage.database import Database
from storage.meta import MetaStore
from storage.tasks import TaskRecord

log = logging.getLogger(__name__)

EXTENSIONS = (
    "cogs.imagine",
    "cogs.budget",
    "cogs.edit",
    "cogs.controls",
    "cogs.history",
    "cogs.community",
)


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
            min_interval=settings.poll_min_interval,
            max_interval=settings.poll_max_interval,
            callback_safety_interval=settings.callback_safety_interval,
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
        self.presenter = DiscordPresenter(
            self, progress_view=progress_view, result_view=result_view
        )
        self.web: WebServer | None = None
        self.community = CommunityRules(db, thread_parent=thread_parent_in(self))
        self.moderation_log = ModerationLog(self, self.community.store)
        self.community.refusal_listeners.append(self.moderation_log.request_refused)
        self.generator = Generator(
            db=db,
            budget=self.budget,
            client=self.evolink,
            presenter=self.presenter,
            config=generation_config(settings),
            callback_url=self.callback_url,
            gate=self.community.gate,
        )
        self.generator.observers.append(self.moderation_log.task_ended)

    async def setup_hook(self) -> None:
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        await self.sync_commands()
        await self.start_web()
        await self.generator.resume()

    async def start_web(self) -> None:
        """Serve /healthz and EvoLink's callbacks when WEB_PORT is set."""
        if self.settings.web_port is None:
            if self.settings.public_base_url:
                log.warning("PUBLIC_BASE_URL is set but WEB_PORT is not: not asking for callbacks")
            return
        self.web = WebServer(self, await CallbackTokens.load(self.meta))
        await self.web.start(self.settings.web_host, self.settings.web_port)

    def callback_url(self, task: TaskRecord) -> str | None:
        """Where EvoLink should call back for this task (None: poll only)."""
        base = self.settings.public_base_url
        if base is None or self.web is None:
            return None
        return self.web.tokens.url(base, task.id)

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

    async def on_message(self, message: discord.Message, /) -> None:
        """No prefix commands: messages are for the cogs' listeners (edits by reply) only."""

    async def close(self) -> None:
        if self.web is not None:  # first: a callback refused now is retried, not lost
            await self.web.stop()
        await self.generator.stop()
        await super().close()
