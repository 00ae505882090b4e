"""The EvoLink client: create an image task, follow it, and fetch its result.

EvoLink has no idempotency key, so a create is retried only when it certainly created nothing
(429, 503, or a connection that was never made). A create whose outcome is unknown raises
`EvoLinkUnknownOutcome` instead of risking a second paid task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Literal, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp
from pydantic import BaseModel, ConfigDict, ValidationError

log = logging.getLogger(__name__)

Status = Literal["pending", "processing", "completed", "failed"]

_T = TypeVar("_T")

IMAGE_CONTENT_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})
_GET_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_CREATE_RETRY_STATUSES = frozenset({429, 503})  # EvoLink certainly created nothing
_EXPIRED_LINK_STATUSES = frozenset({403, 404, 410})
_RETRY_AFTER_TEXT = re.compile(r"retry after (\d+(?:\.\d+)?)\s*(minute|min)?", re.IGNORECASE)
_CHUNK_SIZE = 64 * 1024


# ---------------------------------------------------------------- what the bot asks and gets


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """One image the bot asks EvoLink for."""

    model: str
    prompt: str
    size: str
    quality: str
    image_urls: tuple[str, ...] = ()
    callback_url: str | None = None

    def to_json(self) -> dict[str, object]:
        """The request body. `n` is left out: its default, 1, is the only value we use."""
        body: dict[str, object] = {
            "model": self.model,
            "prompt": self.prompt,
            "size": self.size,
            "quality": self.quality,
        }
        if self.image_urls:
            body["image_urls"] = list(self.image_urls)
        if self.callback_url is not None:
            body["callback_url"] = self.callback_url
        return body


@dataclass(frozen=True, slots=True)
class TaskSnapshot:
    """One view of a task, from the create response or from a task-detail response."""

    id: str
    status: Status
    progress: int
    estimated_time: float | None
    results: tuple[str, ...]
    credits_reserved: Decimal | None
    error_code: str | None
    error_message: str | None

    @property
    def is_final(self) -> bool:
        return self.status in ("completed", "failed")


@dataclass(frozen=True, slots=True)
class DownloadedImage:
    data: bytes = field(repr=False)
    content_type: str  # taken from the image's own magic bytes


# ---------------------------------------------------------------- wire formats


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _TaskInfo(_Wire):
    estimated_time: float | None = None


class _Usage(_Wire):
    credits_reserved: Decimal | None = None


class _TaskError(_Wire):
    code: str | int | None = None
    message: str | None = None


class _TaskBody(_Wire):
    """Only `id` and `status` are required; the rest is read leniently (null, 42.5)."""

    id: str
    status: Status
    progress: float | None = None
    task_info: _TaskInfo | None = None
    usage: _Usage | None = None


class _CreateResponse(_TaskBody):
    """POST /v1/images/generations -> 200."""


class _TaskDetailResponse(_TaskBody):
    """GET /v1/tasks/{id} -> 200."""

    results: list[str] | None = None
    error: _TaskError | None = None


class _ErrorDetail(_Wire):
    code: int | str | None = None
    message: str | None = None
    type: str | None = None
    param: str | None = None
    fallback_suggestion: str | None = None


class _ErrorBody(_Wire):
    error: _ErrorDetail


def _snapshot(body: _TaskBody) -> TaskSnapshot:
    results: tuple[str, ...] = ()
    error: _TaskError | None = None
    if isinstance(body, _TaskDetailResponse):
        results, error = tuple(body.results or ()), body.error
    return TaskSnapshot(
        id=body.id,
        status=body.status,
        progress=min(100, max(0, round(body.progress or 0))),
        estimated_time=body.task_info.estimated_time if body.task_info else None,
        results=results,
        credits_reserved=body.usage.credits_reserved if body.usage else None,
        error_code=None if error is None or error.code is None else str(error.code),
        error_message=error.message if error else None,
    )


# ---------------------------------------------------------------- errors


class EvoLinkError(Exception):
    """Something went wrong talking to EvoLink. `str()` is short and never holds the API key."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        fallback_suggestion: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        summary = message if status is None else f"{message} (HTTP {status})"
        super().__init__(summary)
        self.message = message
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.fallback_suggestion = fallback_suggestion
        self.retry_after = retry_after  # seconds EvoLink asked us to wait, if it said

    @classmethod
    def from_response(
        cls, status: int, body: bytes | str | None, headers: Mapping[str, str] | None = None
    ) -> EvoLinkError:
        """The exception for an HTTP error answer; any body, even HTML or empty, is accepted."""
        detail = _ErrorDetail()
        if body:
            with contextlib.suppress(ValidationError):  # HTML, text or an odd shape
                detail = _ErrorBody.model_validate_json(body).error
        error_class = _error_class_for(status)
        return error_class(
            detail.message or _status_phrase(status),
            status=status,
            type=detail.type,
            code=None if detail.code is None else str(detail.code),
            param=detail.param,
            fallback_suggestion=detail.fallback_suggestion,
            retry_after=suggested_wait(headers, detail.fallback_suggestion),
        )


