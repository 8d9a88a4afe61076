"""Every wait on a client is bounded: idle, DATA and whole-session timeouts fire every time, writes too."""
import time

import pytest

from qpgevent.testing import RawClient


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
        assert client.read_to_eof(5) == b""
    finally:
        client.close()
