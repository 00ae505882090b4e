"""Buttons under the bot's messages, built to keep working after a restart.

Every button is a `discord.ui.DynamicItem`: what it acts on (a task id, a page of /history) is
written in its custom_id, and discord.py rebuilds the button from that id on each click, so a
message posted before a restart answers the same as a fresh one. A click is handed to the cog
that owns the feature (`TaskActions`, `HistoryActions`, found by cog name); this module holds
the items, the views, and the plain rules and texts behind them.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, Self, runtime_checkable
from urllib.parse import parse_qs, urlsplit

import discord
from discord.ext import commands

from bot.errors import InvalidRequest
from bot.presenter import message_link
from bot.pricing import format_credits
from bot.render import shown_prompt
from bot.requests import Origin, Parent, RequestBuilder
from bot.tree import reply_privately, user_message_for
from bot.validation import MAX_PROMPT
from storage.tasks import NewTask, TaskRecord, TaskStatus

TASKS_COG = "Controls"  # the cog that implements TaskActions
HISTORY_COG = "History"  # the cog that implements HistoryActions

HISTORY_PAGE_SIZE = 5
HISTORY_PROMPT = 100  # characters of each prompt shown in /history
LINK_MARGIN = 60.0  # seconds: a reference link this close to expiry counts as expired

EDIT_FORM = "imagine:edit-form:{task_id}"
EDIT_PROMPT = "imagine:edit-prompt"
VARY_FORM = "imagine:vary-form:{task_id}"
VARY_SIZE = "imagine:vary-size"
VARY_QUALITY = "imagine:vary-quality"

# What members read.
UNKNOWN_TASK = "I can't find that image any more."
NOT_YOURS_DELETE = "Only the member who asked for this image, or a moderator, can delete it."
NOT_YOURS_CANCEL = "Only the member who asked for this image, or a moderator, can cancel it."
TOO_LATE = "Too late to cancel: this image has already finished."
DELETED = "Deleted the image."
EXPIRED_REFERENCES = (
    "The reference images of this request have expired on Discord, so I can't reuse them. "
    "Please run /imagine with the images attached again."
)
NOT_YOUR_PAGES = "These buttons belong to the member who ran /history."
OTHERS_HISTORY = "Only moderators can see another member's images."
BUTTON_UNAVAILABLE = "This button doesn't work right now; please try again in a moment."

NOT_CHARGED = (TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.INTERRUPTED)

Button = discord.ui.Button[discord.ui.View]


# ---------------------------------------------------------------------- plain rules


def may_manage(task: TaskRecord, user_id: int, *, is_moderator: bool) -> bool:
    """Whether a member may delete or cancel a task: the member who asked, or a moderator."""
    return is_moderator or user_id == task.user_id


def expired_links(urls: Iterable[str], now: float, margin: float = LINK_MARGIN) -> list[str]:
    """The Discord CDN links among `urls` whose signature (`ex`, hex seconds) has run out.

    Links without an `ex` parameter are not Discord's signed links and are never counted.
    """
    expired = []
    for url in urls:
        values = parse_qs(urlsplit(url).query).get("ex")
        if not values:
            continue
        try:
            expires = int(values[0], 16)
        except ValueError:
            continue
        if expires <= now + margin:
            expired.append(url)
    return expired


def reroll_of(
    builder: RequestBuilder,
    origin: Origin,
    task: TaskRecord,
    now: float,
    *,
    size: str | None = None,
    quality: str | None = None,
) -> NewTask:
    """The same request again (prompt, size, quality, references, parent), as a new task;
    Vary gives another `size` and/or `quality`.

    The references are the links the first request used; Discord's links run out after about a
    day and cannot be renewed for images that were attached to a slash command, so a request
    whose links have expired is refused here, before anything is reserved.
    """
    if expired_links(task.reference_urls, now):
        raise InvalidRequest(EXPIRED_REFERENCES)
    parent = (
        Parent(message_id=task.parent_message_id, task_id=task.parent_task_id)
        if task.parent_message_id is not None
        else None
    )
    return builder.build(
        origin,
        prompt=task.prompt,
        size=size or task.size,
        quality=quality or task.quality,
        references=task.reference_urls,  # a tuple: links already checked when first asked
        parent=parent,
    )


def cancelled_note(task: TaskRecord) -> str:
    """What the member who pressed Cancel reads (the message itself says it was cancelled)."""
    return f"Cancelled; the {format_credits(task.charged)} credits it held were released."


# ---------------------------------------------------------------------- /history pages


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """One page of a member's history, as seen by a viewer (the member or a moderator)."""

    viewer_id: int
    member_id: int
    page: int = 0  # counted from 0

    @property
    def offset(self) -> int:
        return self.page * HISTORY_PAGE_SIZE

    @property
    def own(self) -> bool:
        return self.viewer_id == self.member_id


def page_count(total: int) -> int:
    return max(1, math.ceil(total / HISTORY_PAGE_SIZE))


