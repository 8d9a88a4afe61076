"""Modern ESMTP: SMTPUTF8 (RFC 6531), CHUNKING and BINARYMIME (RFC 3030), DSN parameters (RFC 3461)."""
import smtplib
from contextlib import closing

import pytest

from qpgevent import DENY
from qpgevent.data import PIECE
from qpgevent.errors import ConfigError
from qpgevent.testing import QueueCapture, RawClient, TestSession, accept_all, encode_message

from conftest import with_dsn

UTF8_MESSAGE = ("Subject: Grüße aus Köln \U0001F389\r\n"
                "From: José <jösé@exämple.test>\r\n"
                "To: =?utf-8?q?=C3=BCser?= <üser@example.com>\r\n"
                "\r\n"
                "Ünïcödé body, 日本語\r\n").encode("utf-8")

# Everything a DATA stream would have to escape, sent raw in octet-counted chunks.
CHUNK_MESSAGE = (b"Subject: chunked\r\n"
                 b"From: a@b.test\r\n"
                 b"\r\n"
                 b"line one\r\n"
                 b".\r\n"
                 b"..\r\n"
                 b".leading dot\r\n"
                 b"\r\n.\r\n"
                 b"MAIL FROM:<evil@x.test>\r\n"
                 b"RCPT TO:<victim@x.test>\r\n"
                 b"DATA\r\n"
                 b"binary \x00\x01\x7f\xfe\xff bytes\r\n"
                 b"end\r\n")


@pytest.fixture
def queue():
    return QueueCapture()


@pytest.fixture
def daemon(smtpd_factory, queue):
    """``daemon(config)`` -> a daemon whose rcpt hook accepts everybody and whose queue is ``queue``."""
    def factory(config=None):
        smtpd = smtpd_factory(plugins=["dsn_queue"], config=with_dsn(config))
        probe = TestSession(smtpd, greet=False)
        probe.mock_hook("rcpt", accept_all, name="accept_rcpt")
        probe.mock_hook("queue", queue, name="test_queue")
        return smtpd
    return factory


@pytest.fixture
def ready(daemon):
    """``ready(config, mail="MAIL FROM:<a@b.test>")`` -> a session after EHLO, MAIL and one RCPT."""
    daemons = {}

    def factory(config=None, mail="MAIL FROM:<a@b.test>"):
        key = tuple(sorted((config or {}).items()))
        if key not in daemons:  # one daemon per config keeps the every-byte loops fast
            daemons[key] = daemon(config)
        session = TestSession(daemons[key])
        assert session.command("EHLO client.test")[0].code == 250
        assert session.command(mail)[0].code == 250
        assert session.command("RCPT TO:<c@d.test>")[0].code == 250
        return session
    return factory


def codes(replies):
    return [(r.code, r.status) for r in replies]


def bdat(*chunks, last=True):
    """BDAT commands with their chunks; the final one carries LAST unless ``last`` is False."""
    out = b""
    for n, chunk in enumerate(chunks):
        tail = " LAST" if last and n == len(chunks) - 1 else ""
        out += b"BDAT %d%s\r\n" % (len(chunk), tail.encode()) + chunk
    return out


# -- SMTPUTF8 (RFC 6531) -------------------------------------------------------------------------------

def test_utf8_sender_and_recipients_accepted_with_smtputf8(session_factory, queue):
    """``MAIL FROM:<jösé@exämple.test> SMTPUTF8``: 250; UTF-8 local parts and domains in RCPT are 250 too,
    and rcpt_ok matches a UTF-8 domain from rcpthosts; the plugins see the Unicode user and host."""
    session = session_factory(plugins=["rcpt_ok"], config={"rcpthosts": ["example.com", "exämple.test"]})
    session.mock_hook("queue", queue)
    session.command("EHLO client.test")
    assert codes(session.command("MAIL FROM:<jösé@exämple.test> SMTPUTF8")) == [(250, "2.1.0")]
    assert codes(session.command("RCPT TO:<üser@example.com>")) == [(250, "2.1.5")]
    assert codes(session.command("RCPT TO:<δοκιμή@exämple.test>")) == [(250, "2.1.5")]
    assert codes(session.command("RCPT TO:<üser@frömd.test>")) == [(550, "5.7.1")]
    sender, recipients = session.transaction.sender, session.transaction.recipients
    assert (sender.user, sender.host) == ("jösé", "exämple.test")
    assert [r.address for r in recipients] == ["üser@example.com", "δοκιμή@exämple.test"]
    assert codes(session.data(UTF8_MESSAGE)) == [(250, "2.0.0")]
    assert [r.address for r in queue.envelopes[0][1]] == ["üser@example.com", "δοκιμή@exämple.test"]


