"""Rate-limit counts in a SQLite file, shared by every worker of one host.

Flask-Limiter keeps its counts in a `limits` storage named by
``RATELIMIT_STORAGE_URI``. Its ``memory://`` is a dictionary in each process:
under gunicorn every worker counts on its own, so a client gets each limit
once per worker (five tries a minute become twenty on four workers). Redis
counts for every host, but needs a server. One host needs less: a SQLite file
in LOG_DIR that every worker opens, as storm control's store does
(app/reporting/storm.py). SQLite's locking makes each count one atomic step
across the workers.

The URI names the file the way SQLAlchemy's URLs do: ``sqlite:///rate-limits.sqlite3``
(relative to the working directory) or ``sqlite:////var/log/blog/rate-limits.sqlite3``.
Importing this module registers the scheme with `limits` (the class
statement does it, through the metaclass of `Storage`); app/extensions.py
imports it before Flask-Limiter reads the setting.

Only Flask-Limiter's default strategy, fixed window, is implemented: one row
per limit and client (or account), with its count and the time its window
ends. A window that has ended starts again at the next hit, and ended windows
are deleted now and then, so the file stays as small as the traffic of the
last window.

If the file can't be used (a read-only folder, a file that isn't a
database), the methods raise `sqlite3.Error`; Flask-Limiter then counts in
memory (``RATELIMIT_IN_MEMORY_FALLBACK_ENABLED``) and calls `check` now and
then to see whether the file works again. A login never fails because of it.
"""

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from limits.storage import Storage

from app.database import SQLITE_BUSY_TIMEOUT_MS
from config import ConfigError

SCHEME = "sqlite"
PREFIX = f"{SCHEME}:///"
# Each process deletes the ended windows at most this often (seconds): a
# DELETE on every hit would cost more than the rows it saves.
CLEANUP_INTERVAL = 60.0

SCHEMA = """CREATE TABLE IF NOT EXISTS rate_limits (
    key TEXT PRIMARY KEY,
    hits INTEGER NOT NULL,
    expires_at REAL NOT NULL  -- seconds since the epoch: when the window ends
)"""

# One statement decides "same window or a new one" and counts the hit: two
# workers counting at once can't both start the window, nor lose a hit.
# (In DO UPDATE, the bare column names are the row as it was.)
COUNT_HIT = """
INSERT INTO rate_limits (key, hits, expires_at) VALUES (:key, :amount, :now + :expiry)
ON CONFLICT (key) DO UPDATE SET
    hits = CASE WHEN expires_at > :now THEN hits + :amount ELSE :amount END,
    expires_at = CASE WHEN expires_at > :now THEN expires_at ELSE :now + :expiry END
"""

# The storage methods that `limits` looks for when Flask-Limiter starts with
# another RATELIMIT_STRATEGY, and the strategy each belongs to.
OTHER_STRATEGIES = {
    "acquire_entry": "moving-window",
    "get_moving_window": "moving-window",
    "acquire_sliding_window_entry": "sliding-window-counter",
    "get_sliding_window": "sliding-window-counter",
    "clear_sliding_window": "sliding-window-counter",
}


def database_path(uri: str) -> str:
    """The file named by a ``sqlite:///`` URI (raise ConfigError for any other form)."""
    path = uri.removeprefix(PREFIX)
    if path == uri or not path:
        raise ConfigError(
            f"RATELIMIT_STORAGE_URI={uri!r} names no file: use "
            f"{PREFIX}relative/path.sqlite3 or {PREFIX}/absolute/path.sqlite3."
        )
    return path


