"""Storm control: the shared count of each bug, and which occurrence is mailed.

Storm control answers a well-known warning: when many users hit the same bug,
error mails become overwhelming, and an inbox full of copies hides the one new
error that matters. Sentry groups duplicates; this is the small version of it.

Each bug (one fingerprint, app/reporting/fingerprint.py) is an `ErrorGroup`:
when it was first and last seen, how often, the last reference, and its mail
window. The first occurrence in a window is mailed; later ones are only
counted, and the count goes out in a summary once the window has closed (or
in the next mail about that bug, whichever comes first).

The groups live where every worker process can reach them, and where they
outlive a worker that is restarted: a small SQLite file in the log directory
(SQLite is in the standard library, needs no server, and its locking makes
"count or mail" one atomic decision across processes). `flask errors` reads
the same file, also while the site is down.

A storm must be cheap while it lasts. Once this process knows a bug's window
is open, a repeat is a counter increment in memory (`count_if_held`); the
outbox adds the counts to the store a moment later, in one transaction
(`flush_counts`). Only the first occurrence per process per window waits for
the store's decision, and it does so in the outbox, never in the request.
"""

import dataclasses
import os
import sqlite3
import threading
import time
import typing
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import redis

from app.mail import log
from app.reporting import STORE_FILE

T = TypeVar("T")

# After a mail that failed, the next occurrence is mailed again, but not
# sooner than this: a dead mail server must not be tried for every error.
RETRY_AFTER = 60.0
# A summary being sent is claimed for this long; if its worker dies before
# saying it was sent, another worker sends it after that.
CLAIM_FOR = 120.0
# `flask errors` shows the bugs seen in the last week; older ones are forgotten.
KEEP_FOR = 7 * 24 * 3600.0


# What happened to the last mail about a bug (ErrorGroup.mail); "" before any.
MAIL_SENT, MAIL_FAILED, MAIL_OFF = "sent", "failed", "off"


@dataclass
class ErrorGroup:
    """Everything known about one bug (one fingerprint)."""

    fingerprint: str
    title: str  # "ZeroDivisionError: division by zero", redacted
    location: str  # where this app's code raised it: "app/main/routes.py:42"
    subject: str  # of the latest mail about it; summaries refer to it
    first_seen: float
    last_seen: float
    window_start: float  # when the current mail window opened
    total: int = 0
    window_count: int = 0  # occurrences since window_start
    unreported: int = 0  # occurrences that no mail has mentioned yet
    claimed: int = 0  # of those, how many the summary being sent covers
    claimed_until: float = 0.0
    last_reference: str = ""
    mail: str = ""  # MAIL_SENT, MAIL_FAILED or MAIL_OFF
    mailed_at: float = 0.0

    def claim_in_flight(self, now: float) -> int:
        """The count a summary is being sent for right now (0 once its claim lapsed)."""
        return self.claimed if self.claimed_until > now else 0


FIELDS = [field.name for field in dataclasses.fields(ErrorGroup)]


