"""Community controls: who may make images in a server, where, and about what.

`CommunityRules` is the Generator's gate, run on every request before anything is reserved
(the /imagine command, replies, buttons alike): barred members, the channels where the bot may
be used (by default every channel), and the server's blocked terms. It also makes the
moderators' changes, each recorded in the moderation log. `ModerationLog` posts every ended
task, every refusal and every moderator change to the server's log channel, when it has one.

Blocked terms, matched against the prompt after NFKC normalisation, case folding, removal of
invisible characters and collapsing of white space:

- a word or phrase (`fox`, `red fox`): whole words, in that order, whatever the case or the
  punctuation between them; `fox` blocks "Fox!" but not "foxes";
- the same with `*` wildcards, each standing for any letters inside one word: `fox*` blocks
  "foxes", `*fox*` blocks "firefoxes";
- `re:` then a Python regular expression (at most 100 characters), searched case-insensitively
  anywhere in the prompt. So that no pattern can stall the bot, a pattern may repeat without
  bound (`*`, `+`, `{n,}`) at most once, and only a single character, `.` or a `[class]`; other
  repetitions must stay small; backreferences, lookarounds, named groups and inline flags are
  refused. At most `MAX_PATTERNS` per server.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp
import discord
from discord.utils import escape_markdown, escape_mentions

from bot.errors import InvalidRequest, NotAllowed
from bot.generation import FAILURE_REASONS
from bot.presenter import message_link
from bot.pricing import format_credits
from bot.render import shown_prompt
from storage.community import CommunityStore
from storage.database import Database
from storage.tasks import NewTask, TaskRecord, TaskStatus

log = logging.getLogger(__name__)

MAX_TERMS = 200  # blocked terms per server
MAX_PATTERNS = 10  # of which `re:` patterns
MAX_TERM_LENGTH = 100
PATTERN_PREFIX = "re:"
SCAN_LIMIT = 2500  # characters of the normalised prompt that patterns search
PATTERN_BUDGET = 4 * SCAN_LIMIT * SCAN_LIMIT  # worst-case steps of one pattern (~0.1 s)
LOG_PROMPT_SHOWN = 200  # characters of the prompt shown in the log channel
LOG_SEND_TIMEOUT = 30.0
CHANNELS_NAMED = 5  # allowed channels named in a refusal

BARRED = "A moderator has barred you from making images in this server."
BLOCKED_TERM = (
    "This prompt can't be used here: it contains something this server's moderators have "
    "blocked. Please rephrase it."
)
NO_MENTIONS = discord.AllowedMentions.none()


# ---------------------------------------------------------------------- refusals


class Refusal(NotAllowed):
    """A request the server's rules refuse; `rule` (and `term`) say why, for the log."""

    def __init__(self, user_message: str, rule: str, term: str | None = None) -> None:
        super().__init__(user_message)
        self.rule = rule
        self.term = term


def channel_refusal(allowed: Sequence[int]) -> str:
    """What a member reads when they ask in a channel where the bot is not allowed."""
    named = [f"<#{channel_id}>" for channel_id in allowed[:CHANNELS_NAMED]]
    if len(allowed) > CHANNELS_NAMED:
        where = ", ".join(named) + " or another allowed channel"
    elif len(named) > 1:
        where = ", ".join(named[:-1]) + " or " + named[-1]
    else:
        where = named[0]
    return f"Images can't be made in this channel. Try {where}."


# ---------------------------------------------------------------------- matching prompts

_INVISIBLE = dict.fromkeys([0x00AD, 0x180E, 0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF])


def normalize(text: str) -> str:
    """Text as terms see it: NFKC, case-folded, no invisible characters, single spaces."""
    folded = unicodedata.normalize("NFKC", text).translate(_INVISIBLE).casefold()
    return " ".join(folded.split())