@pytest.mark.parametrize("path", ["<jösé@example.com>", "<jose@exämple.test>", "<日本@例え.jp>"])
def test_non_ascii_sender_without_smtputf8_is_553_5_6_7(ready, path):
    """A non-ASCII address in MAIL without the SMTPUTF8 parameter: ``553 5.6.7`` (RFC 6531 3.5), no sender set."""
    session = ready()
    session.command("RSET")
    [reply] = session.command("MAIL FROM:%s" % path)
    assert (reply.code, reply.status) == (553, "5.6.7")
    assert session.transaction.sender is None


def test_non_ascii_recipient_in_an_ascii_transaction_is_553_5_6_7(ready):
    """RCPT with a UTF-8 address when MAIL had no SMTPUTF8: ``553 5.6.7``; the recipient is not added."""
    session = ready()
    [reply] = session.command("RCPT TO:<üser@example.com>")
    assert (reply.code, reply.status) == (553, "5.6.7")
    assert [r.address for r in session.transaction.recipients] == ["c@d.test"]


@pytest.mark.parametrize("parameter", ["SMTPUTF8=x", "SMTPUTF8=yes", "smtputf8=1"])
def test_smtputf8_with_a_value_is_501(ready, parameter):
    """SMTPUTF8 takes no value (RFC 6531 3.4): ``SMTPUTF8=x`` is ``501 5.5.4`` and no sender is set."""
    session = ready()
    session.command("RSET")
    assert codes(session.command("MAIL FROM:<a@b.test> %s" % parameter)) == [(501, "5.5.4")]
    assert session.transaction.sender is None


def test_received_says_utf8smtp_only_for_smtputf8_transactions(ready, queue):
    """Received says ``with UTF8SMTP`` (RFC 6531 4.3) for a SMTPUTF8 transaction, ``with ESMTP`` for the next plain one."""
    session = ready(mail="MAIL FROM:<jösé@exämple.test> SMTPUTF8")
    session.data(UTF8_MESSAGE)
    session.send_message("a@b.test", ["c@d.test"], "Subject: plain\n\nascii\n")
    first, second = queue.received
    assert " with UTF8SMTP;" in first and "jösé" not in first
    assert " with ESMTP;" in second


def test_utf8_headers_arrive_byte_exact(ready, queue):
    """UTF-8 in headers and body (RFC 6532) reaches the queue byte for byte, only CRLF turned into LF."""
    session = ready(mail="MAIL FROM:<jösé@exämple.test> SMTPUTF8")
    assert codes(session.data(UTF8_MESSAGE)) == [(250, "2.0.0")]
    assert queue.messages == [UTF8_MESSAGE.replace(b"\r\n", b"\n")]


def test_smtplib_sends_utf8_end_to_end(live_server, tmp_path):
    """smtplib with ``mail_options=["SMTPUTF8"]`` over a real socket: the server advertises SMTPUTF8, accepts
    the UTF-8 envelope, and the Maildir file holds the UTF-8 headers unchanged and ``with UTF8SMTP``."""
    server = live_server(config={"rcpthosts": ["example.com", "exämple.test"]})
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.ehlo("client.test")
        assert client.has_extn("smtputf8")
        refused = client.sendmail("jösé@exämple.test", ["üser@example.com", "δοκιμή@exämple.test"], UTF8_MESSAGE,
                                  mail_options=["SMTPUTF8"])
    assert refused == {}
    [delivered] = list((tmp_path / "Maildir" / "new").iterdir())
    stored = delivered.read_bytes()
    assert UTF8_MESSAGE.replace(b"\r\n", b"\n") in stored
    assert b" with UTF8SMTP;" in stored


# -- CHUNKING (RFC 3030) ------------------------------------------------------------------------------------

def test_bdat_chunks_are_taken_as_exact_octet_counts(ready, queue):
    """Chunks holding ``CRLF.CRLF``, lone dots, commands and binary bytes are message content, never
    end-of-data or commands: one ``250`` per chunk, and the queue gets the message with CRLF turned into LF."""
    session = ready()
    mails = []
    session.mock_hook("mail", lambda plugin, transaction, sender, **params: mails.append(sender))
    cut = CHUNK_MESSAGE.index(b".\r\nMAIL")
    replies = session.send(bdat(CHUNK_MESSAGE[:cut], CHUNK_MESSAGE[cut:]))
    assert codes(replies) == [(250, "2.0.0"), (250, "2.0.0")]
    assert replies[0].text == "2.0.0 %d octets received" % cut
    assert queue.messages == [CHUNK_MESSAGE.replace(b"\r\n", b"\n")]
    assert mails == [] and not session.closed


