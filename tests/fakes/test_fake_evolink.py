"""The fake EvoLink itself, spoken to over plain HTTP: it must behave as the docs describe."""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from tests.fakes.evolink_server import CREATE_PATH, FakeEvoLink, TaskPlan

KEY = "fake-evolink-key-1"
AUTH = {"Authorization": f"Bearer {KEY}"}
BODY = {"model": "gpt-image-1.5", "prompt": "a lighthouse at dusk", "size": "1:1", "quality": "low"}
TASK_ID = re.compile(r"^task-unified-\d{10}-[a-z0-9]{8}$")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def fake() -> AsyncIterator[FakeEvoLink]:
    async with FakeEvoLink(api_key=KEY, callback_retry_delay=0.01) as fake:
        yield fake


@pytest.fixture
async def receiver() -> AsyncIterator[Callable[[list[int]], Awaitable[tuple[str, list[Any]]]]]:
    """A local callback receiver answering with the given statuses in turn (then 200)."""
    runners: list[web.AppRunner] = []

    async def start(statuses: list[int]) -> tuple[str, list[Any]]:
        received: list[Any] = []
        answers = iter(statuses)

        async def handler(request: web.Request) -> web.Response:
            received.append(await request.json())
            return web.Response(status=next(answers, 200))

        app = web.Application()
        app.router.add_post("/callback", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}/callback", received

    yield start
    for runner in runners:
        await runner.cleanup()


