"""The state store plugins share (karma, greylisting): string values under string keys, each with a TTL.

``config/storage`` names the backend with one URL:

* ``sqlite:PATH``: a file on this host (the default, ``sqlite:<spool_dir>/state.db``),
  shared safely by ``--workers`` processes;
* ``redis://[:PASSWORD@]HOST[:PORT][/DB]``: a Redis server, for several hosts sharing state.

A store connects lazily, once per process: a worker forked from the master
never uses the master's sqlite connection or Redis socket.  Every call is
bounded (sqlite's busy timeout, Redis socket timeouts); a backend that cannot
answer raises StateUnavailable and the calling plugin decides what that means.
"""
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple
from urllib.parse import unquote, urlsplit

TIMEOUT = 2.0  # seconds any one call may wait for a lock or for Redis
PURGE_EVERY = 300.0  # seconds between sweeps of expired sqlite rows (reads ignore them anyway)


_INHERITED: List[sqlite3.Connection] = []


class StateUnavailable(Exception):
    """The store could not answer (Redis down or slow, sqlite locked or unwritable)."""


class Store:
    """get / set / incr / delete / scan over one backend; keys and values are str, TTLs are seconds."""

    url = ""

    def get(self, key: str) -> Optional[str]:
        raise NotImplementedError

    def ttl(self, key: str) -> Optional[float]:
        """Seconds until ``key`` expires, or None if there is no such key."""
        raise NotImplementedError

    def set(self, key: str, value: str, ttl: float) -> None:
        raise NotImplementedError

    def incr(self, key: str, ttl: float, amount: int = 1) -> int:
        """Add ``amount`` atomically and return the new number; a missing key starts at 0 and lives ``ttl`` seconds.

        An existing key keeps its expiry: a counter of strikes within a window.
        """
        raise NotImplementedError

    def delete(self, key: str) -> bool:
        """Remove ``key``; whether it was there."""
        raise NotImplementedError

    def scan(self, prefix: str = "") -> Iterator[Tuple[str, str]]:
        """(key, value) of every live key starting with ``prefix``, in no particular order."""
        raise NotImplementedError


def _check_ttl(ttl: float) -> None:
    if not ttl > 0:
        raise ValueError("every key needs a TTL of more than 0 seconds, not %r" % (ttl,))


