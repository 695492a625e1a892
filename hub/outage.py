"""Serving through a database outage, for a bounded time.

While the database cannot be reached, the parts that read it (the key cache, admission's prices, fees and limits,
the purses) serve what they read last, if it was read at most `seconds` ago; the recorder keeps what it must
write queued (the costs stay reserved in the purses) and writes it when the database is back. A request that
needs something never read (a key not seen before, a price never read) gets `DatabaseUnavailable`: 503 with
Retry-After. One line is logged when an outage starts and one when it ends, however many requests and retries
fail in between.

`noticed` is called by whoever finds the database away; from then on readers do not try it (a database host that
has vanished would make every request wait for a connect timeout) and one probe asks it `SELECT 1` every
PROBE_SECONDS until it answers; a successful write by the recorder ends the outage too. Readers check one flag,
and only when their cached value has expired, so the hot path is unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from sqlalchemy import exc as sa
from sqlalchemy import text

from hub.errors import DatabaseUnavailable

if TYPE_CHECKING:
    from hub.db import Database

log = logging.getLogger("gpuclub")
SECONDS = 300.0
PROBE_SECONDS = 1.0
PROBE_TIMEOUT = 5.0
RETRY_AFTER = 5

# PostgreSQL's SQLSTATEs that mean "no connection", not "bad statement": connection exceptions (class 08),
# the server shutting down or starting (57P01-57P03), too many connections, the database gone.
_UNREACHABLE_STATES = ("08", "57P01", "57P02", "57P03", "53300", "3D000")
_DRIVERS = ("sqlalchemy", "asyncpg", "aiosqlite", "sqlite3", "psycopg")


def is_outage(exc: BaseException) -> bool:
    """The database cannot be reached (refused, gone, shutting down, the pool timed out), as opposed to a statement
    it refused (a bad query, a constraint) or SQLite's "database is locked", which waiting does not fix here."""
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if _unreachable(error):
            return True
        error = getattr(error, "orig", None) or error.__cause__
    return False


def _unreachable(error: BaseException) -> bool:
    if isinstance(error, sa.TimeoutError):  # the pool gave no connection in time
        return True
    if isinstance(error, sa.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, sa.OperationalError | sa.InterfaceError):
        message = str(error.orig if error.orig is not None else error).lower()
        if "locked" in message or "no such" in message or "syntax error" in message:  # SQLite: not an outage
            return False
        if isinstance(error, sa.InterfaceError) and type(error.orig).__module__ != "sqlite3":
            # The driver refused to use the connection: an outage only if it is closed or lost (asyncpg's
            # "connection is closed"), not a statement it would not send (too many arguments, another operation)
            return "closed" in message or "lost" in message
        return type(error.orig).__module__ != "sqlite3" or "unable to open" in message or "disk i/o" in message
    if isinstance(error, OSError):  # refused, reset, no route, a connect timeout (TimeoutError is an OSError)
        return _raised_in_driver(error)  # not a file a page could not read
    state = getattr(error, "sqlstate", None)  # asyncpg's own errors, raised as they are on connect
    if isinstance(state, str):
        if state == "55000":  # ALLOW_CONNECTIONS false says this; the same code also means other things
            return "not currently accepting connections" in str(error)
        return state.startswith(_UNREACHABLE_STATES)
    name = type(error).__name__
    return type(error).__module__.startswith("asyncpg") and name == "InterfaceError" and "closed" in str(error)


def _raised_in_driver(error: BaseException) -> bool:
    trace = error.__traceback__
    while trace is not None:
        if trace.tb_frame.f_globals.get("__name__", "").startswith(_DRIVERS):
            return True
        trace = trace.tb_next
    return False


class Outage:
    """Whether the database is away now, and for how long what was read before may still be served."""

    def __init__(self, database: Database | None = None, seconds: float = SECONDS) -> None:
        self.database = database  # None: no probe (parts built alone in tests end an outage by `recovered`)
        self.seconds = seconds
        self.since: float | None = None  # time.monotonic() when this outage was noticed
        self.reached = False  # the database has answered this process: there may be something to serve
        self.outages = 0
        self.task: asyncio.Task[None] | None = None

    @property
    def degraded(self) -> bool:
        return self.since is not None

    def noticed(self, exc: BaseException) -> None:
        """The database could not be reached: say so once per outage and start probing for its return."""
        if self.since is not None:
            return
        self.since = time.monotonic()
        self.outages += 1
        log.warning(
            "database unreachable (%s); serving /v1 from what was read in the last %g s and queueing writes",
            describe(exc),
            self.seconds,
        )
        if self.database is not None and (self.task is None or self.task.done()):
            self.task = asyncio.get_running_loop().create_task(self._probe())

    def answered(self) -> None:
        """A read succeeded (readers call it on a cache miss only)."""
        self.reached = True

    def recovered(self) -> None:
        """The database answered again: say so once."""
        self.reached = True
        if self.since is None:
            return
        lasted, self.since = time.monotonic() - self.since, None
        log.info("database reachable again after %.1f s; writing what was queued", lasted)

    def usable(self, read_at: float) -> bool:
        """Whether a value read at `read_at` (time.monotonic()) may still be served instead of a fresh one."""
        return time.monotonic() - read_at <= self.seconds

    @property
    def serving(self) -> bool:
        """During an outage, whether what was read before it can still be served (for /healthz)."""
        return self.reached and self.since is not None and time.monotonic() - self.since <= self.seconds

    def unavailable(self, what: str) -> DatabaseUnavailable:
        """The error for a request that needs `what`, which was never read (or too long ago)."""
        return DatabaseUnavailable(
            f"The hub's database is unreachable and {what} has not been read before. Please try again shortly.",
            retry_after=RETRY_AFTER,
        )

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    async def _probe(self) -> None:
        assert self.database is not None
        while self.since is not None:
            await asyncio.sleep(PROBE_SECONDS)
            try:
                async with asyncio.timeout(PROBE_TIMEOUT), self.database.session() as db:
                    await db.exec(text("SELECT 1"))  # type: ignore[call-overload]
            except Exception:  # noqa: BLE001, S112 - still away (said once already); the next round asks again
                continue
            self.recovered()


def describe(exc: BaseException) -> str:
    """The innermost cause in one short line, for the outage's log line."""
    inner = exc
    for _ in range(8):  # a few levels: SQLAlchemy's error, the driver's, what the driver caught
        nested = getattr(inner, "orig", None) or inner.__cause__
        if nested is None or nested is inner:
            break
        inner = nested
    message = " ".join(str(inner).split())[:200]
    return f"{type(inner).__name__}: {message}" if message else type(inner).__name__