def test_bdat_chunk_boundary_anywhere_stores_the_same_message(ready, queue):
    """The message cut into two chunks at every octet (a CRLF, a dot or a multi-byte character split
    between chunks) is stored exactly as when sent in one chunk."""
    expected = CHUNK_MESSAGE.replace(b"\r\n", b"\n")
    for cut in range(len(CHUNK_MESSAGE) + 1):
        session = ready()
        replies = session.send(bdat(CHUNK_MESSAGE[:cut], CHUNK_MESSAGE[cut:]))
        assert codes(replies) == [(250, "2.0.0"), (250, "2.0.0")], cut
        assert queue.messages[-1] == expected, cut


def test_bdat_stream_split_at_every_byte_gives_the_same_result(ready, queue):
    """The whole stream (BDAT commands and their octets) cut in two at every byte, and fed byte by byte:
    the same replies and the same queued message as in one packet."""
    stream = bdat(CHUNK_MESSAGE[:50], CHUNK_MESSAGE[50:]) + b"NOOP\r\n"
    expected = CHUNK_MESSAGE.replace(b"\r\n", b"\n")
    for cut in range(1, len(stream)):
        session = ready()
        replies = session.send(stream[:cut]) + session.send(stream[cut:])
        assert [r.code for r in replies] == [250, 250, 250], cut
        assert queue.messages[-1] == expected, cut
    session = ready()
    replies = [r for i in range(len(stream)) for r in session.send(stream[i:i + 1])]
    assert [r.code for r in replies] == [250, 250, 250]
    assert queue.messages[-1] == expected


def test_pipelined_bdat_with_data_in_one_packet(daemon, queue):
    """RFC 3030 + RFC 2920: EHLO, MAIL, RCPT, two BDATs with their octets and QUIT in one packet:
    every reply, in order, and the message queued."""
    session = TestSession(daemon())
    replies = session.send(b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n"
                           + bdat(b"Subject: x\r\n\r\n", b"body\r\n") + b"QUIT\r\n")
    assert [r.code for r in replies] == [250, 250, 250, 250, 250, 221]
    assert queue.messages == [b"Subject: x\n\nbody\n"]


def test_bdat_zero_last_ends_the_message(ready, queue):
    """``BDAT 0 LAST`` after some chunks ends the message (RFC 3030 2); a ``BDAT 0`` chunk is a harmless 250."""
    session = ready()
    replies = session.send(bdat(b"Subject: x\r\n\r\nbody\r\n", b"", last=False) + b"BDAT 0 LAST\r\n")
    assert codes(replies) == [(250, "2.0.0")] * 3
    assert replies[1].text == "2.0.0 0 octets received"
    assert queue.messages == [b"Subject: x\n\nbody\n"]


def test_bdat_zero_last_alone_queues_an_empty_message(ready, queue):
    """A message of zero octets (``BDAT 0 LAST`` only) is queued with just our Received header."""
    session = ready()
    assert codes(session.command("BDAT 0 LAST")) == [(250, "2.0.0")]
    assert queue.messages == [b""] and queue.received[0].startswith("from ")


def test_last_chunk_without_final_crlf_gets_one(ready, queue):
    """A LAST chunk that does not end in CRLF: the stored message still ends with a line break."""
    session = ready()
    assert codes(session.send(bdat(b"Subject: x\r\n\r\nno newline at the end"))) == [(250, "2.0.0")]
    assert queue.messages == [b"Subject: x\n\nno newline at the end\n"]


def test_bare_cr_and_lf_in_chunks_become_line_breaks(ready, queue):
    """Bare CR and LF inside a chunk are octets, not the end of anything: they are stored as line breaks
    (a bare CR must not reach the next hop, where it could end the data) and the session goes on."""
    session = ready()
    replies = session.send(bdat(b"Subject: x\r\n\r\none\ntwo\rthree\r\n\n.\n\r.\r\nfour\r\n"))
    assert codes(replies) == [(250, "2.0.0")] and not session.closed
    assert queue.messages == [b"Subject: x\n\none\ntwo\nthree\n\n.\n\n.\nfour\n"]


def test_data_after_bdat_is_503(ready, queue):
    """DATA inside a BDAT transaction: ``503 5.5.1`` (RFC 3030 3); the chunks so far are kept and LAST queues."""
    session = ready()
    session.send(bdat(b"Subject: x\r\n\r\nfirst\r\n", last=False))
    [reply] = session.command("DATA")
    assert (reply.code, reply.status) == (503, "5.5.1")
    assert not session.session.in_data()
    assert codes(session.send(bdat(b"second\r\n"))) == [(250, "2.0.0")]
    assert queue.messages == [b"Subject: x\n\nfirst\nsecond\n"]


