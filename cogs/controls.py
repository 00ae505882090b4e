"""The buttons under progress and result messages: Re-roll, Vary, Edit, Delete and Cancel.

The buttons themselves live in `bot.controls` (they survive restarts); this cog registers them
and answers their clicks. Re-roll, Vary and Edit are requests like /imagine: they cost, are
checked and are answered like it (a new public progress message). Delete and Cancel are for the
member who asked or a moderator.
"""

from __future__ import annotations

import functools
import logging
import time

import discord
from discord.ext import commands

from bot.controls import (
    DELETED,
    NOT_YOURS_CANCEL,
    NOT_YOURS_DELETE,
    TASK_BUTTONS,
    TASKS_COG,
    TOO_LATE,
    UNKNOWN_TASK,
    EditForm,
    VaryForm,
    answering_errors,
    cancelled_note,
    may_manage,
    reroll_of,
)
from bot.core import ImagineBot
from bot.edits import NO_IMAGE, EditRequests, EditTarget
from bot.errors import InvalidRequest, NotAllowed
from bot.permissions import interaction_is_moderator
from cogs.edit import target_of
from cogs.imagine import QUALITIES, SIZES, defer_publicly, origin_of
from storage.community import CommunityStore
from storage.tasks import TaskRecord, TaskStore

log = logging.getLogger(__name__)


class Controls(commands.Cog, name=TASKS_COG):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        self.tasks = TaskStore(bot.db)
        self.community = CommunityStore(bot.db)
        self.edits = EditRequests(bot.requests, self.tasks)

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*TASK_BUTTONS)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(*TASK_BUTTONS)

    # ------------------------------------------------------------------ new requests

    async def reroll(self, interaction: discord.Interaction, task_id: int) -> None:
        async with answering_errors(interaction, "the Re-roll button"):
            task = await self._task(interaction, task_id)
            new = reroll_of(self.bot.requests, origin_of(interaction, "button"), task, time.time())
            await defer_publicly(interaction)
            await self.bot.generator.start(new, interaction)

    async def vary(self, interaction: discord.Interaction, task_id: int) -> None:
        async with answering_errors(interaction, "the Vary button"):
            task = await self._task(interaction, task_id)
            form = VaryForm(
                task,
                [(choice.name, str(choice.value)) for choice in SIZES],
                [(choice.name, str(choice.value)) for choice in QUALITIES],
                functools.partial(self._submit_vary, task_id=task.id),
            )
            await interaction.response.send_modal(form)

    async def _submit_vary(
        self, interaction: discord.Interaction, size: str, quality: str, *, task_id: int
    ) -> None:
        async with answering_errors(interaction, "the Vary form"):
            task = await self._task(interaction, task_id)
            origin = origin_of(interaction, "button")
            new = reroll_of(
                self.bot.requests, origin, task, time.time(), size=size, quality=quality
            )
            await defer_publicly(interaction)
            await self.bot.generator.start(new, interaction)

    async def edit(self, interaction: discord.Interaction, task_id: int) -> None:
        async with answering_errors(interaction, "the Edit button"):
            task = await self._task(interaction, task_id)
            if interaction.message is None:
                raise InvalidRequest(NO_IMAGE)
            target = target_of(interaction.message)  # freshly signed links to this image
            if not target.images:
                raise InvalidRequest(NO_IMAGE)
            submit = functools.partial(self._submit_edit, parent_id=task.id, target=target)
            await interaction.response.send_modal(EditForm(task.id, submit))

    async def _submit_edit(
        self, interaction: discord.Interaction, prompt: str, *, parent_id: int, target: EditTarget
    ) -> None:
        async with answering_errors(interaction, "the Edit form"):
            assert self.bot.user is not None
            new = self.edits.build(
                origin_of(interaction, "button"),
                prompt=prompt,
                bot_id=self.bot.user.id,
                target=target,
                added=[],
                parent=await self._task(interaction, parent_id),
            )
            await defer_publicly(interaction)
            await self.bot.generator.start(new, interaction)

    # ------------------------------------------------------------------ the member or a moderator

    async def delete(self, interaction: discord.Interaction, task_id: int) -> None:
        async with answering_errors(interaction, "the Delete button"):
            task = await self._task(interaction, task_id)
            moderator = await self._require_manager(interaction, task, NOT_YOURS_DELETE)
            await interaction.response.defer(ephemeral=True, thinking=True)
            if interaction.message is not None:
                try:
                    await interaction.message.delete()
                except discord.NotFound:
                    log.info("Task %d: its result message was already deleted", task.id)
            if moderator and interaction.user.id != task.user_id:
                await self._record_moderator(interaction, task, "delete image", "deleted image")
            log.info("Task %d: result deleted by %d", task.id, interaction.user.id)
            await interaction.followup.send(DELETED, ephemeral=True)

    async def cancel(self, interaction: discord.Interaction, task_id: int) -> None:
        async with answering_errors(interaction, "the Cancel button"):
            task = await self._task(interaction, task_id)
            moderator = await self._require_manager(interaction, task, NOT_YOURS_CANCEL)
            await interaction.response.defer(ephemeral=True, thinking=True)
            if not await self.bot.generator.cancel(task):
                raise InvalidRequest(TOO_LATE)
            if moderator and interaction.user.id != task.user_id:
                await self._record_moderator(interaction, task, "cancel image", "cancelled image")
            log.info("Task %d cancelled by %d", task.id, interaction.user.id)
            await interaction.followup.send(cancelled_note(task), ephemeral=True)

    # ------------------------------------------------------------------ helpers

    async def _record_moderator(
        self, interaction: discord.Interaction, task: TaskRecord, action: str, done: str
    ) -> None:
        """A moderator acted on another member's image: the moderation log and its channel."""
        actor = interaction.user.id
        detail = f"task {task.id} of member {task.user_id}"
        await self.community.record_action(task.guild_id, actor, action, detail, time.time())
        self.bot.moderation_log.change(
            task.guild_id, actor, f"{done} #{task.id} of <@{task.user_id}>"
        )

    async def _task(self, interaction: discord.Interaction, task_id: int) -> TaskRecord:
        task = await self.tasks.get(task_id)
        if task is None or task.guild_id != interaction.guild_id:
            raise InvalidRequest(UNKNOWN_TASK)
        return task

    async def _require_manager(
        self, interaction: discord.Interaction, task: TaskRecord, refusal: str
    ) -> bool:
        """Whether the clicker is a moderator; NotAllowed unless they asked for it or moderate."""
        moderator = await interaction_is_moderator(interaction, self.community)
        if not may_manage(task, interaction.user.id, is_moderator=moderator):
            raise NotAllowed(refusal)
        return moderator


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Controls(bot))
