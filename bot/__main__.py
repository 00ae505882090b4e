"""Entry point: `python -m bot` or `imagine-bot`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

import aiohttp
import discord

from bot.core import ImagineBot, point_discord_at
from bot.errors import ConfigurationError
from bot.logging_setup import configure_logging
from bot.settings import Settings, load_settings
from storage.database import Database, DatabaseTooNew

log = logging.getLogger("bot")


async def run(settings: Settings) -> None:
    """Open the HTTP session and the database, and run the bot until it is told to stop."""
    point_discord_at(settings)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        Database.open(settings.database_path) as db,
    ):
        bot = ImagineBot(settings=settings, session=session, db=db)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, lambda: asyncio.ensure_future(bot.close()))
        async with bot:
            await bot.start(settings.discord_token.get_secret_value())
        log.info("Stopped cleanly")


def main() -> None:
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(f"imagine-bot: {exc}", file=sys.stderr)
        sys.exit(2)
    configure_logging(
        settings.log_level,
        secrets=(
            settings.discord_token.get_secret_value(),
            settings.evolink_api_key.get_secret_value(),
        ),
    )
    try:
        asyncio.run(run(settings))
    except DatabaseTooNew as exc:
        print(f"imagine-bot: {exc}", file=sys.stderr)
        sys.exit(2)
    except discord.LoginFailure:
        print("imagine-bot: Discord refused DISCORD_TOKEN; check the bot token", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