@pytest.mark.parametrize("mail, rcpt, expected", [
    (None, None, "5.5.1 MAIL first"),
    ("MAIL FROM:<a@b.test>", None, "5.5.1 RCPT first"),
])
def test_bdat_without_mail_or_rcpt_is_503_after_its_octets(daemon, queue, mail, rcpt, expected):
    """BDAT without MAIL (or RCPT): its octets are read and dropped, never as commands; the 503 comes
    once the whole chunk has arrived, and the session goes on."""
    session = TestSession(daemon())
    session.command("EHLO client.test")
    if mail:
        session.command(mail)
    commands = []
    session.mock_hook("unrecognized_command", lambda plugin, transaction, verb, rest: commands.append(verb))
    session.mock_hook("quit", lambda plugin, transaction: commands.append("quit"))
    chunk = b"RSET\r\nQUIT\r\nXYZZY\r\n"
    assert session.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk[:-3]) == []
    [reply] = session.send(chunk[-3:])
    assert (reply.code, reply.text) == (503, expected)
    assert commands == [] and not session.closed and queue.messages == []
    assert codes(session.command("NOOP")) == [(250, "2.0.0")]


@pytest.mark.parametrize("line", ["BDAT", "BDAT x", "BDAT -1", "BDAT 1.5", "BDAT 10 MORE", "BDAT 10 LAST now",
                                  "BDAT 1234567890123456"])
def test_bad_bdat_syntax_is_501_and_disconnects(ready, queue, line):
    """A BDAT whose size cannot be read: ``501 5.5.4`` and the connection closes, because nobody knows where
    the chunk would end; nothing after it is read, as data or as commands."""
    session = ready()
    mails = []
    session.mock_hook("mail", lambda plugin, transaction, sender, **params: mails.append(sender))
    replies = session.send(line.encode() + b"\r\nMAIL FROM:<x@y.test>\r\n")
    assert codes(replies) == [(501, "5.5.4")]
    assert session.closed and mails == [] and queue.messages == []


def test_bdat_over_databytes_is_552_at_the_chunk_that_crosses_it(ready, queue):
    """RFC 3030 2: the chunk that takes the message over ``databytes`` gets ``552 5.3.4`` once its octets
    are read, not only LAST; the transaction is over (a further BDAT is ``503``, the next MAIL ``250``)."""
    session = ready(config={"databytes": "100"})
    chunk = b"Subject: x\r\n\r\n" + b"y" * 60 + b"\r\n"
    replies = session.send(bdat(chunk, chunk, last=False))
    assert codes(replies) == [(250, "2.0.0"), (552, "5.3.4")]
    assert session.transaction.sender is None
    assert codes(session.send(bdat(b"more\r\n"))) == [(503, "5.5.1")]
    assert queue.messages == []
    assert codes(session.command("MAIL FROM:<a@b.test>")) == [(250, "2.1.0")]


def test_bdat_open_line_counts_toward_databytes(ready, queue):
    """A chunk ending inside a line is over ``databytes`` if what it brought is: the open line is counted."""
    session = ready(config={"databytes": "100"})
    assert codes(session.send(bdat(b"Subject: x\r\n\r\n" + b"y" * 200, last=False))) == [(552, "5.3.4")]


def test_bdat_over_databytes_is_refused_over_a_socket(live_server, tmp_path):
    """The same over TCP: ``250`` for the first chunk, ``552 5.3.4`` for the one that crosses the limit (the
    client learns it before sending the rest), ``503`` for the next; nothing is delivered."""
    server = live_server(config={"databytes": "1000"})
    with closing(RawClient(server.address)) as client:
        assert client.reply().code == 220
        for line in ("EHLO client.test", "MAIL FROM:<a@b.test>", "RCPT TO:<u@example.com>"):
            assert client.command(line).code == 250
        client.send(bdat(b"Subject: x\r\n\r\n" + b"a" * 500 + b"\r\n", b"b" * 600 + b"\r\n", last=False))
        assert codes([client.reply(), client.reply()]) == [(250, "2.0.0"), (552, "5.3.4")]
        client.send(bdat(b"c\r\n"))
        assert codes([client.reply()]) == [(503, "5.5.1")]
        assert client.command("QUIT").code == 221
    assert list((tmp_path / "Maildir" / "new").iterdir()) == []


def test_bdat_message_of_exactly_databytes_is_accepted(ready, queue):
    """``databytes`` counts the stored message as for DATA: exactly the limit is fine."""
    message = b"Subject: x\r\n\r\n" + b"y" * 40 + b"\r\n"
    limit = len(message.replace(b"\r\n", b"\n"))
    session = ready(config={"databytes": str(limit)})
    assert codes(session.send(bdat(message))) == [(250, "2.0.0")]
    assert len(queue.messages) == 1


