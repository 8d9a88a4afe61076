"""qpgevent.smtp_client: streaming a message to another server, xtext, replies, the connection pool."""
import os

import pytest

from qpgevent import smtp_client
from qpgevent.smtp_client import Pool, send_bdat, send_data, split_reply, xtext


class FakeClient:
    """Records what would go on the wire; answers each command from a list."""

    def __init__(self, replies=((354, b"go ahead"), (250, b"2.0.0 Ok"))):
        self.sent = []
        self.replies = list(replies)
        self.closed = False

    def docmd(self, verb, argument=""):
        self.sent.append(("%s %s" % (verb, argument)).strip().encode() + b"\r\n")
        return self.replies.pop(0)

    def send(self, data):
        self.sent.append(data)

    def getreply(self):
        return self.replies.pop(0)

    def close(self):
        self.closed = True


@pytest.mark.parametrize("blocks, wire", [
    ([b"a\r\n", b".b\r\n"], b"a\r\n..b\r\n.\r\n"),         # a dot line starting a block
    ([b"no newline at the end"], b"no newline at the end\r\n.\r\n"),
])
def test_send_data_streams_the_stuffed_message_after_354(blocks, wire):
    """DATA, then the blocks dot-stuffed (qpgevent.dotstuff) and the final dot; the reply after it is the answer."""
    client = FakeClient()
    assert send_data(client, blocks) == (250, b"2.0.0 Ok")
    assert client.sent[0] == b"DATA\r\n"
    assert b"".join(client.sent[1:]) == wire


def test_send_data_stops_when_data_is_refused():
    """No 354: nothing of the message is sent, and the refusal is the answer."""
    client = FakeClient([(554, b"5.5.1 no valid recipients")])
    assert send_data(client, [b"x\r\n"]) == (554, b"5.5.1 no valid recipients")
    assert client.sent == [b"DATA\r\n"]


def test_send_bdat_sends_octets_untouched_and_stops_at_a_refusal():
    """BDAT chunks carry the exact octets; a refused chunk ends the transfer with its reply."""
    client = FakeClient([(250, b"ok"), (250, b"ok"), (250, b"2.0.0 queued")])
    assert send_bdat(client, [b".\r\x00", b"\n"]) == (250, b"2.0.0 queued")
    assert b"".join(client.sent) == b"BDAT 3\r\n.\r\x00BDAT 1\r\n\nBDAT 0 LAST\r\n"
    client = FakeClient([(552, b"5.3.4 too big")])
    assert send_bdat(client, [b"a", b"b"]) == (552, b"5.3.4 too big")
    assert b"".join(client.sent) == b"BDAT 1\r\na"


def test_xtext_encodes_plus_equals_and_what_is_not_printable():
    """RFC 3461 4: '+', '=', space, controls and non-ASCII octets become +XX."""
    assert xtext("[UNAVAILABLE]") == "[UNAVAILABLE]"
    assert xtext("a+b=c d\xe9") == "a+2Bb+3Dc+20d+C3+A9"


def test_split_reply_takes_the_enhanced_status_of_the_same_class_only():
    """A status of another class than the reply code is text, not a status; lines are joined."""
    assert split_reply(550, b"5.1.1 <x@y>: no such user") == ("5.1.1", "<x@y>: no such user")
    assert split_reply(450, b"5.1.1 mismatched class") == (None, "5.1.1 mismatched class")
    assert split_reply(250, b"Ok\nmore") == (None, "Ok more")


def test_pool_gives_back_connections_by_key_and_drops_idle_ones(monkeypatch):
    """A connection comes back for its key only, until it has been idle too long; then it is closed."""
    now = [100.0]
    monkeypatch.setattr(smtp_client.time, "monotonic", lambda: now[0])
    pool = Pool(size=2, idle=10)
    first, second = FakeClient(), FakeClient()
    pool.put("a", first)
    pool.put("b", second)
    assert pool.take("c") is None
    assert pool.take("a") is first and pool.take("a") is None
    now[0] += 11
    assert pool.take("b") is None and second.closed


def test_pool_keeps_at_most_size_per_key(monkeypatch):
    """Beyond ``size`` idle connections for a key the extra one is closed (after a polite QUIT)."""
    monkeypatch.setattr(smtp_client, "quit", lambda client: client.close())
    pool = Pool(size=1, idle=10)
    first, extra = FakeClient(), FakeClient()
    pool.put("a", first)
    pool.put("a", extra)
    assert extra.closed and not first.closed
    assert pool.take("a") is first


def test_a_forked_child_does_not_use_the_parents_connections(monkeypatch):
    """After fork the pool is empty in the child: the sockets belong to the parent."""
    pool = Pool(size=2, idle=10)
    pool.put("a", FakeClient())
    child = os.getpid() + 1
    monkeypatch.setattr(smtp_client.os, "getpid", lambda: child)
    assert pool.take("a") is None
