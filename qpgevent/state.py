"""The state store plugins share (karma, greylisting): string values under string keys, each with a TTL.

``config/storage`` names the backend with one URL:

* ``sqlite:PATH``: a file on this host (the default, ``sqlite:<spool_dir>/state.db``),
  shared safely by ``--workers`` processes;
* ``redis://[:PASSWORD@]HOST[:PORT][/DB]``: a Redis server, for several hosts sharing state.

A store connects lazily, once per process: a worker forked from the master
never uses the master's sqlite connection or Redis socket.  Every call is
bounded (sqlite's busy timeout, socket timeouts for Redis); a backend that cannot
answer raises StateUnavailable and the calling plugin decides what that means.
"""
import os
import re
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import unquote, urlsplit

import gevent
from gevent import monkey
from gevent.threadpool import ThreadPool

from . import resp

TIMEOUT = 2.0  # seconds any one call may wait for a lock or for Redis
PURGE_EVERY = 300.0  # seconds between sweeps of expired sqlite rows (reads ignore them anyway)
# Seconds a Redis that did not answer (refused, or silent past TIMEOUT) is not asked again: a hung
# server then costs one call TIMEOUT per pause, not every call of every session (nor every health check).
RETRY_AFTER = 5.0
POOL_SIZE = 4  # native threads (and sqlite connections) per process; calls beyond wait their turn
# Idle Redis connections kept per process; a burst beyond opens more and closes them after.  At 16,
# 100 concurrent sessions opened a new connection for two calls in three (3,416 connects for 5,000
# messages of karma, bench/race.py's chain): keep enough for a busy process's concurrent calls.  Redis
# allows 10,000 clients by default: 20 processes (10 hosts x 2 workers) at 256 each stay well under it.
MAX_IDLE = 256

