"""The EvoLink client against the fake EvoLink (and, for odd cases, small servers of its own)."""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from bot.evolink import (
    EvoLinkAuthError,
    EvoLinkBadRequest,
    EvoLinkClient,
    EvoLinkConnectionError,
    EvoLinkError,
    EvoLinkProtocolError,
    EvoLinkQuotaError,
    EvoLinkRateLimited,
    EvoLinkServerError,
    EvoLinkUnknownOutcome,
    ImageRequest,
    ResultDownloadError,
    RetryPolicy,
    TaskSnapshot,
    suggested_wait,
)
from tests.fakes.evolink_server import CREATE_PATH, FakeEvoLink, TaskPlan

API_KEY = "sk-evo-Zq8xT3stSECRETkey0042"
MAX_DELAY = 10.0
REQUEST = ImageRequest(model="gpt-image-1.5", prompt="a red fox", size="1:1", quality="low")


class SleepRecorder:
    """Stands in for asyncio.sleep: records each delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
async def fake() -> AsyncIterator[FakeEvoLink]:
    async with FakeEvoLink(
        api_key=API_KEY, plan=lambda _request: TaskPlan(duration=0.15, pending_for=0.03)
    ) as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def make_client(
    session: aiohttp.ClientSession, sleeps: SleepRecorder
) -> Callable[..., EvoLinkClient]:
    def make(
        base_url: str, *, attempts: int = 4, request_timeout: float = 2.0, api_key: str = API_KEY
    ) -> EvoLinkClient:
        retry = RetryPolicy(attempts=attempts, base_delay=0.5, max_delay=MAX_DELAY, sleep=sleeps)
        return EvoLinkClient(
            session,
            base_url=base_url,
            api_key=api_key,
            retry=retry,
            request_timeout=request_timeout,
        )

    return make


@pytest.fixture
def client(fake: FakeEvoLink, make_client: Callable[..., EvoLinkClient]) -> EvoLinkClient:
    return make_client(fake.base_url)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    """Start a small aiohttp app of the test's own; returns its base URL."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


def posts(fake: FakeEvoLink) -> int:
    return sum(1 for r in fake.requests if r.method == "POST" and r.path == CREATE_PATH)


def gets(fake: FakeEvoLink, prefix: str = "/v1/tasks/") -> int:
    return sum(1 for r in fake.requests if r.method == "GET" and r.path.startswith(prefix))


