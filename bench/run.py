"""One benchmark: the real bot, in its own process, against the fakes in this one (127.0.0.1).

Every workload gives each of N members one `/imagine` at the same moment. The fake EvoLink makes
each image in a realistic, varied time (20-120 s, with a queue wait and linear progress, and an
`estimated_time` that is off by up to a quarter), all divided by the time scale. The same
workload (same seed) runs with each strategy: the bot polling, the bot with EvoLink's callbacks,
and the baseline (poll every 3 s, edit on every poll).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import random
import socket
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench import bot_process
from bench.bot_process import BotSpec
from bench.metrics import DeliveryWatch, measure, prompt_for
from storage.database import Database
from storage.tasks import NewTask, TaskStatus, TaskStore
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.evolink_server import FakeEvoLink, TaskPlan

EVOLINK_KEY = "bench-evolink-key"
SHORTEST, LONGEST = 20.0, 120.0  # real seconds an image takes
QUEUE = (0.5, 4.0)  # real seconds in "pending" first
ESTIMATE_ERROR = 0.25  # estimated_time is off by up to this fraction


@dataclass(frozen=True)
class Options:
    members: int = 200
    time_scale: float = 6.0
    mode: str = "both"  # polling | callback | both
    baseline: bool = True
    resume_tasks: int = 10_000
    seed: int = 6


def workload(options: Options) -> list[TaskPlan]:
    """One plan per member, the same for every strategy."""
    rng = random.Random(options.seed)
    scale = options.time_scale
    plans = []
    for _ in range(options.members):
        duration = rng.uniform(SHORTEST, LONGEST)
        estimate = duration * rng.uniform(1 - ESTIMATE_ERROR, 1 + ESTIMATE_ERROR)
        plans.append(
            TaskPlan(
                duration=duration / scale,
                pending_for=rng.uniform(*QUEUE) / scale,
                estimated_time=max(1, round(estimate / scale)),
            )
        )
    return plans


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scaled_settings(options: Options, evolink: FakeEvoLink, discord: FakeDiscord) -> dict[str, Any]:
    scale = options.time_scale
    return {
        "evolink_api_key": EVOLINK_KEY,
        "evolink_base_url": evolink.base_url,
        "discord_api_base_url": discord.api_base,
        "discord_gateway_url": discord.gateway_url,
        "default_allowance": 20,
        "poll_min_interval": 1.0 / scale,
        "poll_max_interval": 30.0 / scale,
        "progress_edit_interval": 3.0 / scale,
        "callback_safety_interval": 30.0 / scale,
        "task_deadline": 900.0 / scale,
        "stall_timeout": 300.0 / scale,
        "evolink_retry_base_delay": 1.0 / scale,
        "evolink_retry_max_delay": 60.0 / scale,
    }


class BotHandle:
    """The bot's process and the pipe to it."""

    def __init__(self, spec: BotSpec) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=bot_process.main, args=(child, spec), daemon=True)
        self.process.start()
        child.close()

    async def receive(self, expected: str, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
        conn: Connection = self.conn
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, conn.poll, timeout):
            raise TimeoutError(f"the bot did not say {expected!r} within {timeout:g} s")
        try:
            kind, payload = conn.recv()
        except EOFError:
            raise RuntimeError("the bot's process ended early (see its log)") from None
        if kind != expected:
            raise RuntimeError(f"the bot said {kind}: {payload}")
        return dict(payload)

    async def stop(self) -> dict[str, Any]:
        self.conn.send("stop")
        try:
            return await self.receive("report", 60)
        finally:
            await asyncio.get_running_loop().run_in_executor(None, self.process.join, 30)
            if self.process.is_alive():
                self.process.kill()
            self.conn.close()


