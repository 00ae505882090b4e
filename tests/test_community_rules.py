"""Community rules without Discord: term syntax and matching, pattern safety, the gate's order,
and the moderators' changes on a real SQLite file."""

from __future__ import annotations

import dataclasses
import fnmatch
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.community import (
    BARRED,
    BLOCKED_TERM,
    MAX_PATTERNS,
    CommunityRules,
    Prompt,
    Refusal,
    _glob,
    channel_refusal,
    parse_term,
    refusal_line,
    task_line,
)
from bot.errors import InvalidRequest
from bot.generation import FAILURE_REASONS
from storage.database import Database
from storage.tasks import NewTask, TaskRecord, TaskStatus

GUILD, GENERAL, ART, THREAD, MEMBER, MOD = 1, 10, 20, 21, 100, 200


def blocks(term: str, prompt: str) -> bool:
    return parse_term(term).matches(Prompt.of(prompt))


# ---------------------------------------------------------------------- words and phrases


@pytest.mark.parametrize(
    ("term", "prompt"),
    [
        ("fox", "A red FOX in the snow"),
        ("fox", "fox!"),
        ("Fox", "the fox, sleeping"),
        ("red fox", "a Red   Fox"),
        ("red fox", "red, fox"),  # punctuation between words does not hide a phrase
        ("fox", "ｆｏｘ"),  # fullwidth letters (NFKC)
        ("fox", "f\u200box"),  # a zero-width space inside the word
        ("fox", "red_fox"),  # "_" separates words
        ("straße", "STRASSE"),  # case folding
        ("fox*", "foxes and hounds"),
        ("*fox*", "two firefoxes"),
        ("f*x", "the flax"),
        ("don't", "I don't know"),
        ("self-harm", "self harm"),
        ("कुत्ता", "एक कुत्ता दौड़ता है"),  # words with combining marks stay whole
    ],
)
def test_terms_block(term: str, prompt: str) -> None:
    assert blocks(term, prompt)


@pytest.mark.parametrize(
    ("term", "prompt"),
    [
        ("fox", "foxes"),  # whole words only, unless a wildcard says otherwise
        ("fox", "firefox"),
        ("red fox", "fox red"),
        ("red fox", "red big fox"),
        ("fox*", "a firefox"),
        ("f*x", "fixed"),
        ("कुत्ता", "कुत्ते"),
    ],
)
def test_terms_do_not_block(term: str, prompt: str) -> None:
    assert not blocks(term, prompt)


def test_a_term_is_stored_in_canonical_form() -> None:
    assert parse_term("  Red   FOX* ").text == "red fox*"
    assert parse_term("re:Fo+x").text == "re:Fo+x"  # patterns as written


