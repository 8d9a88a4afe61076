"""Every wait on a client is bounded: idle, DATA and whole-session timeouts fire every time, writes too."""
import os
import socket
import subprocess
import sys
import time

import pytest

from qpgevent.testing import ROOT, RawClient, wait_for, write_config


def idle_wave(server, count=4):
    """``count`` clients that say nothing after the greeting: each must get 421 4.4.2 and be closed."""
    clients = [RawClient(server.address, timeout=8) for _ in range(count)]
    try:
        assert all(client.reply().code == 220 for client in clients)
        started = time.monotonic()
        for client in clients:
            reply = client.reply()
            assert (reply.code, reply.status) == (421, "4.4.2")
            assert client.read_to_eof(5) == b""
        assert time.monotonic() - started < 5
    finally:
        for client in clients:
            client.close()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_idle_timeout_fires_for_every_client_of_every_wave(live_server, workers):
    """Waves of idle clients in one server: not only the first timeout of the process fires."""
    server = live_server(config={"timeout": "1", "timeoutsmtpd": "1"}, args=["--workers", workers])
    for _ in range(3):
        idle_wave(server)


def test_data_timeout_after_earlier_timeouts(live_server):
    """After idle timeouts, a client that stalls in the middle of DATA still gets 421 4.4.2."""
    server = live_server(config={"timeout": "1"})
    idle_wave(server)
    client = RawClient(server.address, timeout=8)
    try:
        assert client.reply().code == 220
        for line, code in (("EHLO x", 250), ("MAIL FROM:<a@example.org>", 250), ("RCPT TO:<b@example.com>", 250),
                           ("DATA", 354)):
            assert client.command(line).code == code
        client.send(b"Subject: half a message\r\n")
        started = time.monotonic()
        reply = client.reply()
        assert (reply.code, reply.status) == (421, "4.4.2")
        assert time.monotonic() - started < 4
        assert client.read_to_eof(5) == b""
    finally:
        client.close()


def test_session_limit_after_earlier_timeouts(live_server):
    """After idle timeouts, a client that keeps itself busy is still ended at max_session_seconds."""
    server = live_server(config={"timeout": "1", "max_session_seconds": "3"})
    idle_wave(server)
    client = RawClient(server.address, timeout=8)
    try:
        assert client.reply().code == 220
        started = time.monotonic()
        while True:
            reply = client.command("NOOP")
            if reply.code != 250:
                break
            assert time.monotonic() - started < 7, "still served after 7 s"
            time.sleep(0.3)
        assert (reply.code, reply.status) == (421, "4.4.2")
        assert "Session lasted too long" in reply.text
        assert time.monotonic() - started > 2.5  # not before max_session_seconds (3)
        assert client.read_to_eof(5) == b""
    finally:
        client.close()


def flood(address, seconds=3.0, commands=1000000):
    """A client with a tiny receive buffer that pipelines NOOPs and never reads; returns its socket.

    16 MB of replies: more than any kernel's socket buffers hold (20,000 NOOPs were not, on a fresh
    Debian machine), so the server must end up blocked writing.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect(address)
    sock.setblocking(False)
    pending = memoryview(b"NOOP\r\n" * commands)
    deadline = time.monotonic() + seconds
    while pending and time.monotonic() < deadline:
        try:
            pending = pending[sock.send(pending):]
        except BlockingIOError:
            time.sleep(0.01)  # the server has stopped reading: it is blocked on us
        except (ConnectionResetError, BrokenPipeError):
            break  # the server has already given up on us: what the test looks for next
    return sock


def test_client_that_never_reads_is_closed_within_the_timeout(live_server):
    """A client that floods pipelined commands and never reads its replies: the server's write is bounded by
    `timeout`, so it drops the client after a few seconds and serves others all along."""
    server = live_server(config={"timeout": "2"})
    sock = flood(server.address)
    try:
        started = time.monotonic()
        other = RawClient(server.address, timeout=5)  # served while the flooder is stuck
        assert other.reply().code == 220
        assert other.command("NOOP").code == 250
        other.close()
        assert wait_for(lambda: "client went away while we wrote" in server.log, 8), server.log[-2000:]
        assert time.monotonic() - started < 8
    finally:
        sock.close()
    idle_wave(server, 2)  # and its timeouts still work afterwards


def test_inetd_client_that_never_reads_is_dropped(tmp_path):
    """bin/qpsmtpd on pipes: a client that sends thousands of NOOPs and never reads stdout; the process
    ends within a few seconds of `timeout` instead of blocking in a write for ever."""
    config = write_config(tmp_path / "config", {"me": "mx.test", "timeout": "2", "plugins": ["rcpt_ok"]})
    process = subprocess.Popen([sys.executable, str(ROOT / "bin" / "qpsmtpd"), "--config-dir", str(config), "-H"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               env=dict(os.environ, TCPREMOTEIP="127.0.0.1"))
    try:
        os.set_blocking(process.stdin.fileno(), False)
        pending = memoryview(b"NOOP\r\n" * 100000)
        deadline = time.monotonic() + 3
        while pending and time.monotonic() < deadline and process.poll() is None:
            try:
                pending = pending[os.write(process.stdin.fileno(), pending):]
            except BlockingIOError:
                time.sleep(0.01)
            except BrokenPipeError:
                break
        started = time.monotonic()
        process.wait(timeout=10)
        assert time.monotonic() - started < 8
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_sweeper_goes_on_after_a_failing_round():
    """An error in one sweep round is logged and the next round still ends waits that are over."""
    import gevent
    from qpgevent.transport import IdleSweeper

    logged = []
    sweeper = IdleSweeper(interval=0.05, log=logged.append)
    schedule = sweeper._schedule
    failures = [RuntimeError("one bad round")]

    def failing_once(*args):
        if failures:
            raise failures.pop()
        schedule(*args)
    sweeper._schedule = failing_once

    def waiter():
        sweeper.waiting["transport"] = (time.monotonic(), gevent.getcurrent())
        try:
            gevent.sleep(5)
        except TimeoutError:
            return "timed out"
        return "never woken"

    sweeper.start()
    try:
        assert gevent.spawn(waiter).get(timeout=3) == "timed out"
    finally:
        sweeper._greenlet.kill()
    assert "one bad round" in "".join(logged)


def test_replies_to_a_flood_of_pipelined_commands_are_written_as_they_come(session_factory):
    """Thousands of commands in one read: replies go out at most 100 at a time, so what waits for a client
    that does not read is bounded whatever one read brought."""
    session = session_factory(["rcpt_ok"])
    writes = []
    write = session.transport.write
    session.transport.write = lambda data: (writes.append(data.count(b"\r\n")), write(data))
    replies = session.send(b"NOOP\r\n" * 5000)
    assert [reply.code for reply in replies] == [250] * 5000
    assert max(writes) <= 100
