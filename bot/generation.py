"""The life of a task: reserve, create at EvoLink, follow it, deliver the image or give back.

Plain Python: Discord is reached only through the `Presenter` protocol, EvoLink through the
client, the database through the stores. Every step is written down before and after it runs,
so a restart finds each task where it was and carries it on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from bot import render
from bot.budget import Budget
from bot.cadence import Cadence, CadenceConfig
from bot.errors import Unavailable
from bot.evolink import (
    EvoLinkAuthError,
    EvoLinkBadRequest,
    EvoLinkClient,
    EvoLinkError,
    EvoLinkProtocolError,
    EvoLinkQuotaError,
    EvoLinkUnknownOutcome,
    ImageRequest,
    ResultDownloadError,
    TaskSnapshot,
)
from bot.images import PreparedImage, fit_to_limit
from bot.pricing import to_milli
from storage.database import Database
from storage.tasks import NewTask, TaskRecord, TaskStatus, TaskStore

log = logging.getLogger(__name__)

MALFORMED_LIMIT = 3  # malformed answers in a row before a task is given up
UNAVAILABLE = "The bot can't generate images right now; the server owner has been told."
FAILURE_REASONS = {
    "content_policy_violation": "EvoLink refused this prompt under its content policy.",
    "generation_timeout": "EvoLink took too long to make the image.",
    "quota_exceeded": "EvoLink's quota is used up for now.",
    "resource_exhausted": "EvoLink is out of capacity right now; try again in a few minutes.",
    "upstream_error": "The image service behind EvoLink had an error.",
}


class DeliveryError(Exception):
    """Discord would not take a message."""


class DeliveryTooLarge(DeliveryError):
    """The file is over the upload limit (413 / 40005)."""


class DeliveryForbidden(DeliveryError):
    """The bot may not post or edit in that channel (50013)."""


class DeliveryDeferred(DeliveryError):
    """A progress edit was skipped so that an image could go first; it is shown later."""


class DeliveryTransient(DeliveryError):
    """Discord failed for now (5xx, network); worth trying again."""


class Presenter(Protocol):
    """How a task is shown to members. Implemented with discord.py in `bot.presenter`."""

    def attach(self, task_id: int, surface: object) -> None:
        """Use this live interaction (or message) to show the task, while it lasts."""

    def forget(self, task_id: int) -> None:
        """The task has ended: drop what was attached to it."""

    async def show_progress(self, task: TaskRecord, text: str) -> int:
        """Create or edit the task's progress message; returns its id."""

    async def deliver(self, task: TaskRecord, image: PreparedImage, text: str) -> int:
        """Post the finished image (exactly once); returns the result message's id."""

    async def show_end(self, task: TaskRecord, text: str) -> None:
        """Show that the task ended without an image."""

    async def tell_privately(self, task: TaskRecord, text: str) -> None:
        """Reach the member outside the channel (the bot may not post there)."""

    def parent_link(self, task: TaskRecord) -> str | None:
        """A link to the message an edit started from; None for a task that is not an edit."""


@dataclass(frozen=True, slots=True)
class GenerationConfig:
    model: str = "gpt-image-1.5"
    cadence: CadenceConfig = field(default_factory=CadenceConfig)
    progress_edit_interval: float = 3.0
    task_deadline: float = 900.0
    stall_timeout: float = 300.0
    max_result_bytes: int = 50 * 1024 * 1024
    unavailable_pause: float = 300.0
    delivery_attempts: int = 5
    stop_grace: float = 10.0
    edit_every_poll: bool = False  # the naive strategy (for comparison): show every poll


class _Stopping(Exception):
    """The bot is shutting down: leave the task as it is written, for the next start."""


@dataclass(slots=True)
class _Shown:
    text: str = ""
    at: float = float("-inf")


