"""Checks on what a member sends, before anything can cost money."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from bot.errors import InvalidRequest
from bot.pricing import QUALITIES, SIZES

MAX_PROMPT = 2000
MAX_REFERENCES = 16
MAX_REFERENCE_BYTES = 50 * 1024 * 1024
IMAGE_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WebP"}
_EXTENSIONS = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
}
_ALLOWED_CONTROLS = {"\n", "\t"}


@dataclass(frozen=True, slots=True)
class ReferenceImage:
    """An image a member gave as a reference: where EvoLink can fetch it, and what it is."""

    url: str
    filename: str
    content_type: str | None
    size: int


def clean_prompt(text: str | None) -> str:
    """The prompt as it will be sent, or a clear refusal."""
    prompt = (text or "").strip()
    if not prompt:
        raise InvalidRequest("Please describe the image you want: the prompt is empty.")
    if len(prompt) > MAX_PROMPT:
        raise InvalidRequest(
            f"The prompt is {len(prompt)} characters long; the most is {MAX_PROMPT}."
        )
    if any(unicodedata.category(ch) == "Cc" and ch not in _ALLOWED_CONTROLS for ch in prompt):
        raise InvalidRequest("The prompt contains control characters; please retype it.")
    return prompt


def mention_of(user_id: int) -> re.Pattern[str]:
    """A mention of that user in message text: `<@id>` or `<@!id>`."""
    return re.compile(rf"<@!?{user_id}>")


def strip_mention(text: str, user_id: int) -> str:
    """Remove mentions of the bot from a reply's text."""
    return mention_of(user_id).sub(" ", text)


def check_choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise InvalidRequest(f"Unknown {what} `{value}`; choose one of {', '.join(allowed)}.")
    return value


def check_size(size: str) -> str:
    return check_choice(size, SIZES, "size")


def check_quality(quality: str) -> str:
    return check_choice(quality, QUALITIES, "quality")


def image_type(reference: ReferenceImage) -> str | None:
    """The image's MIME type, from Discord's content type or else the file name."""
    content_type = (reference.content_type or "").split(";")[0].strip().lower()
    if content_type:
        return content_type if content_type in IMAGE_TYPES else None
    return _EXTENSIONS.get(PurePosixPath(reference.filename.lower()).suffix)


def check_references(references: list[ReferenceImage]) -> tuple[str, ...]:
    """The URLs to send as `image_urls`, in order, or a clear refusal."""
    if len(references) > MAX_REFERENCES:
        raise InvalidRequest(
            f"That is {len(references)} images; at most {MAX_REFERENCES} can be used at once."
        )
    for reference in references:
        name = reference.filename
        if image_type(reference) is None:
            raise InvalidRequest(f"`{name}` is not an image I can use: send PNG, JPEG or WebP.")
        if reference.size <= 0:
            raise InvalidRequest(f"`{name}` is empty.")
        if reference.size > MAX_REFERENCE_BYTES:
            raise InvalidRequest(f"`{name}` is larger than 50 MB, the most EvoLink accepts.")
        if urlsplit(reference.url).scheme not in ("http", "https"):
            raise InvalidRequest(f"`{name}` has no usable link.")
    return tuple(reference.url for reference in references)