class SQLiteGroups:
    """The groups in a SQLite file: one row each, one write transaction per change."""

    SCHEMA = f"""CREATE TABLE IF NOT EXISTS error_groups (
        fingerprint TEXT PRIMARY KEY, {", ".join(FIELDS[1:])})"""

    errors = (sqlite3.Error,)

    def __init__(self, path: str):
        self.path = self.location = path
        self._pid: int | None = None

    def update(self, key: str, change: Callable[[ErrorGroup | None], tuple[ErrorGroup, T]]) -> T:
        """Apply `change` to the group of `key` (None if there is none) atomically."""
        with self._transaction() as db:
            row = db.execute(
                f"SELECT {', '.join(FIELDS)} FROM error_groups WHERE fingerprint = ?", (key,)
            ).fetchone()
            group, result = change(ErrorGroup(*row) if row else None)
            if group is None:  # nothing to change
                return result
            db.execute(
                f"INSERT OR REPLACE INTO error_groups VALUES ({', '.join('?' * len(FIELDS))})",
                dataclasses.astuple(group),
            )
            return result

    def all(self) -> list[ErrorGroup]:
        with self._transaction() as db:
            rows = db.execute(f"SELECT {', '.join(FIELDS)} FROM error_groups").fetchall()
        return [ErrorGroup(*row) for row in rows]

    def delete(self, key: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM error_groups WHERE fingerprint = ?", (key,))

    def forget(self, last_seen_before: float, unreported_too: bool) -> None:
        with self._transaction() as db:
            db.execute(
                "DELETE FROM error_groups WHERE last_seen < ? AND (unreported = 0 OR ?)",
                (last_seen_before, unreported_too),
            )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # A connection must not cross a fork (SQLite's rule): a new process
        # (a gunicorn worker forked from a --preload master) opens its own.
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._connection = sqlite3.connect(
                self.path, timeout=10, isolation_level=None, check_same_thread=False
            )
            # WAL with synchronous=NORMAL: no disk flush on every count (a
            # storm is many counts a second); a power cut may lose the last few.
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=NORMAL")
            self._connection.execute(self.SCHEMA)
        db = self._connection
        # IMMEDIATE takes the write lock up front, so two workers can't both
        # read "not mailed yet" and both mail. (isolation_level=None above:
        # we begin transactions ourselves.)
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


class RedisGroups:
    """The groups in Redis, for several hosts: a hash per group and a set of their names.

    Each change is an optimistic transaction: WATCH the group, read it,
    write it back in MULTI/EXEC, and start again if another worker (on this
    host or another) changed it in between. So "count or mail" stays one
    atomic decision across every worker of every host.
    """

    errors = (redis.RedisError,)
    PREFIX = "blog:errors:"
    INDEX = "blog:errors"
    TYPES = typing.get_type_hints(ErrorGroup)

    def __init__(self, url: str):
        # Short timeouts: this runs in the outbox thread, and an unreachable
        # Redis must not hold the error mails up for long.
        self.client = redis.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2, decode_responses=True
        )
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]  # no password in a log line
        self.location = parts._replace(netloc=netloc).geturl()

    def update(self, key: str, change: Callable[[ErrorGroup | None], tuple[ErrorGroup, T]]) -> T:
        name = self.PREFIX + key
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(name)
                    group, result = change(self._group(pipe.hgetall(name)))
                    if group is None:
                        return result
                    pipe.multi()
                    pipe.hset(name, mapping=self._fields(group))
                    pipe.sadd(self.INDEX, key)
                    pipe.execute()
                    return result
                except redis.WatchError:
                    continue  # another worker changed it: decide again

    def all(self) -> list[ErrorGroup]:
        keys = sorted(self.client.smembers(self.INDEX))
        with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(self.PREFIX + key)
            stored = pipe.execute()
        return [group for fields in stored if (group := self._group(fields))]

    def forget(self, last_seen_before: float, unreported_too: bool) -> None:
        for group in self.all():
            if group.last_seen < last_seen_before and (group.unreported == 0 or unreported_too):
                self.client.delete(self.PREFIX + group.fingerprint)
                self.client.srem(self.INDEX, group.fingerprint)

    def _fields(self, group: ErrorGroup) -> dict[str, str]:
        return {name: str(value) for name, value in dataclasses.asdict(group).items()}

    def _group(self, fields: Mapping[str, str]) -> ErrorGroup | None:
        """The group stored as `fields`; None if there is none, or if it isn't
        one (a field missing or damaged): one bad key must not stop the
        summaries of every other bug, on every host."""
        try:
            return ErrorGroup(**{name: self.TYPES[name](fields[name]) for name in FIELDS})
        except (KeyError, TypeError, ValueError):
            return None


def open_store(location: str) -> SQLiteGroups | RedisGroups:
    """The store at `location`: a Redis URL, or a SQLite file's path."""
    if location.startswith(("redis://", "rediss://")):
        return RedisGroups(location)
    return SQLiteGroups(location)


def store_location(config: Mapping) -> str:
    """Where the app keeps its error groups: Redis if REDIS_URL is set, else
    a SQLite file in the log directory (shared by the workers of one host)."""
    return config.get("REDIS_URL") or str(Path(config["LOG_DIR"]) / STORE_FILE)


