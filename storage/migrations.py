"""The schema, as numbered migrations. Migration N brings the database to `user_version` N.

Append new migrations at the end; never edit one that has shipped.
"""

from __future__ import annotations

_TASKS = (
    """
    CREATE TABLE tasks (
        id                  INTEGER PRIMARY KEY AUTOINCREMENT,
        guild_id            INTEGER NOT NULL,
        channel_id          INTEGER NOT NULL,
        user_id             INTEGER NOT NULL,
        origin              TEXT    NOT NULL,
        interaction_id      INTEGER UNIQUE,
        source_message_id   INTEGER UNIQUE,
        parent_task_id      INTEGER REFERENCES tasks(id),
        parent_message_id   INTEGER,
        progress_message_id INTEGER,
        result_message_id   INTEGER,
        upload_limit        INTEGER NOT NULL,
        prompt              TEXT    NOT NULL,
        model               TEXT    NOT NULL,
        size                TEXT    NOT NULL,
        quality             TEXT    NOT NULL,
        reference_urls      TEXT    NOT NULL DEFAULT '[]',
        evolink_task_id     TEXT    UNIQUE,
        status              TEXT    NOT NULL,
        progress            INTEGER NOT NULL DEFAULT 0,
        estimated_time      REAL,
        estimate            INTEGER NOT NULL,
        cost                INTEGER,
        result_url          TEXT,
        error               TEXT,
        created_at          REAL    NOT NULL,
        updated_at          REAL    NOT NULL,
        submitted_at        REAL,
        completed_at        REAL,
        ended_at            REAL
    )
    """,
    "CREATE INDEX tasks_unfinished ON tasks (status) "
    "WHERE status IN ('submitting', 'pending', 'processing', 'completed')",
    "CREATE INDEX tasks_by_member ON tasks (guild_id, user_id, id)",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)

_LEDGER = (
    # Append-only: money and budget settings are only ever added, never updated in place.
    # kind: reserve | adjust | settle | release | grant  (amounts in thousandths of a credit)
    #       allowance (user_id set) | default | cap | period (note = day/week/month)
    """
    CREATE TABLE ledger (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        guild_id    INTEGER NOT NULL,
        user_id     INTEGER,
        task_id     INTEGER REFERENCES tasks(id),
        kind        TEXT    NOT NULL,
        amount      INTEGER NOT NULL DEFAULT 0,
        note        TEXT,
        actor_id    INTEGER,
        period_at   REAL    NOT NULL,
        created_at  REAL    NOT NULL,
        UNIQUE (task_id, kind)
    )
    """,
    "CREATE INDEX ledger_by_member ON ledger (guild_id, user_id, period_at)",
    "CREATE INDEX ledger_by_kind ON ledger (guild_id, kind, user_id, id)",
)

_COMMUNITY = (
    """
    CREATE TABLE guild_config (
        guild_id            INTEGER PRIMARY KEY,
        moderator_role_id   INTEGER,
        log_channel_id      INTEGER
    )
    """,
    """
    CREATE TABLE blocked_terms (
        guild_id    INTEGER NOT NULL,
        term        TEXT    NOT NULL,
        added_by    INTEGER NOT NULL,
        created_at  REAL    NOT NULL,
        PRIMARY KEY (guild_id, term)
    )
    """,
    """
    CREATE TABLE allowed_channels (
        guild_id    INTEGER NOT NULL,
        channel_id  INTEGER NOT NULL,
        PRIMARY KEY (guild_id, channel_id)
    )
    """,
    """
    CREATE TABLE barred_members (
        guild_id    INTEGER NOT NULL,
        user_id     INTEGER NOT NULL,
        PRIMARY KEY (guild_id, user_id)
    )
    """,
    """
    CREATE TABLE moderation_log (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        guild_id    INTEGER NOT NULL,
        actor_id    INTEGER NOT NULL,
        action      TEXT    NOT NULL,
        detail      TEXT    NOT NULL,
        created_at  REAL    NOT NULL
    )
    """,
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_TASKS, _LEDGER, _COMMUNITY)
