"""SMTP command handling (RFC 5321, RFC 1869/1870/2920/2034): sequence, syntax, limits, pipelining, session end."""
import pytest

from qpgevent import DONE, OK
from qpgevent.smtp import MAX_AUTH_LINE
from qpgevent.testing import TestSession


def accept(self, transaction, *args, **params):
    return OK


@pytest.fixture
def session(smtpd_factory):
    """A greeted session whose rcpt hook accepts everybody."""
    session = TestSession(smtpd_factory())
    session.mock_hook("rcpt", accept, name="accept_rcpt")
    return session


def codes(replies):
    return [(r.code, r.status) for r in replies]


# -- command sequence -------------------------------------------------------------------------------

def test_mail_before_helo_is_503(session):
    """MAIL before HELO/EHLO: ``503 5.5.1``, no sender set."""
    assert codes(session.command("MAIL FROM:<a@b.test>")) == [(503, "5.5.1")]
    assert session.transaction.sender is None


def test_rcpt_before_mail_is_503(session):
    """RCPT without a sender: ``503 5.5.1 Use MAIL before RCPT``."""
    session.command("EHLO client.test")
    [reply] = session.command("RCPT TO:<c@d.test>")
    assert (reply.code, reply.text) == (503, "5.5.1 Use MAIL before RCPT")


def test_data_without_mail_or_rcpt_is_503(session):
    """DATA without MAIL: ``503 MAIL first``; with MAIL but no RCPT: ``503 RCPT first``; no 354 either way."""
    session.command("EHLO client.test")
    assert [r.text for r in session.command("DATA")] == ["5.5.1 MAIL first"]
    session.command("MAIL FROM:<a@b.test>")
    assert [r.text for r in session.command("DATA")] == ["5.5.1 RCPT first"]
    assert not session.session.in_data()


@pytest.mark.parametrize("first, second", [("HELO", "HELO"), ("EHLO", "EHLO"), ("HELO", "EHLO"), ("EHLO", "HELO")])
def test_second_greeting_is_503(session, first, second):
    """A second HELO/EHLO in one session: ``503 5.5.1``; the first greeting stays in force."""
    session.command("%s first.test" % first)
    [reply] = session.command("%s second.test" % second)
    assert (reply.code, reply.status) == (503, "5.5.1")
    assert session.connection.hello == first.lower() and session.connection.hello_host == "first.test"


def test_helo_without_host_is_501(session):
    """HELO/EHLO without a domain: ``501 5.5.4``, not greeted."""
    assert codes(session.command("HELO")) == [(501, "5.5.4")]
    assert codes(session.command("EHLO   ")) == [(501, "5.5.4")]
    assert session.connection.hello is None


def test_nested_mail_is_503_and_keeps_the_open_transaction(session):
    """MAIL inside a transaction: ``503 5.5.1 nested MAIL command`` (RFC 5321 4.1.4); sender and recipients stay."""
    session.command("EHLO client.test")
    session.command("MAIL FROM:<a@b.test>")
    session.command("RCPT TO:<c@d.test>")
    [reply] = session.command("MAIL FROM:<other@b.test>")
    assert (reply.code, reply.text) == (503, "5.5.1 nested MAIL command")
    assert session.transaction.sender == "a@b.test"
    assert session.transaction.recipients == ["c@d.test"]


def test_rset_clears_the_transaction(session):
    """RSET: ``250 2.0.0``, sender and recipients gone, a new MAIL is accepted; the greeting stays."""
    session.command("EHLO client.test")
    session.command("MAIL FROM:<a@b.test>")
    session.command("RCPT TO:<c@d.test>")
    assert codes(session.command("RSET")) == [(250, "2.0.0")]
    assert session.transaction.sender is None and session.transaction.recipients == []
    assert session.connection.hello == "ehlo"
    assert codes(session.command("MAIL FROM:<other@b.test>")) == [(250, "2.1.0")]


