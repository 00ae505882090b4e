"""Turning what a member asked for into a checked, priced task."""

from __future__ import annotations

from dataclasses import dataclass

from bot.pricing import PriceTable
from bot.validation import (
    ReferenceImage,
    check_quality,
    check_references,
    check_size,
    clean_prompt,
)
from storage.tasks import NewTask


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a request came from, and how the bot may answer it."""

    guild_id: int
    channel_id: int
    user_id: int
    kind: str  # command | reply | menu | button
    upload_limit: int
    interaction_id: int | None = None
    source_message_id: int | None = None


@dataclass(frozen=True, slots=True)
class Parent:
    """The image an edit starts from."""

    message_id: int
    task_id: int | None = None


class RequestBuilder:
    """Checks a request (prompt, choices, reference images) and prices it. No I/O."""

    def __init__(self, prices: PriceTable, model: str) -> None:
        self.prices = prices
        self.model = model

    def build(
        self,
        origin: Origin,
        *,
        prompt: str | None,
        size: str = "1:1",
        quality: str = "auto",
        references: list[ReferenceImage] | tuple[str, ...] = (),
        parent: Parent | None = None,
    ) -> NewTask:
        """A task ready to start, or InvalidRequest with the reason.

        `references` are either attachments to check or URLs already checked (a re-roll).
        """
        text = clean_prompt(prompt)
        size, quality = check_size(size), check_quality(quality)
        urls = references if isinstance(references, tuple) else check_references(references)
        return NewTask(
            guild_id=origin.guild_id,
            channel_id=origin.channel_id,
            user_id=origin.user_id,
            origin=origin.kind,
            prompt=text,
            model=self.model,
            size=size,
            quality=quality,
            reference_urls=urls,
            estimate=self.prices.estimate(self.model, quality, size),
            upload_limit=origin.upload_limit,
            interaction_id=origin.interaction_id,
            source_message_id=origin.source_message_id,
            parent_task_id=parent.task_id if parent else None,
            parent_message_id=parent.message_id if parent else None,
        )