def free_port() -> int:
    """A local port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def encoded(image_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, image_format)
    return buffer.getvalue()


async def call_api(client: EvoLinkClient, method: str) -> TaskSnapshot:
    if method == "POST":
        return await client.create_task(REQUEST)
    return await client.get_task("task-unified-1-abcdefgh")


async def wait_until_final(client: EvoLinkClient, task_id: str) -> list[TaskSnapshot]:
    seen = [await client.get_task(task_id)]
    deadline = time.monotonic() + 3
    while not seen[-1].is_final and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        seen.append(await client.get_task(task_id))
    return seen


# ---------------------------------------------------------------- the happy path


async def test_create_poll_and_download(fake: FakeEvoLink, client: EvoLinkClient) -> None:
    created = await client.create_task(REQUEST)

    assert created.status == "pending"
    assert created.progress == 0
    assert created.estimated_time == 1
    assert created.credits_reserved == Decimal("0.509")
    assert created.id in fake.tasks
    assert fake.tasks[created.id].request == {
        "model": "gpt-image-1.5",
        "prompt": "a red fox",
        "size": "1:1",
        "quality": "low",
    }

    seen = await wait_until_final(client, created.id)
    statuses = [snapshot.status for snapshot in seen]
    assert statuses[-1] == "completed"
    assert "processing" in statuses
    progress = [snapshot.progress for snapshot in seen]
    assert progress == sorted(progress)
    assert seen[-1].progress == 100
    assert len(seen[-1].results) == 1

    image = await client.download_result(seen[-1].results[0], max_bytes=1_000_000)

    assert image.content_type == "image/png"
    assert Image.open(io.BytesIO(image.data)).size == (1024, 1024)
    assert fake.tasks[created.id].downloads == 1
    assert fake.spec_errors == []
    api_requests = [r for r in fake.requests if r.path.startswith("/v1/")]
    assert api_requests
    assert all(r.has_auth for r in api_requests)
    assert [r.has_auth for r in fake.requests if r.path.startswith("/results/")] == [False]


async def test_request_body_carries_reference_images_and_callback(fake: FakeEvoLink) -> None:
    request = ImageRequest(
        model="gpt-image-1.5",
        prompt="the same fox, in winter",
        size="2:3",
        quality="high",
        image_urls=("https://cdn.example/a.png", "https://cdn.example/b.webp"),
        callback_url="https://bot.example/evolink/callback",
    )
    assert request.to_json() == {
        "model": "gpt-image-1.5",
        "prompt": "the same fox, in winter",
        "size": "2:3",
        "quality": "high",
        "image_urls": ["https://cdn.example/a.png", "https://cdn.example/b.webp"],
        "callback_url": "https://bot.example/evolink/callback",
    }
    assert "n" not in REQUEST.to_json()
    assert "image_urls" not in REQUEST.to_json()
    assert "callback_url" not in REQUEST.to_json()


async def test_trailing_slash_in_base_url(
    fake: FakeEvoLink, make_client: Callable[..., EvoLinkClient]
) -> None:
    client = make_client(fake.base_url + "/")
    created = await client.create_task(REQUEST)
    await client.get_task(created.id)
    assert [r.path for r in fake.requests] == [CREATE_PATH, f"/v1/tasks/{created.id}"]


async def test_task_id_is_quoted_into_one_path_segment(
    fake: FakeEvoLink, client: EvoLinkClient
) -> None:
    with pytest.raises(EvoLinkBadRequest) as caught:
        await client.get_task("../x?y=1#z")
    # "?" and "#" stayed in the path: the fake's task route saw the whole id.
    assert fake.requests[-1].path == "/v1/tasks/../x?y=1#z"
    assert caught.value.param == "task_id"
    assert caught.value.status == 404


async def test_failed_task_reports_its_error(fake: FakeEvoLink, client: EvoLinkClient) -> None:
    fake.plan = lambda _request: TaskPlan(
        outcome="failed",
        error_code="content_policy_violation",
        error_message="The prompt was refused",
    )
    created = await client.create_task(REQUEST)
    fake.complete_now(created.id)

    snapshot = await client.get_task(created.id)

    assert snapshot.status == "failed"
    assert snapshot.is_final
    assert snapshot.error_code == "content_policy_violation"
    assert snapshot.error_message == "The prompt was refused"
    assert snapshot.results == ()


# ---------------------------------------------------------------- error mapping

DOCUMENTED = [
    # status, exception, type, param, fallback_suggestion
    (400, EvoLinkBadRequest, "invalid_request_error", None, None),
    (401, EvoLinkAuthError, "authentication_error", None, None),
    (
        402,
        EvoLinkQuotaError,
        "insufficient_quota_error",
        None,
        "https://evolink.ai/dashboard/billing",
    ),
    (403, EvoLinkAuthError, "permission_error", "model", None),
    (404, EvoLinkBadRequest, "not_found_error", "model", "gpt-image-1.5"),
    (
        413,
        EvoLinkBadRequest,
        "request_too_large_error",
        "image_urls",
        "compress image to under 4MB",
    ),
    (429, EvoLinkRateLimited, "rate_limit_error", None, "retry after 60 seconds"),
    (500, EvoLinkServerError, "internal_server_error", None, "try again later"),
    (502, EvoLinkServerError, "upstream_error", None, "try different model"),
    (503, EvoLinkServerError, "service_unavailable_error", None, "retry after 30 seconds"),
]


@pytest.mark.parametrize(("status", "error_class", "error_type", "param", "fallback"), DOCUMENTED)
@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_documented_errors_map_to_exceptions(
    fake: FakeEvoLink,
    make_client: Callable[..., EvoLinkClient],
    method: str,
    status: int,
    error_class: type[EvoLinkError],
    error_type: str,
    param: str | None,
    fallback: str | None,
) -> None:
    client = make_client(fake.base_url, attempts=1)
    fake.fail_next(method, "/v1/", status=status)

    with pytest.raises(error_class) as caught:
        await call_api(client, method)

    error = caught.value
    assert error.status == status
    assert error.code == str(status)
    assert error.type == error_type
    assert error.param == param
    assert error.fallback_suggestion == fallback
    assert error.message
    assert error.message in str(error)
    assert str(status) in str(error)
    assert fake.spec_errors == []


async def test_wrong_api_key_is_an_auth_error(
    fake: FakeEvoLink, make_client: Callable[..., EvoLinkClient], sleeps: SleepRecorder
) -> None:
    client = make_client(fake.base_url, api_key="sk-evo-not-the-right-one")
    with pytest.raises(EvoLinkAuthError) as caught:
        await client.create_task(REQUEST)
    assert caught.value.type == "authentication_error"
    assert fake.creates == 0
    assert sleeps.delays == []


@pytest.mark.parametrize(
    ("status", "body", "error_class", "message", "code"),
    [
        (502, b"<html><body>Bad gateway</body></html>", EvoLinkServerError, "Bad Gateway", None),
        (503, b"", EvoLinkServerError, "Service Unavailable", None),
        (
            400,
            b'{"error": {"code": "invalid_request", "message": "bad size", "type": "x"}}',
            EvoLinkBadRequest,
            "bad size",
            "invalid_request",
        ),
        (400, b'{"error": "just a string"}', EvoLinkBadRequest, "Bad Request", None),
        (418, b"{}", EvoLinkBadRequest, "I'm a Teapot", None),
        (504, b"null", EvoLinkServerError, "Gateway Timeout", None),
        (302, b"", EvoLinkProtocolError, "Found", None),
    ],
)
def test_from_response_tolerates_any_body(
    status: int, body: bytes, error_class: type[EvoLinkError], message: str, code: str | None
) -> None:
    error = EvoLinkError.from_response(status, body)
    assert type(error) is error_class
    assert error.status == status
    assert error.message == message
    assert error.code == code


# ---------------------------------------------------------------- retries: GET


@pytest.mark.parametrize(
    ("status", "expected_delays"),
    [
        (429, [MAX_DELAY, MAX_DELAY]),  # asks for 60 s: capped at max_delay
        (503, [MAX_DELAY, MAX_DELAY]),  # asks for 30 s: capped at max_delay
        (500, None),
        (502, None),
        (504, None),
    ],
)
async def test_get_retries_then_succeeds(
    fake: FakeEvoLink,
    client: EvoLinkClient,
    sleeps: SleepRecorder,
    status: int,
    expected_delays: list[float] | None,
) -> None:
    created = await client.create_task(REQUEST)
    fake.fail_next("GET", "/v1/tasks/", status=status, times=2)

    snapshot = await client.get_task(created.id)

    assert snapshot.id == created.id
    assert gets(fake) == 3
    assert fake.polls(created.id) == 1
    if expected_delays is not None:
        assert sleeps.delays == expected_delays
    else:  # exponential backoff with jitter: base 0.5, then 1.0
        assert len(sleeps.delays) == 2
        assert 0.25 <= sleeps.delays[0] <= 0.5
        assert 0.5 <= sleeps.delays[1] <= 1.0


async def test_get_honours_retry_after_header(
    fake: FakeEvoLink, client: EvoLinkClient, sleeps: SleepRecorder
) -> None:
    created = await client.create_task(REQUEST)
    fake.fail_next("GET", "/v1/tasks/", status=500, retry_after=3)
    await client.get_task(created.id)
    assert sleeps.delays == [3.0]


async def test_get_gives_up_after_the_last_attempt(
    fake: FakeEvoLink, client: EvoLinkClient, sleeps: SleepRecorder
) -> None:
    fake.fail_next("GET", "/v1/tasks/", status=502, times=10)
    with pytest.raises(EvoLinkServerError) as caught:
        await client.get_task("task-unified-1-abcdefgh")
    assert caught.value.status == 502
    assert gets(fake) == 4
    assert len(sleeps.delays) == 3


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, EvoLinkBadRequest),
        (401, EvoLinkAuthError),
        (402, EvoLinkQuotaError),
        (403, EvoLinkAuthError),
        (404, EvoLinkBadRequest),
    ],
)
async def test_get_does_not_retry_other_4xx(
    fake: FakeEvoLink,
    client: EvoLinkClient,
    sleeps: SleepRecorder,
    status: int,
    error_class: type[EvoLinkError],
) -> None:
    fake.fail_next("GET", "/v1/tasks/", status=status, times=5)
    with pytest.raises(error_class):
        await client.get_task("task-unified-1-abcdefgh")
    assert gets(fake) == 1
    assert sleeps.delays == []


async def test_get_retries_a_timeout(
    fake: FakeEvoLink, make_client: Callable[..., EvoLinkClient], sleeps: SleepRecorder
) -> None:
    client = make_client(fake.base_url, request_timeout=0.1)
    created = await client.create_task(REQUEST)
    fake.hang_next("GET", "/v1/tasks/", seconds=5)

    snapshot = await client.get_task(created.id)

    assert snapshot.id == created.id
    assert gets(fake) == 2
    assert len(sleeps.delays) == 1


async def test_get_raises_connection_error_when_nothing_listens(
    make_client: Callable[..., EvoLinkClient], sleeps: SleepRecorder
) -> None:
    client = make_client(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(EvoLinkConnectionError):
        await client.get_task("task-unified-1-abcdefgh")
    assert len(sleeps.delays) == 3


# ---------------------------------------------------------------- retries: POST (paid)


@pytest.mark.parametrize(("status", "suggested"), [(429, 60.0), (503, 30.0)])
async def test_create_retries_when_nothing_was_created(
    fake: FakeEvoLink, client: EvoLinkClient, sleeps: SleepRecorder, status: int, suggested: float
) -> None:
    fake.fail_next("POST", CREATE_PATH, status=status, times=2)

    created = await client.create_task(REQUEST)

    assert created.status == "pending"
    assert posts(fake) == 3
    assert fake.creates == 1
    assert sleeps.delays == [min(suggested, MAX_DELAY)] * 2


async def test_create_gives_up_on_a_lasting_rate_limit(
    fake: FakeEvoLink, client: EvoLinkClient, sleeps: SleepRecorder
) -> None:
    fake.fail_next("POST", CREATE_PATH, status=429, times=10)
    with pytest.raises(EvoLinkRateLimited) as caught:
        await client.create_task(REQUEST)
    assert caught.value.retry_after == 60
    assert posts(fake) == 4
    assert fake.creates == 0


@pytest.mark.parametrize("status", [500, 502])
async def test_create_is_not_retried_after_a_server_error(
    fake: FakeEvoLink, client: EvoLinkClient, sleeps: SleepRecorder, status: int
) -> None:
    fake.fail_next("POST", CREATE_PATH, status=status, times=5)
    with pytest.raises(EvoLinkServerError) as caught:
        await client.create_task(REQUEST)
    assert caught.value.status == status
    assert posts(fake) == 1
    assert sleeps.delays == []


async def test_create_that_times_out_after_the_body_is_never_repeated(
    fake: FakeEvoLink, make_client: Callable[..., EvoLinkClient], sleeps: SleepRecorder
) -> None:
    client = make_client(fake.base_url, request_timeout=0.2)
    fake.hang_next("POST", CREATE_PATH, seconds=5, create=True)

    with pytest.raises(EvoLinkUnknownOutcome) as caught:
        await client.create_task(REQUEST)

    await asyncio.sleep(0.05)  # room for a (wrong) second attempt to arrive
    assert posts(fake) == 1
    assert fake.creates == 1
    assert sleeps.delays == []
    assert "may or may not" in str(caught.value)


async def test_create_whose_connection_drops_is_an_unknown_outcome(
    fake: FakeEvoLink, client: EvoLinkClient, sleeps: SleepRecorder
) -> None:
    fake.drop_next("POST", CREATE_PATH, create=True)
    with pytest.raises(EvoLinkUnknownOutcome):
        await client.create_task(REQUEST)
    assert posts(fake) == 1
    assert fake.creates == 1
    assert sleeps.delays == []


async def test_create_retries_a_refused_connection(
    make_client: Callable[..., EvoLinkClient], sleeps: SleepRecorder
) -> None:
    client = make_client(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(EvoLinkConnectionError) as caught:
        await client.create_task(REQUEST)
    assert not isinstance(caught.value, EvoLinkUnknownOutcome)
    assert len(sleeps.delays) == 3


async def test_create_retries_when_refused_then_succeeds(
    fake: FakeEvoLink, session: aiohttp.ClientSession, sleeps: SleepRecorder
) -> None:
    """Refused twice (nothing listens yet), then a relay to the fake answers."""
    port = free_port()
    forwarder: list[asyncio.Server] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        host, fake_port = fake.base_url.removeprefix("http://").split(":")
        fake_r, fake_w = await asyncio.open_connection(host, int(fake_port))
        await asyncio.gather(pipe(client_r, fake_w), pipe(fake_r, client_w))

    async def sleep_then_listen(seconds: float) -> None:
        sleeps.delays.append(seconds)
        if len(sleeps.delays) == 2:
            forwarder.append(await asyncio.start_server(relay, "127.0.0.1", port))

    client = EvoLinkClient(
        session,
        base_url=f"http://127.0.0.1:{port}",
        api_key=API_KEY,
        retry=RetryPolicy(attempts=4, base_delay=0.5, sleep=sleep_then_listen),
    )
    try:
        created = await client.create_task(REQUEST)
    finally:
        for server in forwarder:
            server.close()
    assert created.id in fake.tasks
    assert len(sleeps.delays) == 2
    assert fake.creates == 1


async def test_create_retries_a_connect_timeout(fake: FakeEvoLink, sleeps: SleepRecorder) -> None:
    """Waiting for a pooled connection timed out: nothing was sent, so the create is retried."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as one_connection:
        patient = EvoLinkClient(one_connection, base_url=fake.base_url, api_key=API_KEY)
        hurried = EvoLinkClient(
            one_connection,
            base_url=fake.base_url,
            api_key=API_KEY,
            retry=RetryPolicy(attempts=10, sleep=sleeps),
            request_timeout=0.2,  # connect (pool wait) timeout: 0.1 s
        )
        first = await patient.create_task(REQUEST)
        fake.hang_next("GET", "/v1/tasks/", seconds=0.3)
        holding = asyncio.create_task(patient.get_task(first.id))
        await fake.wait_for(lambda: gets(fake) == 1)

        second = await hurried.create_task(REQUEST)

        await holding
    assert second.id != first.id
    assert sleeps.delays  # at least one connect timeout was retried
    assert posts(fake) == 2
    assert fake.creates == 2


