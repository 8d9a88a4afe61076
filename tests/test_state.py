"""The shared state store (qpgevent/state.py) and bin/qpsmtpd-state: one suite, run on sqlite and on a real Redis."""
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import gevent
import pytest

from qpgevent import state
from qpgevent.errors import ConfigErrors
from qpgevent.state import TIMEOUT, StateUnavailable, open_store
from qpgevent.testing import RedisServer, make_smtpd, write_config

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "bin" / "qpsmtpd-state"


@pytest.fixture(params=["sqlite", "redis"])
def url(request, tmp_path):
    """A storage URL of an empty store of each backend."""
    if request.param == "sqlite":
        return "sqlite:%s" % (tmp_path / "state.db")
    server = request.getfixturevalue("redis_server")
    import redis
    redis.Redis.from_url(server.url).flushdb()
    return server.url


@pytest.fixture
def store(url):
    return open_store(url)


def test_set_get_delete(store):
    assert store.get("k") is None
    store.set("k", "value one", 60)
    assert store.get("k") == "value one"
    assert 58 < store.ttl("k") <= 60
    store.set("k", 7, 60)  # a number is stored as its text
    assert store.get("k") == "7"
    assert store.delete("k") is True
    assert store.get("k") is None and store.ttl("k") is None
    assert store.delete("k") is False


def test_every_key_needs_a_ttl(store):
    for ttl in (0, -1, None):
        with pytest.raises((ValueError, TypeError)):
            store.set("k", "v", ttl)
        with pytest.raises((ValueError, TypeError)):
            store.incr("k", ttl)
    assert store.get("k") is None


def test_keys_expire(store):
    store.set("short", "v", 0.3)
    store.set("long", "v", 60)
    store.incr("counter", 0.3, 5)
    time.sleep(0.5)
    assert store.get("short") is None and store.ttl("short") is None
    assert store.delete("short") is False
    assert sorted(store.scan()) == [("long", "v")]
    # An expired counter starts again from nothing, with the new TTL.
    assert store.incr("counter", 60, 2) == 2
    assert 58 < store.ttl("counter") <= 60


def test_incr_creates_with_ttl_and_keeps_it(store):
    assert store.incr("strikes", 10) == 1
    assert store.incr("strikes", 1000, 3) == 4  # the window was set by the first strike
    assert store.get("strikes") == "4"
    assert store.ttl("strikes") <= 10
    assert store.incr("strikes", 10, -5) == -1


def test_incr_of_a_value_that_is_no_number_refuses_and_keeps_it(store):
    """Both backends: ValueError, the value and its expiry untouched (Redis's INCRBY rule, sqlite matches it)."""
    for text in ("abc", "", "1.5", " 4", "+4", "007"):
        store.set("word", text, 60)
        with pytest.raises(ValueError, match="not a whole number"):
            store.incr("word", 600, 2)
        assert store.get("word") == text and store.ttl("word") <= 60
    store.set("word", "-12", 60)
    assert store.incr("word", 60, 2) == -10


def test_scan_by_prefix(store):
    for key in ("karma:192.0.2.1", "karma:192.0.2.2", "grey:192.0.2.1", "a*b%_c", "axb%_c"):
        store.set(key, key.upper(), 60)
    assert sorted(store.scan("karma:")) == [("karma:192.0.2.1", "KARMA:192.0.2.1"),
                                            ("karma:192.0.2.2", "KARMA:192.0.2.2")]
    # Glob and LIKE characters in a prefix are plain characters.
    assert [k for k, _ in store.scan("a*b%_")] == ["a*b%_c"]
    assert len(list(store.scan())) == 5
    assert list(store.scan("nothing:")) == []


def test_incr_is_atomic_across_forked_workers(store):
    """Workers forked after the master used the store each connect anew and lose no increment."""
    assert store.incr("hits", 60) == 1  # the master's connection exists before the fork
    children = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:  # a worker: 100 increments through the store object it inherited
            status = 1
            try:
                for _ in range(100):
                    store.incr("hits", 60)
                status = 0
            finally:
                os._exit(status)
        children.append(pid)
    for pid in children:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert store.get("hits") == "401"
    assert store.incr("hits", 60) == 402  # and the master's own connection still works