class SqliteStore(Store):
    """One table in a WAL-mode sqlite file; expired rows are ignored on read and purged now and then."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.url = "sqlite:" + path
        self._db: Optional[sqlite3.Connection] = None
        self._pid = 0
        self._next_purge = 0.0

    def _run(self, sql: str, parameters: tuple = ()) -> List[tuple]:
        try:
            if self._pid != os.getpid():  # first use in this process (or a fork of the one that made it)
                if self._db is not None:
                    # A connection made before a fork is never used or closed here (closing may touch
                    # the parent's WAL state); keeping a reference keeps it from being collected.
                    _INHERITED.append(self._db)
                self._db = self._connect()
                self._pid = os.getpid()
            return self._db.execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            raise StateUnavailable("state store %s: %s" % (self.url, exc)) from None

    def _connect(self) -> sqlite3.Connection:
        # Autocommit: every statement below is its own transaction, so no process holds a lock between calls.
        db = sqlite3.connect(self.path, timeout=TIMEOUT, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL,"
                   " expires REAL NOT NULL) WITHOUT ROWID")
        return db

    def _purge(self, now: float) -> None:
        if now >= self._next_purge:
            self._next_purge = now + PURGE_EVERY
            self._run("DELETE FROM state WHERE expires <= ?", (now,))

    def get(self, key: str) -> Optional[str]:
        rows = self._run("SELECT value FROM state WHERE key = ? AND expires > ?", (key, time.time()))
        return rows[0][0] if rows else None

    def ttl(self, key: str) -> Optional[float]:
        now = time.time()
        rows = self._run("SELECT expires FROM state WHERE key = ? AND expires > ?", (key, now))
        return rows[0][0] - now if rows else None

    def set(self, key: str, value: str, ttl: float) -> None:
        _check_ttl(ttl)
        now = time.time()
        self._run("INSERT OR REPLACE INTO state (key, value, expires) VALUES (?, ?, ?)", (key, str(value), now + ttl))
        self._purge(now)

    def incr(self, key: str, ttl: float, amount: int = 1) -> int:
        _check_ttl(ttl)
        now = time.time()
        # One statement: sqlite takes the write lock for it, so concurrent workers never lose an increment.
        rows = self._run(
            "INSERT INTO state (key, value, expires) VALUES (?1, ?2, ?3) ON CONFLICT (key) DO UPDATE SET"
            " value = CASE WHEN expires <= ?4 THEN ?2 ELSE CAST(value AS INTEGER) + ?2 END,"
            " expires = CASE WHEN expires <= ?4 THEN ?3 ELSE expires END RETURNING value",
            (key, int(amount), now + ttl, now))
        self._purge(now)
        return int(rows[0][0])

    def delete(self, key: str) -> bool:
        rows = self._run("DELETE FROM state WHERE key = ? AND expires > ? RETURNING key", (key, time.time()))
        return bool(rows)

    def scan(self, prefix: str = "") -> Iterator[Tuple[str, str]]:
        # substr() rather than LIKE: a prefix may hold % and _.
        rows = self._run("SELECT key, value FROM state WHERE substr(key, 1, ?) = ? AND expires > ?",
                         (len(prefix), prefix, time.time()))
        return iter(rows)


class RedisStore(Store):
    """Keys in one Redis database; Redis expires them itself."""

    def __init__(self, url: str, host: str, port: int, db: int, password: Optional[str]) -> None:
        self.url = url
        self._options = dict(host=host, port=port, db=db, password=password)
        self._client: Any = None
        self._pid = 0

    def _redis(self) -> Any:
        if self._pid != os.getpid():
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
            # No retries: one bounded attempt, so a dead server costs a plugin at most TIMEOUT.
            self._client = redis.Redis(**self._options, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT,
                                       retry=Retry(NoBackoff(), 0), decode_responses=True)
            self._pid = os.getpid()
        return self._client

    def _call(self, function: Any) -> Any:
        import redis
        try:
            return function(self._redis())
        except redis.RedisError as exc:
            raise StateUnavailable("state store %s: %s" % (self.url, exc)) from None

    def get(self, key: str) -> Optional[str]:
        return self._call(lambda r: r.get(key))

    def ttl(self, key: str) -> Optional[float]:
        left = self._call(lambda r: r.pttl(key))
        return left / 1000.0 if left >= 0 else None

    def set(self, key: str, value: str, ttl: float) -> None:
        _check_ttl(ttl)
        self._call(lambda r: r.set(key, str(value), px=int(ttl * 1000)))

    def incr(self, key: str, ttl: float, amount: int = 1) -> int:
        _check_ttl(ttl)

        def create_then_add(r: Any) -> int:
            # MULTI/EXEC: create with the TTL only if missing, then add; nothing runs in between.
            pipe = r.pipeline(transaction=True)
            pipe.set(key, 0, px=int(ttl * 1000), nx=True)
            pipe.incrby(key, int(amount))
            return pipe.execute()[1]
        return int(self._call(create_then_add))

    def delete(self, key: str) -> bool:
        return bool(self._call(lambda r: r.delete(key)))

    def scan(self, prefix: str = "") -> Iterator[Tuple[str, str]]:
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"

        def pairs(r: Any) -> List[Tuple[str, str]]:
            keys = list(r.scan_iter(match=pattern, count=1000))
            values = r.mget(keys) if keys else []
            return [(k, v) for k, v in zip(keys, values) if v is not None]  # expired between the two calls
        return iter(self._call(pairs))


def open_store(url: str) -> Store:
    """The store ``url`` names, not yet connected; ValueError (with the fix) for a URL we cannot use."""
    if url.startswith("sqlite:"):
        path = url[len("sqlite:"):]
        if not path or not os.path.isabs(path):
            raise ValueError("storage %r: write sqlite:/absolute/path/state.db" % url)
        if not Path(path).parent.is_dir():
            raise ValueError("storage %r: directory %s does not exist; create it or name another"
                             % (url, Path(path).parent))
        return SqliteStore(path)
    if url.startswith("redis://"):
        parts = urlsplit(url)
        try:
            port = parts.port or 6379
            db = int(parts.path.lstrip("/") or 0)
        except ValueError:
            port = db = -1
        if not parts.hostname or port < 0 or db < 0 or parts.query or parts.fragment:
            raise ValueError("storage %r: write redis://HOST:PORT/DB, e.g. redis://127.0.0.1:6379/0" % url)
        return RedisStore(url, parts.hostname, port, db, unquote(parts.password) if parts.password else None)
    raise ValueError("storage %r: write sqlite:/path/state.db or redis://HOST:PORT/DB" % url)


def store_url(config: Any, spool_dir: str) -> Tuple[str, Optional[str], Optional[int]]:
    """The ``storage`` URL of ``config`` (default ``sqlite:<spool_dir>/state.db``) and the file and line it came from."""
    entries = config.entries("storage")
    if entries:
        return entries[0].value, entries[0].path, entries[0].line
    return "sqlite:" + os.path.join(os.path.abspath(spool_dir), "state.db"), None, None
