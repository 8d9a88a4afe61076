"""-c and -m with --workers: the limits hold over all workers together (issue 4).

Every test runs the real daemon with two workers on loopback and real client
sockets.  The workers share one listening socket, so the kernel picks which
one accepts a client: the tests assert on the totals, and check from the log
that both workers did refuse clients (else a test would prove nothing about
counting across workers).  A test plugin greets with the worker's pid and a
config label, to tell the workers and the configurations apart.
"""
import os
import re
import signal
import socket

import pytest

from qpgevent.testing import read_reply, wait_for

pytestmark = pytest.mark.timeout(60)

WORKER_PID = '''"""worker_pid (tests): greet with the worker's pid and the argument (a config label)."""
import os

from qpgevent import DONE


def register(self, qp, label="v1"):
    self.label = label


def hook_connect(self, transaction):
    self.qp.respond(220, "%s ESMTP pid %d config %s" % (self.qp.me, os.getpid(), self.label))
    return DONE
'''


@pytest.fixture
def workers(live_server):
    """``workers(*args)`` -> a LiveServer with two serving workers, greeting with ``pid N config v1``."""
    def start(*args, graceful="1"):
        server = live_server(plugins=["worker_pid v1"], plugin_files={"worker_pid.py": WORKER_PID},
                             args=["--workers", "2", "--graceful-timeout", graceful, *args])
        assert wait_for(lambda: len(serving(server)) == 2), server.log
        return server
    return start


def serving(server):
    """Pids of the workers that said they serve and have not ended since."""
    log = server.log
    return set(re.findall(r"worker (\d+) serving", log)) - set(re.findall(r"worker (\d+) (?:died|stopped)", log))


def refusers(server, ip="127.0.0.1"):
    """Pids of the processes that logged a refusal of ``ip``."""
    return set(re.findall(r"^(\d+) .*refused %s: " % re.escape(ip), server.log, re.M))


def connect(server, source="127.0.0.1"):
    """A new connection from ``source``: (socket, first reply)."""
    sock = socket.create_connection(server.address, timeout=5, source_address=(source, 0))
    try:
        return sock, read_reply(sock)
    except BaseException:
        sock.close()
        raise


def greeting(reply):
    """(worker pid, config label) from the test plugin's 220."""
    match = re.search(r"pid (\d+) config (\S+)", reply.text)
    assert reply.code == 220 and match, reply
    return match.group(1), match.group(2)


def wait_greeted(server, source="127.0.0.1"):
    """(socket, reply) of a session greeted 220 as soon as there is room; refused tries are closed."""
    found = []

    def attempt():
        sock, reply = connect(server, source)
        if reply.code == 220:
            found.append((sock, reply))
            return True
        sock.close()
        return False

    assert wait_for(attempt, 10), "no 220 within 10 s:\n" + server.log
    return found[0]


def label_of_new_session(server):
    """The config label in the greeting of a new session (closed at once)."""
    sock, reply = wait_greeted(server)
    sock.close()
    return greeting(reply)[1]


def assert_refused_by_every_worker(server, expected_text, source="127.0.0.1"):
    """Tries clients until both workers have refused one; every try must be 421 4.7.0."""
    for attempt in range(100):
        sock, reply = connect(server, source)
        sock.close()
        assert (reply.code, reply.status) == (421, "4.7.0"), reply
        assert expected_text in reply.text
        if attempt >= 9 and refusers(server, source) == serving(server):
            break
    assert wait_for(lambda: refusers(server, source) == serving(server)), server.log


def close_all(socks):
    for sock in socks:
        sock.close()


def test_limit_connections_counts_sessions_of_all_workers(workers):
    """--workers 2 -c 3: three sessions in all, whichever workers hold them; then 421 4.7.0 from either
    worker until one leaves, and room for exactly one more."""
    server = workers("-c", "3")
    held = [wait_greeted(server)[0] for _ in range(3)]
    try:
        assert_refused_by_every_worker(server, "Too many connections, try again later")
        held.pop().close()
        held.append(wait_greeted(server)[0])
        sock, reply = connect(server)
        sock.close()
        assert (reply.code, reply.status) == (421, "4.7.0")
    finally:
        close_all(held)