def hold_write_lock(path, seconds):
    """A greenlet that takes sqlite's write lock on ``path`` (as another worker would) and keeps it ``seconds``."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")

    def release():
        gevent.sleep(seconds)
        holder.execute("COMMIT")
        holder.close()
    return gevent.spawn(release)


def ticker(ticks):
    while True:
        gevent.sleep(0.02)
        ticks.append(time.monotonic())


@pytest.mark.parametrize("held, outcome", [(0.5, "set"), (TIMEOUT + 1, "gave up")])
def test_sqlite_waiting_for_a_lock_lets_other_greenlets_run(tmp_path, held, outcome):
    """A call waiting for another connection's write lock pauses only its greenlet, and at most TIMEOUT."""
    path = tmp_path / "state.db"
    store = open_store("sqlite:%s" % path)
    store.set("k", "old", 60)  # the table exists before the lock is taken
    ticks = []
    ticking = gevent.spawn(ticker, ticks)
    holding = hold_write_lock(path, held)
    started = time.monotonic()
    try:
        store.set("k", "new", 60)
        result = "set"
    except StateUnavailable:
        result = "gave up"
    waited = time.monotonic() - started
    ticking.kill()
    holding.join(5)
    assert result == outcome
    assert waited < TIMEOUT + 0.5
    assert len(ticks) > waited / 0.02 * 0.5  # the ticker kept going the whole time
    assert store.get("k") == ("new" if outcome == "set" else "old")


