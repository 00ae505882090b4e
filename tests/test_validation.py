"""What a member sends, checked before anything can cost money."""

from __future__ import annotations

import pytest

from bot.errors import InvalidRequest
from bot.validation import (
    ReferenceImage,
    check_quality,
    check_references,
    check_size,
    clean_prompt,
    image_type,
    strip_mention,
)


def ref(
    name: str = "a.png", content_type: str | None = "image/png", size: int = 10
) -> ReferenceImage:
    return ReferenceImage(f"https://cdn.example/{name}", name, content_type, size)


def test_prompt_is_trimmed_and_kept_otherwise_intact() -> None:
    assert (
        clean_prompt("  a 'fox'; DROP TABLE x; **bold**\n  ") == "a 'fox'; DROP TABLE x; **bold**"
    )
    assert clean_prompt("line one\n\tline two") == "line one\n\tline two"
    assert clean_prompt("x" * 2000) == "x" * 2000


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        (None, "empty"),
        ("", "empty"),
        (" \n ", "empty"),
        ("x" * 2001, "2001"),
        ("a\x1bb", "control"),
    ],
)
def test_bad_prompts(prompt: str | None, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        clean_prompt(prompt)


def test_bot_mentions_are_removed_from_replies() -> None:
    assert strip_mention("<@42> make it blue <@!42>", 42).split() == ["make", "it", "blue"]
    assert strip_mention("<@43> stays", 42) == "<@43> stays"


def test_image_type_falls_back_to_the_file_name() -> None:
    assert image_type(ref("photo.JPG", None)) == "image/jpeg"
    assert image_type(ref("photo.webp", "")) == "image/webp"
    assert image_type(ref("photo.png", "image/png; charset=binary")) == "image/png"
    assert image_type(ref("photo.gif", None)) is None
    assert image_type(ref("photo.png", "image/gif")) is None


def test_references_keep_their_order_and_limits() -> None:
    refs = [ref(f"{i}.png") for i in range(16)]
    assert check_references(refs) == tuple(r.url for r in refs)
    with pytest.raises(InvalidRequest, match="17 images"):
        check_references([*refs, ref("17.png")])
    with pytest.raises(InvalidRequest, match="larger than 50 MB"):
        check_references([ref(size=50 * 1024 * 1024 + 1)])
    with pytest.raises(InvalidRequest, match="is empty"):
        check_references([ref(size=0)])
    with pytest.raises(InvalidRequest, match="no usable link"):
        check_references([ReferenceImage("file:///etc/passwd", "x.png", "image/png", 5)])


def test_size_and_quality_choices() -> None:
    assert check_size("3:2") == "3:2" and check_quality("high") == "high"
    with pytest.raises(InvalidRequest, match="Unknown size"):
        check_size("4096x4096")
    with pytest.raises(InvalidRequest, match="Unknown quality"):
        check_quality("ultra")
