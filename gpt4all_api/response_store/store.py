"""``ResponseStore``: save, read, delete and chain stored responses in SQLite or PostgreSQL.

Why a synchronous SQLAlchemy engine run on a small thread pool rather than SQLAlchemy's
asyncio extension: the same code and drivers serve both databases (SQLite's driver is
blocking anyway; aiosqlite only wraps it in a thread), no greenlet dependency, and the
pool bounds how many connections one replica opens. Every call is a short indexed query,
so a few threads are plenty and the event loop never waits on the database. Every call
ends within ``timeout`` seconds (``StoreTimeout`` after that), also when the database
hangs: see ``bounded``.

One table (``schema``), one row per stored response: its ``Response`` JSON, its input
items, the ids of the responses before it (``ancestors``, oldest first) so ``history``
rebuilds a conversation with one query, and its owner. Continuing a conversation marks its
whole chain as used, so age and count limits remove whole idle conversations (newest
response first) rather than the beginning of one that is still in use.

Owners: with API keys configured, each response belongs to the key that stored it. The
row holds ``owner_of(key digest)``, an HMAC-SHA256 of the key's SHA-256 under a random
per-database salt (never the key), and every read, continuation and delete matches it, so
another key finds nothing (404). ``owner=None`` (no keys configured) matches every row.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from sqlalchemy import (
    ColumnElement,
    Engine,
    and_,
    create_engine,
    delete,
    event,
    func,
    select,
    true,
    update,
)
from sqlalchemy.engine import Connection, make_url

from gpt4all_api.protocol.strings import scrub
from gpt4all_api.response_store.bounded import BoundedRunner, postgres_connect_args
from gpt4all_api.response_store.schema import prepare, responses

if TYPE_CHECKING:
    from gpt4all_api.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

SQLITE_FILE_NAME = "responses.sqlite3"
#: Seconds start-up may wait for the database: creating or migrating the schema may wait
#: for another replica doing it (PostgreSQL's advisory lock).
START_TIMEOUT = 60.0
_DAY = 86400.0
_responses = responses


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """One stored response, as the service saves and reads it."""

    id: str
    created_at: int
    model: str
    response: dict[str, Any]  #: the ``Response`` object's JSON
    input_items: list[dict[str, Any]]  #: this request's input items, each with an ``id``
    previous_response_id: str | None = None
    #: Ids of the responses before this one, oldest first (filled in by ``save``).
    ancestors: tuple[str, ...] = field(default=())
    #: ``ResponseStore.owner_of`` the API key that stored it; None without API keys.
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class InputItemPage:
    """One page of a response's input items; ids are None on an empty page."""

    data: list[dict[str, Any]]
    has_more: bool
    first_id: str | None
    last_id: str | None


class ResponseNotStored(LookupError):
    """A response (or one before it in a conversation) is not in the store."""

    def __init__(self, response_id: str) -> None:
        super().__init__(response_id)
        self.response_id = response_id


class InvalidCursor(ValueError):
    """``after`` / ``before`` names an item the response does not have."""

    def __init__(self, param: Literal["after", "before"], item_id: str) -> None:
        super().__init__(f"{param}={item_id}")
        self.param = param
        self.item_id = item_id


def database_url(settings: Settings) -> str:
    """The SQLAlchemy URL for the settings: DATABASE_URL, or SQLite under DATA_DIR."""
    if settings.database_url is not None:
        return normalize_url(settings.database_url.get_secret_value())
    return f"sqlite:///{(settings.data_dir / SQLITE_FILE_NAME).resolve()}"


