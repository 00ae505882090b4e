"""What members read about a task: progress, result and failure texts."""

from __future__ import annotations

from discord.utils import escape_markdown, escape_mentions

from bot.pricing import format_credits
from storage.tasks import TaskRecord, TaskStatus

PROMPT_SHOWN = 300  # characters of the prompt shown in messages (messages hold 2,000)

_STATE = {
    TaskStatus.SUBMITTING: "Sending to EvoLink…",
    TaskStatus.PENDING: "Queued at EvoLink…",
    TaskStatus.PROCESSING: "Generating…",
    TaskStatus.COMPLETED: "Finished, uploading…",
}


def shown_prompt(prompt: str, limit: int = PROMPT_SHOWN) -> str:
    """The prompt as members see it: cut to `limit`, markdown and mentions made harmless."""
    cut = prompt if len(prompt) <= limit else prompt[: limit - 1].rstrip() + "…"
    return escape_mentions(escape_markdown(" ".join(cut.split())))


def _settings_line(task: TaskRecord) -> str:
    kind = "Edit" if task.is_edit else "Image"
    refs = f" · {len(task.reference_urls)} reference image(s)" if task.reference_urls else ""
    return f"{kind} · {task.size} · {task.quality} quality{refs}"


def progress_text(task: TaskRecord) -> str:
    state = _STATE.get(task.status, task.status.value)
    percent = f" {task.progress}%" if task.status is TaskStatus.PROCESSING else ""
    return (
        f"**{shown_prompt(task.prompt)}**\n{_settings_line(task)}\n"
        f"{state}{percent} · requested by <@{task.user_id}>"
    )


def result_text(
    task: TaskRecord, *, parent_link: str | None = None, reencoded: bool = False
) -> str:
    lines = [
        f"**{shown_prompt(task.prompt)}**",
        f"{_settings_line(task)} · {format_credits(task.charged)} credits · by <@{task.user_id}>",
    ]
    if parent_link:
        lines.append(f"Edited from {parent_link}")
    if reencoded:
        lines.append("Re-encoded to fit Discord's upload limit.")
    return "\n".join(lines)


def failure_text(task: TaskRecord, reason: str) -> str:
    return (
        f"**{shown_prompt(task.prompt)}**\n{_settings_line(task)}\n"
        f"❌ {reason} Your credits were not spent."
    )


def cancelled_text(task: TaskRecord) -> str:
    return (
        f"**{shown_prompt(task.prompt)}**\n{_settings_line(task)}\n"
        "Cancelled. Your credits were not spent."
    )
