"""DATA (RFC 5321 4.1.1.4, 4.5.2, 4.5.3.1.6): unstuffing, any chunking, header split, limits, spool, smuggling."""
import os
import stat
from contextlib import closing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qpgevent import DECLINED
from qpgevent.data import PIECE
from qpgevent.testing import SMUGGLING_VECTORS, QueueCapture, RawClient, TestSession, accept_all, encode_message

MESSAGE = (b"Subject: a test\r\n"
           b"X-Folded: first part\r\n"
           b"\tsecond part\r\n"
           b"From: Someone <a@b.test>\r\n"
           b"\r\n"
           b"..a line that starts with a dot\r\n"
           b"..\r\n"
           b"...\r\n"
           b"\r\n"
           b"  indented\r\n"
           b"caf\xc3\xa9 8-bit text\r\n"
           + b"x" * 998 + b"\r\n"
           + b"end.\r\n"
           + b".\r\n")
STORED_BODY = (b"\n.a line that starts with a dot\n.\n..\n\n  indented\ncaf\xc3\xa9 8-bit text\n"
               + b"x" * 998 + b"\nend.\n")


@pytest.fixture
def queue():
    return QueueCapture()


@pytest.fixture
def new_session(smtpd_factory, queue):
    """``new_session(config)`` -> a session after EHLO, MAIL and RCPT, whose queue is ``queue``."""
    daemons = {}

    def factory(config=None, helo="EHLO"):
        key = tuple(sorted((config or {}).items()))
        if key not in daemons:  # one daemon per config keeps the every-byte loops fast
            smtpd = daemons[key] = smtpd_factory(config=config)
            TestSession(smtpd, greet=False).mock_hook("rcpt", accept_all, name="accept_rcpt")
            TestSession(smtpd, greet=False).mock_hook("queue", queue, name="test_queue")
        session = TestSession(daemons[key])
        assert session.command("%s client.test" % helo)[0].code == 250
        assert session.command("MAIL FROM:<a@b.test>")[0].code == 250
        assert session.command("RCPT TO:<c@d.test>")[0].code == 250
        return session
    return factory


def deliver(session, pieces):
    """DATA, then the pieces one ``send`` each; the replies after the 354."""
    assert session.command("DATA")[0].code == 354
    replies = []
    for piece in pieces:
        replies += session.send(piece)
    return replies


def codes(replies):
    return [(r.code, r.status) for r in replies]


# -- content -------------------------------------------------------------------------------------------

def test_message_is_stored_unstuffed_with_lf(new_session, queue):
    """RFC 5321 4.5.2: the first dot of every dot-led line is removed; CRLF becomes LF; 8-bit bytes kept."""
    session = new_session()
    assert codes(deliver(session, [MESSAGE])) == [(250, "2.0.0")]
    [stored] = queue.messages
    assert stored == (b"Subject: a test\nX-Folded: first part\n\tsecond part\nFrom: Someone <a@b.test>\n"
                      + STORED_BODY)


def test_single_dot_prefix_is_removed_as_rfc_says(new_session, queue):
    """``.foo`` (a client that did not stuff) loses its dot: RFC 5321 4.5.2, unlike qpsmtpd which keeps it."""
    session = new_session()
    deliver(session, [b"Subject: x\r\n\r\n.foo\r\nbar\r\n.\r\n"])
    assert queue.messages[0].endswith(b"\n\nfoo\nbar\n")


def test_split_at_every_byte_boundary_stores_the_same_bytes(new_session, queue):
    """The message cut in two at every byte (the final dot included) is stored exactly as in one piece."""
    deliver(new_session(), [MESSAGE])
    whole = queue.messages[0]
    for cut in range(1, len(MESSAGE)):
        replies = deliver(new_session(), [MESSAGE[:cut], MESSAGE[cut:]])
        assert codes(replies) == [(250, "2.0.0")], cut
        assert queue.messages[-1] == whole, cut
    assert len(queue.messages) == len(MESSAGE)


