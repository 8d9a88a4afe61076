"""The state store's own Redis client (RedisStore over qpgevent/resp.py): set-up, connection reuse, concurrency.

tests/test_state.py holds what both backends do; this file what only the
client's connections decide: AUTH and SELECT, which connections go back to
the pool, and many greenlets at once.
"""
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from qpgevent import state
from qpgevent.state import StateUnavailable, open_store
from qpgevent.testing import RedisServer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def locked_redis(tmp_path_factory):
    """A redis-server that wants the password ``s3cret:/@`` (CONFIG SET requirepass, as --requirepass would)."""
    server = RedisServer(tmp_path_factory.mktemp("redis-auth")).start()
    redis.Redis(port=server.port).config_set("requirepass", "s3cret:/@")
    yield server
    server.stop()


def test_password_and_a_database_other_than_0(locked_redis):
    """AUTH with the URL's (percent-encoded) password, SELECT of its database: keys land in that database."""
    store = open_store("redis://:s3cret%%3A%%2F%%40@127.0.0.1:%d/3" % locked_redis.port)
    store.set("k", "v", 60)
    assert store.get("k") == "v" and store.incr("n", 60, 5) == 5 and sorted(store.scan()) == [("k", "v"), ("n", "5")]
    direct = redis.Redis(port=locked_redis.port, password="s3cret:/@", db=3)
    assert direct.get("k") == b"v" and 0 < direct.pttl("k") <= 60000
    assert redis.Redis(port=locked_redis.port, password="s3cret:/@", db=0).get("k") is None


@pytest.mark.parametrize("url", ["redis://127.0.0.1:%d/0", "redis://:wrong@127.0.0.1:%d/0"])
def test_a_missing_or_wrong_password_is_state_unavailable(locked_redis, url):
    with pytest.raises(StateUnavailable, match="state store redis://.*(NOAUTH|WRONGPASS|invalid)"):
        open_store(url % locked_redis.port).get("k")


def test_a_database_redis_does_not_have_is_state_unavailable(redis_server):
    with pytest.raises(StateUnavailable, match="DB index is out of range"):
        open_store(redis_server.url[:-1] + "99").get("k")


def test_a_connection_redis_closed_while_idle_is_replaced_without_a_failed_call(redis_server):
    """After CLIENT KILL (as after a Redis restart or its idle timeout) the next call opens a new connection."""
    store = open_store(redis_server.url[:-1] + "7")
    store.set("k", "v", 60)
    assert redis.Redis.from_url(redis_server.url).client_kill_filter(_type="normal", skipme=True) >= 1
    assert store.get("k") == "v"


def test_a_connection_broken_mid_reply_is_not_reused(monkeypatch):
    """A reply cut short by a timeout: the connection is closed, its late bytes never read as the next answer."""
    monkeypatch.setattr(state, "TIMEOUT", 0.3)
    monkeypatch.setattr(state, "RETRY_AFTER", 0)
    connections = []

    def answer(conn, first):
        with conn:
            conn.settimeout(5)
            try:
                while conn.recv(4096):
                    if first:  # half a reply, then the rest only after the client gave up on it
                        conn.sendall(b"$5\r\nhel")
                        time.sleep(0.8)
                        conn.sendall(b"lo\r\n")
                    else:
                        conn.sendall(b"$5\r\nfresh\r\n")
            except OSError:
                pass

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(5)

        def accept():
            try:
                while True:
                    conn, _ = listener.accept()
                    connections.append(conn)
                    threading.Thread(target=answer, args=(conn, len(connections) == 1), daemon=True).start()
            except OSError:
                pass
        threading.Thread(target=accept, daemon=True).start()
        store = open_store("redis://127.0.0.1:%d/0" % listener.getsockname()[1])
        with pytest.raises(StateUnavailable):
            store.get("k")
        time.sleep(1.0)  # the rest of the first reply has arrived on the first connection by now
        assert store.get("k") == "fresh"
        assert store.get("k") == "fresh"
        assert len(connections) == 2


CONCURRENT = """
from gevent import monkey; monkey.patch_all()
import sys, gevent
from qpgevent.state import open_store
store = open_store(sys.argv[1])
def one(n):
    for round in range(5):
        store.set("g:%d" % n, "value %d %d" % (n, round), 60)
        assert store.get("g:%d" % n) == "value %d %d" % (n, round), n
        store.incr("g:total", 60)
jobs = [gevent.spawn(one, n) for n in range(200)]
gevent.joinall(jobs, timeout=60, raise_error=True)
assert all(job.successful() for job in jobs)
print(store.get("g:total"), len(dict(store.scan("g:"))))
"""


def test_200_greenlets_at_once_all_get_their_own_answers(redis_server):
    """Under gevent's monkey-patching (as the server runs) 200 sessions' calls interleave; none gets another's reply."""
    url = redis_server.url[:-1] + "8"
    redis.Redis.from_url(url).flushdb()
    result = subprocess.run([sys.executable, "-c", CONCURRENT, url], capture_output=True, text=True, timeout=120,
                            cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1000", "201"]


WAVES = """
from gevent import monkey; monkey.patch_all()
import sys, gevent
from qpgevent.state import open_store
store = open_store(sys.argv[1])
def one(n, wave):
    store.set("w:%d" % n, str(wave), 60)
    assert store.get("w:%d" % n) == str(wave)
for wave in range(5):  # as a busy server's sessions come: 100 at a time, again and again
    gevent.joinall([gevent.spawn(one, n, wave) for n in range(100)], timeout=60, raise_error=True)
"""


def test_waves_of_concurrent_calls_reuse_their_connections(redis_server):
    """One long-lived process, 5 waves of 100 sessions' calls: the connections of the first wave serve the rest."""
    url = redis_server.url[:-1] + "9"
    before = redis.Redis.from_url(url).info("stats")["total_connections_received"]
    result = subprocess.run([sys.executable, "-c", WAVES, url], capture_output=True, text=True, timeout=120,
                            cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    opened = redis.Redis.from_url(url).info("stats")["total_connections_received"] - before - 1  # less ours
    assert opened <= 100, opened  # at most one per concurrent call: none opened again in later waves