class EvoLinkBadRequest(EvoLinkError):
    """400, 404, 413 and other 4xx: the request itself is wrong; retrying will not help."""


class EvoLinkAuthError(EvoLinkError):
    """401 or 403: the API key is wrong, expired, or not allowed this model."""


class EvoLinkQuotaError(EvoLinkError):
    """402: the EvoLink account is out of credits."""


class EvoLinkRateLimited(EvoLinkError):
    """429: too many requests."""


class EvoLinkServerError(EvoLinkError):
    """5xx: EvoLink or its upstream failed."""


class EvoLinkConnectionError(EvoLinkError):
    """EvoLink could not be reached, or did not answer in time."""


class EvoLinkUnknownOutcome(EvoLinkError):
    """A create may or may not have made a (paid) task: the body may have reached EvoLink."""


class EvoLinkProtocolError(EvoLinkError):
    """EvoLink answered 200 with something that is not the documented response."""


class ResultDownloadError(EvoLinkError):
    """The result image could not be fetched, or what came back is not an acceptable image.

    `type` says why: bad_scheme, http_error, bad_content_type, too_large, not_an_image,
    connection_error.
    """


def _error_class_for(status: int) -> type[EvoLinkError]:
    if status in (401, 403):
        return EvoLinkAuthError
    if status == 402:
        return EvoLinkQuotaError
    if status == 429:
        return EvoLinkRateLimited
    if 400 <= status < 500:
        return EvoLinkBadRequest
    if 500 <= status < 600:
        return EvoLinkServerError
    return EvoLinkProtocolError


def _status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unexpected answer"


def suggested_wait(
    headers: Mapping[str, str] | None, fallback_suggestion: str | None
) -> float | None:
    """Seconds to wait from a Retry-After header, or from "retry after N seconds" in the body."""
    retry_after = headers.get("Retry-After") if headers else None
    if retry_after:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(retry_after)
        except (TypeError, ValueError):
            when = None
        if when is not None and when.tzinfo is not None:
            return max(0.0, (when - datetime.now(UTC)).total_seconds())
    if fallback_suggestion:
        match = _RETRY_AFTER_TEXT.search(fallback_suggestion)
        if match:
            seconds = float(match.group(1))
            return seconds * 60 if match.group(2) else seconds
    return None


# ---------------------------------------------------------------- retries


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry. `attempts` counts the first try."""

    attempts: int = 4
    base_delay: float = 1.0
    max_delay: float = 60.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def delay(self, attempt: int, suggested: float | None) -> float:
        """The wait after failed attempt number `attempt` (1-based): exponential backoff with
        jitter, at least the wait the server suggested, never more than `max_delay`."""
        backoff = min(self.max_delay, self.base_delay * 2 ** min(max(0, attempt - 1), 32))
        jittered = random.uniform(backoff / 2, backoff)
        return min(self.max_delay, max(jittered, suggested or 0.0))


DEFAULT_RETRY = RetryPolicy()


def _retry_get(error: EvoLinkError) -> bool:
    return isinstance(error, EvoLinkConnectionError) or error.status in _GET_RETRY_STATUSES


def _retry_create(error: EvoLinkError) -> bool:
    # EvoLinkConnectionError is only raised on create when nothing was sent.
    return isinstance(error, EvoLinkConnectionError) or error.status in _CREATE_RETRY_STATUSES


def _retry_download(error: EvoLinkError) -> bool:
    return error.type == "connection_error" or error.status in _GET_RETRY_STATUSES


def _describe(exc: BaseException) -> str:
    """A short description of a network failure: no URL (a result URL is a capability)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return type(exc).__name__