def test_byte_by_byte_stores_the_same_bytes(new_session, queue):
    """One byte per read (a slow client) stores the same message."""
    deliver(new_session(), [MESSAGE])
    replies = deliver(new_session(), [MESSAGE[i:i + 1] for i in range(len(MESSAGE))])
    assert codes(replies) == [(250, "2.0.0")]
    assert queue.messages[1] == queue.messages[0]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=1, max_value=len(MESSAGE) - 1), max_size=12, unique=True))
def test_random_chunkings_store_the_same_bytes(new_session, queue, cuts):
    """Any chunking of the DATA stream stores the same message and gets one 250."""
    points = [0, *sorted(cuts), len(MESSAGE)]
    replies = deliver(new_session(), [MESSAGE[a:b] for a, b in zip(points, points[1:])])
    assert codes(replies) == [(250, "2.0.0")]
    assert queue.messages[-1].endswith(STORED_BODY)
    assert queue.messages[-1].startswith(b"Subject: a test\nX-Folded: first part\n\tsecond part\n")


LINE = st.binary(max_size=120).filter(lambda line: b"\r" not in line and b"\n" not in line)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(LINE, max_size=15), chunk=st.integers(min_value=1, max_value=64))
def test_dot_stuffing_round_trip(new_session, queue, lines, chunk):
    """Whatever body lines a client sends (dots, 8-bit, NULs), stuffed and chunked, come out unchanged with LF."""
    data = encode_message(b"Subject: x\n\n" + b"".join(line + b"\n" for line in lines))
    replies = deliver(new_session(), [data[i:i + chunk] for i in range(0, len(data), chunk)])
    assert codes(replies) == [(250, "2.0.0")]
    assert queue.messages[-1] == b"Subject: x\n\n" + b"".join(line + b"\n" for line in lines)


def test_header_block_is_queued_as_received(new_session, queue):
    """Header lines keep their exact spacing after the colon and their folding (DKIM simple canonicalization)."""
    header = b"Subject:no space\r\nX-Two:  two spaces\r\nX-Tab:\ttab\r\nX-Empty:\r\n\tfolded on next line\r\n"
    deliver(new_session(), [header + b"\r\nbody\r\n.\r\n"])
    assert queue.messages[0] == header.replace(b"\r\n", b"\n") + b"\nbody\n"


def test_headers_are_parsed(new_session):
    """After the dot plugins see ``transaction.header``: values by name, case-insensitive, folding kept."""
    session = new_session()
    seen = {}

    def data_post(plugin, transaction):
        header = transaction.header
        seen.update(subject=header.get("subject"), folded=header.get("X-Folded"), sender=header.get("From"),
                    missing=header.get("X-Missing"), received=header.get_all("Received"))
        return DECLINED

    session.mock_hook("data_post", data_post)
    deliver(session, [MESSAGE])
    assert seen["subject"] == "a test"
    assert seen["folded"] == "first part\n\tsecond part"
    assert seen["sender"] == "Someone <a@b.test>"
    assert seen["missing"] is None
    assert len(seen["received"]) == 1


def test_blank_line_splits_header_and_body(new_session):
    """The body starts at the blank line: ``body_as_string`` begins with it, ``body_length`` counts it."""
    session = new_session()
    seen = {}

    def data_post(plugin, transaction):
        seen.update(body=transaction.body_as_string(), length=transaction.body_length, size=transaction.data_size,
                    first=(transaction.body_resetpos(), transaction.body_getline())[1])
        return DECLINED

    session.mock_hook("data_post", data_post)
    deliver(session, [b"Subject: x\r\n\r\nline one\r\nline two\r\n.\r\n"])
    assert seen["body"] == "\nline one\nline two\n"
    assert seen["length"] == len(seen["body"])
    assert seen["size"] == len("Subject: x\n") + len(seen["body"])
    assert seen["first"] == "\n"


@pytest.mark.parametrize("data", [
    b"hello world\r\nsecond line\r\n.\r\n",
    b" indented first line\r\nSubject: not a header here\r\n.\r\n",
    b"From someone@example.com Mon Jan 1 00:00:00 2024\r\nSubject: x\r\n.\r\n",
], ids=["plain-text", "continuation-first", "mbox-from"])
def test_message_without_header_block_loses_nothing(new_session, queue, data):
    """A first line that is not a header starts the body: every line is queued, after a blank separator line."""
    deliver(new_session(), [data])
    [stored] = queue.messages
    body = data[:-3].replace(b"\r\n", b"\n")
    assert stored == b"\n" + body