@pytest.mark.parametrize("split", [None, 971, 4096, 65537])
def test_bdat_long_line_is_accepted_whole_by_default(ready, queue, split):
    """Without ``max_line_length`` a 100,000-octet line in a BDAT message is stored as one line,
    however the chunks cut it (971 puts a chunk end between its CR and LF)."""
    line = b"z" * 99998 + b"\r\n"
    message = b"Subject: x\r\n\r\n" + line + b"end\r\n"
    chunks = [message] if split is None else [message[i:i + split] for i in range(0, len(message), split)]
    session = ready()
    assert codes(session.send(bdat(*chunks)))[-1] == (250, "2.0.0")
    assert queue.messages == [message.replace(b"\r\n", b"\n")]


def test_bdat_long_line_is_552_in_strict_mode(ready, queue):
    """``max_line_length 1000``: a line over 1000 octets in a BDAT message is ``552 5.6.0`` at LAST, as in DATA."""
    session = ready(config={"max_line_length": "1000"})
    assert codes(session.send(bdat(b"Subject: x\r\n\r\n" + b"z" * 1200 + b"\r\n"))) == [(552, "5.6.0")]
    assert queue.messages == []


def test_bdat_adds_no_dot(ready, queue):
    """RFC 3030: BDAT has no dot transparency.  A line of 1000 octets that starts with a dot is within the
    strict limit (no dot added to count), and every dot is stored as sent."""
    line = b"." + b"d" * 997 + b"\r\n"
    assert len(line) == 1000
    message = b"Subject: x\r\n\r\n" + line + b"..\r\n.\r\n"
    for cut in (1, 14, 15, 16, 1015):
        session = ready(config={"max_line_length": "1000"})
        assert codes(session.send(bdat(message[:cut], message[cut:]))) == [(250, "2.0.0")] * 2, cut
        assert queue.messages[-1] == message.replace(b"\r\n", b"\n"), cut


def test_bdat_line_that_never_ends_keeps_memory_bounded(ready, queue):
    """Megabytes of a chunk without a LF: stored in pieces, the chunk receiver's buffer stays within one piece."""
    session = ready()
    session.send(b"BDAT %d LAST\r\nSubject: x\r\n\r\n" % (14 + 41 * 65536))
    for _ in range(40):
        assert session.send(b"q" * 65536) == []
        assert len(session.session._chunk._buffer) <= PIECE
    assert codes(session.eof()) == [(451, "4.3.0")]


def test_binarymime_needs_bdat_and_has_no_line_limit(ready, queue):
    """``BODY=BINARYMIME``: DATA is ``503 5.6.1`` (RFC 3030 3), BDAT is the way, and long lines are fine
    even in strict mode."""
    session = ready(config={"max_line_length": "1000"}, mail="MAIL FROM:<a@b.test> BODY=BINARYMIME")
    [reply] = session.command("DATA")
    assert (reply.code, reply.status) == (503, "5.6.1")
    message = b"Subject: x\r\nContent-Transfer-Encoding: binary\r\n\r\n" + b"\x01" * 5000 + b"\r\n"
    assert codes(session.send(bdat(message[:100], message[100:]))) == [(250, "2.0.0")] * 2
    assert queue.messages == [message]


# Every octet value, lone CR and LF, CRLF.CRLF, a dot line, NUL and 8-bit bytes: a binary body.
BINARY_BODY = (bytes(range(256)) + b"\rlone CR\nlone LF\r\n.\r\n..\r\n\r\r\n\n\r" + bytes(range(255, -1, -1)) * 3
               + b"\r\n.\r\nno line end\r")
BINARY_MESSAGE = b"Subject: binary\r\nContent-Type: application/octet-stream\r\n\r\n" + BINARY_BODY


def binary_chunks(message):
    """The message cut at every CR and LF (so CRs end chunks and LFs start them) and in 100-octet pieces."""
    cuts = sorted({0, len(message)} | {i for i in range(len(message)) if message[i] in b"\r\n"}
                  | {i + 1 for i in range(len(message)) if message[i] == 13} | set(range(0, len(message), 100)))
    return [message[a:b] for a, b in zip(cuts, cuts[1:])]


def test_binarymime_body_is_carried_byte_exact(ready, queue):
    """A BINARYMIME message in many chunks (split at every CR and LF): the queue gets it exactly as sent."""
    session = ready(mail="MAIL FROM:<a@b.test> BODY=BINARYMIME")
    chunks = binary_chunks(BINARY_MESSAGE)
    assert codes(session.send(bdat(*chunks))) == [(250, "2.0.0")] * len(chunks)
    assert queue.messages == [BINARY_MESSAGE]
    session = ready(mail="MAIL FROM:<a@b.test> BODY=BINARYMIME")
    for n in range(len(BINARY_MESSAGE)):
        session.send(bdat(BINARY_MESSAGE[n:n + 1], last=n == len(BINARY_MESSAGE) - 1))
    assert queue.messages[-1] == BINARY_MESSAGE


