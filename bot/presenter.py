"""Showing tasks on Discord: progress messages, results and ends, through whichever route lives.

While the member's interaction token is fresh, messages are edited through it (each token has
its own rate-limit bucket). Near its 15-minute expiry, or once Discord says it is dead, the bot
edits its own public message through the channel instead. A deleted progress message is
replaced by a new one, posted with a nonce so a repeated post after a crash is not doubled.
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import aiohttp
import discord

from bot.generation import (
    DeliveryDeferred,
    DeliveryError,
    DeliveryForbidden,
    DeliveryTooLarge,
    DeliveryTransient,
)
from bot.images import PreparedImage
from storage.tasks import TaskRecord

log = logging.getLogger(__name__)

T = TypeVar("T")
NO_MENTIONS = discord.AllowedMentions.none()
TOKEN_MARGIN = timedelta(seconds=60)  # stop using a token this long before it expires
DEAD_TOKEN_CODES = {50027, 10015}  # Invalid Webhook Token, Unknown Webhook
UNKNOWN_MESSAGE = 10008
FORBIDDEN_CODES = {50013, 50001}  # Missing Permissions, Missing Access
TOO_LARGE_CODE = 40005

ViewFactory = Callable[[TaskRecord], discord.ui.View | None]


class _NoMessage(Exception):
    """The progress message is gone (or was never made): post a new one."""


def message_link(guild_id: int, channel_id: int, message_id: int) -> str:
    return f"https://discord.com/channels/{guild_id}/{channel_id}/{message_id}"


class DiscordPresenter:
    """The Presenter of `bot.generation`, with discord.py."""

    def __init__(
        self,
        client: discord.Client,
        *,
        progress_view: ViewFactory = lambda task: None,
        result_view: ViewFactory = lambda task: None,
    ) -> None:
        self.client = client
        self.progress_view = progress_view
        self.result_view = result_view
        self._interactions: dict[int, discord.Interaction] = {}
        self._delivering: Counter[int] = Counter()  # channel id -> images being posted there

    def attach(self, task_id: int, surface: object) -> None:
        if isinstance(surface, discord.Interaction):
            self._interactions[task_id] = surface

    def forget(self, task_id: int) -> None:
        self._interactions.pop(task_id, None)

    async def show_progress(self, task: TaskRecord, text: str) -> int:
        view = self.progress_view(task)
        return await self._put(task, "progress", content=text, view=view)

    async def deliver(self, task: TaskRecord, image: PreparedImage, text: str) -> int:
        def file() -> discord.File:  # a File is single-use: a fresh one for every try
            return discord.File(io.BytesIO(image.data), filename=image.filename)

        self._delivering[task.channel_id] += 1
        try:
            return await self._put(
                task, "result", content=text, view=self.result_view(task), file=file
            )
        finally:
            self._delivering[task.channel_id] -= 1
            if not self._delivering[task.channel_id]:
                del self._delivering[task.channel_id]

    async def show_end(self, task: TaskRecord, text: str) -> None:
        await self._put(task, "end", content=text, view=None)

    async def tell_privately(self, task: TaskRecord, text: str) -> None:
        try:
            user = self.client.get_user(task.user_id) or await self.client.fetch_user(task.user_id)
            await user.send(text, allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as exc:
            raise DeliveryError(f"could not DM the member: {exc.status} {exc.code}") from exc

    def parent_link(self, task: TaskRecord) -> str | None:
        if task.parent_message_id is None:
            return None  # edits start from a message in the task's own channel
        return message_link(task.guild_id, task.channel_id, task.parent_message_id)

    # ------------------------------------------------------------------ routing

    async def _put(
        self,
        task: TaskRecord,
        kind: str,
        *,
        content: str,
        view: discord.ui.View | None,
        file: Callable[[], discord.File] | None = None,
    ) -> int:
        """Edit the task's message by the best living route, or post a new one."""
        fields: dict[str, Any] = {"content": content, "view": view, "allowed_mentions": NO_MENTIONS}

        def edit_fields() -> dict[str, Any]:
            return {**fields, "attachments": [file()] if file else []}

        interaction = self._interactions.get(task.id)
        if interaction is not None and self._fresh(interaction):
            try:
                return (await _discord(interaction.edit_original_response(**edit_fields()))).id
            except _DeadToken:
                log.info("Task %d: interaction token is dead; using the channel", task.id)
                self.forget(task.id)
            except _NoMessage:
                log.info("Task %d: its message was deleted", task.id)
                self.forget(task.id)
        if kind == "progress" and task.progress_message_id and self._delivering[task.channel_id]:
            # Channel routes share one rate limit per channel: images first, progress later.
            raise DeliveryDeferred("an image is being posted in this channel")
        channel = self.client.get_partial_messageable(task.channel_id, guild_id=task.guild_id)
        if task.progress_message_id is not None:
            try:
                partial = channel.get_partial_message(task.progress_message_id)
                return (await _discord(partial.edit(**edit_fields()))).id
            except _NoMessage:
                log.info("Task %d: its message was deleted; posting a new one", task.id)
        nonce = f"imagine-{task.id}-{kind}"  # Discord returns the first message for a repeat
        send_fields: dict[str, Any] = {**fields, "nonce": nonce}
        if view is None:
            send_fields.pop("view")
        if file is not None:
            send_fields["file"] = file()
        if task.source_message_id is not None:
            send_fields["reference"] = discord.MessageReference(
                message_id=task.source_message_id,
                channel_id=task.channel_id,
                fail_if_not_exists=False,
            )
        return (await _discord(channel.send(**send_fields))).id

    @staticmethod
    def _fresh(interaction: discord.Interaction) -> bool:
        return discord.utils.utcnow() < interaction.expires_at - TOKEN_MARGIN


class _DeadToken(Exception):
    """The interaction token no longer works (401 / 50027 or 404 / 10015)."""


async def _discord(call: Awaitable[T]) -> T:
    """Await a discord.py call, turning its failures into the delivery errors."""
    try:
        return await call
    except discord.HTTPException as exc:
        if exc.code in DEAD_TOKEN_CODES or (exc.status == 401):
            raise _DeadToken from exc
        if exc.code == UNKNOWN_MESSAGE:
            raise _NoMessage from exc
        if exc.status == 413 or exc.code == TOO_LARGE_CODE:
            raise DeliveryTooLarge(f"{exc.status} {exc.code}") from exc
        if exc.code in FORBIDDEN_CODES or exc.status == 403:
            raise DeliveryForbidden(f"{exc.status} {exc.code}") from exc
        raise DeliveryTransient(f"{exc.status} {exc.code}") from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DeliveryTransient(type(exc).__name__) from exc