def normalize_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` use psycopg 3 (SQLAlchemy defaults to psycopg2)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


class ResponseStore:
    """Stored responses; every method is a coroutine that runs its query off the loop.

    ``max_count`` and ``max_age_days`` bound the store (0: no bound). Expired rows are
    invisible to reads at once and deleted on the next write. ``timeout``: seconds a call
    may take (waiting for a thread and a connection included).
    """

    def __init__(
        self,
        url: str,
        *,
        max_count: int = 0,
        max_age_days: float = 0.0,
        workers: int = 4,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = make_url(normalize_url(url))
        self.max_count = max_count
        self.max_age_days = max_age_days
        self.timeout = timeout
        self._workers = workers
        self._clock = clock
        self._engine: Engine | None = None
        self._runner: BoundedRunner | None = None
        self._salt: bytes | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ResponseStore:
        return cls(
            database_url(settings),
            max_count=settings.responses_max_count,
            max_age_days=settings.responses_max_age_days,
            timeout=settings.response_store_timeout,
        )

    @property
    def dialect(self) -> str:
        return self._url.get_backend_name()

    def describe(self) -> str:
        """The database for logs, password hidden."""
        return self._url.render_as_string(hide_password=True)

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and create the table if missing (idempotent, safe across processes)."""
        self._runner = BoundedRunner(self._workers, self.timeout)
        self._engine = self._create_engine()
        try:
            salt = await self._runner.run(prepare, self._engine, timeout=START_TIMEOUT)
            self._salt = bytes.fromhex(salt)
        except BaseException:
            await self.close()
            raise
        logger.info("response store: %s", self.describe())

    async def close(self) -> None:
        engine, runner = self._engine, self._runner
        self._engine, self._runner = None, None
        if runner is not None:
            await asyncio.get_running_loop().run_in_executor(None, runner.shutdown)
        if engine is not None:
            engine.dispose()

    def probe(self) -> None:
        """Blocking: open the database and create the table, then let go. The start-up
        check (``startup.preflight``) runs it before the server binds."""
        self._engine = self._create_engine()
        try:
            prepare(self._engine)
        finally:
            engine, self._engine = self._engine, None
            engine.dispose()

    def problem(self, exc: BaseException) -> str:
        """One line for a database that cannot be opened: which one (password hidden), why."""
        return f"the response store {self.describe()} cannot be opened: {first_line(exc)}"

    def _create_engine(self) -> Engine:
        if self.dialect == "sqlite":
            database = self._url.database
            if database and database != ":memory:" and not database.startswith("file:"):
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                self._url,
                # a file locked by another process: wait at most as long as a call may
                connect_args={"check_same_thread": False, "timeout": self.timeout},
                pool_size=self._workers,
                max_overflow=0,
                pool_timeout=self.timeout,
            )
            busy_ms = max(1, round(self.timeout * 1000))
            event.listen(engine, "connect", lambda conn, _: _sqlite_pragmas(conn, busy_ms))
            return engine
        engine = create_engine(
            self._url,
            connect_args=postgres_connect_args(self._url, self.timeout),
            pool_size=self._workers,
            max_overflow=0,
            pool_timeout=self.timeout,
        )
        if self._runner is not None:
            self._runner.watch(engine)  # also pings each connection it hands out
        return engine

    def _require_engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("ResponseStore.start() has not been awaited")
        return self._engine

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._runner is None:
            raise RuntimeError("ResponseStore.start() has not been awaited")
        return await self._runner.run(fn, *args)

    # --- the interface ------------------------------------------------------------------------

    def owner_of(self, key_digest: bytes | None) -> str | None:
        """The owner identity of an API key (given as its SHA-256 digest, as the API key
        middleware has it); None for None (no keys configured: no owners)."""
        if key_digest is None:
            return None
        if self._salt is None:
            raise RuntimeError("ResponseStore.start() has not been awaited")
        return hmac.new(self._salt, key_digest, "sha256").hexdigest()

    async def save(self, record: StoredResponse) -> StoredResponse:
        """Store a response (replacing one with the same id); returns it with its ancestors.

        A ``previous_response_id`` that is gone by now (deleted meanwhile) is still recorded;
        continuing from this response then reports it missing.
        """
        return await self._run(self._save, record)

    async def get(self, response_id: str, owner: str | None = None) -> StoredResponse | None:
        """A response of ``owner`` (None: anyone's), or None."""
        return await self._run(self._get, response_id, owner)

    async def delete(self, response_id: str, owner: str | None = None) -> bool:
        """Remove a response of ``owner``; False if there was none. Its continuations lose
        their history."""
        return await self._run(self._delete, response_id, owner)

    async def list_input_items(
        self,
        response_id: str,
        *,
        after: str | None = None,
        before: str | None = None,
        limit: int = 20,
        order: Literal["asc", "desc"] = "desc",
        owner: str | None = None,
    ) -> InputItemPage | None:
        """A page of the items the request had as input; None if the response is not stored.

        ``after``/``before`` are item ids (exclusive) in the chosen ``order``.
        Raises ``InvalidCursor`` for an id the response does not have.
        """
        record = await self.get(response_id, owner)
        if record is None:
            return None
        return _page(record.input_items, after=after, before=before, limit=limit, order=order)

    async def history(self, response_id: str, owner: str | None = None) -> list[dict[str, Any]]:
        """Every item of the conversation up to and including ``response_id``, in order:
        each response's input items followed by its output items (all of ``owner``'s).

        Raises ``ResponseNotStored`` naming the first response of the chain that is missing.
        """
        return await self._run(self._history, response_id, owner)

    async def prune(self) -> int:
        """Delete expired rows now (``save`` does it too); returns how many."""
        return await self._run(self._prune_now)

    async def count(self) -> int:
        return await self._run(self._count)

    # --- blocking implementations (run on the store's threads) --------------------------------

    def _cutoff(self) -> float | None:
        return self._clock() - self.max_age_days * _DAY if self.max_age_days > 0 else None

    def _visible(self, owner: str | None) -> ColumnElement[bool]:
        """Rows not expired and, for an owner, theirs."""
        cutoff = self._cutoff()
        live = _responses.c.last_used_at >= cutoff if cutoff is not None else true()
        return and_(live, _owned(owner))

    def _save(self, record: StoredResponse) -> StoredResponse:
        t = _responses
        now = self._clock()
        with self._require_engine().begin() as conn:
            ancestors: list[str] = []
            prev = record.previous_response_id
            if prev is not None:
                mine = _owned(record.owner)
                row = conn.execute(select(t.c.ancestors).where(t.c.id == prev, mine)).first()
                ancestors = [*(row.ancestors if row is not None else []), prev]
                conn.execute(update(t).where(t.c.id.in_(ancestors)).values(last_used_at=now))
            conn.execute(delete(t).where(t.c.id == record.id))
            conn.execute(
                t.insert().values(
                    id=record.id,
                    created_at=record.created_at,
                    last_used_at=now,
                    model=record.model,
                    previous_response_id=prev,
                    ancestors=ancestors,
                    input_items=record.input_items,
                    response=record.response,
                    owner=record.owner,
                )
            )
            self._prune(conn)
        return StoredResponse(
            id=record.id,
            created_at=record.created_at,
            model=record.model,
            response=record.response,
            input_items=record.input_items,
            previous_response_id=prev,
            ancestors=tuple(ancestors),
            owner=record.owner,
        )

    def _get(self, response_id: str, owner: str | None) -> StoredResponse | None:
        t = _responses
        with self._require_engine().connect() as conn:
            row = conn.execute(select(t).where(t.c.id == response_id, self._visible(owner))).first()
        if row is None:
            return None
        return StoredResponse(
            id=row.id,
            created_at=row.created_at,
            model=row.model,
            # rows stored before requests were checked may hold lone surrogates
            response=scrub(row.response),
            input_items=scrub(row.input_items),
            previous_response_id=row.previous_response_id,
            ancestors=tuple(row.ancestors),
            owner=row.owner,
        )

    def _delete(self, response_id: str, owner: str | None) -> bool:
        t = _responses
        with self._require_engine().begin() as conn:
            found = conn.execute(
                select(t.c.id).where(t.c.id == response_id, self._visible(owner))
            ).first()
            if found is not None:
                conn.execute(delete(t).where(t.c.id == response_id))
        return found is not None

    def _history(self, response_id: str, owner: str | None) -> list[dict[str, Any]]:
        t = _responses
        visible = self._visible(owner)
        with self._require_engine().connect() as conn:
            head = conn.execute(select(t.c.ancestors).where(t.c.id == response_id, visible)).first()
            if head is None:
                raise ResponseNotStored(response_id)
            chain = [*head.ancestors, response_id]
            rows = conn.execute(
                select(t.c.id, t.c.input_items, t.c.response).where(t.c.id.in_(chain), visible)
            ).all()
        by_id = {row.id: row for row in rows}
        items: list[dict[str, Any]] = []
        for rid in chain:
            row = by_id.get(rid)
            if row is None:
                raise ResponseNotStored(rid)
            items.extend(row.input_items)
            items.extend(row.response.get("output", []))
        return scrub(items)

    def _prune_now(self) -> int:
        with self._require_engine().begin() as conn:
            return self._prune(conn)

    def _prune(self, conn: Connection) -> int:
        """Remove expired rows and the surplus over ``max_count`` (in ``conn``'s transaction:
        a save prunes in its own)."""
        t = _responses
        removed = 0
        cutoff = self._cutoff()
        if cutoff is not None:
            removed += conn.execute(delete(t).where(t.c.last_used_at < cutoff)).rowcount
        if self.max_count > 0:
            surplus = conn.execute(select(func.count()).select_from(t)).scalar_one()
            surplus -= self.max_count
            if surplus > 0:
                # Least recently used conversations first, and of one, its newest
                # response first, so what stays can still be continued.
                doomed = (
                    select(t.c.id)
                    .order_by(t.c.last_used_at.asc(), t.c.created_at.desc(), t.c.id.desc())
                    .limit(surplus)
                )
                ids = list(conn.execute(doomed).scalars())
                removed += conn.execute(delete(t).where(t.c.id.in_(ids))).rowcount
        if removed:
            logger.debug("response store: removed %d expired responses", removed)
        return removed

    def _count(self) -> int:
        t = _responses
        with self._require_engine().connect() as conn:
            return conn.execute(
                select(func.count()).select_from(t).where(self._visible(None))
            ).scalar_one()


def _owned(owner: str | None) -> ColumnElement[bool]:
    """Rows of ``owner``; every row for None (no API keys configured)."""
    return true() if owner is None else _responses.c.owner == owner


def _sqlite_pragmas(dbapi_connection: Any, busy_ms: int) -> None:
    """WAL lets readers run beside a writer (several workers or processes on one file)."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        # Switching to WAL needs the file to itself and may answer "database is locked"
        # without waiting while another process opens it at the same moment: retry.
        for attempt in range(50):
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError:
                if attempt == 49:
                    raise
                time.sleep(0.05)
    finally:
        cursor.close()


def _page(
    items: list[dict[str, Any]],
    *,
    after: str | None,
    before: str | None,
    limit: int,
    order: Literal["asc", "desc"],
) -> InputItemPage:
    ordered = list(items) if order == "asc" else list(reversed(items))
    ids = [item.get("id") for item in ordered]
    start, end = 0, len(ordered)
    if after is not None:
        if after not in ids:
            raise InvalidCursor("after", after)
        start = ids.index(after) + 1
    if before is not None:
        if before not in ids:
            raise InvalidCursor("before", before)
        end = ids.index(before)
    window = ordered[start:end] if start < end else []
    if before is not None and after is None:
        # Paging backwards: the items just before the cursor.
        data = window[-limit:]
        has_more = len(window) > limit
    else:
        data = window[:limit]
        has_more = len(window) > limit
    return InputItemPage(
        data=data,
        has_more=has_more,
        first_id=data[0].get("id") if data else None,
        last_id=data[-1].get("id") if data else None,
    )


def first_line(exc: BaseException) -> str:
    """A database error in one line: the driver's own first line (SQLAlchemy wraps it)."""
    inner = getattr(exc, "orig", None) or exc
    lines = str(inner).strip().splitlines()
    return lines[0] if lines else type(inner).__name__
