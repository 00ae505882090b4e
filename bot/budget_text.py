"""What members and moderators read about budgets: /balance, /budget and its confirmations.

Plain text building over `bot.budget`'s figures (thousandths of a credit); nothing here knows
Discord beyond its markup (`<@id>` mentions, `<t:…:R>` timestamps).
"""

from __future__ import annotations

from bot.budget import Period, Standing, Usage
from bot.pricing import format_credits
from storage.ledger import Change, Entry

NOT_A_MANAGER = "Only members with the Manage Server permission can choose the moderator role."
EVERYONE_CANNOT_MODERATE = "The @everyone role can't be the moderator role."


def credits(milli: int) -> str:
    """`1958` -> "1.958 credits", `1000` -> "1 credit"."""
    return f"{format_credits(milli)} credit{'' if milli == 1000 else 's'}"


def relative(when: float) -> str:
    """A moment as Discord shows it to each reader, e.g. "in 3 days"."""
    return f"<t:{int(when)}:R>"


def _moment(when: float) -> str:
    return f"<t:{int(when)}:f>"


def _cap_line(standing: Standing) -> str | None:
    if standing.cap is None or standing.server_left is None:
        return None
    return (
        f"Server cap: {format_credits(standing.server_left)} of {credits(standing.cap)} "
        f"left {standing.period.current}"
    )


def _figures(standing: Standing, allowance_note: str = "") -> list[str]:
    lines = [
        f"Allowance: {credits(standing.allowance)} per {standing.period}{allowance_note}",
        f"Extra granted: {credits(standing.grants)}",
        f"Spent: {credits(standing.spent)}",
        f"Pending: {credits(standing.pending)}",
        f"**Left: {credits(standing.left)}** · resets {relative(standing.resets_at)}",
    ]
    cap = _cap_line(standing)
    if cap is not None:
        lines.append(cap)
    return lines


def balance_text(standing: Standing) -> str:
    """/balance: where the caller stands this period."""
    return "\n".join([f"**Your image credits {standing.period.current}**", *_figures(standing)])


def _change_text(change: Change) -> str:
    who = f"<@{change.actor_id}>" if change.actor_id is not None else "The bot"
    if change.kind is Entry.ALLOWANCE:
        what = f"set the allowance to {credits(change.amount)}"
    elif change.kind is Entry.GRANT:
        what = f"granted {credits(change.amount)}"
    else:
        what = f"changed the {change.kind.value} to {credits(change.amount)}"
    return f"• {_moment(change.created_at)} {who} {what}"


def member_text(
    user_id: int, standing: Standing, own_allowance: int | None, changes: list[Change]
) -> str:
    """/budget show: a member's figures and the last moderator changes that touched them."""
    note = " (set for them)" if own_allowance is not None else " (the server default)"
    lines = [f"**<@{user_id}>'s image credits {standing.period.current}**"]
    lines += _figures(standing, note)
    lines.append("**Last changes**")
    lines += [_change_text(change) for change in changes] or ["None yet."]
    return "\n".join(lines)


def usage_text(usage: Usage) -> str:
    """/budget usage: the server's total this period and its top spenders."""
    total = f"Server total: {credits(usage.spent)} spent, {credits(usage.pending)} pending"
    if usage.cap is not None:
        left = max(0, usage.cap - usage.spent - usage.pending)
        total += f" · cap {credits(usage.cap)} ({format_credits(left)} left)"
    lines = [f"**Spending {usage.period.current}** · resets {relative(usage.resets_at)}", total]
    if not usage.top:
        lines.append(f"Nobody has spent any credits {usage.period.current}.")
        return "\n".join(lines)
    lines.append("**Top spenders**")
    for rank, spender in enumerate(usage.top, start=1):
        line = f"{rank}. <@{spender.user_id}>: {credits(spender.spent)} spent"
        if spender.pending:
            line += f", {credits(spender.pending)} pending"
        lines.append(line)
    return "\n".join(lines)


# Confirmations for moderators: each states the new value.


def _left_sentence(standing: Standing) -> str:
    return (
        f"They have {credits(standing.left)} left {standing.period.current} "
        f"(it resets {relative(standing.resets_at)})."
    )


def allowance_set(user_id: int, amount: int, standing: Standing) -> str:
    return (
        f"<@{user_id}>'s allowance is now {credits(amount)} per {standing.period}. "
        + _left_sentence(standing)
    )


def default_set(amount: int, period: Period) -> str:
    return (
        f"The default allowance is now {credits(amount)} per {period} "
        "(for members without an allowance of their own)."
    )


def period_set(period: Period, resets_at: float) -> str:
    return (
        f"Allowances and the server cap now run per {period}; "
        f"the current {period} ends {relative(resets_at)}."
    )


def grant_given(user_id: int, amount: int, standing: Standing) -> str:
    return (
        f"<@{user_id}> got {credits(amount)} extra for {standing.period.current}. "
        + _left_sentence(standing)
    )


def cap_set(amount: int | None, usage: Usage) -> str:
    if amount is None:
        return "The server cap is removed: only each member's allowance limits spending."
    left = max(0, amount - usage.spent - usage.pending)
    return (
        f"The server can now spend at most {credits(amount)} per {usage.period}; "
        f"{credits(left)} left {usage.period.current}."
    )


def moderator_role_set(role_id: int | None) -> str:
    if role_id is None:
        return (
            "The bot's moderator role is cleared: only members with the Manage Server "
            "permission are moderators."
        )
    return f"<@&{role_id}> is now the bot's moderator role."