async def create(
    http: aiohttp.ClientSession,
    fake: FakeEvoLink,
    body: Any = BODY,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    async with http.post(
        fake.base_url + CREATE_PATH, json=body, headers=AUTH if headers is None else headers
    ) as resp:
        return resp.status, await resp.json()


async def detail(
    http: aiohttp.ClientSession, fake: FakeEvoLink, task_id: str, headers: dict[str, str] = AUTH
) -> tuple[int, Any]:
    async with http.get(f"{fake.base_url}/v1/tasks/{task_id}", headers=headers) as resp:
        return resp.status, await resp.json()


# ---------------------------------------------------------------- the task lifecycle


async def test_a_task_goes_pending_processing_completed(
    http: aiohttp.ClientSession, fake: FakeEvoLink
) -> None:
    status, task = await create(http, fake)

    assert status == 200
    assert TASK_ID.match(task["id"])
    assert abs(task["created"] - time.time()) < 5
    assert {k: v for k, v in task.items() if k not in ("id", "created")} == {
        "model": "gpt-image-1.5",
        "object": "image.generation.task",
        "status": "pending",
        "progress": 0,
        "task_info": {"can_cancel": True, "estimated_time": 1},
        "type": "image",
        "usage": {"billing_rule": "per_call", "credits_reserved": 0.509, "user_group": "default"},
    }
    record = fake.tasks[task["id"]]
    assert record.completes_at == pytest.approx(record.created_at + 0.3)

    seen: list[dict[str, Any]] = []
    while not seen or seen[-1]["status"] in ("pending", "processing"):
        seen.append((await detail(http, fake, task["id"]))[1])
        await asyncio.sleep(0.02)

    statuses = [item["status"] for item in seen]
    assert statuses[0] == "pending"
    assert statuses[-1] == "completed"
    assert statuses == sorted(statuses, key=["pending", "processing", "completed"].index)
    rising = [item["progress"] for item in seen if item["status"] == "processing"]
    assert len(set(rising)) >= 3
    assert rising == sorted(rising)
    assert all(1 <= value <= 99 for value in rising)
    final = seen[-1]
    assert final["progress"] == 100
    assert final["results"] == [f"{fake.base_url}/results/{task['id']}.png"]
    assert "error" not in final
    assert fake.polls(task["id"]) == len(seen)

    async with http.get(final["results"][0]) as resp:
        assert resp.status == 200
        assert resp.content_type == "image/png"
        image = Image.open(io.BytesIO(await resp.read()))
        image.load()
    assert image.size == (1024, 1024)
    assert record.downloads == 1
    assert fake.spec_errors == []


async def test_completion_is_reported_no_earlier_than_completes_at(
    http: aiohttp.ClientSession, fake: FakeEvoLink
) -> None:
    fake.plan = lambda _request: TaskPlan(duration=0.1, pending_for=0.0)
    _, task = await create(http, fake)
    completes_at = fake.tasks[task["id"]].completes_at
    for _ in range(100):
        if (await detail(http, fake, task["id"]))[1]["status"] == "completed":
            break
        await asyncio.sleep(0.01)
    polls = [r for r in fake.requests if r.path == f"/v1/tasks/{task['id']}"]
    assert all(r.time < completes_at for r in polls[:-1])
    assert polls[-1].time >= completes_at


async def test_a_failed_task_carries_its_error(
    http: aiohttp.ClientSession, fake: FakeEvoLink
) -> None:
    fake.plan = lambda _request: TaskPlan(
        duration=0.05, outcome="failed", error_code="content_policy_violation", error_message="no"
    )
    _, task = await create(http, fake)
    await asyncio.sleep(0.08)

    _, body = await detail(http, fake, task["id"])

    assert body["status"] == "failed"
    assert body["error"] == {"code": "content_policy_violation", "message": "no"}
    assert "results" not in body
    async with http.get(f"{fake.base_url}/results/{task['id']}.png") as resp:
        assert resp.status == 404
    assert fake.spec_errors == []


async def test_a_stalled_task_stops_moving_until_completed_by_hand(
    http: aiohttp.ClientSession, fake: FakeEvoLink
) -> None:
    fake.plan = lambda _request: TaskPlan(duration=0.1, pending_for=0.0, progress_stall=True)
    _, task = await create(http, fake)
    await asyncio.sleep(0.12)
    _, first = await detail(http, fake, task["id"])
    await asyncio.sleep(0.05)
    _, second = await detail(http, fake, task["id"])

    assert first["status"] == second["status"] == "processing"
    assert first["progress"] == second["progress"] <= 50

    fake.complete_now(task["id"])
    _, last = await detail(http, fake, task["id"])
    assert last["status"] == "completed"
    assert fake.tasks[task["id"]].completes_at <= fake.clock()


async def test_state_follows_an_injected_clock(http: aiohttp.ClientSession) -> None:
    now = [1000.0]
    async with FakeEvoLink(
        api_key=KEY,
        clock=lambda: now[0],
        plan=lambda _request: TaskPlan(duration=10, pending_for=1),
    ) as fake:
        _, task = await create(http, fake)
        assert fake.tasks[task["id"]].completes_at == 1010.0
        assert task["task_info"]["estimated_time"] == 10

        observed = []
        for moment in (1000.5, 1001.0, 1005.5, 1009.95, 1010.0):
            now[0] = moment
            _, body = await detail(http, fake, task["id"])
            observed.append((body["status"], body["progress"]))

    assert observed == [
        ("pending", 0),
        ("processing", 1),
        ("processing", 49),
        ("processing", 98),
        ("completed", 100),
    ]


@pytest.mark.parametrize(
    ("body", "credits"),
    [
        ({"quality": "low", "size": "1:1"}, 0.509),
        ({"quality": "low", "size": "2:3"}, 0.749),
        ({"quality": "medium", "size": "1024x1024"}, 1.958),
        ({"quality": "medium", "size": "1536x1024"}, 2.879),
        ({"quality": "high", "size": "1:1"}, 7.657),
        ({"quality": "high", "size": "3:2"}, 11.256),
        ({"quality": "auto", "size": "1024x1536"}, 11.256),
        ({}, 7.657),  # auto, 1:1 by default
        ({"model": "gpt-image-1.5-lite"}, 2.5),
        ({"model": "gpt-image-1.5-beta", "quality": "high"}, 0.9),
    ],
)
async def test_credits_reserved_follow_the_price_table(
    http: aiohttp.ClientSession, fake: FakeEvoLink, body: dict[str, str], credits: float
) -> None:
    request = {"model": "gpt-image-1.5", "prompt": "p", **body}
    status, task = await create(http, fake, request)
    assert status == 200
    assert task["model"] == request["model"]
    assert task["usage"]["credits_reserved"] == credits
    assert fake.tasks[task["id"]].credits_reserved == Decimal(str(credits))
    assert fake.spec_errors == []


async def test_plan_overrides_credits_and_estimate(
    http: aiohttp.ClientSession, fake: FakeEvoLink
) -> None:
    fake.plan = lambda request: TaskPlan(credits_reserved=Decimal("3.25"), estimated_time=42)
    _, task = await create(http, fake)
    assert task["usage"]["credits_reserved"] == 3.25
    assert task["task_info"]["estimated_time"] == 42


# ---------------------------------------------------------------- auth and validation


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"Authorization": "Basic x"}],
)
async def test_a_missing_or_wrong_key_is_refused(
    http: aiohttp.ClientSession, fake: FakeEvoLink, headers: dict[str, str]
) -> None:
    status, body = await create(http, fake, headers=headers)
    assert status == 401
    assert body == {
        "error": {
            "code": 401,
            "message": "Invalid or expired token",
            "type": "authentication_error",
        }
    }
    get_status, _ = await detail(http, fake, "task-unified-1-abcdefgh", headers=headers)
    assert get_status == 401
    assert fake.creates == 0
    assert fake.requests[0].has_auth == bool(headers)
    assert "Authorization" not in fake.requests[0].headers


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "gpt-image-1.5"}, "prompt"),
        ({**BODY, "size": "999x999"}, "size"),
        ({**BODY, "quality": "ultra"}, "quality"),
        ({**BODY, "model": "dall-e-3"}, "model"),
        ({**BODY, "prompt": "x" * 2001}, "prompt"),
        ({**BODY, "n": 2}, "n"),
        ({**BODY, "image_urls": []}, "image_urls"),
        ({**BODY, "image_urls": ["https://x/1.png"] * 17}, "image_urls"),
        ({**BODY, "image_url": ["https://x/1.png"]}, "image_url"),
        ({**BODY, "callback_url": "x" * 2049}, "callback_url"),
        (["not", "an", "object"], None),
    ],
)
async def test_an_invalid_body_is_a_400_with_param(
    http: aiohttp.ClientSession, fake: FakeEvoLink, body: Any, param: str | None
) -> None:
    status, answer = await create(http, fake, body)
    assert status == 400
    assert answer["error"]["type"] == "invalid_request_error"
    assert answer["error"]["code"] == 400
    assert answer["error"].get("param") == param
    assert fake.creates == 0
    assert fake.spec_errors  # the bot's mistake is on record