def test_message_with_only_headers(new_session, queue):
    """A message that ends inside its header block is queued with its headers and an empty body."""
    deliver(new_session(), [b"Subject: only headers\r\n.\r\n"])
    assert queue.messages == [b"Subject: only headers\n"]


def test_empty_message(new_session, queue):
    """DATA followed at once by the dot: an empty message is queued (with the Received header)."""
    assert codes(deliver(new_session(), [b".\r\n"])) == [(250, "2.0.0")]
    assert queue.messages == [b""]


@pytest.mark.parametrize("helo, proto", [("EHLO", "ESMTP"), ("HELO", "SMTP")])
def test_received_header_is_prepended(new_session, queue, helo, proto):
    """A Received header goes on top: ``from <remote> (HELO <host>) (<ip>) by <me> ... with ESMTP|SMTP; <date>``."""
    deliver(new_session(helo=helo), [b"Received: from older.test\r\nSubject: x\r\n\r\nbody\r\n.\r\n"])
    [received] = queue.received
    assert received.startswith("from localhost (HELO client.test) (127.0.0.1)\n by mx.test (qpgevent/")
    assert " with %s; " % proto in received
    assert queue.messages[0].startswith(b"Received: from older.test\n")


# -- limits ---------------------------------------------------------------------------------------------

def test_databytes_exceeded_is_552_after_the_dot_and_nothing_queued(new_session, queue):
    """A message over ``databytes``: the data is read to the dot, then ``552 5.3.4``; nothing queued, session goes on."""
    session = new_session(config={"databytes": "100"})
    replies = deliver(session, [b"Subject: x\r\n\r\n" + b"y" * 200 + b"\r\n", b"more\r\n", b".\r\n"])
    assert codes(replies) == [(552, "5.3.4")]
    assert queue.messages == [] and session.transaction.sender is None
    assert codes(session.command("NOOP")) == [(250, "2.0.0")]


def test_message_of_exactly_databytes_is_accepted(new_session, queue):
    """databytes counts the stored bytes (LF endings, unstuffed): a message of exactly that size is queued."""
    data = b"Subject: x\r\n\r\n" + b"z" * 50 + b"\r\n.\r\n"
    size = len(b"Subject: x\n\n" + b"z" * 50 + b"\n")
    assert codes(deliver(new_session(config={"databytes": str(size)}), [data])) == [(250, "2.0.0")]
    assert codes(deliver(new_session(config={"databytes": str(size - 1)}), [data])) == [(552, "5.3.4")]
    assert len(queue.messages) == 1


STRICT = {"max_line_length": "1000"}


@pytest.mark.parametrize("where", ["header", "body"])
def test_line_over_max_line_length_is_552_and_nothing_queued(new_session, queue, where):
    """Strict mode (``max_line_length 1000``): a text line over 1000 octets with its CRLF (RFC 5321
    4.5.3.1.6) gets ``552 5.6.0`` after the dot, nothing queued, the session goes on."""
    long_line = b"X-Long: " + b"w" * 991 + b"\r\n" if where == "header" else b"w" * 999 + b"\r\n"
    assert len(long_line) == 1001
    data = b"Subject: x\r\n" + (long_line + b"\r\n" if where == "header" else b"\r\n" + long_line) + b".\r\n"
    session = new_session(config=STRICT)
    [reply] = deliver(session, [data])
    assert (reply.code, reply.text) == (552, "5.6.0 Message has a line longer than 1000 octets (RFC 5321 4.5.3.1.6)")
    assert queue.messages == [] and not session.closed