def _sniff_image_type(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


# ---------------------------------------------------------------- the client


class EvoLinkClient:
    """Talks to EvoLink over the bot's one `aiohttp.ClientSession`."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        api_key: str,
        retry: RetryPolicy = DEFAULT_RETRY,
        request_timeout: float = 30.0,
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._retry = retry
        # A shorter connect timeout (pool wait + connecting) makes a connect-phase timeout
        # recognisable as ConnectionTimeoutError: nothing was sent, so a create may be retried.
        self._timeout = aiohttp.ClientTimeout(
            total=request_timeout, connect=min(request_timeout / 2, 10.0)
        )

    def __repr__(self) -> str:
        return f"EvoLinkClient(base_url={self._base_url!r})"

    async def create_task(self, request: ImageRequest) -> TaskSnapshot:
        """POST /v1/images/generations. Raises `EvoLinkUnknownOutcome` when EvoLink may have
        created the task but we do not know; that is never retried."""
        url = f"{self._base_url}/v1/images/generations"
        body = request.to_json()

        async def attempt() -> TaskSnapshot:
            try:
                async with self._session.post(
                    url, json=body, headers=self._auth_headers(), timeout=self._timeout
                ) as resp:
                    status, raw, headers = resp.status, await resp.read(), resp.headers
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                raise EvoLinkConnectionError(
                    f"could not connect to EvoLink: {_describe(exc)}", type="connection_error"
                ) from exc
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise EvoLinkUnknownOutcome(
                    f"EvoLink did not answer the create request ({_describe(exc)}); "
                    "the task may or may not exist",
                    type="unknown_outcome",
                ) from exc
            log.debug("POST /v1/images/generations -> %s", status)
            if status != 200:
                raise self._http_error(status, raw, headers)
            return self._parse(raw, _CreateResponse)

        return await self._with_retries("create task", attempt, _retry_create)

    async def get_task(self, task_id: str) -> TaskSnapshot:
        """GET /v1/tasks/{task_id}, retrying rate limits, server errors and network failures."""
        path = f"/v1/tasks/{quote(task_id, safe='')}"
        url = self._base_url + path

        async def attempt() -> TaskSnapshot:
            try:
                async with self._session.get(
                    url, headers=self._auth_headers(), timeout=self._timeout
                ) as resp:
                    status, raw, headers = resp.status, await resp.read(), resp.headers
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise EvoLinkConnectionError(
                    f"could not reach EvoLink: {_describe(exc)}", type="connection_error"
                ) from exc
            log.debug("GET %s -> %s", path, status)
            if status != 200:
                raise self._http_error(status, raw, headers)
            return self._parse(raw, _TaskDetailResponse)

        return await self._with_retries("get task", attempt, _retry_get)

    async def download_result(self, url: str, *, max_bytes: int) -> DownloadedImage:
        """Fetch a result image (no Authorization header), refusing anything that is not an
        http(s) URL, not a PNG/JPEG/WebP, or larger than `max_bytes`."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ResultDownloadError("the result is not at an http(s) URL", type="bad_scheme")
        host = parts.hostname

        async def attempt() -> DownloadedImage:
            try:
                async with self._session.get(url, timeout=self._timeout) as resp:
                    log.debug("GET result from %s -> %s", host, resp.status)
                    return await _read_image(resp, max_bytes)
            except (aiohttp.InvalidURL, aiohttp.ClientResponseError) as exc:
                raise ResultDownloadError(
                    f"the result link could not be followed ({_describe(exc)})", type="http_error"
                ) from exc
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise ResultDownloadError(
                    f"could not download the result: {_describe(exc)}", type="connection_error"
                ) from exc

        return await self._with_retries("download result", attempt, _retry_download)

    # ------------------------------------------------------------ helpers

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}

    def _http_error(self, status: int, raw: bytes, headers: Mapping[str, str]) -> EvoLinkError:
        if self._api_key:  # never let an echoed key reach a message or a log
            raw = raw.replace(self._api_key.encode(), b"[redacted]")
        log.debug("EvoLink error body (HTTP %s): %.500r", status, raw)
        return EvoLinkError.from_response(status, raw, headers)

    @staticmethod
    def _parse(raw: bytes, model: type[_CreateResponse | _TaskDetailResponse]) -> TaskSnapshot:
        try:
            body = model.model_validate_json(raw)
        except ValidationError as exc:
            raise EvoLinkProtocolError(
                "EvoLink sent a malformed task response", type="protocol_error"
            ) from exc
        return _snapshot(body)

    async def _with_retries(
        self,
        what: str,
        attempt: Callable[[], Awaitable[_T]],
        should_retry: Callable[[EvoLinkError], bool],
    ) -> _T:
        for number in range(1, self._retry.attempts):
            try:
                return await attempt()
            except EvoLinkError as error:
                if not should_retry(error):
                    raise
                wait = self._retry.delay(number, error.retry_after)
                log.warning(
                    "%s failed (%s); retry %d of %d in %.1f s",
                    what,
                    error,
                    number,
                    self._retry.attempts - 1,
                    wait,
                )
            await self._retry.sleep(wait)
        return await attempt()  # the last attempt: its error is the caller's


async def _read_image(resp: aiohttp.ClientResponse, max_bytes: int) -> DownloadedImage:
    if resp.status != 200:
        hint = " (the link has probably expired)" if resp.status in _EXPIRED_LINK_STATUSES else ""
        raise ResultDownloadError(
            f"the result host refused the download{hint}", status=resp.status, type="http_error"
        )
    if resp.content_type not in IMAGE_CONTENT_TYPES:
        raise ResultDownloadError(
            f"the result is not a PNG, JPEG or WebP image ({resp.content_type})",
            type="bad_content_type",
        )
    too_large = ResultDownloadError(
        f"the result is larger than {max_bytes} bytes", type="too_large"
    )
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise too_large
    data = bytearray()
    async for chunk in resp.content.iter_chunked(_CHUNK_SIZE):
        data += chunk
        if len(data) > max_bytes:
            raise too_large
    image_type = _sniff_image_type(bytes(data[:16]))
    if image_type is None:
        raise ResultDownloadError("the result is not a valid image", type="not_an_image")
    return DownloadedImage(bytes(data), image_type)