class StormControl:
    """Decide which error mails go out: the first of each bug in a window.

    Times are passed in as plain numbers (seconds since the epoch), so the
    decisions can be tested at every edge of a window without waiting.
    If the store can't be used (a read-only file left by a command run as
    root...), storm control goes on in memory, per process: failing open,
    because no storm control is better than no error mail.
    """

    def __init__(self, location: str, window: float):
        self.groups = open_store(location)
        self.window = window
        # Where groups go while a Redis store doesn't answer, and until when.
        self._memory: SQLiteGroups | None = None
        self._retry_store_at = 0.0
        self._outage_logged_until = 0.0
        self._reset_local()

    @property
    def path(self) -> str:
        """Where the groups are: a SQLite file's path, or a Redis URL without its password."""
        return self.groups.location

    # --- In the request: is this a repeat we already know to hold back? --------

    def count_if_held(self, key: str, now: float, reference: str) -> bool | None:
        """Count an occurrence of `key` in memory if this process knows its
        window is open. False: not known to be held, ask the store (`admit`).
        True or None: counted; None means the counts were empty until now,
        so the caller must have `flush_counts` run soon."""
        if self._pid != os.getpid():
            self._reset_local()  # a forked child: nothing of the parent's counts is its own
        if self._held_until.get(key, 0.0) <= now:
            return False
        with self._lock:
            was_empty = not self._counts
            count, _, _ = self._counts.get(key, (0, 0.0, ""))
            self._counts[key] = (count + 1, now, reference)
        return None if was_empty else True

    def flush_counts(self) -> None:
        """Add the counts kept in memory to the store (runs in the outbox)."""
        with self._lock:
            counts, self._counts = self._counts, {}
        for key, (count, last_seen, reference) in counts.items():

            def add(group, key=key, count=count, last_seen=last_seen, ref=reference):
                if group is None:  # the store was emptied meanwhile: start it again
                    group = ErrorGroup(key, "", "", "", last_seen, last_seen, last_seen)
                group.total += count
                group.window_count += count
                group.unreported += count
                if last_seen >= group.last_seen:  # another worker may have a newer one
                    group.last_seen, group.last_reference = last_seen, ref or group.last_reference
                return group, group.window_start + self.window

            self._held_until[key] = self._store("update", key, add)

    def _reset_local(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        # key -> (occurrences, last seen, last reference), not yet in the store
        self._counts: dict[str, tuple[int, float, str]] = {}
        # key -> when its window closes, as this process last heard from the store
        self._held_until: dict[str, float] = {}

    # --- In the outbox: the store's decisions ----------------------------------

    def admit(
        self, key: str, subject: str, now: float, *, title="", location="", reference=""
    ) -> int | None:
        """Record one occurrence of `key` at `now`.

        :return: None if the mail is held back (counted instead), else the
            number of earlier occurrences that no mail has mentioned yet.
        """

        def count_or_open_window(group: ErrorGroup | None):
            if group is None:
                # A window that has just closed: this occurrence is mailed.
                group = ErrorGroup(key, title, location, subject, now, now, now - self.window)
            group.total += 1
            if now >= group.last_seen:  # a worker's late decision mustn't hide a newer one
                group.last_seen, group.last_reference = now, reference or group.last_reference
            if now - group.window_start < self.window:
                group.window_count += 1
                group.unreported += 1
                return group, (None, group.window_start + self.window)
            # A new window: this occurrence is mailed, with the count of those
            # no mail has mentioned, except what a summary in flight covers.
            in_flight = group.claim_in_flight(now)
            earlier = group.unreported - in_flight
            group.unreported = in_flight
            group.window_start, group.window_count = now, 1
            group.subject = subject
            group.title, group.location = title or group.title, location or group.location
            return group, (earlier, now + self.window)

        decision, window_end = self._store("update", key, count_or_open_window)
        self._held_until[key] = window_end
        return decision

    def mail_sent(self, key: str, now: float) -> None:
        self._change(key, mail=MAIL_SENT, mailed_at=now)

    def mail_off(self, key: str) -> None:
        self._change(key, mail=MAIL_OFF)

    def mail_failed(self, key: str, now: float, unreported: int = 0) -> None:
        """A mail about `key` didn't go out: mail the next occurrence (after
        RETRY_AFTER), and keep the `unreported` count for it."""
        retry_at = now + min(RETRY_AFTER, self.window)

        def failed(group: ErrorGroup) -> None:
            group.window_start = retry_at - self.window
            group.unreported += unreported
            group.mail = MAIL_FAILED

        self._change(key, failed)
        self._held_until[key] = retry_at

    def closed_windows(self, now: float) -> list[tuple[str, str, int]]:
        """Claim the counts of windows that have closed: (key, subject, count).

        Each is claimed for CLAIM_FOR seconds, so that of several workers only
        one sends each summary; `summary_sent` or `summary_failed` settles it.
        """
        self.forget_old(now)
        claimed = []
        for group in self._store("all"):
            if not self._summary_due(group, now):
                continue

            def claim(current: ErrorGroup | None):
                # Decided again inside the transaction: another worker may
                # have claimed it since we looked.
                if current is None or not self._summary_due(current, now):
                    return None, None
                current.claimed, current.claimed_until = current.unreported, now + CLAIM_FOR
                return current, (current.fingerprint, current.subject, current.unreported)

            summary = self._store("update", group.fingerprint, claim)
            if summary:
                claimed.append(summary)
        return claimed

    def _summary_due(self, group: ErrorGroup, now: float) -> bool:
        """A count to report, a closed window, and no claim (or retry time) pending."""
        return (
            group.unreported > 0
            and now - group.window_start >= self.window
            and group.claimed_until <= now
        )

    def forget_old(self, now: float, unreported_too: bool = False) -> None:
        """Forget the bugs not seen for KEEP_FOR (a week), unless a count is due
        (`unreported_too`: even then, when there is no mail to report it in)."""
        self._store("forget", now - KEEP_FOR, unreported_too)

    def summary_sent(self, key: str, count: int, now: float) -> None:
        def sent(group: ErrorGroup) -> None:
            group.unreported = max(0, group.unreported - count)
            group.claimed, group.claimed_until = 0, 0.0
            group.mail, group.mailed_at = MAIL_SENT, now

        self._change(key, sent)

    def summary_failed(self, key: str, now: float) -> None:
        """Keep the count for a later summary or mail; try again after RETRY_AFTER
        (claimed_until then holds the retry time, with nothing claimed)."""

        def failed(group: ErrorGroup) -> None:
            group.claimed, group.claimed_until = 0, now + min(RETRY_AFTER, self.window)
            group.mail = MAIL_FAILED

        self._change(key, failed)

    def all_groups(self) -> list[ErrorGroup]:
        """Every group, most recently seen first (for `flask errors`)."""
        return sorted(self._store("all"), key=lambda g: g.last_seen, reverse=True)

    def _change(self, key: str, change=None, **values) -> None:
        def apply(group: ErrorGroup | None):
            if group is None:
                return None, None
            if change:
                change(group)
            for name, value in values.items():
                setattr(group, name, value)
            return group, None

        self._store("update", key, apply)

    def _store(self, method: str, *args):
        """Call `method` of the store; fall back to memory if it can't be used.

        A SQLite file that can't be used won't heal by itself (a read-only
        file, a missing folder): memory for the rest of this process. Redis
        may come back: memory until it is tried again, RETRY_AFTER later,
        and then what memory counted meanwhile goes to Redis, so that its
        summaries and `flask errors` have it. Either way the outage is
        logged once per window, not for every error.
        """
        store = self.groups
        try:
            if self._memory is not None and time.time() >= self._retry_store_at:
                self._hand_memory_to_store()
            if self._memory is not None:
                store = self._memory
            return getattr(store, method)(*args)
        except self.groups.errors as error:
            if store is self._memory or self.groups.location == ":memory:":
                raise  # memory is the last resort: a bug, not an outage
            now = time.time()
            if now >= self._outage_logged_until:
                self._outage_logged_until = now + self.window
                log.error("Error store %s unusable (%s); keeping it in memory", self.path, error)
            if isinstance(self.groups, SQLiteGroups):
                self.groups = SQLiteGroups(":memory:")
                return getattr(self.groups, method)(*args)
            if self._memory is None:
                self._memory = SQLiteGroups(":memory:")
            self._retry_store_at = now + min(RETRY_AFTER, self.window)
            return getattr(self._memory, method)(*args)

    def _hand_memory_to_store(self) -> None:
        """Add each group counted in memory during an outage to the store's
        (raises the store's error if it still doesn't answer)."""
        for extra in self._memory.all():

            def merge(group: ErrorGroup | None, extra=extra):
                if group is None:
                    return extra, None
                group.total += extra.total
                group.window_count += extra.window_count
                group.unreported += extra.unreported
                group.first_seen = min(group.first_seen, extra.first_seen)
                if extra.last_seen > group.last_seen:
                    group.last_seen, group.last_reference = extra.last_seen, extra.last_reference
                return group, None

            self.groups.update(extra.fingerprint, merge)
            self._memory.delete(extra.fingerprint)  # handed over: never twice
        self._memory = None
        log.warning("Error store %s answers again; the counts kept in memory are in it", self.path)