@pytest.mark.parametrize("cut", [None, 1, 500, 1001])
def test_transparency_dot_does_not_count_toward_the_line_limit(new_session, queue, cut):
    """RFC 5321 4.5.3.1.6: 1000 octets "not counting the leading dot duplicated for transparency": a
    stuffed line of 1001 octets on the wire is 1000 and accepted; one more octet is too long."""
    fits = b"." + b"." + b"d" * 997 + b"\r\n"
    assert len(fits) == 1001
    data = b"Subject: x\r\n\r\n" + fits + b".\r\n"
    pieces = [data] if cut is None else [data[:14 + cut], data[14 + cut:]]
    assert codes(deliver(new_session(config=STRICT), pieces)) == [(250, "2.0.0")]
    assert queue.messages == [b"Subject: x\n\n." + b"d" * 997 + b"\n"]
    data = b"Subject: x\r\n\r\n." + fits + b".\r\n"
    pieces = [data] if cut is None else [data[:14 + cut], data[14 + cut:]]
    assert codes(deliver(new_session(config=STRICT), pieces)) == [(552, "5.6.0")]
    assert len(queue.messages) == 1


def test_very_long_line_in_pieces_is_bounded_and_refused_in_strict_mode(new_session, queue):
    """Strict mode: a 2 MB line arriving in 64 KB reads is dropped as it comes (the buffer stays small),
    the end is still found, ``552 5.6.0``."""
    session = new_session(config=STRICT)
    assert session.command("DATA")[0].code == 354
    session.send(b"Subject: x\r\n\r\n")
    for _ in range(32):
        assert session.send(b"v" * 65536) == []
        assert len(session.session._buffer) <= 1024
    assert codes(session.send(b"\r\n.\r\n")) == [(552, "5.6.0")]
    assert queue.messages == []


LONG_LINE = (b".starts with a dot " + b"0123456789" * 10000 + b". dot\r\n")[:99998] + b"\r\n"


@pytest.mark.parametrize("size", [None, 1, 4096, 65536, 65537, 70000])
def test_hundred_thousand_octet_line_is_accepted_and_stored_whole(new_session, queue, size):
    """By default (no ``max_line_length``) a 100,000-octet body line is taken, however it is cut (pieces
    ending anywhere, a CR and its LF apart, a dot starting a piece), and stored as one line; only its
    transparency dot is removed."""
    assert len(LONG_LINE) == 100000
    data = b"Subject: x\r\n\r\nbefore\r\n." + LONG_LINE + b"after\r\n.\r\n"
    pieces = [data] if size is None else [data[i:i + size] for i in range(0, len(data), size)]
    session = new_session()
    assert codes(deliver(session, pieces)) == [(250, "2.0.0")]
    assert queue.messages == [b"Subject: x\n\nbefore\n" + LONG_LINE[:-2] + b"\nafter\n"]


@pytest.mark.parametrize("databytes, expected", [(None, (250, "2.0.0")), ("1000000", (552, "5.3.4"))])
def test_line_that_never_ends_keeps_memory_bounded(new_session, queue, databytes, expected):
    """Megabytes without a LF: the line is stored in pieces as it arrives, so the session's buffer never
    holds more than one piece and a read; at the end it is stored whole, or refused for ``databytes``."""
    session = new_session(config={"databytes": databytes} if databytes else None)
    assert session.command("DATA")[0].code == 354
    session.send(b"Subject: x\r\n\r\n")
    for n in range(48):
        assert session.send(b"%c" % (97 + n % 26) * 65536) == []
        assert len(session.session._buffer) <= PIECE
    assert codes(session.send(b"\r\n.\r\n")) == [expected]
    if databytes is None:
        body = queue.messages[0].split(b"\n\n", 1)[1]
        assert body == b"".join(b"%c" % (97 + n % 26) * 65536 for n in range(48)) + b"\n"


def test_long_lines_over_a_socket_reach_the_maildir_whole(live_server, tmp_path):
    """Over TCP, a 100,000-octet body line by DATA and by BDAT: ``250``, and the Maildir files hold it whole."""
    server = live_server()
    with closing(RawClient(server.address)) as client:
        assert client.reply().code == 220
        assert client.command("EHLO client.test").code == 250
        for verb in ("DATA", "BDAT"):
            for line in ("MAIL FROM:<a@b.test>", "RCPT TO:<u@example.com>"):
                assert client.command(line).code == 250
            message = b"Subject: %s\r\n\r\n" % verb.encode() + LONG_LINE
            if verb == "DATA":
                assert client.command("DATA").code == 354
                client.send(encode_message(message))
            else:
                client.send(b"BDAT %d LAST\r\n" % len(message) + message)
            assert codes([client.reply()]) == [(250, "2.0.0")]
    stored = sorted(path.read_bytes() for path in (tmp_path / "Maildir" / "new").iterdir())
    assert [data.split(b"\n\n", 1)[1] for data in stored] == [LONG_LINE.replace(b"\r\n", b"\n")] * 2