def test_next_mail_after_a_plugin_answered_the_data(session):
    """A data_post plugin that answers itself (DONE) still ends the transaction: the next MAIL is 250, not 503."""
    def answer(self, transaction):
        session.session.respond(250, "taken care of")
        return DONE

    session.mock_hook("data_post", answer)
    replies = session.send_message("a@b.test", ["c@d.test"], "Subject: x\n\nbody\n")
    assert (replies[-1].code, replies[-1].text) == (250, "2.0.0 taken care of")
    assert codes(session.command("MAIL FROM:<next@b.test>")) == [(250, "2.1.0")]


# -- EHLO and parameters ----------------------------------------------------------------------------------

def test_ehlo_advertises_extensions_and_size(smtpd_factory):
    """EHLO lists PIPELINING, 8BITMIME, ENHANCEDSTATUSCODES, ``SIZE <databytes>``, SMTPUTF8, CHUNKING,
    BINARYMIME; the status-less 250 form.  No AUTH without an auth plugin, no DSN without a DSN queue plugin."""
    session = TestSession(smtpd_factory(config={"databytes": "1000000"}))
    [reply] = session.command("EHLO client.test")
    assert reply.code == 250 and reply.status is None
    assert reply.lines == ["mx.test Hi localhost [127.0.0.1]", "PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES",
                           "SIZE 1000000", "SMTPUTF8", "CHUNKING", "BINARYMIME"]


def test_ehlo_advertises_bare_size_without_limit(smtpd_factory):
    """Without databytes (or with 0) EHLO advertises a bare ``SIZE`` (RFC 1870: no fixed limit)."""
    for config in ({}, {"databytes": "0"}):
        session = TestSession(smtpd_factory(config=config))
        assert "SIZE" in session.command("EHLO client.test")[0].lines[1:]


def test_ehlo_advertises_plugin_capabilities(session):
    """A keyword an ehlo plugin adds to the ``capabilities`` note is advertised after the built-in ones."""
    def ehlo(self, transaction, host, *extra):
        session.connection.notes.setdefault("capabilities", []).append("XTEST")
        return OK

    session.mock_hook("ehlo", ehlo)
    assert session.command("EHLO client.test")[0].lines[-1] == "XTEST"


def test_helo_reply_has_no_extensions(session):
    """HELO: a one-line ``250`` with no keywords and no enhanced status; the connection is ``helo``."""
    [reply] = session.command("HELO client.test")
    assert reply.lines == ["mx.test Hi localhost [127.0.0.1]; I am so happy to meet you."]
    assert session.connection.hello == "helo" and session.connection.hello_host == "client.test"


def test_verbs_and_path_prefixes_are_case_insensitive(session):
    """``ehlo``, ``mail from:``, ``RcPt To:``, ``data`` and ``quit`` work in any case."""
    assert session.command("ehlo client.test")[0].code == 250
    assert session.command("mail from:<a@b.test>")[0].code == 250
    assert session.command("RcPt To:<c@d.test>")[0].code == 250
    assert session.command("data")[0].code == 354
    assert session.send(b"Subject: x\r\n\r\nhi\r\n.\r\n")[0].code == 451  # no queue plugin
    assert session.command("qUiT")[0].code == 221


def test_mail_size_over_databytes_is_552_at_mail_time(smtpd_factory):
    """``MAIL FROM:<a@b> SIZE=<more than databytes>``: ``552 5.3.4`` before any data; SIZE within the limit is fine."""
    session = TestSession(smtpd_factory(config={"databytes": "1000"}))
    session.command("EHLO client.test")
    [reply] = session.command("MAIL FROM:<a@b.test> SIZE=1001")
    assert (reply.code, reply.status) == (552, "5.3.4")
    assert session.transaction.sender is None
    assert codes(session.command("MAIL FROM:<a@b.test> SIZE=1000")) == [(250, "2.1.0")]
    assert session.transaction.notes["mail_parameters"] == {"size": "1000"}