class SQLiteStorage(Storage):
    """A `limits` storage for the fixed-window strategy, in a SQLite file.

    Each thread of each process has a connection of its own, opened at its
    first count: none is opened at import or in create_app, so a gunicorn
    master that loads the app before forking (--preload) hands no connection
    to its workers, and nothing here needs fork hooks that Windows lacks.
    """

    STORAGE_SCHEME = [SCHEME]

    def __init__(self, uri: str, wrap_exceptions: bool = False, **options: object):
        # `options` are RATELIMIT_STORAGE_OPTIONS: Redis's socket timeouts
        # (config.py), which mean nothing to a file.
        super().__init__(uri, wrap_exceptions=wrap_exceptions)
        self.path = database_path(uri)
        self._local = threading.local()
        # Connections a forked child inherited from its parent: kept, never
        # used nor closed (SQLite's rule: closing one could drop locks that
        # the child's own connection holds on the same file).
        self._inherited: list[sqlite3.Connection] = []
        self._next_cleanup = 0.0

    @property
    def base_exceptions(self) -> type[Exception]:
        return sqlite3.Error

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        """Count `amount` hits on `key` and return its count in the current
        window, which starts now and lasts `expiry` seconds if there was none."""
        with self._transaction() as db:
            # Read the clock once the write lock is ours: we may have waited for it.
            now = time.time()
            if now >= self._next_cleanup:
                self._next_cleanup = now + CLEANUP_INTERVAL
                db.execute("DELETE FROM rate_limits WHERE expires_at <= ?", (now,))
            values = {"key": key, "amount": amount, "now": now, "expiry": expiry}
            db.execute(COUNT_HIT, values)
            # Still inside the transaction: no other worker has counted since.
            (hits,) = db.execute("SELECT hits FROM rate_limits WHERE key = ?", (key,)).fetchone()
        return hits

    def get(self, key: str) -> int:
        """The count of `key` in its current window (0 if its window has ended)."""
        window = self._open_window(key)
        return window[0] if window else 0

    def get_expiry(self, key: str) -> float:
        """When the window of `key` ends (now if it has none)."""
        window = self._open_window(key)
        return window[1] if window else time.time()

    def clear(self, key: str) -> None:
        """Forget the count of `key`."""
        with self._transaction() as db:
            db.execute("DELETE FROM rate_limits WHERE key = ?", (key,))

    def reset(self) -> int:
        """Forget every count; return how many windows were still open."""
        with self._transaction() as db:
            db.execute("DELETE FROM rate_limits WHERE expires_at <= ?", (time.time(),))
            return db.execute("DELETE FROM rate_limits").rowcount

    def check(self) -> bool:
        """True if the file can be opened and written to.

        Flask-Limiter asks this, now and then, while it counts in memory
        after a failure; the write is useful: it deletes the ended windows.
        """
        try:
            with self._transaction() as db:
                db.execute("DELETE FROM rate_limits WHERE expires_at <= ?", (time.time(),))
        except sqlite3.Error:
            return False
        return True

    def __getattr__(self, name: str):
        """Refuse another RATELIMIT_STRATEGY by the name of a method it needs.

        `limits` looks for those methods (``hasattr``) when Flask-Limiter
        starts, so the app fails at startup with a message naming the
        setting, rather than with one naming this class.
        """
        if name in OTHER_STRATEGIES:
            raise ConfigError(
                f"RATELIMIT_STRATEGY={OTHER_STRATEGIES[name]!r} needs REDIS_URL (or memory://): "
                f"the SQLite file that counts the rate limits without it ({self.path}) "
                "does only 'fixed-window'."
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _open_window(self, key: str) -> tuple[int, float] | None:
        """(hits, expires_at) of the window of `key`; None if it has ended."""
        cursor = self._connection().execute(
            "SELECT hits, expires_at FROM rate_limits WHERE key = ? AND expires_at > ?",
            (key, time.time()),
        )
        return cursor.fetchone()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: BEGIN IMMEDIATE takes the file's write lock
        first, waiting up to the busy timeout while another worker holds it."""
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        finally:
            if db.in_transaction:  # something failed: the next transaction starts clean
                db.execute("ROLLBACK")

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection, opened at its first use in this process."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            # A new thread, or a forked child holding its parent's connection.
            if getattr(local, "connection", None) is not None:
                self._inherited.append(local.connection)
                local.connection = None
            local.connection = self._open()
            local.pid = os.getpid()
        return local.connection

    def _open(self) -> sqlite3.Connection:
        """Open the file, creating it and its table if needed."""
        # isolation_level=None: we begin transactions ourselves (_transaction).
        connection = sqlite3.connect(
            self.path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, isolation_level=None
        )
        try:
            # As app/database.py does for the blog's own SQLite database: WAL
            # lets the workers read while one writes. synchronous=NORMAL: no
            # disk flush per count; a power cut may forget the last few.
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(SCHEMA)
        except sqlite3.Error:
            connection.close()
            raise
        return connection