def test_bare_cr_in_a_long_line_is_still_refused(new_session, queue):
    """A bare CR in a line stored in pieces is caught as in a short line: ``521 5.5.2`` and hang up."""
    session = new_session()
    assert session.command("DATA")[0].code == 354
    session.send(b"Subject: x\r\n\r\n" + b"a" * 100000)
    assert codes(session.send(b"a\rMAIL FROM:<x@y.test>\r\n" + b"b" * 70000)) == [(521, "5.5.2")]
    assert session.closed and queue.messages == []


def test_header_line_beyond_the_header_bound_starts_the_body(new_session, queue):
    """A header line that would take the header block past 256 KiB is not a header: the block ends (a blank
    line is added) and the line is the first body line, stored whole; the fields before it are parsed."""
    huge = b"X-Huge: " + b"h" * (300 * 1024) + b"\r\n"
    session = new_session()
    assert codes(deliver(session, [b"Subject: kept\r\n", huge[:70000], huge[70000:], b"body\r\n.\r\n"])) == [
        (250, "2.0.0")]
    assert queue.messages == [b"Subject: kept\n\n" + huge[:-2] + b"\nbody\n"]


# -- spooling -------------------------------------------------------------------------------------------

def test_large_message_is_spooled_to_a_private_file_and_removed(new_session, tmp_path):
    """Above ``size_threshold`` the message is in a 0600 spool file while queued; the file is gone afterwards."""
    session = new_session(config={"size_threshold": "1000"})
    seen = {}

    def data_post(plugin, transaction):
        seen["fh"] = transaction.body_fh
        seen["path"] = transaction.body_filename()
        seen["mode"] = stat.S_IMODE(os.stat(seen["path"]).st_mode)
        seen["body"] = transaction.body_as_string()
        return DECLINED

    session.mock_hook("data_post", data_post)
    body = b"".join(b"line %d of a big message\r\n" % n for n in range(200))
    assert codes(deliver(session, [b"Subject: big\r\n\r\n" + body + b".\r\n"])) == [(250, "2.0.0")]
    assert seen["fh"] is not None
    assert seen["mode"] == 0o600
    assert seen["path"].startswith(str(tmp_path / "spool"))
    assert stat.S_IMODE(os.stat(tmp_path / "spool").st_mode) == 0o700
    assert seen["body"] == "\n" + body.decode().replace("\r\n", "\n")
    assert not os.path.exists(seen["path"])


def test_small_message_stays_in_memory(new_session, queue, tmp_path):
    """Below ``size_threshold`` nothing is written to the spool directory."""
    session = new_session(config={"size_threshold": "1000"})
    deliver(session, [b"Subject: small\r\n\r\nhi\r\n.\r\n"])
    assert queue.spooled == [False]
    spool = tmp_path / "spool"
    assert not spool.exists() or list(spool.iterdir()) == []


def test_refused_large_message_leaves_no_spool_file(new_session, queue, tmp_path):
    """A spooled message refused by data_post leaves no file behind."""
    session = new_session(config={"size_threshold": "100"})
    session.mock_hook("data_post", lambda plugin, transaction: 901)
    assert codes(deliver(session, [b"Subject: x\r\n\r\n" + b"q" * 500 + b"\r\n.\r\n"])) == [(552, "5.7.1")]
    assert list((tmp_path / "spool").iterdir()) == []


def test_eof_in_the_middle_of_data_queues_nothing(new_session, queue, tmp_path):
    """EOF before the final dot: ``451 4.3.0 Incomplete DATA``, nothing queued, spool file removed, session closed."""
    session = new_session(config={"size_threshold": "100"})
    assert session.command("DATA")[0].code == 354
    session.send(b"Subject: x\r\n\r\n" + b"q" * 500 + b"\r\n")
    [reply] = session.eof()
    assert (reply.code, reply.status) == (451, "4.3.0")
    assert queue.messages == [] and session.closed
    assert list((tmp_path / "spool").iterdir()) == []