def _is_word_char(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LNM"  # letters, digits, marks; "_" separates


def split_words(text: str, *, wildcard: bool = False) -> list[str]:
    """The words of normalised text: runs of letters, digits and marks (and `*` in terms)."""
    words: list[str] = []
    start: int | None = None
    for index, ch in enumerate(text):
        inside = _is_word_char(ch) or (wildcard and ch == "*")
        if inside and start is None:
            start = index
        elif not inside and start is not None:
            words.append(text[start:index])
            start = None
    if start is not None:
        words.append(text[start:])
    return words


@dataclass(frozen=True, slots=True)
class Prompt:
    """A prompt made ready for matching: normalised, split into words, words indexed."""

    text: str
    words: tuple[str, ...]
    positions: dict[str, list[int]] = field(hash=False, compare=False)

    @classmethod
    def of(cls, prompt: str) -> Prompt:
        text = normalize(prompt)
        words = tuple(split_words(text))
        positions: dict[str, list[int]] = {}
        for index, word in enumerate(words):
            positions.setdefault(word, []).append(index)
        return cls(text, words, positions)


def _glob(pattern: str, word: str) -> bool:
    """`*` stands for any run of characters (linear: each literal piece is found once)."""
    if "*" not in pattern:
        return pattern == word
    first, *middle, last = pattern.split("*")
    if len(word) < len(first) + len(last) or not (word.startswith(first) and word.endswith(last)):
        return False
    position, end = len(first), len(word) - len(last)
    for piece in middle:
        found = word.find(piece, position, end)
        if found < 0:
            return False
        position = found + len(piece)
    return True


@dataclass(frozen=True, slots=True)
class Term:
    """A blocked term, checked and ready to match. `text` is how it is stored and shown."""

    text: str
    words: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None

    @property
    def is_pattern(self) -> bool:
        return self.pattern is not None

    def matches(self, prompt: Prompt) -> bool:
        if self.pattern is not None:
            return self.pattern.search(prompt.text, 0, SCAN_LIMIT) is not None
        return self._matches_words(prompt)

    def _matches_words(self, prompt: Prompt) -> bool:
        words = self.words
        # Start only where an exact word of the term sits, when it has one.
        exact = next((i for i, word in enumerate(words) if "*" not in word), None)
        if exact is None:
            starts: Sequence[int] = range(len(prompt.words) - len(words) + 1)
        else:
            starts = [p - exact for p in prompt.positions.get(words[exact], ())]
        for start in starts:
            if start < 0 or start + len(words) > len(prompt.words):
                continue
            if all(_glob(word, prompt.words[start + i]) for i, word in enumerate(words)):
                return True
        return False


_TERM_PUNCTUATION = frozenset("*'’-_")


def _is_plain_term(text: str) -> bool:
    return all(_is_word_char(ch) or ch.isspace() or ch in _TERM_PUNCTUATION for ch in text)


@functools.lru_cache(maxsize=2048)
def parse_term(raw: str) -> Term:
    """A moderator's term, checked; InvalidRequest says what is wrong with it."""
    text = raw.strip()
    if text.casefold().startswith(PATTERN_PREFIX):
        return _parse_pattern(text[len(PATTERN_PREFIX) :].strip())
    if not text:
        raise InvalidRequest("Give the word, phrase or `re:` pattern to block.")
    if len(text) > MAX_TERM_LENGTH:
        raise InvalidRequest(f"A blocked term can be at most {MAX_TERM_LENGTH} characters long.")
    if not _is_plain_term(text):
        raise InvalidRequest(
            "A blocked term is made of words (letters and digits), spaces and `*` wildcards. "
            "For anything else, write a pattern: `re:` followed by a regular expression."
        )
    canonical = normalize(text)
    words = tuple(split_words(canonical, wildcard=True))
    if not words or any(not word.strip("*") for word in words):
        raise InvalidRequest(
            "Each word of a blocked term needs at least one letter or digit besides `*`."
        )
    return Term(canonical, words=words)


def _parse_pattern(pattern: str) -> Term:
    if not pattern:
        raise InvalidRequest("Write the regular expression after `re:`.")
    if len(pattern) > MAX_TERM_LENGTH:
        raise InvalidRequest(f"A pattern can be at most {MAX_TERM_LENGTH} characters long.")
    try:
        compiled = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise InvalidRequest(f"That is not a valid regular expression: {exc.msg}.") from None
    cost = _PatternCost(pattern).total()
    if cost * SCAN_LIMIT > PATTERN_BUDGET:
        raise InvalidRequest(
            "That pattern could be too slow to check. Repeat without bound (`*`, `+`, `{n,}`) "
            "at most once, and keep other repetitions small."
        )
    return Term(PATTERN_PREFIX + pattern, pattern=compiled)


class _PatternCost:
    """The most paths a pattern can try from one position of the prompt (a safe over-estimate).

    Works on the safe subset only: single characters, `.`, `[classes]`, escapes, `(...)` and
    `(?:...)` groups, `|`, anchors and quantifiers. Sequences multiply, alternatives add, a
    bounded repetition counts its choices, an unbounded one counts as long as the text.
    """

    _QUANTIFIER = re.compile(r"\{(\d*)(,(\d*))?\}")
    _ESCAPES = frozenset("wWdDsSbBAZnt")
    _ZERO_WIDTH = frozenset("bBAZ")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.position = 0

    def total(self) -> int:
        cost = self._alternatives()
        if self.position != len(self.pattern):  # an unbalanced ")"; re.compile catches it
            raise InvalidRequest("That is not a valid regular expression.")
        return cost

    def _peek(self) -> str:
        return self.pattern[self.position] if self.position < len(self.pattern) else ""

    def _alternatives(self) -> int:
        cost = self._sequence()
        while self._peek() == "|":
            self.position += 1
            cost += self._sequence()
        return cost

    def _sequence(self) -> int:
        cost = 1
        while self._peek() not in ("", "|", ")"):
            atom, single = self._atom()
            cost *= self._repeat(atom, single)
        return cost

    def _atom(self) -> tuple[int, bool]:
        """(paths through the atom, whether it matches exactly one character)."""
        pattern, ch = self.pattern, self._peek()
        if ch == "(":
            if pattern.startswith("(?:", self.position):
                self.position += 3
            elif pattern.startswith("(?", self.position):
                raise InvalidRequest(
                    "Patterns can't use lookarounds, named groups, inline flags or "
                    "backreferences; plain `( )` and `(?: )` groups are fine."
                )
            else:
                self.position += 1
            inner = self._alternatives()
            self.position += 1  # the ")"
            return inner, False
        if ch == "[":
            self.position += 1
            if self._peek() == "^":
                self.position += 1
            if self._peek() == "]":
                self.position += 1
            while self._peek() not in ("", "]"):
                self.position += 2 if self._peek() == "\\" else 1
            self.position += 1
            return 1, True
        if ch == "\\":
            escaped = pattern[self.position + 1 : self.position + 2]
            self.position += 2
            if escaped.isdigit():
                raise InvalidRequest("Patterns can't use backreferences like `\\1`.")
            if escaped.isalpha() and escaped not in self._ESCAPES:
                raise InvalidRequest(
                    "Patterns may use only these letter escapes: "
                    "`\\w \\W \\d \\D \\s \\S \\b \\B \\A \\Z \\n \\t`."
                )
            return 1, escaped not in self._ZERO_WIDTH
        self.position += 1
        return 1, ch not in ("^", "$")

    def _repeat(self, atom: int, single: bool) -> int:
        bounds = self._quantifier()
        if bounds is None:
            return atom
        low, high = bounds
        if self._peek() in ("?", "+"):  # lazy or possessive: the same paths, at most
            self.position += 1
        if high is None:
            if not single:
                raise InvalidRequest(
                    "In a pattern, `*`, `+` and `{n,}` may follow only a single character, "
                    "`.` or a `[class]`, not a group."
                )
            return SCAN_LIMIT
        choices = high - low + 1
        return choices if single else choices * atom ** max(high, 1)

    def _quantifier(self) -> tuple[int, int | None] | None:
        ch = self._peek()
        if ch in ("*", "+", "?"):
            self.position += 1
            return {"*": (0, None), "+": (1, None), "?": (0, 1)}[ch]
        if ch == "{":
            found = self._QUANTIFIER.match(self.pattern, self.position)
            if found is None or found.group(0) == "{}":
                return None  # a literal "{"; the atom itself counts below
            self.position = found.end()
            low = int(found.group(1) or 0)
            if found.group(2) is None:
                return low, low
            return low, int(found.group(3)) if found.group(3) else None
        return None


# ---------------------------------------------------------------------- the rules


class CommunityRules:
    """The server's own rules, and the moderators' changes to them. No Discord here."""

    def __init__(
        self,
        db: Database,
        *,
        thread_parent: Callable[[int], int | None] = lambda channel_id: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.store = CommunityStore(db)
        self.thread_parent = thread_parent
        self.clock = clock
        self.refusal_listeners: list[Callable[[NewTask, Refusal], None]] = []

    # ------------------------------------------------------------------ the gate

    async def gate(self, new: NewTask) -> None:
        """The Generator's gate: raise a Refusal (a NotAllowed) if the rules say no."""
        try:
            await self.check(new)
        except Refusal as refusal:
            for listener in self.refusal_listeners:
                try:
                    listener(new, refusal)
                except Exception:
                    log.exception("A refusal listener failed")
            raise

    async def check(self, new: NewTask) -> None:
        if await self.store.is_barred(new.guild_id, new.user_id):
            raise Refusal(BARRED, "barred member")
        allowed = await self.store.allowed_channels(new.guild_id)
        if allowed and not self._is_allowed(new.channel_id, allowed):
            raise Refusal(channel_refusal(allowed), "channel not allowed")
        term = await self.blocked_term_in(new.guild_id, new.prompt)
        if term is not None:
            raise Refusal(BLOCKED_TERM, "blocked term", term.text)

    def _is_allowed(self, channel_id: int, allowed: Sequence[int]) -> bool:
        if channel_id in allowed:
            return True
        parent = self.thread_parent(channel_id)  # a thread counts as its channel
        return parent is not None and parent in allowed

    async def blocked_term_in(self, guild_id: int, prompt: str) -> Term | None:
        """The first blocked term the prompt contains, if any."""
        stored = await self.store.blocked_terms(guild_id)
        if not stored:
            return None
        ready = Prompt.of(prompt)
        for row in stored:
            try:
                term = parse_term(row.term)
            except InvalidRequest:
                log.warning("Guild %d: skipping a stored term that no longer parses", guild_id)
                continue
            if term.matches(ready):
                return term
        return None

    # ------------------------------------------------------------------ moderators' changes

    async def terms(self, guild_id: int) -> list[str]:
        return [row.term for row in await self.store.blocked_terms(guild_id)]

    async def add_term(self, guild_id: int, actor_id: int, raw: str) -> tuple[Term, bool]:
        """Block a term; the term as stored, and False if it was blocked already."""
        term = parse_term(raw)
        async with self.db.transaction():
            stored = await self.store.blocked_terms(guild_id)
            if any(row.term == term.text for row in stored):
                return term, False
            if len(stored) >= MAX_TERMS:
                raise InvalidRequest(
                    f"This server already has {MAX_TERMS} blocked terms, the most there can be; "
                    "remove some first."
                )
            patterns = sum(row.term.startswith(PATTERN_PREFIX) for row in stored)
            if term.is_pattern and patterns >= MAX_PATTERNS:
                raise InvalidRequest(
                    f"This server already has {MAX_PATTERNS} `re:` patterns, the most there can "
                    "be; remove one first, or use words with `*` wildcards."
                )
            await self.store.add_blocked_term(guild_id, term.text, actor_id, self.clock())
            await self._record(guild_id, actor_id, "term_add", term.text)
        return term, True

    async def remove_term(self, guild_id: int, actor_id: int, raw: str) -> tuple[str, bool]:
        """Unblock a term (written as when it was added); False if it was not blocked."""
        text = raw.strip()
        with contextlib.suppress(InvalidRequest):  # a term stored by an older, laxer version
            text = parse_term(raw).text
        async with self.db.transaction():
            removed = await self.store.remove_blocked_term(guild_id, text)
            if removed:
                await self._record(guild_id, actor_id, "term_remove", text)
        return text, removed

    async def allowed_channels(self, guild_id: int) -> list[int]:
        return await self.store.allowed_channels(guild_id)

    async def allow_channel(self, guild_id: int, actor_id: int, channel_id: int) -> bool:
        async with self.db.transaction():
            added = await self.store.allow_channel(guild_id, channel_id)
            if added:
                await self._record(guild_id, actor_id, "channel_allow", str(channel_id))
        return added

    async def disallow_channel(self, guild_id: int, actor_id: int, channel_id: int) -> bool:
        """Take a channel off the allowed ones. The last one cannot go this way: an empty
        list means every channel, the opposite of what the moderator asked."""
        async with self.db.transaction():
            allowed = await self.store.allowed_channels(guild_id)
            if channel_id not in allowed:
                return False
            if allowed == [channel_id]:
                raise InvalidRequest(
                    f"<#{channel_id}> is the only channel where the bot may be used. Allow "
                    "another channel first, or use `/imagine-admin channels everywhere`."
                )
            await self.store.disallow_channel(guild_id, channel_id)
            await self._record(guild_id, actor_id, "channel_disallow", str(channel_id))
        return True

    async def allow_everywhere(self, guild_id: int, actor_id: int) -> bool:
        async with self.db.transaction():
            cleared = await self.store.clear_allowed_channels(guild_id)
            if cleared:
                await self._record(guild_id, actor_id, "channels_everywhere", f"{cleared} cleared")
        return cleared > 0

    async def barred(self, guild_id: int) -> list[int]:
        return await self.store.barred_members(guild_id)

    async def bar(self, guild_id: int, actor_id: int, user_id: int, reason: str = "") -> bool:
        async with self.db.transaction():
            added = await self.store.bar_member(guild_id, user_id)
            if added:
                detail = f"{user_id}: {reason}" if reason else str(user_id)
                await self._record(guild_id, actor_id, "member_bar", detail)
        return added

    async def unbar(self, guild_id: int, actor_id: int, user_id: int) -> bool:
        async with self.db.transaction():
            removed = await self.store.unbar_member(guild_id, user_id)
            if removed:
                await self._record(guild_id, actor_id, "member_unbar", str(user_id))
        return removed

    async def log_channel(self, guild_id: int) -> int | None:
        return (await self.store.config(guild_id)).log_channel_id

    async def set_log_channel(
        self, guild_id: int, actor_id: int, channel_id: int | None
    ) -> int | None:
        """Set (or with None clear) the log channel; returns the one it replaces."""
        async with self.db.transaction():
            previous = await self.log_channel(guild_id)
            if previous != channel_id:
                await self.store.set_log_channel(guild_id, channel_id)
                action = "log_channel_clear" if channel_id is None else "log_channel_set"
                await self._record(guild_id, actor_id, action, str(channel_id or previous))
        return previous

    async def _record(self, guild_id: int, actor_id: int, action: str, detail: str) -> None:
        await self.store.record_action(guild_id, actor_id, action, detail, self.clock())


def thread_parent_in(client: discord.Client) -> Callable[[int], int | None]:
    """The parent channel of a thread the client knows of (a thread counts as its channel)."""

    def parent(channel_id: int) -> int | None:
        channel = client.get_channel(channel_id)
        return channel.parent_id if isinstance(channel, discord.Thread) else None

    return parent


# ---------------------------------------------------------------------- the log channel


def quoted_term(term: str) -> str:
    """A term shown to moderators exactly as stored (inline code when it can be)."""
    if "`" not in term:
        return f"`{term}`"
    return escape_mentions(escape_markdown(term))


def hidden_term(term: str) -> str:
    """A term in the log channel: behind a spoiler, since others may read that channel."""
    return f"||{quoted_term(term)}||"


_ENDS = {
    TaskStatus.POSTED: "✅ **Posted**",
    TaskStatus.FAILED: "❌ **Failed**",
    TaskStatus.CANCELLED: "⏹️ **Cancelled**",
    TaskStatus.INTERRUPTED: "⚠️ **Interrupted**",
}
CONTENT_POLICY = FAILURE_REASONS["content_policy_violation"]


def task_line(task: TaskRecord) -> str:
    """One ended request, for the log channel: status, who, where, cost, link, prompt."""
    label = _ENDS.get(task.status, f"**{task.status.value}**")
    if task.status is TaskStatus.FAILED and task.error == CONTENT_POLICY:
        label = "⛔ **Refused by EvoLink's content policy**"
    if task.is_edit:
        label += " (edit)"
    cost = (
        f"{format_credits(task.charged)} credits"
        if task.status is TaskStatus.POSTED
        else "no charge"
    )
    parts = [label, f"<@{task.user_id}> in <#{task.channel_id}>", cost]
    message_id = task.result_message_id or task.progress_message_id
    if message_id is not None:
        parts.append(message_link(task.guild_id, task.channel_id, message_id))
    lines = [" · ".join(parts), f"> {shown_prompt(task.prompt, LOG_PROMPT_SHOWN)}"]
    if task.error and task.status is not TaskStatus.POSTED and task.error != CONTENT_POLICY:
        lines.append(f"Reason: {shown_prompt(task.error, LOG_PROMPT_SHOWN)}")
    return "\n".join(lines)


def refusal_line(new: NewTask, refusal: Refusal) -> str:
    """A request the server's rules refused, for the log channel."""
    why = refusal.rule
    if refusal.term is not None:
        why += f" {hidden_term(refusal.term)}"
    return (
        f"🚫 **Refused** ({why}) · <@{new.user_id}> in <#{new.channel_id}>\n"
        f"> {shown_prompt(new.prompt, LOG_PROMPT_SHOWN)}"
    )


def change_line(actor_id: int, what: str) -> str:
    """A moderator's change, for the log channel."""
    return f"🛠️ <@{actor_id}> {what}"


class ModerationLog:
    """Posts to each server's log channel, never pinging, never holding up or failing a task.

    Every post runs in the background with a time limit; a failure is logged and dropped.
    """

    def __init__(
        self,
        client: discord.Client,
        store: CommunityStore,
        *,
        send_timeout: float = LOG_SEND_TIMEOUT,
    ) -> None:
        self.client = client
        self.store = store
        self.send_timeout = send_timeout
        self._pending: set[asyncio.Task[str | None]] = set()

    async def task_ended(self, task: TaskRecord) -> None:
        """The Generator's observer: one line per ended request."""
        self.post_soon(task.guild_id, task_line(task))

    def request_refused(self, new: NewTask, refusal: Refusal) -> None:
        """A refusal listener of `CommunityRules`."""
        self.post_soon(new.guild_id, refusal_line(new, refusal))

    def change(
        self, guild_id: int, actor_id: int, what: str, *, channel_id: int | None = None
    ) -> None:
        """A moderator's change, to the log channel (or to `channel_id`)."""
        self.post_soon(guild_id, change_line(actor_id, what), channel_id=channel_id)

    def post_soon(self, guild_id: int, text: str, *, channel_id: int | None = None) -> None:
        post = asyncio.create_task(self.post(guild_id, text, channel_id=channel_id))
        self._pending.add(post)
        post.add_done_callback(self._pending.discard)

    async def post(self, guild_id: int, text: str, *, channel_id: int | None = None) -> str | None:
        """Post now; returns why it could not be posted, or None (also when there is no log
        channel). Never raises."""
        try:
            async with asyncio.timeout(self.send_timeout):
                if channel_id is None:
                    channel_id = (await self.store.config(guild_id)).log_channel_id
                    if channel_id is None:
                        return None
                channel = self.client.get_partial_messageable(channel_id, guild_id=guild_id)
                await channel.send(text[:2000], allowed_mentions=NO_MENTIONS)
        except discord.Forbidden:
            problem = "I'm not allowed to post there"
        except discord.NotFound:
            problem = "that channel no longer exists"
        except discord.HTTPException as exc:
            problem = f"Discord answered {exc.status}"
        except (TimeoutError, aiohttp.ClientError) as exc:
            problem = f"Discord did not answer ({type(exc).__name__})"
        except Exception:
            log.exception("Guild %d: posting to the log channel failed", guild_id)
            return "something went wrong on our side"
        else:
            return None
        log.warning("Guild %d: could not post to log channel %s: %s", guild_id, channel_id, problem)
        return problem

    async def drain(self, grace: float = 5.0) -> None:
        """Let posts under way finish (at shutdown), then give up on the rest."""
        pending = list(self._pending)
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=grace)
        for post in late:
            post.cancel()
        await asyncio.gather(*late, return_exceptions=True)