@pytest.mark.parametrize(
    ("term", "says"),
    [
        ("", "Give the word"),
        ("c++", "`re:`"),
        ("<@123>", "`re:`"),
        ("*", "besides `*`"),
        ("red *", "besides `*`"),
        ("x" * 101, "at most 100"),
    ],
)
def test_bad_terms_are_refused_with_a_reason(term: str, says: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_term(term)
    assert says in caught.value.user_message


@given(
    st.text(alphabet="ab*", min_size=1, max_size=8).filter(lambda p: p.strip("*")),
    st.text(alphabet="ab", max_size=10),
)
def test_wildcards_behave_like_fnmatch(pattern: str, word: str) -> None:
    assert _glob(pattern, word) == fnmatch.fnmatchcase(word, pattern)


# ---------------------------------------------------------------------- patterns


@pytest.mark.parametrize(
    ("term", "prompt", "expected"),
    [
        ("re:n[i1!]+ce", "so N1!CE", True),
        ("re:\\bsome\\s+thing\\b", "some   thing", True),
        ("re:foo.*bar", "foo and then bar", True),
        ("re:(?:cat|dog)s?\\b", "three dogs", True),
        ("re:^draw", "please draw", False),
        ("re:colou?r", "color", True),
        ("re:[0-9]{3}", "room 12", False),
    ],
)
def test_patterns_match(term: str, prompt: str, expected: bool) -> None:
    assert blocks(term, prompt) is expected


@pytest.mark.parametrize(
    ("term", "says"),
    [
        ("re:", "after `re:`"),
        ("re:(unclosed", "not a valid regular expression"),
        ("re:(a)\\1", "backreferences"),
        ("re:(?=a)b", "lookarounds"),
        ("re:(?i)a", "inline flags"),
        ("re:(?P<x>a)", "named groups"),
        ("re:\\x41", "letter escapes"),
        ("re:(a+)+$", "not a group"),
        ("re:(a|aa)*b", "not a group"),
        ("re:a.*b.*c", "too slow"),
        ("re:.*.*", "too slow"),
        ("re:a{,}b{2,}", "too slow"),  # `{,}` repeats without bound too
        ("re:[a-z]{0,50}[a-z]{0,50}[a-z]{0,50}x", "too slow"),
        ("re:(?:a|b){0,40}", "too slow"),
        ("re:" + "a" * 101, "at most 100"),
    ],
)
def test_risky_or_broken_patterns_are_refused(term: str, says: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_term(term)
    assert says in caught.value.user_message


@pytest.mark.parametrize(
    "pattern",
    ["re:a.*b", "re:\\w*x\\s?y", "re:[a-z]{0,20}[a-z]{0,20}x", "re:(?:ab){0,30}x", "re:x{3}"],
)
def test_the_costliest_accepted_patterns_stay_fast_on_hostile_prompts(pattern: str) -> None:
    term = parse_term(pattern)
    for hostile in ("a" * 2000, "ab " * 666, "a" * 1000 + " " * 1000, "ｆ" * 2000):
        prompt = Prompt.of(hostile)
        started = time.perf_counter()
        term.matches(prompt)
        assert time.perf_counter() - started < 0.5, (pattern, hostile[:10])


# ---------------------------------------------------------------------- the rules, stored


@pytest.fixture
async def rules(tmp_path: Path) -> AsyncIterator[CommunityRules]:
    parents = {THREAD: ART}
    async with Database.open(tmp_path / "rules.sqlite3") as db:
        yield CommunityRules(db, thread_parent=parents.get, clock=lambda: 1000.0)


def request(prompt: str = "a fox", *, channel: int = GENERAL, user: int = MEMBER) -> NewTask:
    return NewTask(
        guild_id=GUILD,
        channel_id=channel,
        user_id=user,
        origin="command",
        prompt=prompt,
        model="gpt-image-1.5",
        size="1:1",
        quality="auto",
        reference_urls=(),
        estimate=1000,
        upload_limit=10_000_000,
    )


async def refusal_of(rules: CommunityRules, new: NewTask) -> Refusal:
    with pytest.raises(Refusal) as caught:
        await rules.gate(new)
    return caught.value


async def actions(rules: CommunityRules) -> list[tuple[int, str, str]]:
    rows = await rules.db.fetchall(
        "SELECT actor_id, action, detail FROM moderation_log WHERE guild_id = ? ORDER BY id",
        (GUILD,),
    )
    return [(row["actor_id"], row["action"], row["detail"]) for row in rows]


async def test_with_no_rules_everything_passes(rules: CommunityRules) -> None:
    await rules.gate(request("anything at all"))


async def test_blocked_terms_refuse_neutrally(rules: CommunityRules) -> None:
    term, added = await rules.add_term(GUILD, MOD, "Fox")
    assert added and term.text == "fox"
    refusal = await refusal_of(rules, request("A FOX, running"))
    assert refusal.user_message == BLOCKED_TERM
    assert "fox" not in refusal.user_message.lower()  # never echoes the term
    assert (refusal.rule, refusal.term) == ("blocked term", "fox")
    await rules.gate(request("a wolf"))
    await rules.gate(dataclasses.replace(request("fox"), guild_id=GUILD + 1))  # other servers


async def test_adding_and_removing_terms_is_recorded(rules: CommunityRules) -> None:
    assert (await rules.add_term(GUILD, MOD, "red fox"))[1]
    assert not (await rules.add_term(GUILD, MOD, "RED  fox"))[1]  # the same term
    assert await rules.terms(GUILD) == ["red fox"]
    assert await rules.remove_term(GUILD, MOD, "Red Fox") == ("red fox", True)
    assert await rules.remove_term(GUILD, MOD, "red fox") == ("red fox", False)
    assert await rules.terms(GUILD) == []
    assert await actions(rules) == [
        (MOD, "term_add", "red fox"),
        (MOD, "term_remove", "red fox"),
    ]


async def test_patterns_are_limited_per_server(rules: CommunityRules) -> None:
    for number in range(MAX_PATTERNS):
        await rules.add_term(GUILD, MOD, f"re:bad{number}")
    with pytest.raises(InvalidRequest, match="re:"):
        await rules.add_term(GUILD, MOD, "re:one more")
    assert (await rules.add_term(GUILD, MOD, "plain words"))[1]  # words are still welcome


async def test_channels_restrict_and_threads_follow_their_channel(rules: CommunityRules) -> None:
    assert await rules.allow_channel(GUILD, MOD, ART)
    assert not await rules.allow_channel(GUILD, MOD, ART)
    refusal = await refusal_of(rules, request(channel=GENERAL))
    assert refusal.user_message == f"Images can't be made in this channel. Try <#{ART}>."
    await rules.gate(request(channel=ART))
    await rules.gate(request(channel=THREAD))  # a thread of #art
    assert await rules.allow_channel(GUILD, MOD, GENERAL)
    await rules.gate(request(channel=GENERAL))


async def test_the_last_allowed_channel_cannot_be_disallowed(rules: CommunityRules) -> None:
    await rules.allow_channel(GUILD, MOD, ART)
    with pytest.raises(InvalidRequest, match="only channel"):
        await rules.disallow_channel(GUILD, MOD, ART)
    await rules.allow_channel(GUILD, MOD, GENERAL)
    assert await rules.disallow_channel(GUILD, MOD, ART)
    assert not await rules.disallow_channel(GUILD, MOD, ART)
    assert await rules.allowed_channels(GUILD) == [GENERAL]
    assert await rules.allow_everywhere(GUILD, MOD)
    assert not await rules.allow_everywhere(GUILD, MOD)
    await rules.gate(request(channel=ART))
    assert [action for _, action, _ in await actions(rules)] == [
        "channel_allow",
        "channel_allow",
        "channel_disallow",
        "channels_everywhere",
    ]


def test_a_refusal_names_a_few_allowed_channels() -> None:
    assert channel_refusal([1, 2]) == "Images can't be made in this channel. Try <#1> or <#2>."
    many = channel_refusal(list(range(1, 9)))
    assert many.endswith("<#5> or another allowed channel.") and "<#6>" not in many


async def test_barred_members_are_refused_first(rules: CommunityRules) -> None:
    await rules.add_term(GUILD, MOD, "fox")
    await rules.allow_channel(GUILD, MOD, ART)
    assert await rules.bar(GUILD, MOD, MEMBER, "spam")
    assert not await rules.bar(GUILD, MOD, MEMBER)
    refusal = await refusal_of(rules, request("fox", channel=GENERAL))
    assert refusal.user_message == BARRED and refusal.rule == "barred member"
    await rules.gate(request("a wolf", channel=ART, user=MEMBER + 1))  # others are not
    assert await rules.barred(GUILD) == [MEMBER]
    assert await rules.unbar(GUILD, MOD, MEMBER)
    assert not await rules.unbar(GUILD, MOD, MEMBER)
    await rules.gate(request("a wolf", channel=ART))
    assert (MOD, "member_bar", f"{MEMBER}: spam") in await actions(rules)


async def test_refusal_listeners_hear_of_refusals_and_may_fail(rules: CommunityRules) -> None:
    heard: list[str] = []

    def broken(new: NewTask, refusal: Refusal) -> None:
        raise RuntimeError("a broken listener")

    rules.refusal_listeners += [broken, lambda new, refusal: heard.append(refusal.rule)]
    await rules.bar(GUILD, MOD, MEMBER)
    await refusal_of(rules, request())
    await rules.gate(request(user=MEMBER + 1))
    assert heard == ["barred member"]


async def test_log_channel_changes_return_the_previous_one(rules: CommunityRules) -> None:
    assert await rules.set_log_channel(GUILD, MOD, 55) is None
    assert await rules.set_log_channel(GUILD, MOD, 56) == 55
    assert await rules.set_log_channel(GUILD, MOD, None) == 56
    assert await rules.log_channel(GUILD) is None
    assert [a for _, a, _ in await actions(rules)] == [
        "log_channel_set",
        "log_channel_set",
        "log_channel_clear",
    ]


# ---------------------------------------------------------------------- log lines


def ended(status: TaskStatus, **changes: object) -> TaskRecord:
    task = TaskRecord(
        id=7, guild_id=GUILD, channel_id=GENERAL, user_id=MEMBER, origin="command",
        prompt="a **bold** fox @everyone " + "x" * 400, model="gpt-image-1.5", size="1:1",
        quality="medium", reference_urls=(), estimate=1958, upload_limit=1, status=status,
        progress_message_id=70,
    )  # fmt: skip
    for name, value in changes.items():
        setattr(task, name, value)
    return task


def test_log_line_of_a_posted_task() -> None:
    line = task_line(ended(TaskStatus.POSTED, result_message_id=71, cost=1958))
    first, prompt = line.split("\n")
    assert first == (
        f"✅ **Posted** · <@{MEMBER}> in <#{GENERAL}> · 1.958 credits · "
        f"https://discord.com/channels/{GUILD}/{GENERAL}/71"
    )
    assert prompt.startswith("> a \\*\\*bold\\*\\* fox @\u200beveryone")  # escaped
    assert len(prompt) < 210 and prompt.endswith("…")


def test_log_line_of_a_content_policy_refusal() -> None:
    reason = FAILURE_REASONS["content_policy_violation"]
    line = task_line(ended(TaskStatus.FAILED, error=reason))
    assert line.startswith("⛔ **Refused by EvoLink's content policy** · ")
    assert "no charge" in line and f"/{GENERAL}/70" in line
    assert "Reason" not in line
    other = task_line(ended(TaskStatus.FAILED, error="EvoLink took too long."))
    assert other.startswith("❌ **Failed**") and other.endswith("Reason: EvoLink took too long.")


def test_refusal_line_hides_the_term_behind_a_spoiler() -> None:
    refusal = Refusal(BLOCKED_TERM, "blocked term", "re:fo+x")
    line = refusal_line(request("a fooox"), refusal)
    assert line.startswith(f"🚫 **Refused** (blocked term ||`re:fo+x`||) · <@{MEMBER}>")