def test_incr_is_atomic_across_processes(url):
    """Separate processes (hosts sharing a store) incrementing at once."""
    script = ("import sys; from qpgevent.state import open_store; s = open_store(sys.argv[1])\n"
              "for _ in range(100): s.incr('n', 60)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    processes = [subprocess.Popen([sys.executable, "-c", script, url], env=env) for _ in range(4)]
    assert [p.wait(60) for p in processes] == [0, 0, 0, 0]
    assert open_store(url).get("n") == "400"


@pytest.mark.parametrize("bad", ["mysql://db/x", "sqlite:", "sqlite:relative/state.db", "sqlite:/no/such/dir/state.db",
                                 "redis://", "redis://host:port/0", "redis://host/zero", "redis://host/0?x=1"])
def test_bad_url_is_a_startup_error_naming_file_and_line(tmp_path, bad):
    with pytest.raises(ConfigErrors) as caught:
        make_smtpd(tmp_path, ["rcpt_ok"], {"storage": ["# where plugins keep state", bad]})
    error = caught.value.errors[0]
    assert (Path(error.path).name, error.line) == ("storage", 2)
    assert bad in str(error) and ("write " in str(error) or "create it" in str(error))  # and the fix


def test_default_store_is_sqlite_in_the_spool_dir_and_plugins_see_it(tmp_path):
    smtpd = make_smtpd(tmp_path, ["rcpt_ok"])
    assert smtpd.state.url == "sqlite:%s" % (tmp_path / "spool" / "state.db")
    assert smtpd.plugins[0].state is smtpd.state
    smtpd.state.set("k", "v", 60)
    assert smtpd.state.get("k") == "v"


def test_redis_url_in_config(tmp_path, redis_server):
    smtpd = make_smtpd(tmp_path, ["rcpt_ok"], {"storage": redis_server.url})
    assert smtpd.state.url == redis_server.url
    smtpd.state.set("from-config", "v", 60)
    assert open_store(redis_server.url).get("from-config") == "v"


def test_redis_down_raises_state_unavailable_quickly(tmp_path):
    server = RedisServer(tmp_path / "redis2").start()
    store = open_store(server.url)
    try:
        store.set("k", "v", 60)
    finally:
        server.stop()
    for call in (lambda: store.get("k"), lambda: store.incr("k", 60), lambda: list(store.scan())):
        started = time.monotonic()
        with pytest.raises(StateUnavailable, match="state store redis://127.0.0.1:%d/0" % server.port):
            call()
        assert time.monotonic() - started < TIMEOUT + 1


def test_redis_that_never_answers_times_out(tmp_path):
    """A server that accepts and stays silent: every call still ends within TIMEOUT."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever reads or replies
        store = open_store("redis://127.0.0.1:%d/0" % silent.getsockname()[1])
        started = time.monotonic()
        with pytest.raises(StateUnavailable):
            store.get("k")
        assert TIMEOUT - 0.5 < time.monotonic() - started < TIMEOUT + 1



def test_redis_that_failed_is_not_asked_again_for_retry_after(tmp_path, monkeypatch):
    """A silent Redis costs one call TIMEOUT; the calls after it fail at once, until RETRY_AFTER has passed."""
    monkeypatch.setattr(state, "RETRY_AFTER", 0.5, raising=False)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        store = open_store("redis://127.0.0.1:%d/0" % silent.getsockname()[1])
        with pytest.raises(StateUnavailable):
            store.get("k")
        started = time.monotonic()
        with pytest.raises(StateUnavailable, match=r"not asked again for 0\.\d s"):
            store.set("k", "v", 60)
        assert time.monotonic() - started < 0.1
    server = RedisServer(tmp_path / "redis-back").start()  # the same kind of address, now answering
    try:
        store = open_store(server.url)
        server.stop()
        with pytest.raises(StateUnavailable):
            store.get("k")
        server.start()
        with pytest.raises(StateUnavailable, match="not asked again"):
            store.get("k")
        time.sleep(0.6)
        assert store.get("k") is None  # asked again, and it answers
    finally:
        server.stop()

def run_tool(config_dir, *args):
    result = subprocess.run([sys.executable, str(TOOL), "--config-dir", str(config_dir), *args],
                            capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout, result.stderr


def test_qpsmtpd_state_lists_shows_and_clears(tmp_path, url, store):
    config = write_config(tmp_path / "config", {"storage": url})
    store.set("karma:192.0.2.1", "-3", 600)
    store.set("karma:192.0.2.2", "1", 600)
    store.set("grey:192.0.2.1", "1700000000", 60)

    code, out, _ = run_tool(config, "list")
    assert code == 0 and len(out.splitlines()) == 3
    # The TTLs shown count down while the tool starts (seconds on a loaded machine), never up.
    code, out, _ = run_tool(config, "list", "karma:")
    listed = re.fullmatch(r"karma:192.0.2.1\t-3\t(\d+)s\nkarma:192.0.2.2\t1\t(\d+)s\n", out)
    assert code == 0 and listed and all(500 < int(ttl) <= 600 for ttl in listed.groups())
    code, out, _ = run_tool(config, "show", "grey:192.0.2.1")
    shown = re.fullmatch(r"grey:192.0.2.1\t1700000000\t(\d+)s\n", out)
    assert code == 0 and shown and 0 < int(shown.group(1)) <= 60
    code, _, err = run_tool(config, "show", "grey:nothing")
    assert code == 1 and "no such key" in err

    assert run_tool(config, "clear", "grey:192.0.2.1")[0] == 0
    assert store.get("grey:192.0.2.1") is None
    code, out, _ = run_tool(config, "clear", "--prefix", "karma:")
    assert code == 0 and "cleared 2 keys" in out
    assert list(store.scan()) == []
    assert run_tool(config, "clear", "karma:192.0.2.1")[0] == 1


def test_qpsmtpd_state_bad_url_and_store_down(tmp_path):
    config = write_config(tmp_path / "config", {"storage": "redis://127.0.0.1:notaport/0"})
    code, _, err = run_tool(config, "list")
    assert code == 2 and "storage:1:" in err and "redis://HOST:PORT/DB" in err
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        write_config(config, {"storage": "redis://127.0.0.1:%d/0" % closed.getsockname()[1]})
        code, _, err = run_tool(config, "list")
    assert code == 1 and "state store redis://" in err and "Traceback" not in err
