"""The real bot in a process of its own, so its CPU time and peak memory are measured alone.

The parent (the benchmark, with the fakes) starts `main` with multiprocessing ("spawn"); the bot
says "ready", the parent runs the workload, then says "stop"; the bot reports its CPU seconds
since "ready", its peak RSS and (for the resume run) how long `generator.resume()` took.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from typing import Any

import aiohttp

from bot.core import ImagineBot, point_discord_at
from bot.settings import Settings
from storage.database import Database

BOT_TOKEN = "bench-discord-bot-token-0123456789"


@dataclass(frozen=True)
class BotSpec:
    strategy: str  # polling | callback | baseline | resume
    settings: dict[str, Any] = field(default_factory=dict)
    time_scale: float = 1.0
    log_path: str = ""
    max_seconds: float = 600.0  # the longest the bot waits for "stop"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Not ru_maxrss: after fork and exec, Linux
    reports there the parent's size at the fork if that was larger."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: kB too


def main(conn: Connection, spec: BotSpec) -> None:
    """The process's entry point."""
    try:
        asyncio.run(_run(conn, spec))
    except Exception as exc:
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        conn.close()


def _configure_logging(path: str) -> None:
    handler: logging.Handler = logging.FileHandler(path) if path else logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


def _apply_strategy(bot: ImagineBot, spec: BotSpec) -> None:
    """Scale the time constants that are not settings; make the baseline the naive strategy."""
    scale = spec.time_scale
    config = bot.generator.config
    cadence = replace(
        config.cadence,
        overshoot=config.cadence.overshoot / scale,
        default_estimate=config.cadence.default_estimate / scale,
    )
    if spec.strategy == "baseline":
        # What most image bots do: poll every 3 s, edit the message on every poll.
        cadence = replace(cadence, fixed_interval=3.0 / scale)
        config = replace(config, edit_every_poll=True, progress_edit_interval=0.0)
    if spec.strategy != "resume":
        bot.generator.config = replace(config, cadence=cadence)


class _ResumeTimer:
    """Times the bot's own `generator.resume()` (called by setup_hook), until the resumed
    followers have all taken their first step and are waiting."""

    def __init__(self, bot: ImagineBot) -> None:
        self.seconds: float | None = None
        self.count = 0
        self._resume = bot.generator.resume
        bot.generator.resume = self._timed  # type: ignore[method-assign]

    async def _timed(self) -> int:
        started = time.perf_counter()
        self.count = await self._resume()
        for _ in range(3):  # each follower: start, then enter its first wait
            await asyncio.sleep(0)
        self.seconds = time.perf_counter() - started
        return self.count


async def _receive(conn: Connection, timeout: float) -> Any:  # noqa: ASYNC109
    loop = asyncio.get_running_loop()
    if not await loop.run_in_executor(None, conn.poll, timeout):
        return None
    return conn.recv()


async def _run(conn: Connection, spec: BotSpec) -> None:
    _configure_logging(spec.log_path)
    values = {"discord_token": BOT_TOKEN, **spec.settings}
    settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    point_discord_at(settings)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        Database.open(settings.database_path) as db,
    ):
        bot = ImagineBot(settings=settings, session=session, db=db, guild_ready_timeout=0.05)
        _apply_strategy(bot, spec)
        resume = _ResumeTimer(bot)
        started = time.perf_counter()
        runner = asyncio.create_task(bot.start(BOT_TOKEN))
        waiter = asyncio.create_task(bot.wait_until_ready())
        done, _ = await asyncio.wait(
            {runner, waiter}, timeout=120, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter not in done:
            waiter.cancel()
            if runner in done:
                runner.result()  # raises why the bot stopped
            raise TimeoutError("the bot did not become ready within 120 s")
        cpu_at_ready = cpu_seconds()
        conn.send(
            (
                "ready",
                {
                    "start_seconds": time.perf_counter() - started,
                    "resumed": resume.count,
                    "resume_seconds": resume.seconds,
                    "rss_mb_at_ready": peak_rss_mb(),
                    "web_port": bot.web.port if bot.web else None,
                },
            )
        )
        await _receive(conn, spec.max_seconds)  # "stop" (or the parent is gone)
        report = {
            "cpu_seconds": cpu_seconds() - cpu_at_ready,
            "peak_rss_mb": peak_rss_mb(),
            "still_running": bot.generator.running(),
        }
        await bot.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(runner, 30)
        conn.send(("report", report))
