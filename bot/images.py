"""Finished images: kept byte for byte when they fit the upload limit, re-encoded when not."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass

from PIL import Image

_EXTENSION = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


@dataclass(frozen=True, slots=True)
class PreparedImage:
    data: bytes
    filename: str
    reencoded: bool


def _shrink(data: bytes, limit: int) -> bytes:
    """High-quality WebP under `limit` bytes, lowering quality first, then the size."""
    with Image.open(io.BytesIO(data)) as original:
        image = original.convert("RGBA" if original.mode in ("RGBA", "LA", "P") else "RGB")
    scale = 1.0
    while True:
        frame = image
        if scale < 1.0:
            size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
            frame = image.resize(size, Image.Resampling.LANCZOS)
        for quality in (92, 85, 75):
            out = io.BytesIO()
            frame.save(out, "WEBP", quality=quality, method=4)
            if out.tell() <= limit:
                return out.getvalue()
        scale *= 0.75
        if scale < 0.05:
            raise ValueError("the image cannot be made small enough")


async def fit_to_limit(data: bytes, content_type: str, limit: int, stem: str) -> PreparedImage:
    """The image to upload: unchanged if it fits, else re-encoded (off the event loop)."""
    if len(data) <= limit:
        return PreparedImage(data, f"{stem}.{_EXTENSION.get(content_type, 'png')}", False)
    smaller = await asyncio.to_thread(_shrink, data, limit)
    return PreparedImage(smaller, f"{stem}.webp", True)