@pytest.mark.parametrize("arguments, expected", [
    ("FROM:<a@b.test> FOO=bar", (555, "5.5.4")),
    ("FROM:<a@b.test> SIZE=1000 XYZ", (555, "5.5.4")),
    ("FROM:<a@b.test> SIZE=abc", (501, "5.5.4")),
    ("FROM:<a@b.test> SIZE=", (501, "5.5.4")),
    ("FROM:<a@b.test> =value", (501, "5.5.4")),
    ("FROM:<a@b.test> BODY=9BIT", (501, "5.5.4")),
    ("FROM <a@b.test>", (501, "5.5.4")),
    ("TO:<a@b.test>", (501, "5.5.4")),
    ("FROM:", (501, "5.5.4")),
    ("FROM:a@b.test", (501, "5.5.4")),
    ("FROM:<a b@b.test>", (501, "5.5.4")),
    ("FROM:<a@b.test", (501, "5.5.4")),
    ("FROM:<a@b.test> BODY=8BITMIME SIZE=10", (250, "2.1.0")),
    ("FROM:<>", (250, "2.1.0")),
    ('FROM:<"john doe"@b.test> SIZE=10', (250, "2.1.0")),
    ("FROM: <a@b.test>", (250, "2.1.0")),
])
def test_mail_arguments(session, arguments, expected):
    """MAIL syntax: unknown parameters 555 (RFC 1869), bad parameter or path syntax 501, good ones 250."""
    session.command("EHLO client.test")
    assert codes(session.command("MAIL " + arguments)) == [expected]


@pytest.mark.parametrize("arguments, expected", [
    ("TO:<c@d.test>", (250, "2.1.5")),
    ("TO:<postmaster>", (250, "2.1.5")),
    ("TO:<>", (501, "5.1.3")),
    ("TO:c@d.test", (501, "5.1.3")),
    ("TO:<c@d.test> XFOO=1", (555, "5.5.4")),
    ("FROM:<c@d.test>", (501, "5.5.4")),
])
def test_rcpt_arguments(session, arguments, expected):
    """RCPT syntax: ``<>`` and bare addresses are 501 5.1.3, unknown parameters 555, a wrong prefix 501 (DSN: test_esmtp)."""
    session.command("EHLO client.test")
    session.command("MAIL FROM:<a@b.test>")
    assert codes(session.command("RCPT " + arguments)) == [expected]


def test_max_rcpt_then_452(smtpd_factory):
    """With ``max_rcpt 3`` the fourth RCPT is ``452 4.5.3`` (RFC 5321 4.5.3.1.10) and not added."""
    session = TestSession(smtpd_factory(config={"max_rcpt": "3"}))
    session.mock_hook("rcpt", accept)
    session.command("EHLO client.test")
    session.command("MAIL FROM:<a@b.test>")
    for n in range(3):
        assert session.command("RCPT TO:<r%d@d.test>" % n)[0].code == 250
    [reply] = session.command("RCPT TO:<r3@d.test>")
    assert (reply.code, reply.status) == (452, "4.5.3")
    assert len(session.transaction.recipients) == 3


# -- pipelining and splitting -------------------------------------------------------------------------

SCRIPT = (b"EHLO client.test\r\nMAIL FROM:<a@b.test> SIZE=10\r\nRCPT TO:<c@d.test>\r\nRCPT TO:<>\r\n"
          b"NOOP\r\nVRFY x\r\nBOGUS\r\nRSET\r\nMAIL FROM:<e@f.test>\r\nHELP\r\nQUIT\r\n")
SCRIPT_CODES = [250, 250, 250, 501, 250, 252, 500, 250, 250, 214, 221]


def test_pipelined_commands_in_one_send(session):
    """RFC 2920: a whole command group in one packet gets every reply, in order."""
    replies = session.send(SCRIPT)
    assert [r.code for r in replies] == SCRIPT_CODES
    assert session.closed


