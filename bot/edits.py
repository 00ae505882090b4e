"""Edit requests: which images an edit starts from, its prompt and its shape. No Discord here.

An edit starts from a message that carries images (one of the bot's results, or any member's
upload). Its references are that message's images first, then the images the member added, in
order; the prompt is the member's text without the bot's mention. An edit of a bot result keeps
the result's size and quality; an edit of any other image takes the shape nearest to the image
and `auto` quality.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bot.errors import InvalidRequest
from bot.requests import Origin, Parent, RequestBuilder
from bot.validation import ReferenceImage, image_type, mention_of, strip_mention
from storage.tasks import NewTask, TaskRecord, TaskStore

NO_IMAGE = "That message has no image I can edit (PNG, JPEG or WebP)."
HIDDEN_IMAGES = (
    "I can't see the images in that message: the bot runs without Discord's Message Content "
    "intent. Use Apps → Edit image on the message instead."
)
GONE = "I can't find the message to edit any more; it may have been deleted."
UNREADABLE = "I can't read that message: I lack the Read Message History permission here."

SHAPES = {"2:3": 2 / 3, "1:1": 1.0, "3:2": 3 / 2}  # width / height of each size EvoLink offers
DEFAULT_SIZE = "1:1"
DEFAULT_QUALITY = "auto"


@dataclass(frozen=True, slots=True)
class SourceImage:
    """An attachment of the message being edited, with its dimensions when Discord gives them."""

    reference: ReferenceImage
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True, slots=True)
class EditTarget:
    """The message an edit starts from, as the bot sees it."""

    message_id: int
    attachments: tuple[SourceImage, ...]
    visible: bool = True  # False: Discord withheld its attachments (no Message Content intent)

    @property
    def images(self) -> tuple[SourceImage, ...]:
        """The attachments an edit can start from (PNG, JPEG, WebP), in the message's order."""
        return tuple(a for a in self.attachments if image_type(a.reference) is not None)


def mentions(text: str, user_id: int) -> bool:
    """Whether `text` mentions the user (`<@id>` or `<@!id>`); a reply's ping does not count."""
    return mention_of(user_id).search(text) is not None


def shape_of(image: SourceImage | None) -> str:
    """The size nearest to the image's proportions, or the default when they are unknown."""
    if image is None or not image.width or not image.height:
        return DEFAULT_SIZE
    ratio = math.log(image.width / image.height)
    return min(SHAPES, key=lambda size: abs(math.log(SHAPES[size]) - ratio))


class EditRequests:
    """Turns "edit this image" (a reply, or the Edit image menu) into a checked, priced task."""

    def __init__(self, builder: RequestBuilder, tasks: TaskStore) -> None:
        self.builder = builder
        self.tasks = tasks

    async def parent_task(self, message_id: int) -> TaskRecord | None:
        """The task whose result is this message, if it is one of the bot's results."""
        return await self.tasks.by_result_message(message_id)

    async def already_taken(self, source_message_id: int) -> bool:
        """Whether this member message already started a task (a duplicate event, a restart)."""
        return await self.tasks.exists_for_source_message(source_message_id)

    def build(
        self,
        origin: Origin,
        *,
        prompt: str,
        bot_id: int,
        target: EditTarget,
        added: list[ReferenceImage],
        parent: TaskRecord | None,
    ) -> NewTask:
        """The edit task, or InvalidRequest with the reason (nothing is recorded or spent)."""
        if not target.visible:
            raise InvalidRequest(HIDDEN_IMAGES)
        images = target.images
        if not images:
            raise InvalidRequest(NO_IMAGE)
        if parent is not None:
            size, quality = parent.size, parent.quality
        else:
            size, quality = shape_of(images[0]), DEFAULT_QUALITY
        return self.builder.build(
            origin,
            prompt=strip_mention(prompt, bot_id),
            size=size,
            quality=quality,
            references=[image.reference for image in images] + added,
            parent=Parent(
                message_id=target.message_id, task_id=parent.id if parent is not None else None
            ),
        )