def test_max_from_ip_counts_sessions_of_all_workers(workers):
    """--workers 2 -m 2: a third session from 127.0.0.1 is refused by either worker; 127.0.0.2 is still greeted."""
    server = workers("-m", "2")
    held = [wait_greeted(server)[0] for _ in range(2)]
    try:
        assert_refused_by_every_worker(server, "Too many connections from your address")
        try:
            other, reply = connect(server, source="127.0.0.2")
        except OSError as exc:
            pytest.skip("cannot connect from 127.0.0.2: %s" % exc)
        held.append(other)
        greeting(reply)
    finally:
        close_all(held)


def test_sessions_of_a_killed_worker_stop_counting(workers):
    """kill -9 of a worker holding sessions: once the master has reaped and replaced it, its sessions no
    longer count (in -c nor in -m), so as many new sessions are greeted at once, and not one more."""
    server = workers("-c", "6", "-m", "6")
    held = [wait_greeted(server) for _ in range(6)]
    try:
        by_pid = {}
        for sock, reply in held:
            by_pid.setdefault(greeting(reply)[0], []).append(sock)
        victim = max(by_pid, key=lambda pid: len(by_pid[pid]))  # the most sessions: the most fresh tries
        os.kill(int(victim), signal.SIGKILL)
        assert wait_for(lambda: "worker %s died" % victim in server.log), server.log
        assert wait_for(lambda: len(serving(server)) == 2), server.log
        for sock in by_pid[victim]:
            assert sock.recv(100) == b""  # the kernel closed them with the worker
        for _ in by_pid[victim]:
            sock, reply = connect(server)
            held.append((sock, reply))
            greeting(reply)  # a 220 at the first try, from whichever worker
        sock, reply = connect(server)
        sock.close()
        assert (reply.code, reply.status) == (421, "4.7.0")
    finally:
        close_all(sock for sock, _ in held)


def test_sessions_of_draining_workers_still_count_after_a_reload(workers, tmp_path):
    """SIGHUP: the old workers' sessions, while they drain, still count against -c in the new workers."""
    server = workers("-c", "3", graceful="20")
    held = [wait_greeted(server)[0] for _ in range(3)]
    try:
        old = serving(server)
        (tmp_path / "config" / "plugins").write_text("worker_pid v2\n")
        os.kill(server.process.pid, signal.SIGHUP)
        assert wait_for(lambda: len(serving(server) - old) == 2), server.log
        assert wait_for(lambda: "draining worker" in server.log), server.log
        sock, reply = connect(server)
        sock.close()
        assert (reply.code, reply.status) == (421, "4.7.0"), reply
        held.pop().close()
        sock, reply = wait_greeted(server)
        held.append(sock)
        assert greeting(reply)[1] == "v2"
    finally:
        close_all(held)


def test_third_configuration_waits_for_the_oldest_workers_to_drain(workers, tmp_path):
    """Two reloads in a row while the first workers still drain: every counter slot is taken, so the third
    configuration's workers start only when the first ones have gone; the second serves meanwhile."""
    server = workers("-c", "100", graceful="20")
    first = serving(server)
    held = {}  # pid: a session that keeps that first worker draining
    try:
        while set(held) != first:
            sock, reply = wait_greeted(server)
            pid = greeting(reply)[0]
            if pid in held:
                sock.close()
            else:
                held[pid] = sock
        plugins = tmp_path / "config" / "plugins"
        plugins.write_text("worker_pid v2\n")
        os.kill(server.process.pid, signal.SIGHUP)
        assert wait_for(lambda: len(serving(server) - first) == 2), server.log
        second = serving(server) - first
        plugins.write_text("worker_pid v3\n")
        os.kill(server.process.pid, signal.SIGHUP)
        assert wait_for(lambda: "every slot of the session counters is taken" in server.log), server.log
        assert [label_of_new_session(server) for _ in range(4)] == ["v2"] * 4
        assert serving(server) == first | second
        close_all(held.values())
        assert wait_for(lambda: len(serving(server) - first - second) == 2), server.log
        assert wait_for(lambda: label_of_new_session(server) == "v3"), server.log
    finally:
        close_all(held.values())