def test_pipelined_commands_after_the_dot(new_session, queue):
    """Commands in the same packet as the final dot are answered after the 250."""
    session = new_session()
    replies = deliver(session, [b"Subject: x\r\n\r\nbody\r\n.\r\nMAIL FROM:<e@f.test>\r\nQUIT\r\n"])
    assert [r.code for r in replies] == [250, 250, 221]
    assert len(queue.messages) == 1


# -- SMTP smuggling (2023): only CRLF.CRLF ends the data ----------------------------------------------------

SMUGGLED = b"MAIL FROM:<admin@b.test>\r\nRCPT TO:<victim@d.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n"


def smuggle(vector):
    return b"Subject: first\r\n\r\nbody" + vector + SMUGGLED


@pytest.mark.parametrize("vector", SMUGGLING_VECTORS.values(), ids=SMUGGLING_VECTORS.keys())
def test_smuggling_rejected_and_connection_closed(new_session, queue, vector):
    """``bare_newline reject`` (default): ``521 5.5.2``, the connection closes, nothing queued or run as a command."""
    session = new_session()
    mails = []
    session.mock_hook("mail", lambda plugin, transaction, sender, **params: mails.append(sender))
    replies = deliver(session, [smuggle(vector)])
    assert codes(replies) == [(521, "5.5.2")]
    assert session.closed
    assert queue.messages == [] and mails == []
    assert session.send(b"QUIT\r\n") == []


@pytest.mark.parametrize("vector", SMUGGLING_VECTORS.values(), ids=SMUGGLING_VECTORS.keys())
def test_smuggling_rejected_in_the_header_too(new_session, queue, vector):
    """The same vectors inside the header block are refused the same way."""
    session = new_session()
    replies = deliver(session, [b"Subject: first" + vector + SMUGGLED])
    assert codes(replies) == [(521, "5.5.2")] and session.closed and queue.messages == []


@pytest.mark.parametrize("vector", SMUGGLING_VECTORS.values(), ids=SMUGGLING_VECTORS.keys())
def test_smuggling_rejected_whatever_the_chunking(new_session, queue, vector):
    """Cut anywhere, a smuggling attempt is still refused and never queued."""
    data = smuggle(vector)
    for cut in range(1, len(data)):
        session = new_session()
        replies = deliver(session, [data[:cut], data[cut:]])
        assert codes(replies) == [(521, "5.5.2")], cut
        assert session.closed
    assert queue.messages == []


@pytest.mark.parametrize("vector", SMUGGLING_VECTORS.values(), ids=SMUGGLING_VECTORS.keys())
def test_smuggling_normalized_stays_inside_one_message(new_session, queue, vector):
    """``bare_newline normalize``: the bare newline is a line break, the data ends only at CRLF.CRLF, and the
    smuggled "second message" is body text of the first: exactly one message queued, one reply, no MAIL run."""
    session = new_session(config={"bare_newline": "normalize"})
    mails = []
    session.mock_hook("mail", lambda plugin, transaction, sender, **params: mails.append(sender))
    replies = deliver(session, [smuggle(vector)])
    assert codes(replies) == [(250, "2.0.0")]
    assert not session.closed and mails == []
    [stored] = queue.messages
    assert stored.startswith(b"Subject: first\n\nbody")
    assert b"\nMAIL FROM:<admin@b.test>\nRCPT TO:<victim@d.test>\nDATA\nSubject: smuggled\n\nevil\n" in stored
    assert b"\r" not in stored  # a bare CR must not reach the next hop, where it could end the data


def test_normalize_keeps_bare_lf_as_line_break(new_session, queue):
    """``bare_newline normalize``: a bare LF in the body is stored as an ordinary line break."""
    session = new_session(config={"bare_newline": "normalize"})
    deliver(session, [b"Subject: x\r\n\r\none\ntwo\r\nthree\r\n.\r\n"])
    assert queue.messages == [b"Subject: x\n\none\ntwo\nthree\n"]