class Generator:
    """Runs every task from acceptance to a posted image (or a refund)."""

    def __init__(
        self,
        *,
        db: Database,
        budget: Budget,
        client: EvoLinkClient,
        presenter: Presenter,
        config: GenerationConfig,
        callback_url: Callable[[TaskRecord], str | None] = lambda task: None,
        gate: Callable[[NewTask], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.tasks = TaskStore(db)
        self.budget = budget
        self.client = client
        self.presenter = presenter
        self.config = config
        self.callback_url = callback_url
        self.gate = gate
        self.observers: list[Callable[[TaskRecord], Awaitable[None]]] = []
        self.clock = clock
        self._followers: dict[int, asyncio.Task[None]] = {}
        self._wake: dict[int, asyncio.Event] = {}
        self._shown: dict[int, _Shown] = {}
        self._stopping = asyncio.Event()
        self._paused_until = 0.0

    # ------------------------------------------------------------------ taking requests

    async def start(self, new: NewTask, surface: object | None = None) -> TaskRecord | None:
        """Reserve the credits, record the task, show it and start following it.

        Raises OverBudget or Unavailable before anything is recorded; returns None when the
        same interaction or message was already taken (a duplicate delivery).
        """
        if self._stopping.is_set():
            raise Unavailable("The bot is restarting; please try again in a moment.")
        if self.clock() < self._paused_until:
            raise Unavailable(UNAVAILABLE)
        if self.gate is not None:
            await self.gate(new)  # the server's own rules (channels, barred members, terms)
        async with self.db.transaction():
            if await self._is_duplicate(new):
                log.info("Ignoring a request that was already taken: %s", new)
                return None
            await self.budget.ensure_affordable(new.guild_id, new.user_id, new.estimate)
            task = await self.tasks.insert(new, self.clock())
            await self.budget.reserve(task)
        if surface is not None:
            self.presenter.attach(task.id, surface)
        await self._show_progress(task, force=True)
        self._spawn(task, fresh=True)
        return task

    async def _is_duplicate(self, new: NewTask) -> bool:
        if new.interaction_id is not None and await self.tasks.exists_for_interaction(
            new.interaction_id
        ):
            return True
        return new.source_message_id is not None and await self.tasks.exists_for_source_message(
            new.source_message_id
        )

    async def resume(self) -> int:
        """Carry on every task a previous run left unfinished; returns how many."""
        unfinished = await self.tasks.unfinished()
        for task in unfinished:
            self._spawn(task)
        if unfinished:
            log.info("Resuming %d unfinished task(s)", len(unfinished))
        return len(unfinished)

    def running(self) -> int:
        return len(self._followers)

    def wake(self, task_id: int) -> None:
        """A hint (EvoLink's callback) that the task may have changed: poll it now."""
        event = self._wake.get(task_id)
        if event is not None:
            event.set()

    async def cancel(self, task: TaskRecord) -> bool:
        """Stop following a task and give its credits back. False if it had already ended."""
        follower = self._followers.pop(task.id, None)
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        fresh = await self.tasks.get(task.id)
        if fresh is None or fresh.status not in (
            TaskStatus.SUBMITTING,
            TaskStatus.PENDING,
            TaskStatus.PROCESSING,
        ):
            if fresh is not None and fresh.status is TaskStatus.COMPLETED:
                self._spawn(fresh)  # too late to cancel: it is being delivered
            return False
        await self._end(fresh, TaskStatus.CANCELLED, "Cancelled.", render.cancelled_text(fresh))
        return True

    async def stop(self) -> None:
        """Take no new requests; let followers reach a safe point, then stop them."""
        self._stopping.set()
        for event in self._wake.values():
            event.set()
        followers = list(self._followers.values())
        if followers:
            _, pending = await asyncio.wait(followers, timeout=self.config.stop_grace)
            for follower in pending:
                follower.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # ------------------------------------------------------------------ following a task

    def _spawn(self, task: TaskRecord, *, fresh: bool = False) -> None:
        if task.id in self._followers:
            return
        self._wake[task.id] = asyncio.Event()
        follower = asyncio.create_task(self._follow(task, fresh), name=f"task-{task.id}")
        self._followers[task.id] = follower

    async def _follow(self, task: TaskRecord, fresh: bool) -> None:
        """Carry the task to its end; `fresh` when this run accepted it (else: resumed)."""
        try:
            if task.status is TaskStatus.SUBMITTING:
                await (self._submit(task) if fresh else self._interrupted(task))
            if task.status in (TaskStatus.PENDING, TaskStatus.PROCESSING):
                await self._track(task)
            if task.status is TaskStatus.COMPLETED:
                await self._deliver(task)
        except _Stopping:
            log.debug("Task %d left for the next start", task.id)
        except Exception:
            error_id = uuid.uuid4().hex[:8]
            log.exception("Task %d failed unexpectedly (error id %s)", task.id, error_id)
            with contextlib.suppress(Exception):
                await self._fail(task, f"Something went wrong on our side (error id {error_id}).")
        finally:
            if asyncio.current_task() is self._followers.get(task.id):
                del self._followers[task.id]
            self._wake.pop(task.id, None)
            if task.status not in (TaskStatus.PENDING, TaskStatus.PROCESSING, TaskStatus.COMPLETED):
                self._shown.pop(task.id, None)
                self.presenter.forget(task.id)

    async def _interrupted(self, task: TaskRecord) -> None:
        # Written by a run that died around the create call: EvoLink may or may not have the
        # task, and there is no way to ask. Give the credits back rather than risk a charge.
        log.warning(
            "Task %d was interrupted around its create call; EvoLink may have started it "
            "(check the EvoLink dashboard). Its credits were released.",
            task.id,
        )
        reason = (
            "A restart interrupted this request before EvoLink confirmed it; please run it again."
        )
        await self._end(task, TaskStatus.INTERRUPTED, reason, render.failure_text(task, reason))

    async def _submit(self, task: TaskRecord) -> None:
        request = ImageRequest(
            model=task.model,
            prompt=task.prompt,
            size=task.size,
            quality=task.quality,
            image_urls=task.reference_urls,
            callback_url=self.callback_url(task),
        )
        try:
            snapshot = await self.client.create_task(request)
        except EvoLinkUnknownOutcome:
            log.warning(
                "Task %d: EvoLink did not answer the create call; it may have started the "
                "image anyway. The member's credits were released.",
                task.id,
            )
            await self._fail(task, "EvoLink did not answer in time; please try again.")
            return
        except (EvoLinkAuthError, EvoLinkQuotaError) as exc:
            self._pause(exc)
            await self._fail(task, UNAVAILABLE)
            return
        except EvoLinkBadRequest as exc:
            await self._fail(task, f"EvoLink refused the request: {exc.message}")
            return
        except EvoLinkError as exc:
            log.warning("Task %d: create failed: %s", task.id, exc)
            await self._fail(task, "EvoLink is busy right now; please try again in a few minutes.")
            return
        cost = (
            to_milli(snapshot.credits_reserved) if snapshot.credits_reserved is not None else None
        )
        async with self.db.transaction():
            await self.tasks.update(
                task,
                self.clock(),
                evolink_task_id=snapshot.id,
                status=_status_of(snapshot),
                progress=snapshot.progress,
                estimated_time=snapshot.estimated_time,
                cost=cost if cost is not None else task.estimate,
                submitted_at=self.clock(),
            )
            if cost is not None:
                await self.budget.adjust(task, cost)
        log.info("Task %d created at EvoLink as %s", task.id, snapshot.id)

    async def _track(self, task: TaskRecord) -> None:
        """Poll the task until it ends; on completion record its result for delivery."""
        assert task.evolink_task_id is not None
        cfg = self.config
        started = task.submitted_at or task.created_at
        cadence = Cadence(
            cfg.cadence,
            estimated_time=task.estimated_time,
            callback=self.callback_url(task) is not None,
        )
        last_change = max(task.updated_at, started)
        failures = 0
        await self._show_queued(task)
        while True:
            now = self.clock()
            if now - started > cfg.task_deadline:
                await self._fail(task, "EvoLink took far too long to make the image.")
                return
            if now - last_change > cfg.stall_timeout:
                await self._fail(task, "EvoLink stopped making progress on the image.")
                return
            await self._sleep(task.id, self._poll_delay(cadence, started, last_change, failures))
            try:
                snapshot = await self.client.get_task(task.evolink_task_id)
            except EvoLinkBadRequest as exc:
                await self._fail(task, f"EvoLink lost track of the image ({exc.message}).")
                return
            except EvoLinkProtocolError as exc:
                failures += 1
                log.warning("Task %d: EvoLink sent a malformed answer: %s", task.id, exc)
                if failures >= MALFORMED_LIMIT:
                    await self._fail(task, "EvoLink kept sending answers the bot cannot read.")
                    return
                continue
            except EvoLinkError as exc:
                failures += 1
                if isinstance(exc, (EvoLinkAuthError, EvoLinkQuotaError)):
                    self._pause(exc)
                log.warning("Task %d: polling failed (%s); will try again", task.id, exc)
                continue
            failures = 0
            now = self.clock()
            cadence.observe(now - started, snapshot.progress)
            if snapshot.status in ("completed", "failed"):
                await self._finished(task, snapshot)
                return
            changed = await self._record_progress(task, snapshot)
            if changed:
                last_change = now
            if cfg.edit_every_poll:  # the naive strategy, for comparison: show every poll
                await self._show_progress(task, force=True)
            elif changed:
                end, _ = cadence.predicted_end()
                # Skip an edit the result would replace within moments anyway.
                if end - (now - started) > cfg.progress_edit_interval:
                    await self._show_progress(task)

    def _poll_delay(
        self, cadence: Cadence, started: float, last_change: float, failures: int
    ) -> float:
        """The cadence's wait, backed off after failures, and never past the deadline or the
        stall limit (so they are enforced on time)."""
        cfg = self.config
        now = self.clock()
        delay = cadence.next_delay(now - started)
        if failures:
            backoff = cfg.cadence.min_interval * 2.0**failures
            delay = max(delay, min(backoff, cfg.cadence.max_interval))
        to_deadline = cfg.task_deadline - (now - started)
        to_stall = cfg.stall_timeout - (now - last_change)
        return min(delay, max(0.0, min(to_deadline, to_stall)) + 0.01)

    async def _show_queued(self, task: TaskRecord) -> None:
        """Show the create's answer ("Queued") once an edit is allowed, not at the first poll
        (far off, or never before the callback). A callback meanwhile stays set."""
        shown = self._shown.get(task.id)
        if shown is None or self.config.edit_every_poll:
            return
        if shown.text != render.progress_text(task):
            wait = shown.at + self.config.progress_edit_interval - self.clock()
            await self._sleep(task.id, wait, wakeable=False)
            await self._show_progress(task, force=True)

    async def _record_progress(self, task: TaskRecord, snapshot: TaskSnapshot) -> bool:
        """Write a new status or progress; returns whether anything changed."""
        status = _status_of(snapshot)
        if (status, snapshot.progress) == (task.status, task.progress):
            return False
        await self.tasks.update(task, self.clock(), status=status, progress=snapshot.progress)
        return True

    async def _finished(self, task: TaskRecord, snapshot: TaskSnapshot) -> None:
        """EvoLink ended the task: keep its result for delivery, or fail with its reason."""
        if snapshot.status == "failed":
            code = snapshot.error_code or ""
            detail = snapshot.error_message or code or "no reason given"
            fallback = f"EvoLink could not make the image ({detail})."
            await self._fail(task, FAILURE_REASONS.get(code, fallback))
        elif not snapshot.results:
            await self._fail(task, "EvoLink finished without an image.")
        else:
            now = self.clock()
            await self.tasks.update(
                task,
                now,
                status=TaskStatus.COMPLETED,
                progress=100,
                result_url=snapshot.results[0],
                completed_at=now,
            )

    async def _deliver(self, task: TaskRecord) -> None:
        assert task.result_url is not None
        try:
            image = await self.client.download_result(
                task.result_url, max_bytes=self.config.max_result_bytes
            )
        except (ResultDownloadError, EvoLinkError) as exc:
            log.warning("Task %d: result download failed: %s", task.id, exc)
            await self._fail(task, f"The finished image could not be downloaded ({exc}).")
            return
        limit = task.upload_limit
        for attempt in range(1, self.config.delivery_attempts + 1):
            prepared = await fit_to_limit(
                image.data, image.content_type, limit, f"imagine-{task.id}"
            )
            text = render.result_text(
                task, parent_link=self.presenter.parent_link(task), reencoded=prepared.reencoded
            )
            try:
                message_id = await self.presenter.deliver(task, prepared, text)
            except DeliveryTooLarge:
                limit = len(prepared.data) * 3 // 4
                log.info("Task %d: upload too large, re-encoding under %d bytes", task.id, limit)
                continue
            except DeliveryForbidden:
                log.warning(
                    "Task %d: the bot may not post in channel %d; credits released",
                    task.id,
                    task.channel_id,
                )
                with contextlib.suppress(DeliveryError):
                    await self.presenter.tell_privately(
                        task,
                        "I could not post your image: I lack permission in that channel. "
                        "Your credits were not spent.",
                    )
                await self._record_end(task, TaskStatus.FAILED, "Missing permission to post.")
                return
            except DeliveryTransient as exc:
                log.warning("Task %d: delivery failed (%s), attempt %d", task.id, exc, attempt)
                await self._sleep(task.id, min(2.0**attempt, 30.0), wakeable=False)
                continue
            async with self.db.transaction():
                await self.tasks.update(
                    task,
                    self.clock(),
                    status=TaskStatus.POSTED,
                    result_message_id=message_id,
                    ended_at=self.clock(),
                )
                await self.budget.settle(task)
            log.info("Task %d posted as message %d", task.id, message_id)
            await self._notify(task)
            return
        await self._fail(task, "Discord would not take the image; please try again.")

    # ------------------------------------------------------------------ ending and showing

    async def _fail(self, task: TaskRecord, reason: str) -> None:
        await self._end(task, TaskStatus.FAILED, reason, render.failure_text(task, reason))

    async def _end(self, task: TaskRecord, status: TaskStatus, reason: str, text: str) -> None:
        """Tell the member first (an edit is safe to repeat), then record the end and refund."""
        try:
            await self.presenter.show_end(task, text)
        except DeliveryForbidden:
            with contextlib.suppress(DeliveryError):
                await self.presenter.tell_privately(task, text)
        except DeliveryError as exc:
            log.warning("Task %d: could not show its end: %s", task.id, exc)
        await self._record_end(task, status, reason)

    async def _record_end(self, task: TaskRecord, status: TaskStatus, reason: str) -> None:
        async with self.db.transaction():
            await self.budget.release(task)
            await self.tasks.update(
                task, self.clock(), status=status, error=reason, ended_at=self.clock()
            )
        log.info("Task %d ended as %s: %s", task.id, status.value, reason)
        await self._notify(task)

    async def _notify(self, task: TaskRecord) -> None:
        """Tell the observers (e.g. the server's log channel) that a task has ended."""
        for observer in self.observers:
            try:
                await observer(task)
            except Exception:
                log.exception("Task %d: an observer failed", task.id)

    async def _show_progress(self, task: TaskRecord, *, force: bool = False) -> None:
        shown = self._shown.setdefault(task.id, _Shown())
        text = render.progress_text(task)
        now = self.clock()
        if not force and (
            text == shown.text or now - shown.at < self.config.progress_edit_interval
        ):
            return
        try:
            message_id = await self.presenter.show_progress(task, text)
        except DeliveryError as exc:
            log.info("Task %d: progress not shown: %s", task.id, exc)
            return
        # Spaced from when Discord took the edit: a slow answer must not bring the next one near.
        shown.text, shown.at = text, self.clock()
        if message_id != task.progress_message_id:
            await self.tasks.update(task, now, progress_message_id=message_id)

    async def _sleep(self, task_id: int, seconds: float, *, wakeable: bool = True) -> None:
        """Wait, waking early for a callback; raise _Stopping when the bot shuts down."""
        if self._stopping.is_set():
            raise _Stopping
        event = self._wake.get(task_id) if wakeable else None
        waiter = event.wait() if event is not None else self._stopping.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter, timeout=seconds)
        if event is not None:
            event.clear()
        if self._stopping.is_set():
            raise _Stopping

    def _pause(self, exc: EvoLinkError) -> None:
        """Stop calling EvoLink for a while, and tell the operator what to fix."""
        first = self.clock() >= self._paused_until
        self._paused_until = self.clock() + self.config.unavailable_pause
        if not first:
            return
        if isinstance(exc, EvoLinkQuotaError):
            log.error(
                "EvoLink says the account is out of credit (402). Top it up%s; new requests "
                "are refused for %.0f s.",
                f" at {exc.fallback_suggestion}" if exc.fallback_suggestion else "",
                self.config.unavailable_pause,
            )
        else:
            log.error(
                "EvoLink refused the API key (%s %s). Check EVOLINK_API_KEY and the key's "
                "access to model %s; new requests are refused for %.0f s.",
                exc.status,
                exc.type,
                self.config.model,
                self.config.unavailable_pause,
            )


def _status_of(snapshot: TaskSnapshot) -> TaskStatus:
    return TaskStatus.PROCESSING if snapshot.status == "processing" else TaskStatus.PENDING