async def test_a_body_that_is_not_json_is_a_400(
    http: aiohttp.ClientSession, fake: FakeEvoLink
) -> None:
    async with http.post(fake.base_url + CREATE_PATH, data=b"{nope", headers=AUTH) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["type"] == "invalid_request_error"
    assert fake.creates == 0


@pytest.mark.parametrize(
    "extra",
    [
        {"model": "gpt-image-1.5-lite"},
        {"model": "gpt-image-1.5-beta"},
        {"image_urls": ["https://cdn.example/a.png"] * 16},
        {"callback_url": "https://bot.example/cb"},
        {"n": 1, "size": "1536x1024", "quality": "auto"},
    ],
)
async def test_documented_fields_pass_validation(
    http: aiohttp.ClientSession, fake: FakeEvoLink, extra: dict[str, Any]
) -> None:
    fake.plan = lambda _request: TaskPlan(duration=60)  # no callback during the test
    status, _ = await create(http, fake, {**BODY, **extra})
    assert status == 200
    assert fake.spec_errors == []


async def test_an_unknown_task_is_a_404(http: aiohttp.ClientSession, fake: FakeEvoLink) -> None:
    status, body = await detail(http, fake, "task-unified-1-nothere0")
    assert status == 404
    assert body["error"]["type"] == "not_found_error"
    assert body["error"]["param"] == "task_id"