def test_binarymime_over_a_socket_reaches_the_maildir_byte_exact(live_server, tmp_path):
    """BDAT with ``BODY=BINARYMIME`` over TCP, in several chunks: the Maildir file holds the client's header
    and body octet for octet (after our Return-Path, Delivered-To and Received lines, CRLF-ended too)."""
    server = live_server()
    with closing(RawClient(server.address)) as client:
        assert client.reply().code == 220
        assert "BINARYMIME" in client.command("EHLO client.test").lines
        for line in ("MAIL FROM:<a@b.test> BODY=BINARYMIME", "RCPT TO:<u@example.com>"):
            assert client.command(line).code == 250
        chunks = binary_chunks(BINARY_MESSAGE)
        client.send(bdat(*chunks))
        assert codes([client.reply() for _ in chunks]) == [(250, "2.0.0")] * len(chunks)
        assert client.command("QUIT").code == 221
    [delivered] = list((tmp_path / "Maildir" / "new").iterdir())
    stored = delivered.read_bytes()
    assert stored.startswith(b"Return-Path: <a@b.test>\r\nDelivered-To: u@example.com\r\nReceived: from ")
    assert stored.endswith(b"\r\n" + BINARY_MESSAGE)
    head = stored[:-len(BINARY_MESSAGE)]
    assert b"\n" not in head.replace(b"\r\n", b"")


def test_rset_in_the_middle_of_bdat_discards(ready, queue):
    """RSET between chunks: ``250``, the chunks so far are dropped, a following BDAT is ``503`` (no MAIL),
    and the next transaction stores only its own message."""
    session = ready()
    session.send(bdat(b"Subject: dropped\r\n\r\nold\r\n", last=False))
    assert codes(session.command("RSET")) == [(250, "2.0.0")]
    assert codes(session.send(bdat(b"more\r\n"))) == [(503, "5.5.1")]
    session.command("MAIL FROM:<a@b.test>")
    session.command("RCPT TO:<c@d.test>")
    assert codes(session.send(bdat(b"Subject: kept\r\n\r\nnew\r\n"))) == [(250, "2.0.0")]
    assert queue.messages == [b"Subject: kept\n\nnew\n"]


def test_eof_in_the_middle_of_a_chunk_queues_nothing(ready, queue):
    """The client goes away with octets of a chunk still due: ``451 4.3.0``, nothing queued."""
    session = ready()
    assert session.send(b"BDAT 100 LAST\r\nSubject: x\r\n") == []
    assert codes(session.eof()) == [(451, "4.3.0")]
    assert queue.messages == [] and session.closed


def test_bdat_runs_the_same_hooks_as_data(daemon, queue):
    """BDAT runs data, data_headers_end, data_post_headers, data_post, queue_pre, queue and queue_post like DATA,
    with the header parsed and our Received on top by data_post, and queues the same bytes."""
    smtpd = daemon()
    seen = []

    def watch(hook):
        def record(plugin, transaction, *args):
            header = transaction.header
            seen.append((hook, header.get("Subject") if header is not None else None,
                         (header.names() or [None])[0] if hook == "data_post" else None))
        return record

    probe = TestSession(smtpd, greet=False)
    for hook in ("data", "data_headers_end", "data_post_headers", "data_post", "queue_pre", "queue_post"):
        probe.mock_hook(hook, watch(hook), name="watch_" + hook)
    message = b"Subject: same\r\nX-Other: 1\r\n\r\nbody\r\n"

    session = TestSession(smtpd)
    assert session.send_message("a@b.test", ["c@d.test"], message)[-1].code == 250
    by_data = list(seen)
    seen.clear()
    session.command("MAIL FROM:<a@b.test>")
    session.command("RCPT TO:<c@d.test>")
    assert codes(session.send(bdat(message[:20], message[20:]))) == [(250, "2.0.0")] * 2
    assert seen == by_data
    assert [hook for hook, _, _ in seen] == ["data", "data_headers_end", "data_post_headers", "data_post",
                                             "queue_pre", "queue_post"]
    assert ("data_post", "same", "Received") in seen
    assert queue.messages[0] == queue.messages[1] == message.replace(b"\r\n", b"\n")


def test_bdat_refused_by_data_post_is_552(ready, queue):
    """A data_post plugin that denies a BDAT message: ``552`` at LAST and nothing queued, as for DATA."""
    session = ready()
    session.mock_hook("data_post", lambda plugin, transaction: (DENY, "no thanks"))
    assert [str(r) for r in session.send(bdat(b"Subject: x\r\n\r\nbody\r\n"))] == ["552 5.7.1 no thanks"]
    assert queue.messages == []