# The real ones, whatever gevent's monkey-patching has made of the threading module.
_thread_local = monkey.get_original("threading", "local")
_native_sleep = monkey.get_original("time", "sleep")  # pauses only the pool thread it runs in
_native_thread_id = monkey.get_original("threading", "get_ident")
_INTEGER = re.compile(r"-?[1-9][0-9]*|0")
_INHERITED: List[Any] = []


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

        An existing key keeps its expiry: a counter of strikes within a window.  A key that
        holds something other than a whole number raises ValueError and is left as it was
        (on both backends: Redis's INCRBY refuses it too).
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
    """One table in a WAL-mode sqlite file; expired rows are ignored on read and purged now and then.

    sqlite's C calls do not yield to gevent: one waiting for another process's
    write lock would stop every session of the worker for up to TIMEOUT.  So
    each call runs in a small pool of native threads (one connection each)
    while the calling greenlet waits and the others run on.  The pool belongs
    to the process that made it: a forked worker makes its own.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.url = "sqlite:" + path
        self._pid = 0
        self._pool: Any = None
        self._pool_thread = 0
        self._local: Any = None
        self._next_purge = 0.0

    def _call(self, function: Callable[[sqlite3.Connection], Any]) -> Any:
        """``function(connection)`` in a pool thread: only the calling greenlet waits for it."""
        if self._pid != os.getpid():  # first use in this process (or a fork of the one that made the pool)
            if self._local is not None:
                # Connections made before a fork are never used or closed here (closing may touch
                # the parent's WAL state); keeping a reference keeps them from being collected.
                _INHERITED.append(self._local)
            if self._pid:
                # The event loop shares its wake-up descriptor with the parent until reinit: without
                # it the pool's "done" may wake the parent's loop instead. (Workers the master forks
                # have done this already; a second time is harmless.)
                gevent.reinit()
            self._local = _thread_local()
            self._pool = ThreadPool(POOL_SIZE)
            self._pool_thread = _native_thread_id()
            self._pid = os.getpid()
        if _native_thread_id() != self._pool_thread:
            # A native thread of its own (a plain thread, not a greenlet): it may block, and the
            # pool belongs to another thread's event loop.
            return self._in_thread(function)
        return self._pool.apply(self._in_thread, (function,))

    def _in_thread(self, function: Callable[[sqlite3.Connection], Any]) -> Any:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                db = getattr(self._local, "db", None)
                if db is None:
                    db = self._local.db = self._connect()
                return function(db)
            except sqlite3.OperationalError as exc:
                # SQLite answers "locked" at once, without its busy wait, in some races (processes
                # opening a new file together and switching it to WAL): try again until TIMEOUT.
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise StateUnavailable("state store %s: %s" % (self.url, exc)) from None
                _native_sleep(0.01)
            except sqlite3.Error as exc:
                raise StateUnavailable("state store %s: %s" % (self.url, exc)) from None

    def _run(self, sql: str, parameters: tuple = ()) -> List[tuple]:
        return self._call(lambda db: db.execute(sql, parameters).fetchall())

    def _connect(self) -> sqlite3.Connection:
        # Autocommit: every statement below is its own transaction, so no process holds a lock between calls.
        db = sqlite3.connect(self.path, timeout=TIMEOUT, isolation_level=None)
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

        def add(db: sqlite3.Connection) -> int:
            # BEGIN IMMEDIATE takes the write lock first: no other worker changes the key in between.
            db.execute("BEGIN IMMEDIATE")
            try:
                rows = db.execute("SELECT value, expires FROM state WHERE key = ?", (key,)).fetchall()
                if rows and rows[0][1] > now:
                    value, expires = _as_integer(key, rows[0][0]) + int(amount), rows[0][1]
                else:
                    value, expires = int(amount), now + ttl
                db.execute("INSERT OR REPLACE INTO state (key, value, expires) VALUES (?, ?, ?)",
                           (key, str(value), expires))
                db.execute("COMMIT")
            except Exception:
                db.execute("ROLLBACK")
                raise
            return value
        result = self._call(add)
        self._purge(now)
        return result

    def delete(self, key: str) -> bool:
        rows = self._run("DELETE FROM state WHERE key = ? AND expires > ? RETURNING key", (key, time.time()))
        return bool(rows)

    def scan(self, prefix: str = "") -> Iterator[Tuple[str, str]]:
        # substr() rather than LIKE: a prefix may hold % and _.
        rows = self._run("SELECT key, value FROM state WHERE substr(key, 1, ?) = ? AND expires > ?",
                         (len(prefix), prefix, time.time()))
        return iter(rows)


def _as_integer(key: str, value: str) -> int:
    """``value`` as Redis's INCRBY reads it: a signed decimal integer, nothing else."""
    if not _INTEGER.fullmatch(value):
        raise _not_whole(key, value)
    return int(value)


def _not_whole(key: str, value: Optional[str]) -> ValueError:
    return ValueError("state store: incr of %r, which holds %r, not a whole number" % (key, value))


class RedisStore(Store):
    """Keys in one Redis database; Redis expires them itself.

    A lean client (qpgevent/resp.py over plain sockets, which gevent's
    monkey-patching makes cooperative): each call takes an idle connection of
    this process (or opens one), sends its commands at once and reads the
    replies, each wait bounded by TIMEOUT.  Only a connection that gave every
    reply goes back; one that saw any error is closed.
    """

    def __init__(self, url: str, host: str, port: int, db: int, password: Optional[str]) -> None:
        self.url = url
        self._host, self._port, self._db, self._password = host, port, db, password
        self._idle: List[_RedisConnection] = []
        self._pid = 0
        self._down_until = 0.0
        self._down_reason = ""

    def _call(self, *commands: List[resp.Part]) -> List[Any]:
        """The replies to ``commands``, sent together; an error reply is a value here, not raised."""
        left = self._down_until - time.monotonic()
        if left > 0:
            raise StateUnavailable("state store %s: %s (not asked again for %.1f s)" % (self.url, self._down_reason, left))
        try:
            return self._exchange(commands)
        except (OSError, resp.ProtocolError) as exc:
            for idle in self._idle:  # made before the failure: as likely to be broken
                idle.close()
            self._idle = []
            self._down_until, self._down_reason = time.monotonic() + RETRY_AFTER, str(exc)
            raise StateUnavailable("state store %s: %s" % (self.url, exc)) from None

    def _exchange(self, commands: Sequence[List[resp.Part]]) -> List[Any]:
        if self._pid != os.getpid():  # a fork: the parent's sockets are the parent's
            self._idle, self._pid = [], os.getpid()
        while True:
            try:
                connection, fresh = self._idle.pop(), False
            except IndexError:  # (not a test first: a native thread may take the last one in between)
                connection, fresh = self._connect(), True
            try:
                replies = connection.execute(commands)
            except _ClosedWhileIdle:
                connection.close()
                if fresh:
                    raise
                continue  # Redis closed it while it sat idle (a restart, its idle timeout): nothing ran
            except BaseException:  # any error, or a gevent.Timeout mid-reply: its state is unknown
                connection.close()
                raise
            if len(self._idle) < MAX_IDLE:
                self._idle.append(connection)
            else:
                connection.close()
            return replies

    def _connect(self) -> "_RedisConnection":
        # No retries: one bounded attempt, so a dead server costs a plugin at most TIMEOUT.
        connection = _RedisConnection(self._host, self._port)
        try:
            handshake = ([["AUTH", self._password]] if self._password else []) + \
                        ([["SELECT", self._db]] if self._db else [])
            for reply in connection.execute(handshake):
                if isinstance(reply, resp.ReplyError):
                    raise ConnectionError("Redis refused the connection's set-up: %s" % reply)
        except BaseException:
            connection.close()
            raise
        return connection

    def _command(self, *command: resp.Part) -> Any:
        """The reply to one command; an error reply raises StateUnavailable."""
        reply = self._call(list(command))[0]
        if isinstance(reply, resp.ReplyError):
            raise StateUnavailable("state store %s: %s" % (self.url, reply))
        return reply

    def get(self, key: str) -> Optional[str]:
        return _text(self._command("GET", key))

    def ttl(self, key: str) -> Optional[float]:
        left = self._command("PTTL", key)
        return left / 1000.0 if left >= 0 else None

    def set(self, key: str, value: str, ttl: float) -> None:
        _check_ttl(ttl)
        self._command("SET", key, str(value), "PX", int(ttl * 1000))

    def incr(self, key: str, ttl: float, amount: int = 1) -> int:
        _check_ttl(ttl)
        # MULTI/EXEC: create with the TTL only if missing, then add; nothing runs in between.
        replies = self._call(["MULTI"], ["SET", key, 0, "PX", int(ttl * 1000), "NX"], ["INCRBY", key, int(amount)],
                             ["EXEC"])
        queued, done = replies[:3], replies[3]
        failures = [r for r in queued + (done if isinstance(done, list) else [done]) if isinstance(r, resp.ReplyError)]
        if failures:
            if "not an integer" in str(failures[0]):
                raise _not_whole(key, self.get(key))
            raise StateUnavailable("state store %s: %s" % (self.url, failures[0]))
        return int(done[1])

    def delete(self, key: str) -> bool:
        return bool(self._command("DEL", key))

    def scan(self, prefix: str = "") -> Iterator[Tuple[str, str]]:
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
        keys: List[bytes] = []
        cursor = b"0"
        while True:
            cursor, found = self._command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            keys.extend(found)
            if cursor == b"0":
                break
        values = self._command("MGET", *keys) if keys else []
        # A None value: the key expired between the two calls.
        return iter([(_text(k), _text(v)) for k, v in zip(keys, values) if v is not None])


class _ClosedWhileIdle(ConnectionError):
    """The connection was closed before any reply came: the commands sent on it did not run."""


class _RedisConnection:
    """One socket to Redis and the bytes read from it but not yet parsed."""

    def __init__(self, host: str, port: int) -> None:
        try:
            self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        except socket.timeout:
            raise TimeoutError("Timeout connecting to %s:%d" % (host, port)) from None
        except OSError as exc:
            raise ConnectionError("Error connecting to %s:%d: %s" % (host, port, exc.strerror or exc)) from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def execute(self, commands: Sequence[List[resp.Part]]) -> List[Any]:
        """Send ``commands`` in one write; their replies, in order."""
        try:
            return self._exchange(commands)
        except socket.timeout:
            raise TimeoutError("Redis gave no answer within %.1f s" % TIMEOUT) from None

    def _exchange(self, commands: Sequence[List[resp.Part]]) -> List[Any]:
        if not commands:
            return []
        try:
            self.sock.sendall(b"".join(resp.encode(command) for command in commands))
        except (BrokenPipeError, ConnectionResetError):
            raise _ClosedWhileIdle("Connection closed by Redis") from None
        replies: List[Any] = []
        start = 0
        while len(replies) < len(commands):
            parsed = resp.parse(self.buffer, start)
            if parsed is None:
                self.buffer, start = self.buffer[start:], 0
                try:
                    chunk = self.sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    # Closed before one byte of reply: Redis closed it before it read the commands.
                    raise (_ClosedWhileIdle if not replies and not self.buffer else ConnectionError)(
                        "Connection closed by Redis")
                self.buffer += chunk
            else:
                reply, start = parsed
                replies.append(reply)
        self.buffer = self.buffer[start:]
        return replies

    def close(self) -> None:
        self.sock.close()


def _text(value: Optional[bytes]) -> Optional[str]:
    return None if value is None else value.decode("utf-8", "replace")


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


def plugin_store(default: Optional[Store], name: str, db_dir: Optional[str] = None,
                 redis: Optional[str] = None) -> Store:
    """The store a plugin's own qpsmtpd arguments name, else ``default`` (``config/storage``).

    ``db_dir DIR`` is ``sqlite:DIR/<name>.db``; ``redis HOST[:PORT]`` is
    ``redis://HOST:PORT/0`` (port 6379 when none is given); ``redis`` wins, as
    in qpsmtpd.  ValueError, with the fix, for a directory or host we cannot use.
    """
    if redis:
        parts = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]/@]+)(?::([0-9]+))?", redis)
        if not parts:
            raise ValueError("redis %r: write HOST or HOST:PORT, e.g. redis 127.0.0.1:6379" % redis)
        return open_store("redis://%s:%s/0" % (parts.group(1), parts.group(2) or 6379))
    if db_dir:
        directory = os.path.abspath(db_dir)
        if not os.path.isdir(directory):
            raise ValueError("db_dir %s does not exist; create it (writable by the server's user) or name another"
                             % directory)
        return open_store("sqlite:" + os.path.join(directory, name + ".db"))
    if default is None:
        raise ValueError("no state store: config/storage is unusable")
    return default
