"""The bot's small web endpoint: `/healthz` for Docker and orchestrators, and EvoLink's callbacks.

A callback URL carries the task's id and an HMAC of it made with a secret kept in the database,
so only URLs this installation handed out are accepted. A callback is only a hint: it wakes the
task's follower, which confirms the outcome with one poll; repeats are harmless.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from typing import TYPE_CHECKING

from aiohttp import web

from storage.meta import MetaStore

if TYPE_CHECKING:
    from bot.core import ImagineBot

log = logging.getLogger(__name__)

SECRET_META_KEY = "evolink_callback_secret"  # noqa: S105 - the name of a meta row
HEARTBEAT_KEY = "healthz"
CALLBACK_PREFIX = "/evolink/callback"
DATABASE_TIMEOUT = 5.0  # seconds the health check waits for its database write


class CallbackTokens:
    """Per-task tokens for callback URLs: an HMAC of the task id with the installation's secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    @classmethod
    async def load(cls, meta: MetaStore) -> CallbackTokens:
        """The installation's secret, made and kept on first use."""
        secret = await meta.get(SECRET_META_KEY)
        if secret is None:
            secret = secrets.token_hex(32)
            await meta.set(SECRET_META_KEY, secret)
            log.info("Created the secret for EvoLink callback URLs")
        return cls(bytes.fromhex(secret))

    def token(self, task_id: int) -> str:
        digest = hmac.new(self._secret, f"task:{task_id}".encode(), hashlib.sha256)
        return digest.hexdigest()[:32]

    def valid(self, task_id: int, token: str) -> bool:
        return hmac.compare_digest(self.token(task_id), token)

    def url(self, base_url: str, task_id: int) -> str:
        return f"{base_url.rstrip('/')}{CALLBACK_PREFIX}/{task_id}/{self.token(task_id)}"


class WebServer:
    """An aiohttp app run beside the bot: health and EvoLink callbacks."""

    def __init__(self, bot: ImagineBot, tokens: CallbackTokens) -> None:
        self.bot = bot
        self.tokens = tokens
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_post(CALLBACK_PREFIX + "/{task_id}/{token}", self._callback)
        return app

    async def start(self, host: str, port: int) -> None:
        # No access log: callback paths hold tokens.
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=1024)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            log.error("Cannot listen on %s:%d (WEB_HOST, WEB_PORT): %s", host, port, exc)
            raise
        self.port = self._runner.addresses[0][1]
        log.info("Web endpoint listening on %s:%d (/healthz, EvoLink callbacks)", host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ handlers

    async def _healthz(self, request: web.Request) -> web.Response:
        problems: list[str] = []
        gateway = self.gateway_connected()
        if not gateway:
            problems.append("not connected to the Discord gateway")
        database = False
        try:
            await asyncio.wait_for(self._touch_database(), timeout=DATABASE_TIMEOUT)
            database = True
        except TimeoutError:
            problems.append(f"the database took over {DATABASE_TIMEOUT:g} s to take a write")
        except Exception as exc:
            log.warning("Health check: the database is not writable: %s", exc)
            problems.append(f"the database is not writable ({type(exc).__name__}: {exc})")
        body = {
            "status": "unhealthy" if problems else "ok",
            "gateway": gateway,
            "database": database,
            "tasks_in_flight": self.bot.generator.running(),
            "problems": problems,
        }
        return web.json_response(body, status=503 if problems else 200)

    def gateway_connected(self) -> bool:
        bot = self.bot
        return not bot.is_closed() and bot.is_ready() and bot.ws is not None and bool(bot.ws.open)

    async def _touch_database(self) -> None:
        async with self.bot.db.transaction():
            await self.bot.meta.set(HEARTBEAT_KEY, f"{time.time():.3f}")

    async def _callback(self, request: web.Request) -> web.Response:
        task_id_text = request.match_info["task_id"]
        token = request.match_info["token"]
        if not (task_id_text.isascii() and task_id_text.isdigit() and len(task_id_text) <= 19):
            raise web.HTTPNotFound()
        task_id = int(task_id_text)
        if not self.tokens.valid(task_id, token):
            raise web.HTTPNotFound()
        await request.read()  # the body is only a hint: the follower asks EvoLink itself
        self.bot.generator.wake(task_id)
        log.debug("Task %d: EvoLink called back", task_id)
        return web.json_response({"received": True})