# ---------------------------------------------------------------- malformed answers


@pytest.mark.parametrize(
    "body",
    [
        b"not json at all",
        b'{"status": "pending"}',  # no id
        b'{"id": "task-unified-1-abcdefgh"}',  # no status
        b'{"id": "task-unified-1-abcdefgh", "status": "exploded"}',
        b"[]",
    ],
)
@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_malformed_200_is_a_protocol_error(
    fake: FakeEvoLink, client: EvoLinkClient, sleeps: SleepRecorder, method: str, body: bytes
) -> None:
    fake.fail_next(method, "/v1/", status=200, raw_body=body)
    with pytest.raises(EvoLinkProtocolError):
        await call_api(client, method)
    assert sleeps.delays == []


@pytest.mark.parametrize(
    ("body", "progress", "results"),
    [
        (b'{"id": "t1", "status": "processing", "progress": 40, "new": {"x": 1}}', 40, ()),
        (b'{"id": "t1", "status": "processing", "progress": 40.6, "results": null}', 41, ()),
        (b'{"id": "t1", "status": "pending", "task_info": null, "usage": null}', 0, ()),
        (
            b'{"id": "t1", "status": "completed", "progress": 100, "results": ["https://r/1"]}',
            100,
            ("https://r/1",),
        ),
    ],
)
async def test_task_detail_is_read_leniently(
    fake: FakeEvoLink,
    client: EvoLinkClient,
    body: bytes,
    progress: int,
    results: tuple[str, ...],
) -> None:
    fake.fail_next("GET", "/v1/tasks/", status=200, raw_body=body)
    snapshot = await client.get_task("t1")
    assert snapshot.id == "t1"
    assert snapshot.progress == progress
    assert snapshot.results == results
    assert snapshot.estimated_time is None
    assert snapshot.credits_reserved is None


