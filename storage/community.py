"""Per-server settings that are not money: the moderator role, the log channel, and the record
of moderator actions. (Blocked terms, allowed channels and barred members live here too.)"""

from __future__ import annotations

from dataclasses import dataclass

from storage.database import Database


@dataclass(frozen=True, slots=True)
class GuildConfig:
    guild_id: int
    moderator_role_id: int | None = None
    log_channel_id: int | None = None


@dataclass(frozen=True, slots=True)
class BlockedTerm:
    guild_id: int
    term: str  # as stored: a canonical word/phrase, or "re:" and a pattern
    added_by: int
    created_at: float


class CommunityStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def config(self, guild_id: int) -> GuildConfig:
        row = await self.db.fetchone(
            "SELECT moderator_role_id, log_channel_id FROM guild_config WHERE guild_id = ?",
            (guild_id,),
        )
        if row is None:
            return GuildConfig(guild_id)
        return GuildConfig(guild_id, row["moderator_role_id"], row["log_channel_id"])

    async def set_moderator_role(self, guild_id: int, role_id: int | None) -> None:
        await self.db.execute(
            "INSERT INTO guild_config (guild_id, moderator_role_id) VALUES (?, ?) "
            "ON CONFLICT (guild_id) DO UPDATE SET moderator_role_id = excluded.moderator_role_id",
            (guild_id, role_id),
        )

    async def set_log_channel(self, guild_id: int, channel_id: int | None) -> None:
        await self.db.execute(
            "INSERT INTO guild_config (guild_id, log_channel_id) VALUES (?, ?) "
            "ON CONFLICT (guild_id) DO UPDATE SET log_channel_id = excluded.log_channel_id",
            (guild_id, channel_id),
        )

    async def record_action(
        self, guild_id: int, actor_id: int, action: str, detail: str, now: float
    ) -> None:
        """Append a moderator action (who, what, when) to the moderation log."""
        await self.db.execute(
            "INSERT INTO moderation_log (guild_id, actor_id, action, detail, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (guild_id, actor_id, action, detail, now),
        )

    # ------------------------------------------------------------------ blocked terms

    async def blocked_terms(self, guild_id: int) -> list[BlockedTerm]:
        """The server's blocked terms, oldest first."""
        rows = await self.db.fetchall(
            "SELECT guild_id, term, added_by, created_at FROM blocked_terms "
            "WHERE guild_id = ? ORDER BY created_at, term",
            (guild_id,),
        )
        return [
            BlockedTerm(row["guild_id"], row["term"], row["added_by"], row["created_at"])
            for row in rows
        ]

    async def add_blocked_term(self, guild_id: int, term: str, actor_id: int, now: float) -> bool:
        """Block a term; False if it was already blocked."""
        changed = await self.db.execute_changes(
            "INSERT INTO blocked_terms (guild_id, term, added_by, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (guild_id, term) DO NOTHING",
            (guild_id, term, actor_id, now),
        )
        return changed > 0

    async def remove_blocked_term(self, guild_id: int, term: str) -> bool:
        """Unblock a term; False if it was not blocked."""
        changed = await self.db.execute_changes(
            "DELETE FROM blocked_terms WHERE guild_id = ? AND term = ?", (guild_id, term)
        )
        return changed > 0

    # ------------------------------------------------------------------ allowed channels

    async def allowed_channels(self, guild_id: int) -> list[int]:
        """Channels where the bot may be used; empty means every channel."""
        rows = await self.db.fetchall(
            "SELECT channel_id FROM allowed_channels WHERE guild_id = ? ORDER BY channel_id",
            (guild_id,),
        )
        return [int(row["channel_id"]) for row in rows]

    async def allow_channel(self, guild_id: int, channel_id: int) -> bool:
        """Add a channel to the allowed ones; False if it was there already."""
        changed = await self.db.execute_changes(
            "INSERT INTO allowed_channels (guild_id, channel_id) VALUES (?, ?) "
            "ON CONFLICT (guild_id, channel_id) DO NOTHING",
            (guild_id, channel_id),
        )
        return changed > 0

    async def disallow_channel(self, guild_id: int, channel_id: int) -> bool:
        """Take a channel off the allowed ones; False if it was not there."""
        changed = await self.db.execute_changes(
            "DELETE FROM allowed_channels WHERE guild_id = ? AND channel_id = ?",
            (guild_id, channel_id),
        )
        return changed > 0

    async def clear_allowed_channels(self, guild_id: int) -> int:
        """Allow every channel again; returns how many channels were listed."""
        return await self.db.execute_changes(
            "DELETE FROM allowed_channels WHERE guild_id = ?", (guild_id,)
        )

    # ------------------------------------------------------------------ barred members

    async def barred_members(self, guild_id: int) -> list[int]:
        rows = await self.db.fetchall(
            "SELECT user_id FROM barred_members WHERE guild_id = ? ORDER BY user_id", (guild_id,)
        )
        return [int(row["user_id"]) for row in rows]

    async def is_barred(self, guild_id: int, user_id: int) -> bool:
        row = await self.db.fetchone(
            "SELECT 1 FROM barred_members WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
        )
        return row is not None

    async def bar_member(self, guild_id: int, user_id: int) -> bool:
        """Bar a member from using the bot; False if they were barred already."""
        changed = await self.db.execute_changes(
            "INSERT INTO barred_members (guild_id, user_id) VALUES (?, ?) "
            "ON CONFLICT (guild_id, user_id) DO NOTHING",
            (guild_id, user_id),
        )
        return changed > 0

    async def unbar_member(self, guild_id: int, user_id: int) -> bool:
        """Lift a bar; False if the member was not barred."""
        changed = await self.db.execute_changes(
            "DELETE FROM barred_members WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
        )
        return changed > 0