async def test_validation_can_be_switched_off(http: aiohttp.ClientSession) -> None:
    async with FakeEvoLink(api_key=KEY, validate=False) as fake:
        ok, _ = await create(http, fake, {**BODY, "size": "7x7", "whatever": True})
        missing, answer = await create(http, fake, {"model": "gpt-image-1.5"})
    assert ok == 200
    assert missing == 400
    assert answer["error"]["param"] == "prompt"
    assert fake.spec_errors == []


# ---------------------------------------------------------------- injected faults


async def test_fail_next_sends_the_documented_body(
    http: aiohttp.ClientSession, fake: FakeEvoLink
) -> None:
    fake.fail_next("POST", CREATE_PATH, status=429, times=2, retry_after=12)
    for _ in range(2):
        async with http.post(fake.base_url + CREATE_PATH, json=BODY, headers=AUTH) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "12"
            assert await resp.json() == {
                "error": {
                    "code": 429,
                    "type": "rate_limit_error",
                    "message": "Rate limit exceeded",
                    "fallback_suggestion": "retry after 60 seconds",
                }
            }
    status, _ = await create(http, fake)
    assert status == 200
    assert fake.creates == 1
    assert [r.status for r in fake.requests] == [429, 429, 200]
    assert fake.spec_errors == []


async def test_fail_next_overrides_and_raw_bodies(
    http: aiohttp.ClientSession, fake: FakeEvoLink
) -> None:
    fake.fail_next("GET", "/v1/tasks/", status=503, message="maintenance", error_type="custom")
    fake.fail_next("GET", "/v1/", status=200, raw_body=b"<html>", content_type="text/html")
    status, body = await detail(http, fake, "anything")
    assert status == 503
    assert body["error"]["message"] == "maintenance"
    assert body["error"]["type"] == "custom"
    assert body["error"]["fallback_suggestion"] == "retry after 30 seconds"
    async with http.get(f"{fake.base_url}/v1/tasks/anything", headers=AUTH) as resp:
        assert resp.status == 200
        assert await resp.read() == b"<html>"


async def test_hang_next_creates_the_task_then_answers_late(
    http: aiohttp.ClientSession, fake: FakeEvoLink
) -> None:
    fake.hang_next("POST", CREATE_PATH, seconds=0.1)
    started = time.monotonic()
    status, task = await create(http, fake)
    assert status == 200
    assert time.monotonic() - started >= 0.1
    assert fake.creates == 1
    assert fake.tasks[task["id"]].created_at < fake.clock() - 0.08


async def test_hang_next_without_create_drops_and_creates_nothing(
    http: aiohttp.ClientSession, fake: FakeEvoLink
) -> None:
    fake.hang_next("POST", CREATE_PATH, seconds=0.05, create=False)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await create(http, fake)
    assert fake.creates == 0
    assert fake.requests[0].json == BODY
    assert fake.requests[0].status is None


async def test_drop_next_closes_without_answering(
    http: aiohttp.ClientSession, fake: FakeEvoLink
) -> None:
    fake.drop_next("POST", CREATE_PATH, create=True)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await create(http, fake)
    assert fake.creates == 1
    status, _ = await create(http, fake)
    assert status == 200
    assert fake.creates == 2


async def test_close_ends_a_hang_at_once(http: aiohttp.ClientSession) -> None:
    fake = FakeEvoLink(api_key=KEY)
    await fake.start()
    fake.hang_next("GET", "/v1/tasks/", seconds=30)
    pending = asyncio.create_task(detail(http, fake, "x"))
    await fake.wait_for(lambda: len(fake.requests) == 1)
    started = time.monotonic()
    await fake.close()
    assert time.monotonic() - started < 2
    with pytest.raises(aiohttp.ClientError):
        await pending


# ---------------------------------------------------------------- callbacks