# ---------------------------------------------------------------- downloads


async def finished_task(fake: FakeEvoLink, client: EvoLinkClient, plan: TaskPlan) -> str:
    fake.plan = lambda _request: plan
    created = await client.create_task(REQUEST)
    fake.complete_now(created.id)
    snapshot = await client.get_task(created.id)
    assert snapshot.status == "completed"
    return snapshot.results[0]


@pytest.mark.parametrize(
    ("image_format", "content_type"), [("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
async def test_download_accepts_jpeg_and_webp(
    fake: FakeEvoLink, client: EvoLinkClient, image_format: str, content_type: str
) -> None:
    data = encoded(image_format)
    url = await finished_task(fake, client, TaskPlan(result=data, result_content_type=content_type))
    image = await client.download_result(url, max_bytes=100_000)
    assert image.data == data
    assert image.content_type == content_type


async def test_download_refuses_a_wrong_content_type(
    fake: FakeEvoLink, client: EvoLinkClient
) -> None:
    url = await finished_task(
        fake, client, TaskPlan(result=b"<html>hi</html>", result_content_type="text/html")
    )
    with pytest.raises(ResultDownloadError) as caught:
        await client.download_result(url, max_bytes=100_000)
    assert caught.value.type == "bad_content_type"


async def test_download_refuses_bytes_that_are_not_an_image(
    fake: FakeEvoLink, client: EvoLinkClient
) -> None:
    url = await finished_task(fake, client, TaskPlan(result=b"GIF89a" + b"\0" * 64))
    with pytest.raises(ResultDownloadError) as caught:
        await client.download_result(url, max_bytes=100_000)
    assert caught.value.type == "not_an_image"


async def test_download_refuses_a_declared_size_over_the_cap(
    fake: FakeEvoLink, client: EvoLinkClient
) -> None:
    url = await finished_task(fake, client, TaskPlan(result=encoded("PNG") + b"\0" * 300_000))
    with pytest.raises(ResultDownloadError) as caught:
        await client.download_result(url, max_bytes=100_000)
    assert caught.value.type == "too_large"


async def test_download_refuses_at_once_when_content_length_is_too_big(
    serve: Callable[[web.Application], Awaitable[str]], client: EvoLinkClient
) -> None:
    """The header alone decides: the body (which never comes) is not waited for."""

    release = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.content_length = 10**9
        await response.prepare(request)
        await asyncio.wait_for(release.wait(), 5)
        return response

    app = web.Application()
    app.router.add_get("/big.png", handler)
    base = await serve(app)

    started = time.monotonic()
    with pytest.raises(ResultDownloadError) as caught:
        await client.download_result(f"{base}/big.png", max_bytes=100_000)
    release.set()
    assert caught.value.type == "too_large"
    assert time.monotonic() - started < 1


async def test_download_stops_reading_a_stream_over_the_cap(
    serve: Callable[[web.Application], Awaitable[str]], client: EvoLinkClient
) -> None:
    chunk = b"\x89PNG\r\n\x1a\n" + b"\0" * (64 * 1024 - 8)
    total_chunks = 3200  # 200 MiB if nobody stops it
    sent: list[int] = []
    finished = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        written = 0
        try:
            for _ in range(total_chunks):
                await response.write(chunk)
                written += 1
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            pass
        finally:
            sent.append(written)
            finished.set()
        return response

    app = web.Application()
    app.router.add_get("/stream.png", handler)
    base = await serve(app)

    with pytest.raises(ResultDownloadError) as caught:
        await client.download_result(f"{base}/stream.png", max_bytes=256 * 1024)
    assert caught.value.type == "too_large"

    await asyncio.wait_for(finished.wait(), 5)
    assert sent[0] < total_chunks // 4  # the server noticed the client hang up


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://cdn.example/result.png",
        "javascript:alert(1)",
        "data:image/png;base64,iVBORw0KGgo=",
        "/results/relative.png",
        "http:///no-host.png",
    ],
)
async def test_download_refuses_non_http_urls_without_a_request(
    fake: FakeEvoLink, client: EvoLinkClient, url: str
) -> None:
    with pytest.raises(ResultDownloadError) as caught:
        await client.download_result(url, max_bytes=100_000)
    assert caught.value.type == "bad_scheme"
    assert fake.requests == []


@pytest.mark.parametrize("status", [403, 404])
async def test_download_of_an_expired_link_is_not_retried(
    fake: FakeEvoLink, client: EvoLinkClient, sleeps: SleepRecorder, status: int
) -> None:
    url = await finished_task(fake, client, TaskPlan(result_status=status))
    with pytest.raises(ResultDownloadError) as caught:
        await client.download_result(url, max_bytes=100_000)
    assert caught.value.status == status
    assert caught.value.type == "http_error"
    assert "expired" in str(caught.value)
    assert sleeps.delays == []
    assert gets(fake, "/results/") == 1


async def test_download_retries_a_server_error(
    fake: FakeEvoLink, client: EvoLinkClient, sleeps: SleepRecorder
) -> None:
    url = await finished_task(fake, client, TaskPlan())
    fake.fail_next("GET", "/results/", status=503, raw_body=b"busy", content_type="text/plain")

    image = await client.download_result(url, max_bytes=100_000)

    assert image.content_type == "image/png"
    assert gets(fake, "/results/") == 2
    assert len(sleeps.delays) == 1


async def test_download_gives_up_on_a_lasting_server_error(
    fake: FakeEvoLink, client: EvoLinkClient, sleeps: SleepRecorder
) -> None:
    url = await finished_task(fake, client, TaskPlan())
    fake.fail_next("GET", "/results/", status=500, times=9, raw_body=b"", content_type="text/plain")
    with pytest.raises(ResultDownloadError) as caught:
        await client.download_result(url, max_bytes=100_000)
    assert caught.value.status == 500
    assert gets(fake, "/results/") == 4


# ---------------------------------------------------------------- the key stays secret


async def test_the_api_key_never_shows_in_errors_or_logs(
    fake: FakeEvoLink,
    make_client: Callable[..., EvoLinkClient],
    serve: Callable[[web.Application], Awaitable[str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    async def echo_the_token(request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "")
        return web.json_response(
            {"error": {"code": 400, "message": f"bad token {token}", "type": "x", "param": token}},
            status=400,
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo_the_token)
    echo_base = await serve(app)

    client = make_client(fake.base_url, request_timeout=0.15)
    errors: list[EvoLinkError] = []

    async def collect(call: Awaitable[object]) -> None:
        try:
            await call
        except EvoLinkError as error:
            errors.append(error)

    fake.fail_next("POST", CREATE_PATH, status=429)
    created = await client.create_task(REQUEST)
    fake.fail_next("GET", "/v1/tasks/", status=500, times=9)
    await collect(client.get_task(created.id))
    fake.hang_next("POST", CREATE_PATH, seconds=5)
    await collect(client.create_task(REQUEST))
    await collect(make_client(echo_base).create_task(REQUEST))
    await collect(make_client(echo_base).get_task("x"))
    await collect(make_client(f"http://127.0.0.1:{free_port()}").get_task("x"))
    await collect(client.download_result("ftp://x/y.png", max_bytes=10))

    assert len(errors) == 6
    for error in errors:
        for text in (str(error), repr(error), error.message, error.param or ""):
            assert API_KEY not in text
    assert "[redacted]" in errors[3].message
    assert API_KEY not in repr(client)
    assert caplog.records  # something was logged
    assert API_KEY not in caplog.text


# ---------------------------------------------------------------- backoff arithmetic


@given(
    attempt=st.integers(min_value=1, max_value=60),
    base=st.floats(min_value=0.01, max_value=10),
    max_delay=st.floats(min_value=10, max_value=300),
    suggested=st.none() | st.floats(min_value=0, max_value=1000),
)
def test_delay_is_bounded_and_honours_the_suggestion(
    attempt: int, base: float, max_delay: float, suggested: float | None
) -> None:
    policy = RetryPolicy(base_delay=base, max_delay=max_delay)
    delay = policy.delay(attempt, suggested)
    assert 0 < delay <= max_delay
    assert delay >= min(suggested or 0.0, max_delay)
    assert delay >= min(base * 2 ** (attempt - 1), max_delay) / 2


def test_delay_grows_exponentially() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=60.0)
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (8, 60), (10_000, 60)]:
        delay = policy.delay(attempt, None)
        assert ceiling / 2 <= delay <= ceiling


@pytest.mark.parametrize(
    ("headers", "fallback", "expected"),
    [
        ({"Retry-After": "7"}, None, 7.0),
        ({"Retry-After": "7"}, "retry after 60 seconds", 7.0),
        ({}, "retry after 60 seconds", 60.0),
        ({}, "Retry after 2 minutes", 120.0),
        ({}, "try again later", None),
        (None, None, None),
        ({"Retry-After": "soon"}, "retry after 30 seconds", 30.0),
    ],
)
def test_suggested_wait(
    headers: dict[str, str] | None, fallback: str | None, expected: float | None
) -> None:
    assert suggested_wait(headers, fallback) == expected


def test_suggested_wait_reads_an_http_date() -> None:
    when = datetime.now(UTC) + timedelta(seconds=90)
    wait = suggested_wait({"Retry-After": format_datetime(when, usegmt=True)}, None)
    assert wait is not None
    assert 85 <= wait <= 91