# -- DSN (RFC 3461) --------------------------------------------------------------------------------------

def test_dsn_parameters_are_kept_for_the_queue(ready, queue):
    """RET and ENVID land in ``transaction.dsn``, NOTIFY (a list) and ORCPT in each ``recipient.notes["dsn"]``;
    a recipient without DSN parameters has an empty dict."""
    session = TestSession(ready().smtpd)
    session.command("EHLO client.test")
    assert codes(session.command("MAIL FROM:<a@b.test> RET=HDRS ENVID=QQ314159+2Bx")) == [(250, "2.1.0")]
    assert codes(session.command("RCPT TO:<c@d.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c+40d.test")) \
        == [(250, "2.1.5")]
    assert codes(session.command("RCPT TO:<e@f.test> notify=never")) == [(250, "2.1.5")]
    assert codes(session.command("RCPT TO:<g@h.test>")) == [(250, "2.1.5")]
    assert session.transaction.dsn == {"ret": "HDRS", "envid": "QQ314159+2Bx"}
    session.data("Subject: x\n\nbody\n")
    [(sender, recipients, dsn, rcpt_dsn)] = queue.envelopes
    assert dsn == {"ret": "HDRS", "envid": "QQ314159+2Bx"}
    assert rcpt_dsn == [{"notify": ["SUCCESS", "FAILURE"], "orcpt": "rfc822;c+40d.test"}, {"notify": ["NEVER"]}, {}]


@pytest.mark.parametrize("command, arguments", [
    ("MAIL", "FROM:<a@b.test> RET=ALL"),
    ("MAIL", "FROM:<a@b.test> RET=FULL,HDRS"),
    ("MAIL", "FROM:<a@b.test> ENVID=bad+zz"),
    ("MAIL", "FROM:<a@b.test> ENVID=" + "x" * 101),
    ("RCPT", "TO:<c@d.test> NOTIFY=NEVER,SUCCESS"),
    ("RCPT", "TO:<c@d.test> NOTIFY=SOMETIMES"),
    ("RCPT", "TO:<c@d.test> NOTIFY=SUCCESS,SUCCESS"),
    ("RCPT", "TO:<c@d.test> NOTIFY=,FAILURE"),
    ("RCPT", "TO:<c@d.test> ORCPT=rfc822"),
    ("RCPT", "TO:<c@d.test> ORCPT=;c@d.test"),
    ("RCPT", "TO:<c@d.test> ORCPT=rfc822;"),
    ("RCPT", "TO:<c@d.test> ORCPT=rfc822;c+4"),
])
def test_invalid_dsn_values_are_501_5_5_4(ready, command, arguments):
    """Invalid RET, ENVID (xtext, 100 chars), NOTIFY (NEVER alone, no repeats) or ORCPT (type;xtext):
    ``501 5.5.4`` and the command has no effect."""
    session = ready()
    if command == "MAIL":
        session.command("RSET")
    [reply] = session.command("%s %s" % (command, arguments))
    assert (reply.code, reply.status) == (501, "5.5.4")
    if command == "MAIL":
        assert session.transaction.sender is None
    else:
        assert len(session.transaction.recipients) == 1


@pytest.mark.parametrize("command, arguments", [
    ("MAIL", "FROM:<a@b.test> NOTIFY=NEVER"),
    ("MAIL", "FROM:<a@b.test> XDSN=1"),
    ("RCPT", "TO:<c@d.test> RET=FULL"),
    ("RCPT", "TO:<c@d.test> ENVID=x"),
    ("RCPT", "TO:<c@d.test> XNOTIFY=SUCCESS"),
])
def test_unknown_or_misplaced_parameters_are_still_555(ready, command, arguments):
    """A parameter that is not ours, or a DSN one on the wrong command: ``555 5.5.4`` (RFC 5321 4.1.1.11)."""
    session = ready()
    if command == "MAIL":
        session.command("RSET")
    assert codes(session.command("%s %s" % (command, arguments))) == [(555, "5.5.4")]


@pytest.mark.parametrize("command, arguments", [
    ("MAIL", "FROM:<a@b.test> RET=FULL"),
    ("MAIL", "FROM:<a@b.test> ENVID=x"),
    ("RCPT", "TO:<c@d.test> NOTIFY=NEVER"),
    ("RCPT", "TO:<c@d.test> ORCPT=rfc822;c@d.test"),
])
def test_without_a_dsn_queue_dsn_is_not_offered_and_its_parameters_are_555(smtpd_factory, command, arguments):
    """With no queue plugin that declares DSN (maildir delivers locally and sends no DSN), EHLO does not list
    DSN and RET/ENVID/NOTIFY/ORCPT are parameters we do not know: ``555 5.5.4`` (RFC 5321 4.1.1.11)."""
    session = TestSession(smtpd_factory(plugins=["rcpt_ok", "queue/maildir ./Maildir"],
                                        config={"rcpthosts": ["d.test"]}))
    assert "DSN" not in session.command("EHLO client.test")[0].lines
    if command == "RCPT":
        session.command("MAIL FROM:<a@b.test>")
    assert codes(session.command("%s %s" % (command, arguments))) == [(555, "5.5.4")]