def clamp(page: HistoryPage, total: int) -> HistoryPage:
    """The page itself, or the last one when the history has become shorter."""
    last = page_count(total) - 1
    if page.page <= last:
        return page
    return HistoryPage(page.viewer_id, page.member_id, last)


def _status_and_cost(task: TaskRecord) -> str:
    if task.status is TaskStatus.POSTED:
        return f"posted · {format_credits(task.charged)} credits"
    if task.status in NOT_CHARGED:
        return f"{task.status.value} · not charged"
    return f"in progress · {format_credits(task.charged)} credits reserved"


def _link_of(task: TaskRecord) -> str | None:
    message_id = task.result_message_id or task.progress_message_id
    if message_id is None:
        return None
    return message_link(task.guild_id, task.channel_id, message_id)


def history_entry(task: TaskRecord) -> str:
    when = discord.utils.format_dt(datetime.fromtimestamp(task.created_at, UTC), "R")
    parts = [f"**#{task.id}**", _status_and_cost(task), when]
    link = _link_of(task)
    if link is not None:
        parts.append(f"[message]({link})")
    return " · ".join(parts) + f"\n> {shown_prompt(task.prompt, HISTORY_PROMPT)}"


def history_text(page: HistoryPage, tasks: list[TaskRecord], total: int) -> str:
    whose = "Your images" if page.own else f"Images by <@{page.member_id}>"
    if total == 0:
        return (
            "You have made no images here yet."
            if page.own
            else f"<@{page.member_id}> has made no images here yet."
        )
    header = f"**{whose}** · page {page.page + 1} of {page_count(total)} · {total} in all"
    return "\n".join([header, *(history_entry(task) for task in tasks)])


# ---------------------------------------------------------------------- who handles a click


@runtime_checkable
class TaskActions(Protocol):
    """What the buttons under a progress or result message do (implemented by a cog)."""

    async def reroll(self, interaction: discord.Interaction, task_id: int) -> None: ...

    async def vary(self, interaction: discord.Interaction, task_id: int) -> None: ...

    async def edit(self, interaction: discord.Interaction, task_id: int) -> None: ...

    async def delete(self, interaction: discord.Interaction, task_id: int) -> None: ...

    async def cancel(self, interaction: discord.Interaction, task_id: int) -> None: ...


@runtime_checkable
class HistoryActions(Protocol):
    """What the Previous / Next buttons of /history do (implemented by a cog)."""

    async def show_page(self, interaction: discord.Interaction, page: HistoryPage) -> None: ...


def _cog(interaction: discord.Interaction, name: str) -> object | None:
    client = interaction.client
    return client.get_cog(name) if isinstance(client, commands.Bot) else None


async def _task_actions(interaction: discord.Interaction) -> TaskActions | None:
    cog = _cog(interaction, TASKS_COG)
    if isinstance(cog, TaskActions):
        return cog
    await reply_privately(interaction, BUTTON_UNAVAILABLE)
    return None


@contextlib.asynccontextmanager
async def answering_errors(interaction: discord.Interaction, where: str) -> AsyncIterator[None]:
    """Turn any error inside into the member's private answer (buttons have no tree on_error)."""
    try:
        yield
    except Exception as error:
        await reply_privately(interaction, user_message_for(error, where))


# ---------------------------------------------------------------------- the buttons


def _button(custom_id: str, label: str, style: discord.ButtonStyle) -> Button:
    return discord.ui.Button(label=label, style=style, custom_id=custom_id)


# The buttons under a task's message: its action (a TaskActions method) -> label and style.
TASK_BUTTON_LOOK = {
    "reroll": ("Re-roll", discord.ButtonStyle.secondary),
    "vary": ("Vary", discord.ButtonStyle.secondary),
    "edit": ("Edit", discord.ButtonStyle.secondary),
    "delete": ("Delete", discord.ButtonStyle.danger),
    "cancel": ("Cancel", discord.ButtonStyle.secondary),
}