async def test_a_callback_is_posted_when_the_task_ends(
    http: aiohttp.ClientSession,
    fake: FakeEvoLink,
    receiver: Callable[[list[int]], Awaitable[tuple[str, list[Any]]]],
) -> None:
    url, received = await receiver([])
    fake.plan = lambda _request: TaskPlan(duration=0.1)
    _, task = await create(http, fake, {**BODY, "callback_url": url})

    await fake.wait_for(lambda: len(received) == 1)

    record = fake.tasks[task["id"]]
    assert received[0]["id"] == task["id"]
    assert received[0]["status"] == "completed"
    assert received[0]["results"] == [f"{fake.base_url}/results/{task['id']}.png"]
    assert [attempt.status for attempt in record.callback_posts] == [200]
    assert record.callback_posts[0].time >= record.completes_at
    assert fake.spec_errors == []


async def test_a_failing_receiver_is_retried_three_times_at_most(
    http: aiohttp.ClientSession,
    fake: FakeEvoLink,
    receiver: Callable[[list[int]], Awaitable[tuple[str, list[Any]]]],
) -> None:
    flaky_url, flaky = await receiver([500, 503])
    broken_url, broken = await receiver([500] * 10)
    fake.plan = lambda _request: TaskPlan(duration=0.05, outcome="failed")
    _, recovers = await create(http, fake, {**BODY, "callback_url": flaky_url})
    _, never = await create(http, fake, {**BODY, "callback_url": broken_url})

    await fake.wait_for(lambda: len(flaky) == 3 and len(broken) == 4)
    await asyncio.sleep(0.05)  # no fifth attempt comes

    assert [a.status for a in fake.tasks[recovers["id"]].callback_posts] == [500, 503, 200]
    assert [a.status for a in fake.tasks[never["id"]].callback_posts] == [500] * 4
    assert len(broken) == 4
    assert flaky[-1]["status"] == "failed"
    assert flaky[-1]["error"]["code"] == "generation_timeout"


async def test_complete_now_fires_the_callback_of_a_stalled_task(
    http: aiohttp.ClientSession,
    fake: FakeEvoLink,
    receiver: Callable[[list[int]], Awaitable[tuple[str, list[Any]]]],
) -> None:
    url, received = await receiver([])
    fake.plan = lambda _request: TaskPlan(progress_stall=True)
    _, task = await create(http, fake, {**BODY, "callback_url": url})
    await asyncio.sleep(0.05)
    assert received == []

    fake.complete_now(task["id"])
    await fake.wait_for(lambda: len(received) == 1)
    fake.complete_now(task["id"])  # a second call sends nothing more
    await asyncio.sleep(0.05)
    assert len(received) == 1
    assert received[0]["status"] == "completed"


async def test_close_cancels_callbacks_not_yet_due(
    http: aiohttp.ClientSession,
    receiver: Callable[[list[int]], Awaitable[tuple[str, list[Any]]]],
) -> None:
    url, received = await receiver([])
    async with FakeEvoLink(api_key=KEY, plan=lambda _request: TaskPlan(duration=0.1)) as fake:
        await create(http, fake, {**BODY, "callback_url": url})
    await asyncio.sleep(0.15)
    assert received == []


# ---------------------------------------------------------------- load


async def test_a_thousand_tasks_polled_at_once(http: aiohttp.ClientSession) -> None:
    async with FakeEvoLink(
        api_key=KEY, validate=False, plan=lambda _request: TaskPlan(duration=0.2)
    ) as fake:
        created = await asyncio.gather(*(create(http, fake) for _ in range(1000)))
        ids = [task["id"] for _, task in created]
        cpu_before = time.process_time()
        polled = await asyncio.gather(*(detail(http, fake, task_id) for task_id in ids))
        cpu_spent = time.process_time() - cpu_before

    assert len(set(ids)) == 1000
    assert all(status == 200 for status, _ in polled)
    assert sum(fake.polls(task_id) for task_id in ids) == 1000
    assert cpu_spent < 5  # client and server together, on one core