def test_a_queue_plugin_declaring_dsn_turns_it_on(smtpd_factory):
    """``CAPABILITIES = ["DSN"]`` in a queue plugin: EHLO lists DSN once and the parameters are accepted."""
    session = TestSession(smtpd_factory(plugins=["rcpt_ok", "dsn_queue"], config=with_dsn({"rcpthosts": ["d.test"]})))
    assert session.command("EHLO client.test")[0].lines.count("DSN") == 1
    assert codes(session.command("MAIL FROM:<a@b.test> RET=HDRS ENVID=x")) == [(250, "2.1.0")]
    assert codes(session.command("RCPT TO:<c@d.test> NOTIFY=NEVER")) == [(250, "2.1.5")]


@pytest.mark.parametrize("source, complaint", [
    ("CAPABILITIES = ['DSN']\n", "has no queue hook"),
    ("CAPABILITIES = 'DSN'\n", "must be a list"),
])
def test_a_wrong_capabilities_declaration_stops_start_up(tmp_path, smtpd_factory, source, complaint):
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "not_a_queue.py").write_text(source)
    with pytest.raises(ConfigError, match=complaint):
        smtpd_factory(plugins=["not_a_queue"], config={"plugin_dirs": str(tmp_path / "extra")})


def test_dsn_and_bdat_and_smtputf8_together(ready, queue):
    """All three extensions in one transaction: UTF-8 envelope with DSN parameters, message in chunks."""
    session = TestSession(ready().smtpd)
    session.command("EHLO client.test")
    assert session.command("MAIL FROM:<jösé@exämple.test> SMTPUTF8 RET=FULL BODY=8BITMIME")[0].code == 250
    assert session.command("RCPT TO:<üser@example.com> NOTIFY=DELAY")[0].code == 250
    assert codes(session.send(bdat(UTF8_MESSAGE[:30], UTF8_MESSAGE[30:]))) == [(250, "2.0.0")] * 2
    assert queue.messages == [UTF8_MESSAGE.replace(b"\r\n", b"\n")]
    assert queue.envelopes[0][2:] == ({"ret": "FULL"}, [{"notify": ["DELAY"]}])
    assert " with UTF8SMTP;" in queue.received[0]


def test_encode_message_helper_matches_bdat_storage(ready, queue):
    """The same message by DATA (dot-stuffed by the helper) and by BDAT (raw) is stored identically."""
    message = b"Subject: x\r\n\r\n.dot\r\n..two\r\n.\r\nend\r\n"
    session = ready()
    session.send(b"DATA\r\n" + encode_message(message))
    session.command("MAIL FROM:<a@b.test>")
    session.command("RCPT TO:<c@d.test>")
    session.send(bdat(message))
    assert queue.messages[0] == queue.messages[1] == message.replace(b"\r\n", b"\n")


def test_bdat_honours_data_hook_done_and_disconnect(session_factory):
    """Under BDAT the data hook decides as under DATA: DONE leaves the answer to the plugin (the chunk is
    read and dropped), DENY_DISCONNECT answers 554 after the chunk and hangs up."""
    from qpgevent import DENY_DISCONNECT, DONE
    session = session_factory(["rcpt_ok"], {"rcpthosts": "example.com"})
    session.mock_hook("data", lambda self, txn: (self.qp.respond(451, "busy, later"), DONE)[1])
    session.command("EHLO client.test")
    session.command("MAIL FROM:<a@b.test>")
    session.command("RCPT TO:<u@example.com>")
    assert [str(r) for r in session.send(b"BDAT 5 LAST\r\nhello")] == ["451 4.0.0 busy, later"]
    assert session.transaction.sender is None and not session.closed

    session = session_factory(["rcpt_ok"], {"rcpthosts": "example.com"})
    session.mock_hook("data", lambda self, txn: (DENY_DISCONNECT, "go away"))
    session.command("EHLO client.test")
    session.command("MAIL FROM:<a@b.test>")
    session.command("RCPT TO:<u@example.com>")
    assert [str(r) for r in session.send(b"BDAT 5 LAST\r\nhello")] == ["554 5.7.1 go away"]
    assert session.closed