async def run_strategy(options: Options, strategy: str, workdir: Path) -> dict[str, Any]:
    plans = workload(options)
    scale = options.time_scale
    by_prompt = {prompt_for(i): plan for i, plan in enumerate(plans)}
    log_path = workdir / f"bot-{strategy}.log"
    async with (
        FakeDiscord(validate=False) as discord,
        FakeEvoLink(
            api_key=EVOLINK_KEY,
            validate=False,
            plan=lambda request: by_prompt[request["prompt"]],
            callback_retry_delay=1.0 / scale,
        ) as evolink,
    ):
        members = [discord.add_member(name=f"member{i}") for i in range(options.members)]
        settings = scaled_settings(options, evolink, discord)
        settings["database_path"] = str(workdir / f"{strategy}.sqlite3")
        if strategy == "callback":
            port = free_port()
            settings.update(
                web_host="127.0.0.1", web_port=port, public_base_url=f"http://127.0.0.1:{port}"
            )
        longest = (LONGEST + QUEUE[1]) / scale
        spec = BotSpec(
            strategy=strategy,
            settings=settings,
            time_scale=scale,
            log_path=str(log_path),
            max_seconds=3 * longest + 300,
        )
        bot = BotHandle(spec)
        try:
            await bot.receive("ready", 120)
            watch = DeliveryWatch(discord, options.members)
            started = asyncio.get_running_loop().time()
            fakes_cpu = bot_process.cpu_seconds()
            interactions = await asyncio.gather(
                *(
                    discord.invoke_slash("imagine", {"prompt": prompt_for(i)}, user_id=member)
                    for i, member in enumerate(members)
                )
            )
            for i, interaction in enumerate(interactions):
                watch.add(i, interaction)
            deadline = started + 2 * longest + 60  # the workload ends by itself
            while not watch.finished and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
                watch.update()
            wall = asyncio.get_running_loop().time() - started
            fakes_cpu = bot_process.cpu_seconds() - fakes_cpu
        finally:
            report = await bot.stop()
        result = measure(
            watch=watch,
            evolink=evolink,
            members=options.members,
            time_scale=scale,
            bot_report=report,
            wall_seconds=wall,
        )
        # Near 1.0, that process was saturated: the run measured the machine, not the strategy.
        result["bot_cpu_share"] = report["cpu_seconds"] / wall
        result["fakes_cpu_share"] = fakes_cpu / wall
        if result["delivered"] < options.members:
            result["log_tail"] = _tail(log_path)
        return result


async def seed_in_flight(path: Path, count: int) -> None:
    """`count` tasks being made at EvoLink, far from done, written through the stores."""
    async with Database.open(path) as db:
        store = TaskStore(db)
        now = time.time()
        async with db.transaction():
            for i in range(count):
                new = NewTask(
                    guild_id=1,
                    channel_id=2,
                    user_id=100 + i,
                    origin="command",
                    prompt=prompt_for(i),
                    model="gpt-image-1.5",
                    size="1:1",
                    quality="auto",
                    reference_urls=(),
                    estimate=7657,
                    upload_limit=10 * 1024 * 1024,
                    interaction_id=10_000_000 + i,
                )
                task = await store.insert(new, now)
                await store.update(
                    task,
                    now,
                    status=TaskStatus.PROCESSING,
                    progress=1,
                    evolink_task_id=f"task-unified-bench-{i}",
                    estimated_time=86_400.0,
                    submitted_at=now,
                )


async def run_resume(options: Options, workdir: Path) -> dict[str, Any]:
    """Start the bot on a database with `resume_tasks` tasks in flight; time the resume."""
    database = workdir / "resume.sqlite3"
    seeding = time.perf_counter()
    await seed_in_flight(database, options.resume_tasks)
    seed_seconds = time.perf_counter() - seeding
    async with (
        FakeDiscord(validate=False) as discord,
        FakeEvoLink(api_key=EVOLINK_KEY, validate=False) as evolink,
    ):
        settings = {
            "evolink_api_key": EVOLINK_KEY,
            "evolink_base_url": evolink.base_url,
            "discord_api_base_url": discord.api_base,
            "discord_gateway_url": discord.gateway_url,
            "database_path": str(database),
        }
        spec = BotSpec(strategy="resume", settings=settings, log_path=str(workdir / "resume.log"))
        bot = BotHandle(spec)
        try:
            ready = await bot.receive("ready", 180)
        finally:
            report = await bot.stop()
    return {
        "tasks": options.resume_tasks,
        "resumed": ready["resumed"],
        "resume_seconds": ready["resume_seconds"],
        "bot_start_seconds": ready["start_seconds"],
        "rss_mb_with_all_in_flight": ready["rss_mb_at_ready"],
        "seed_seconds": seed_seconds,
        "stopped_with_followers": report["still_running"],
    }


def _tail(path: Path, lines: int = 20) -> list[str]:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace").splitlines()[-lines:]
    return []


async def run(options: Options) -> dict[str, Any]:
    strategies = {"polling": ["polling"], "callback": ["callback"]}.get(
        options.mode, ["polling", "callback"]
    )
    if options.baseline:
        strategies.append("baseline")
    result: dict[str, Any] = {
        "members": options.members,
        "time_scale": options.time_scale,
        "latency_unit": "real-time-equivalent seconds = measured seconds x time_scale",
        "runs": {},
    }
    with tempfile.TemporaryDirectory(prefix="imagine-bench-") as tmp:
        workdir = Path(tmp)
        for strategy in strategies:
            result["runs"][strategy] = await run_strategy(options, strategy, workdir)
        if options.resume_tasks:
            result["resume"] = await run_resume(options, workdir)
    result["delivered"] = min(run["delivered"] for run in result["runs"].values())
    return result
