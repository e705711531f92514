"""The response store's tables, their creation and their migrations.

``gpt4all_api_responses`` holds one row per stored response; ``gpt4all_api_meta`` holds
the store's own values, so far the random salt of owner identities (one per database, so
every replica derives the same identity from the same API key). Creation and migrations
run at start-up, idempotently; on PostgreSQL replicas starting together serialise on an
advisory lock, on SQLite a racing process's change is detected and accepted.

Migrations (each adds what an older database lacks, never rewrites rows):

- ``owner`` (nullable): the identity of the API key that stored the response. Rows from
  before it have none: with API keys configured no key sees them (they expire with
  RESPONSES_MAX_AGE_DAYS); without keys everything stays visible, as before.
"""

from __future__ import annotations

import secrets

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Connection,
    Double,
    Engine,
    Index,
    MetaData,
    String,
    Table,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

TABLE_NAME = "gpt4all_api_responses"
META_TABLE_NAME = "gpt4all_api_meta"
#: Key of the PostgreSQL advisory lock that serialises schema changes between replicas.
SCHEMA_LOCK_KEY = 0x67_34_61_6C_6C_72_73  # "g4allrs"
#: Length of an owner identity: a hex HMAC-SHA256.
OWNER_LENGTH = 64
_SALT_NAME = "owner_salt"

metadata = MetaData()
_json = JSON().with_variant(JSONB(), "postgresql")
responses = Table(
    TABLE_NAME,
    metadata,
    Column("id", String(128), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    Column("last_used_at", Double, nullable=False),
    Column("model", String(512), nullable=False),
    Column("previous_response_id", String(128), nullable=True),
    Column("ancestors", _json, nullable=False),
    Column("input_items", _json, nullable=False),
    Column("response", _json, nullable=False),
    Column("owner", String(OWNER_LENGTH), nullable=True),
    Index(f"ix_{TABLE_NAME}_last_used_at", "last_used_at"),
)
meta = Table(
    META_TABLE_NAME,
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)

#: Columns added after the first release, each with its DDL type (both dialects).
_ADDED_COLUMNS = {"owner": f"VARCHAR({OWNER_LENGTH})"}


def prepare(engine: Engine, attempts: int = 3) -> str:
    """Create missing tables, add missing columns, and return the owner salt (made on
    first use). Safe when several processes run it at once."""
    for attempt in range(attempts):
        try:
            with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    # Replicas starting at once: one changes, the others wait and see it.
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK_KEY})
                metadata.create_all(conn, checkfirst=True)
                _add_columns(conn)
                return _salt(conn)
        except SQLAlchemyError:
            # Another process (SQLite has no advisory lock) created a table, added a column
            # or wrote the salt between our check and our change: look again.
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _add_columns(conn: Connection) -> None:
    present = {c["name"] for c in inspect(conn).get_columns(TABLE_NAME)}
    for name, ddl in _ADDED_COLUMNS.items():
        if name not in present:
            conn.execute(text(f"ALTER TABLE {TABLE_NAME} ADD COLUMN {name} {ddl}"))


def _salt(conn: Connection) -> str:
    """The salt, written by whichever process gets there first."""
    insert = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
    fresh = {"name": _SALT_NAME, "value": secrets.token_hex(32)}
    conn.execute(insert(meta).values(fresh).on_conflict_do_nothing(index_elements=["name"]))
    return str(conn.execute(select(meta.c.value).where(meta.c.name == _SALT_NAME)).scalar_one())