class TaskButton(
    discord.ui.DynamicItem[Button],
    template=r"imagine:(?P<action>reroll|vary|edit|delete|cancel):(?P<task_id>[0-9]{1,20})",
):
    """A button of a task, its action and task id in its custom_id, so it survives restarts.

    Re-roll and Vary start a new task of whoever clicks; Edit asks for what to change, with this
    image as the first reference; Delete removes the result and Cancel stops a running task
    (both: the member who asked, or a moderator).
    """

    def __init__(self, action: str, task_id: int) -> None:
        label, style = TASK_BUTTON_LOOK[action]
        super().__init__(_button(f"imagine:{action}:{task_id}", label, style))
        self.action = action
        self.task_id = task_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Self:
        return cls(match["action"], int(match["task_id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        actions = await _task_actions(interaction)
        if actions is not None:
            await getattr(actions, self.action)(interaction, self.task_id)


class HistoryButton(
    discord.ui.DynamicItem[Button],
    template=(
        r"imagine:history:(?P<viewer>[0-9]{1,20}):(?P<member>[0-9]{1,20}):"
        r"(?P<page>[0-9]{1,6}):(?P<direction>prev|next)"
    ),
):
    """Previous / Next on a /history message; the page it leads to is in its custom_id."""

    def __init__(self, page: HistoryPage, direction: str, *, disabled: bool = False) -> None:
        label = "Previous" if direction == "prev" else "Next"
        custom_id = f"imagine:history:{page.viewer_id}:{page.member_id}:{page.page}:{direction}"
        button = _button(custom_id, label, discord.ButtonStyle.secondary)
        button.disabled = disabled
        super().__init__(button)
        self.page = page

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Self:
        page = HistoryPage(int(match["viewer"]), int(match["member"]), int(match["page"]))
        return cls(page, match["direction"])

    async def callback(self, interaction: discord.Interaction) -> None:
        cog = _cog(interaction, HISTORY_COG)
        if not isinstance(cog, HistoryActions):
            await reply_privately(interaction, BUTTON_UNAVAILABLE)
            return
        await cog.show_page(interaction, self.page)


TASK_BUTTONS = (TaskButton,)


# ---------------------------------------------------------------------- views


def progress_view(task: TaskRecord) -> discord.ui.View:
    """Under a running task: Cancel."""
    view = discord.ui.View(timeout=None)
    view.add_item(TaskButton("cancel", task.id))
    return view


def result_view(task: TaskRecord) -> discord.ui.View:
    """Under a finished image: Re-roll, Vary, Edit, Delete."""
    view = discord.ui.View(timeout=None)
    for action in ("reroll", "vary", "edit", "delete"):
        view.add_item(TaskButton(action, task.id))
    return view


def history_view(page: HistoryPage, total: int) -> discord.ui.View | None:
    """Previous / Next, or nothing when everything fits on one page."""
    pages = page_count(total)
    if pages <= 1:
        return None
    earlier = HistoryPage(page.viewer_id, page.member_id, max(page.page - 1, 0))
    later = HistoryPage(page.viewer_id, page.member_id, min(page.page + 1, pages - 1))
    view = discord.ui.View(timeout=None)
    view.add_item(HistoryButton(earlier, "prev", disabled=page.page == 0))
    view.add_item(HistoryButton(later, "next", disabled=page.page >= pages - 1))
    return view


class EditForm(discord.ui.Modal, title="Edit image"):
    """Asks what to change in the image whose Edit button was pressed."""

    def __init__(
        self, task_id: int, submit: Callable[[discord.Interaction, str], Awaitable[None]]
    ) -> None:
        super().__init__(timeout=15 * 60.0, custom_id=EDIT_FORM.format(task_id=task_id))
        self.submit = submit
        self.prompt: discord.ui.TextInput[EditForm] = discord.ui.TextInput(
            custom_id=EDIT_PROMPT,
            style=discord.TextStyle.paragraph,
            placeholder="e.g. make the sky purple and add a small red kite",
            max_length=MAX_PROMPT,
        )
        self.add_item(discord.ui.Label(text="What should change?", component=self.prompt))

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self.submit(interaction, self.prompt.value)

    async def on_error(  # type: ignore[override]  # Modal's own signature, narrower than View's
        self, interaction: discord.Interaction, error: Exception, /
    ) -> None:
        await reply_privately(interaction, user_message_for(error, "the Edit form"))


class VaryForm(discord.ui.Modal, title="Run again with other settings"):
    """Asks for the size and quality of a re-run; the current ones are chosen to begin with."""

    def __init__(
        self,
        task: TaskRecord,
        sizes: Iterable[tuple[str, str]],
        qualities: Iterable[tuple[str, str]],
        submit: Callable[[discord.Interaction, str, str], Awaitable[None]],
    ) -> None:
        super().__init__(timeout=15 * 60.0, custom_id=VARY_FORM.format(task_id=task.id))
        self.submit = submit
        self.size: discord.ui.Select[VaryForm] = _choice(VARY_SIZE, sizes, task.size)
        self.quality: discord.ui.Select[VaryForm] = _choice(VARY_QUALITY, qualities, task.quality)
        self.add_item(discord.ui.Label(text="Size", component=self.size))
        self.add_item(discord.ui.Label(text="Quality", component=self.quality))

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self.submit(interaction, self.size.values[0], self.quality.values[0])

    async def on_error(  # type: ignore[override]  # Modal's own signature, narrower than View's
        self, interaction: discord.Interaction, error: Exception, /
    ) -> None:
        await reply_privately(interaction, user_message_for(error, "the Vary form"))


def _choice(
    custom_id: str, choices: Iterable[tuple[str, str]], current: str
) -> discord.ui.Select[VaryForm]:
    """A one-of select of (name, value) choices with the current value picked."""
    options = [
        discord.SelectOption(label=name, value=value, default=value == current)
        for name, value in choices
    ]
    return discord.ui.Select(custom_id=custom_id, options=options, required=True)