def test_command_stream_split_at_every_byte_gives_same_replies(smtpd_factory):
    """The same command stream cut in two at every byte boundary (and byte by byte) gives the same replies."""
    smtpd = smtpd_factory()
    TestSession(smtpd, greet=False).mock_hook("rcpt", accept)  # registers on the shared daemon

    def run(pieces):
        session = TestSession(smtpd)
        replies = []
        for piece in pieces:
            replies += session.send(piece)
        return [str(r) for r in replies]

    whole = run([SCRIPT])
    assert [int(r[:3]) for r in whole] == SCRIPT_CODES
    for cut in range(1, len(SCRIPT)):
        assert run([SCRIPT[:cut], SCRIPT[cut:]]) == whole, cut
    assert run([SCRIPT[i:i + 1] for i in range(len(SCRIPT))]) == whole


def test_replies_to_a_pipelined_group_go_out_in_one_write(session):
    """All replies caused by one packet are written together (one transport write)."""
    writes = []
    original = session.transport.write
    session.transport.write = lambda data: (writes.append(data), original(data))
    replies = session.send(b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n")
    assert [r.code for r in replies] == [250, 250, 250]
    assert len(writes) == 1


# -- line limits and bad bytes -------------------------------------------------------------------------

def test_command_line_of_512_octets_is_accepted(session):
    """A command line of exactly 512 octets with its CRLF is fine (RFC 5321 4.5.3.1.4)."""
    line = "NOOP " + "x" * (510 - 5)
    assert len(line) + 2 == 512
    assert codes(session.command(line)) == [(250, "2.0.0")]


def test_command_line_over_512_octets_is_500_and_session_goes_on(session):
    """513 octets: ``500 5.5.2 Line too long``, nothing executed, and the next command works."""
    session.command("EHLO client.test")
    line = "MAIL FROM:<%s@b.test>" % ("a" * 500)
    assert len(line) + 2 > 512
    [reply] = session.command(line)
    assert (reply.code, reply.text) == (500, "5.5.2 Line too long")
    assert session.transaction.sender is None and not session.closed
    assert codes(session.command("MAIL FROM:<a@b.test>")) == [(250, "2.1.0")]


def test_megabyte_without_newline_costs_a_bounded_buffer(session):
    """A megabyte without LF: the buffer never holds more than a long AUTH line, one ``500``, then the session goes on."""
    chunk = b"A" * 65536
    replies = []
    for _ in range(16):
        replies += session.send(chunk)
        assert len(session.session._buffer) <= MAX_AUTH_LINE
    replies += session.send(b"still the same line\r\n")
    assert codes(replies) == [(500, "5.5.2")]
    assert not session.closed
    assert codes(session.command("NOOP")) == [(250, "2.0.0")]


def test_megabyte_without_newline_in_one_send(session):
    """The same megabyte in one piece: one ``500 5.5.2``, an empty buffer, and the rest of the line is ignored."""
    replies = session.send(b"B" * (1 << 20))
    assert codes(replies) == [(500, "5.5.2")]
    assert len(session.session._buffer) <= MAX_AUTH_LINE
    assert codes(session.send(b"tail\r\nNOOP\r\n")) == [(250, "2.0.0")]


@pytest.mark.parametrize("line", [
    b"\xff\xfe\xfd garbage",
    b"NOOP \xc3\x28",
    b"NO\x00OP",
    b"MAIL FROM:<a@b.test>\x00",
    b"\x1b[31mHELO x",
    b"HELO \x7f",
    bytes(range(1, 10)),
], ids=["binary", "invalid-utf8", "nul", "trailing-nul", "escape", "del", "controls"])
def test_bad_bytes_are_500_and_session_goes_on(session, line):
    """Binary garbage, invalid UTF-8, NUL and control bytes: ``500 5.5.2``, not executed, and the session goes on."""
    [reply] = session.send(line + b"\r\n")
    assert (reply.code, reply.status) == (500, "5.5.2")
    assert not session.closed and session.connection.hello is None
    assert codes(session.command("HELO client.test")) == [(250, None)]


def test_empty_and_unknown_commands_are_500(session):
    """An empty line, a leading space, an unknown or over-long verb, a tab: ``500 5.5.1``; empty verbs are not counted."""
    for line in ["", "   HELO client.test", "XYZZY", "ABCDEFGHIJKLM", "HELO\tclient.test"]:
        assert codes(session.command(line)) == [(500, "5.5.1")], line
    assert session.session.command_counter == 3


def test_bare_lf_command_is_refused_and_closes(session):
    """``bare_newline reject``: a command ending in a bare LF gets ``521 5.5.2`` and the connection closes."""
    replies = session.send(b"NOOP\nNOOP\r\n")
    assert codes(replies) == [(521, "5.5.2")]
    assert session.closed


def test_bare_lf_command_is_accepted_with_normalize(smtpd_factory):
    """``bare_newline normalize``: ``NOOP<LF>`` is one command."""
    session = TestSession(smtpd_factory(config={"bare_newline": "normalize"}))
    assert codes(session.send(b"NOOP\nNOOP\r\n")) == [(250, "2.0.0"), (250, "2.0.0")]


# -- simple verbs --------------------------------------------------------------------------------------

def test_vrfy_noop_help(session):
    """Without plugins: VRFY ``252 2.1.5``, NOOP ``250 2.0.0 OK``, HELP a multi-line ``214 2.0.0``."""
    [vrfy] = session.command("VRFY someone")
    assert (vrfy.code, vrfy.status) == (252, "2.1.5")
    [noop] = session.command("NOOP whatever")
    assert (noop.code, noop.text) == (250, "2.0.0 OK")
    [help_reply] = session.command("HELP")
    assert help_reply.code == 214 and len(help_reply.lines) >= 2
    assert all(line.startswith("2.0.0 ") for line in help_reply.lines)


def test_quit_replies_221_and_closes(session):
    """QUIT: ``221 2.0.0 <me> closing connection``; the session is closed and ignores what follows."""
    seen = []
    session.mock_hook("disconnect", lambda self, transaction: seen.append("disconnect"))
    [reply] = session.command("QUIT")
    assert (reply.code, reply.text) == (221, "2.0.0 mx.test closing connection. Have a wonderful day.")
    assert session.closed and seen == ["disconnect"]
    assert session.command("NOOP") == []


def test_eof_closes_and_runs_disconnect_hooks_once(session):
    """Client EOF (even mid-line): no reply, the session closes, disconnect and post-connection run once."""
    seen = []
    session.mock_hook("disconnect", lambda self, transaction: seen.append("disconnect"))
    session.mock_hook("post-connection", lambda self, transaction: seen.append("post-connection"))
    session.command("EHLO client.test")
    session.command("MAIL FROM:<a@b.test>")
    assert session.send(b"RCPT TO:<c@d") == []
    assert session.eof() == []
    assert session.closed and session.transaction.sender is None
    assert session.eof() == []
    assert seen == ["disconnect", "post-connection"]


def test_timeout_is_421_and_runs_disconnect_hooks(session):
    """An idle client: ``421 4.4.2 <me> Connection Timed Out``, closed, disconnect hooks run, transaction released."""
    seen = []
    session.mock_hook("disconnect", lambda self, transaction: seen.append("disconnect"))
    session.mock_hook("reset_transaction", lambda self, transaction: seen.append("reset"))
    session.command("EHLO client.test")
    session.command("MAIL FROM:<a@b.test>")
    seen.clear()
    [reply] = session.timeout()
    assert (reply.code, reply.text) == (421, "4.4.2 mx.test Connection Timed Out")
    assert session.closed
    assert seen == ["disconnect", "reset"]


def test_original_string_and_envelope_notes(session):
    """The raw command line and MAIL/RCPT arguments are kept in connection notes for plugins."""
    session.command("EHLO client.test")
    session.command("MAIL FROM:<a@b.test> SIZE=5")
    session.command("RCPT TO:<c@d.test>")
    notes = session.connection.notes
    assert notes["original_string"] == "RCPT TO:<c@d.test>"
    assert notes["envelope_from"] == "FROM:<a@b.test> SIZE=5"
    assert notes["envelope_rcpt"] == "TO:<c@d.test>"
