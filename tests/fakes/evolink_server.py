"""A fake EvoLink that speaks the documented protocol, on 127.0.0.1, for tests and benchmarks.

Task state is computed from the clock on demand (no per-task timers), so a thousand tasks
polled at once cost little. Request bodies and every JSON answer are checked against the
OpenAPI specs in /work/shared/specs; anything off is collected in `spec_errors`.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import io
import json
import math
import os
import random
import string
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from http import HTTPStatus
from pathlib import Path
from typing import Any, Literal

import aiohttp
import yaml
from aiohttp import web
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from PIL import Image

CREATE_PATH = "/v1/images/generations"
TASKS_PREFIX = "/v1/tasks/"
RESULTS_PREFIX = "/results/"
MODELS = ("gpt-image-1.5", "gpt-image-1.5-lite", "gpt-image-1.5-beta")

# Credits per image, gpt-image-1.5 (seed 000); `auto` is charged like `high` here.
GPT_IMAGE_15_PRICES = {
    "low": {"square": Decimal("0.509"), "tall_or_wide": Decimal("0.749")},
    "medium": {"square": Decimal("1.958"), "tall_or_wide": Decimal("2.879")},
    "high": {"square": Decimal("7.657"), "tall_or_wide": Decimal("11.256")},
}
# Flat prices of the other routes: lite's documented example (seed 002), beta's price (seed 003).
FLAT_PRICES = {"gpt-image-1.5-lite": Decimal("2.5"), "gpt-image-1.5-beta": Decimal("0.9")}

# The documented example bodies (image-generation spec), by status.
DOCUMENTED_ERRORS: dict[int, dict[str, str]] = {
    400: {"type": "invalid_request_error", "message": "Invalid request parameters"},
    401: {"type": "authentication_error", "message": "Invalid or expired token"},
    402: {
        "type": "insufficient_quota_error",
        "message": "Insufficient quota",
        "fallback_suggestion": "https://evolink.ai/dashboard/billing",
    },
    403: {"type": "permission_error", "message": "Access denied for this model", "param": "model"},
    404: {
        "type": "not_found_error",
        "message": "Specified model not found",
        "param": "model",
        "fallback_suggestion": "gpt-image-1.5",
    },
    413: {
        "type": "request_too_large_error",
        "message": "Image file too large",
        "param": "image_urls",
        "fallback_suggestion": "compress image to under 4MB",
    },
    429: {
        "type": "rate_limit_error",
        "message": "Rate limit exceeded",
        "fallback_suggestion": "retry after 60 seconds",
    },
    500: {
        "type": "internal_server_error",
        "message": "Internal server error",
        "fallback_suggestion": "try again later",
    },
    502: {
        "type": "upstream_error",
        "message": "Upstream AI service unavailable",
        "fallback_suggestion": "try different model",
    },
    503: {
        "type": "service_unavailable_error",
        "message": "Service temporarily unavailable",
        "fallback_suggestion": "retry after 30 seconds",
    },
}

CALLBACK_TIMEOUT = 10.0
CALLBACK_RETRIES = 3


# ---------------------------------------------------------------- specs


def specs_dir() -> Path:
    """/work/shared/specs beside the repository, else $EVOLINK_SPECS_DIR."""
    beside_repo = Path(__file__).resolve().parents[3] / "shared" / "specs"
    if beside_repo.is_dir():
        return beside_repo
    configured = os.environ.get("EVOLINK_SPECS_DIR")
    if configured:
        return Path(configured)
    raise FileNotFoundError(
        f"EvoLink specs not found at {beside_repo}; set EVOLINK_SPECS_DIR or pass validate=False"
    )


@dataclass(frozen=True)
class _Validators:
    request: Draft202012Validator
    create_response: Draft202012Validator
    task_detail: Draft202012Validator
    error: Draft202012Validator


@functools.cache
def _load_validators(directory: Path) -> _Validators:
    generation = yaml.safe_load((directory / "evolink-image-generation.openapi.yaml").read_text())
    detail = yaml.safe_load((directory / "evolink-task-detail.openapi.yaml").read_text())

    request_components = copy.deepcopy(generation["components"])
    request = request_components["schemas"]["ImageGenerationRequest"]
    request["properties"]["model"]["enum"] = list(MODELS)
    request["properties"]["image_urls"].update(minItems=1, maxItems=16)
    # Seed 003 documents callback_url (HTTPS only there; the fake accepts local http receivers).
    request["properties"]["callback_url"] = {"type": "string", "minLength": 1, "maxLength": 2048}
    request["additionalProperties"] = False  # catches a misspelt field in the bot's body

    def validator(components: dict[str, Any], name: str) -> Draft202012Validator:
        schema = {"$ref": f"#/components/schemas/{name}", "components": components}
        return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)

    return _Validators(
        request=validator(request_components, "ImageGenerationRequest"),
        create_response=validator(generation["components"], "ImageGenerationResponse"),
        task_detail=validator(detail["components"], "TaskDetailResponse"),
        error=validator(generation["components"], "ErrorResponse"),
    )


@functools.cache
def default_png() -> bytes:
    """A real, decodable 1024x1024 PNG (a few kilobytes: one flat colour)."""
    buffer = io.BytesIO()
    Image.new("RGB", (1024, 1024), (70, 130, 180)).save(buffer, "PNG")
    return buffer.getvalue()


def documented_price(request: dict[str, Any]) -> Decimal:
    model = request.get("model")
    if model in FLAT_PRICES:
        return FLAT_PRICES[model]
    quality = request.get("quality", "auto")
    shape = "square" if request.get("size", "1:1") in ("1:1", "1024x1024") else "tall_or_wide"
    return GPT_IMAGE_15_PRICES.get(quality, GPT_IMAGE_15_PRICES["high"])[shape]


# ---------------------------------------------------------------- what the fake records


@dataclass
class TaskPlan:
    """How a created task will behave."""

    duration: float = 0.3  # seconds from creation to the end
    pending_for: float = 0.05  # seconds in "pending" before "processing"
    estimated_time: int | None = None  # reported task_info.estimated_time (None: round(duration))
    outcome: Literal["completed", "failed"] = "completed"
    error_code: str = "generation_timeout"
    error_message: str = "Image generation timed out"
    credits_reserved: Decimal | float | None = None  # None: the documented price
    result: bytes | None = None  # None: default_png()
    result_content_type: str = "image/png"
    result_status: int = 200  # e.g. 404 for an expired link
    progress_stall: bool = False  # progress stops at about half and the task never ends


@dataclass
class CallbackAttempt:
    time: float
    status: int | None  # None: no HTTP answer
    error: str | None = None


@dataclass
class FakeTask:
    id: str
    request: dict[str, Any]
    plan: TaskPlan
    created_at: float  # clock time
    completes_at: float  # clock time it ended / will end (inf while stalled)
    created: int  # unix timestamp, as reported
    estimated_time: int
    credits_reserved: Decimal
    polls: int = 0
    downloads: int = 0
    callback_posts: list[CallbackAttempt] = field(default_factory=list)


@dataclass
class RecordedRequest:
    method: str
    path: str
    json: Any  # the parsed body, None without one
    headers: dict[str, str]  # without Authorization
    has_auth: bool  # whether an Authorization header came
    time: float  # clock time of arrival
    status: int | None = None  # None: dropped or never answered


@dataclass
class _Fault:
    method: str
    path_prefix: str
    kind: Literal["fail", "hang", "drop"]
    times: int = 1
    status: int = 500
    body: bytes = b""
    content_type: str = "application/json"
    retry_after: float | None = None
    seconds: float = 0.0
    after_body: bool = True
    create: bool = False


_RECORD = web.RequestKey("record", RecordedRequest)


class _Dropped(Exception):
    """The fake closed the connection without answering."""


# ---------------------------------------------------------------- the fake


class FakeEvoLink:
    def __init__(
        self,
        *,
        api_key: str = "test-evolink-key",
        plan: Callable[[dict[str, Any]], TaskPlan] | None = None,
        validate: bool = True,
        clock: Callable[[], float] | None = None,
        callback_retry_delay: float = 0.1,
    ) -> None:
        self.api_key = api_key
        self.validate = validate
        self.plan = plan or (lambda _request: TaskPlan())
        self._clock = clock
        self.callback_retry_delay = callback_retry_delay
        self._validators = _load_validators(specs_dir()) if validate else None
        self.base_url = ""
        self.tasks: dict[str, FakeTask] = {}
        self.requests: list[RecordedRequest] = []
        self.spec_errors: list[str] = []
        self._faults: list[_Fault] = []
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self._closing = asyncio.Event()
        self._callback_due: set[str] = set()  # tasks whose callback has not started yet
        self._callback_timers: dict[str, asyncio.TimerHandle] = {}
        self._callback_jobs: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024**2)
        app.router.add_post(CREATE_PATH, self._create)
        app.router.add_get(TASKS_PREFIX + "{task_id}", self._task_detail)
        app.router.add_get(RESULTS_PREFIX + "{name}", self._result)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=2048)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        self._client = aiohttp.ClientSession()

    async def close(self) -> None:
        self._closing.set()
        for timer in self._callback_timers.values():
            timer.cancel()
        self._callback_timers.clear()
        for job in self._callback_jobs:
            job.cancel()
        await asyncio.gather(*self._callback_jobs, return_exceptions=True)
        if self._client is not None:
            await self._client.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeEvoLink:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def clock(self) -> float:
        """The fake's notion of now: the injected clock, else the event loop's time."""
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    # ------------------------------------------------------------ test helpers

    @property
    def creates(self) -> int:
        """How many POSTs created a task."""
        return len(self.tasks)

    def polls(self, task_id: str) -> int:
        return self.tasks[task_id].polls

    def fail_next(
        self,
        method: str,
        path_prefix: str,
        *,
        status: int,
        times: int = 1,
        error_type: str | None = None,
        message: str | None = None,
        fallback_suggestion: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        raw_body: bytes | None = None,
        content_type: str = "application/json",
    ) -> None:
        """Answer the next `times` matching requests with `status` and the documented error
        body (fields overridable), or with `raw_body` as given."""
        if raw_body is None:
            error: dict[str, Any] = {"code": status, **DOCUMENTED_ERRORS.get(status, {})}
            error.setdefault("type", "error")
            error.setdefault("message", _phrase(status))
            overrides = {
                "type": error_type,
                "message": message,
                "fallback_suggestion": fallback_suggestion,
                "param": param,
            }
            error.update({key: value for key, value in overrides.items() if value is not None})
            self._check(self._validators and self._validators.error, {"error": error}, "fault")
            raw_body = json.dumps({"error": error}).encode()
        self._faults.append(
            _Fault(
                method.upper(),
                path_prefix,
                "fail",
                times=times,
                status=status,
                body=raw_body,
                content_type=content_type,
                retry_after=retry_after,
            )
        )

    def hang_next(
        self,
        method: str,
        path_prefix: str,
        *,
        seconds: float = 30.0,
        after_body: bool = True,
        create: bool = True,
    ) -> None:
        """Read the body (unless after_body=False), really create the task if this is a create
        and `create`, then sleep: "the body was sent, then the answer timed out". After the
        sleep a create answers normally (create=True) or is dropped; a GET answers normally."""
        self._faults.append(
            _Fault(
                method.upper(),
                path_prefix,
                "hang",
                seconds=seconds,
                after_body=after_body,
                create=create,
            )
        )

    def drop_next(self, method: str, path_prefix: str, *, create: bool = False) -> None:
        """Read the body (and create the task if `create`), then close without answering."""
        self._faults.append(_Fault(method.upper(), path_prefix, "drop", create=create))

    def complete_now(self, task_id: str) -> None:
        """End a task now (with its planned outcome), even a stalled one."""
        task = self.tasks[task_id]
        task.completes_at = min(task.completes_at, self.clock())
        timer = self._callback_timers.pop(task_id, None)
        if timer is not None:
            timer.cancel()
        self._start_callback(task_id)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until `predicate()` is true; TimeoutError after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() > deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            await asyncio.sleep(0.01)

    # ------------------------------------------------------------ task state

    def state_of(self, task: FakeTask, now: float) -> tuple[str, int]:
        """(status, progress) of a task at clock time `now`."""
        if now >= task.completes_at:
            return task.plan.outcome, 100
        elapsed = now - task.created_at
        if elapsed < task.plan.pending_for:
            return "pending", 0
        span = max(task.plan.duration - task.plan.pending_for, 1e-9)
        fraction = (elapsed - task.plan.pending_for) / span
        if task.plan.progress_stall:
            fraction = min(fraction, 0.5)
        return "processing", max(1, min(99, int(99 * fraction)))

    def task_detail(self, task: FakeTask, now: float) -> dict[str, Any]:
        status, progress = self.state_of(task, now)
        body: dict[str, Any] = {
            "created": task.created,
            "id": task.id,
            "model": task.request["model"],
            "object": "image.generation.task",
            "progress": progress,
            "status": status,
            "task_info": {"can_cancel": status == "pending"},
            "type": "image",
        }
        if status == "completed":
            body["results"] = [f"{self.base_url}{RESULTS_PREFIX}{task.id}.png"]
        elif status == "failed":
            body["error"] = {"code": task.plan.error_code, "message": task.plan.error_message}
        return body

    def _new_task(self, request: dict[str, Any]) -> FakeTask:
        plan = self.plan(request)
        now = self.clock()
        created = int(time.time())
        task_id = ""
        while not task_id or task_id in self.tasks:
            suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=8))
            task_id = f"task-unified-{created}-{suffix}"
        credits = plan.credits_reserved
        task = FakeTask(
            id=task_id,
            request=request,
            plan=plan,
            created_at=now,
            completes_at=math.inf if plan.progress_stall else now + plan.duration,
            created=created,
            estimated_time=(
                plan.estimated_time
                if plan.estimated_time is not None
                else round(plan.duration) or 1
            ),
            credits_reserved=(
                documented_price(request) if credits is None else Decimal(str(credits))
            ),
        )
        self.tasks[task_id] = task
        if request.get("callback_url"):
            self._callback_due.add(task_id)
            if not math.isinf(task.completes_at):
                loop = asyncio.get_running_loop()
                delay = max(0.0, task.completes_at - now)
                self._callback_timers[task_id] = loop.call_later(
                    delay, self._start_callback, task_id
                )
        return task

    # ------------------------------------------------------------ callbacks

    def _start_callback(self, task_id: str) -> None:
        self._callback_timers.pop(task_id, None)
        if task_id not in self._callback_due or self._closing.is_set():
            return
        self._callback_due.discard(task_id)
        job = asyncio.get_running_loop().create_task(self._deliver_callback(self.tasks[task_id]))
        self._callback_jobs.add(job)
        job.add_done_callback(self._callback_jobs.discard)

    async def _deliver_callback(self, task: FakeTask) -> None:
        assert self._client is not None
        # As at the end, even if an injected clock has not moved there.
        body = self.task_detail(task, max(self.clock(), task.completes_at))
        self._check(self._validators and self._validators.task_detail, body, "callback")
        timeout = aiohttp.ClientTimeout(total=CALLBACK_TIMEOUT)
        for attempt in range(1 + CALLBACK_RETRIES):
            if attempt:
                await asyncio.sleep(self.callback_retry_delay)
            try:
                async with self._client.post(
                    task.request["callback_url"], json=body, timeout=timeout
                ) as resp:
                    await resp.read()
                    task.callback_posts.append(CallbackAttempt(self.clock(), resp.status))
                    if 200 <= resp.status < 300:
                        return
            except (TimeoutError, aiohttp.ClientError) as exc:
                task.callback_posts.append(CallbackAttempt(self.clock(), None, repr(exc)))

    # ------------------------------------------------------------ HTTP

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            json=None,
            headers={k: v for k, v in request.headers.items() if k.lower() != "authorization"},
            has_auth="Authorization" in request.headers,
            time=self.clock(),
        )
        self.requests.append(record)
        request[_RECORD] = record
        fault = self._take_fault(request.method, request.path)
        try:
            if fault is None:
                response = await self._serve(request, handler)
            else:
                response = await self._apply(fault, request, handler)
        except _Dropped:
            transport = request.transport
            if transport is not None:
                transport.close()
            raise web.HTTPInternalServerError() from None  # never reaches the closed socket
        record.status = response.status
        return response

    async def _serve(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith("/v1/"):
            if request.method == "POST":
                await self._read_json(request)
            if request.headers.get("Authorization") != f"Bearer {self.api_key}":
                return self._error(401)
        return await handler(request)

    async def _apply(
        self,
        fault: _Fault,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        is_create = request.method == "POST" and request.path == CREATE_PATH
        if fault.kind == "fail":
            await self._read_json(request)
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after else None
            return web.Response(
                status=fault.status,
                body=fault.body,
                headers=headers,
                content_type=fault.content_type,
            )
        if fault.kind == "drop":
            await self._read_json(request)
            if is_create and fault.create:
                await self._serve(request, handler)
            raise _Dropped
        # hang
        if fault.after_body:
            await self._read_json(request)
        if is_create:
            if not fault.create:
                await self._sleep(fault.seconds)
                raise _Dropped
            response = await self._serve(request, handler)
            await self._sleep(fault.seconds)
            return response
        await self._sleep(fault.seconds)
        return await self._serve(request, handler)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake (and drop the connection) as soon as the fake closes."""
        try:
            await asyncio.wait_for(self._closing.wait(), seconds)
        except TimeoutError:
            return
        raise _Dropped

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.method == method and path.startswith(fault.path_prefix):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    async def _read_json(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        request[_RECORD].json = parsed
        return parsed

    async def _create(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            self.spec_errors.append("POST request: body is not JSON")
            return self._error(400, message="Request body is not valid JSON")
        problem = self._request_problem(body)
        if problem is not None:
            message, param = problem
            return self._error(400, message=message, param=param)
        task = self._new_task(body)
        response = {
            "created": task.created,
            "id": task.id,
            "model": body["model"],
            "object": "image.generation.task",
            "progress": 0,
            "status": "pending",
            "task_info": {"can_cancel": True, "estimated_time": task.estimated_time},
            "type": "image",
            "usage": {
                "billing_rule": "per_call",
                "credits_reserved": float(task.credits_reserved),
                "user_group": "default",
            },
        }
        return self._json(200, response, self._validators and self._validators.create_response)

    async def _task_detail(self, request: web.Request) -> web.StreamResponse:
        task = self.tasks.get(request.match_info["task_id"])
        if task is None:
            return self._error(404, message="Task not found or expired", param="task_id")
        task.polls += 1
        body = self.task_detail(task, self.clock())
        return self._json(200, body, self._validators and self._validators.task_detail)

    async def _result(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        task = self.tasks.get(name.removesuffix(".png"))
        if task is None or self.state_of(task, self.clock())[0] != "completed":
            return web.Response(status=404, text="no such result")
        task.downloads += 1
        plan = task.plan
        if plan.result_status != 200:
            return web.Response(status=plan.result_status, text="result link expired")
        return web.Response(
            body=plan.result if plan.result is not None else default_png(),
            content_type=plan.result_content_type,
        )

    # ------------------------------------------------------------ validation and answers

    def _request_problem(self, body: Any) -> tuple[str, str | None] | None:
        """(message, param) when the create body is not a valid request."""
        if self._validators is None:
            if not isinstance(body, dict):
                return "Request body must be a JSON object", None
            for name in ("model", "prompt"):
                if not isinstance(body.get(name), str):
                    return f"'{name}' is a required property", name
            return None
        errors = list(self._validators.request.iter_errors(body))
        if not errors:
            return None
        for error in errors:
            self.spec_errors.append(f"POST {CREATE_PATH} request: {error.message}")
        worst = best_match(errors)
        return worst.message, _param_of(worst, body)

    def _check(self, validator: Draft202012Validator | None, body: Any, what: str) -> None:
        if validator is None:
            return
        for error in validator.iter_errors(body):
            path = "/".join(str(part) for part in error.absolute_path)
            self.spec_errors.append(f"{what} response: {error.message} at /{path}")

    def _json(
        self, status: int, body: dict[str, Any], validator: Draft202012Validator | None
    ) -> web.Response:
        self._check(validator, body, f"HTTP {status}")
        return web.json_response(body, status=status)

    def _error(
        self, status: int, *, message: str | None = None, param: str | None = None
    ) -> web.Response:
        """An error the fake itself decides on (auth, schema, unknown task), documented shape."""
        documented = DOCUMENTED_ERRORS.get(status, {})
        error: dict[str, Any] = {
            "code": status,
            "message": message or documented.get("message", _phrase(status)),
            "type": documented.get("type", "error"),
        }
        if param is not None:
            error["param"] = param
        return self._json(status, {"error": error}, self._validators and self._validators.error)


def _param_of(error: ValidationError, body: Any) -> str | None:
    """The request field a validation error is about."""
    if error.absolute_path:
        return str(error.absolute_path[0])
    if error.validator == "required" and isinstance(body, dict):
        missing = [name for name in error.validator_value if name not in body]
        return missing[0] if missing else None
    if error.validator == "additionalProperties" and isinstance(body, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(name for name in body if name not in allowed)
        return extra[0] if extra else None
    return None


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
