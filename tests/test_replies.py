"""The reply registry and reply formatting (RFC 5321 4.2, RFC 2034, RFC 3463)."""
import re
import string

import pytest

from qpgevent import replies as R
from qpgevent.constants import DENYSOFT
from qpgevent.replies import format_reply, split_lines, status_for

# RFC 5321 4.2: Reply-code [ SP textstring ] CRLF, with "-" instead of SP on all but the last line.
REPLY_LINE = re.compile(rb"[2-5][0-5][0-9][ -][\t\x20-\x7e]*\r\n\Z")
FIELD_VALUES = {
    "me": "mx.test", "version": "1.2.3", "remote_info": "client.test", "remote_ip": "192.0.2.1",
    "addr": "<a@b.test>", "databytes": "1000", "param": "FOO", "limit": "1000", "where": "a command",
    "detail": "command 'mail' failed unexpectedly", "verb": "helo", "ip": "192.0.2.1",
    "size": "100", "mechanism": "PLAIN", "user": "u@b.test",
}
NO_ENHANCED_STATUS = {"GREETING", "HELO_OK", "EHLO_OK", "DATA_GO_AHEAD"}


def formatted(reply):
    """The wire bytes of a registry reply with its placeholders filled in."""
    fields = {name for _, name, _, _ in string.Formatter().parse(reply.text) if name}
    lines = reply.text.format(**{name: FIELD_VALUES[name] for name in fields}).split("\n")
    return format_reply(reply.code, status_for(reply.code, reply.status, lines), lines)


@pytest.mark.parametrize("name", sorted(R.REGISTRY))
def test_registry_entry_formats_to_well_formed_reply(name):
    """Every registry reply is one or more CRLF lines of printable ASCII, ``code-`` then ``code ``, at most 512 octets."""
    reply = R.REGISTRY[name]
    raw = formatted(reply)
    lines = raw.split(b"\r\n")[:-1]
    assert lines and raw.endswith(b"\r\n")
    for index, line in enumerate(lines):
        assert REPLY_LINE.match(line + b"\r\n"), line
        assert len(line) + 2 <= 512
        assert line[:3] == str(reply.code).encode()
        assert line[3:4] == (b" " if index == len(lines) - 1 else b"-")


@pytest.mark.parametrize("name", sorted(R.REGISTRY))
def test_session_sends_registry_text_as_the_general_reply_path_would(name, session_factory):
    """A registry reply (no plugin text) goes out byte for byte as ``respond`` sends the same lines and status.

    The session writes its own replies without ``respond``'s cleaning; this
    holds that no registry text needs any (no CR, no empty line, no status of its own).
    """
    ts = session_factory()
    reply = R.REGISTRY[name]
    fields = {field for _, field, _, _ in string.Formatter().parse(reply.text) if field} - {"me", "version"}
    values = {field: FIELD_VALUES[field] for field in fields}
    ts.session.reply(reply, **values)
    ts.session.flush()
    sent = ts.transport.take()
    lines = reply.text.format(me="mx.test", version=ts.smtpd.version, **values).split("\n")
    ts.session.respond(reply.code, *lines, status=status_for(reply.code, reply.status, lines))
    ts.session.flush()
    assert sent == ts.transport.take()
    assert sent.count(b"\r\n") == len(lines)


@pytest.mark.parametrize("name", sorted(set(R.REGISTRY) - NO_ENHANCED_STATUS))
def test_enhanced_status_class_matches_reply_code(name):
    """Every other registry reply carries an RFC 3463 status whose class digit is the reply code's first digit."""
    reply = R.REGISTRY[name]
    assert re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", reply.status or ""), name
    assert reply.status[0] == str(reply.code)[0]
    first_line = formatted(reply).split(b"\r\n")[0]
    assert first_line[4:].startswith(reply.status.encode() + b" ")


@pytest.mark.parametrize("name", sorted(NO_ENHANCED_STATUS))
def test_greeting_helo_ehlo_and_354_carry_no_enhanced_status(name):
    """RFC 2034 3: the 220 greeting, the HELO/EHLO 250 and the 354 have no enhanced status."""
    reply = R.REGISTRY[name]
    assert reply.status is None
    assert not re.match(rb"\d{3}[ -]\d\.\d+\.\d+ ", formatted(reply))


def test_status_for_derives_class_from_code_and_detail_from_qpsmtpd_suffix():
    """A DENYSOFT message ``Relaying denied (#5.7.1)`` goes out as ``4.7.1``: code class, qpsmtpd subject/detail."""
    assert status_for(450, "4.7.1", ["Relaying denied (#5.7.1)"]) == "4.7.1"
    assert status_for(451, "4.3.0", ["Try later (#5.1.8)"]) == "4.1.8"
    assert status_for(550, "5.7.1", ["No such user (#5.1.1)"]) == "5.1.1"


def test_denysoft_with_qpsmtpd_suffix_goes_out_as_temporary_status(session_factory):
    """End to end: a rcpt plugin's ``(DENYSOFT, "Relaying denied (#5.7.1)")`` is answered ``450 4.7.1``."""
    session = session_factory()
    session.mock_hook("rcpt", lambda self, transaction, rcpt, **params: (DENYSOFT, "Relaying denied (#5.7.1)"))
    session.command("HELO client.test")
    session.command("MAIL FROM:<a@b.test>")
    [reply] = session.command("RCPT TO:<c@d.test>")
    assert (reply.code, reply.text) == (450, "4.7.1 Relaying denied (#5.7.1)")


def test_plugin_status_of_the_wrong_class_is_corrected(session_factory):
    """A DENYSOFT message that starts with its own ``5.7.1`` goes out as ``450 4.7.1``: class follows the code."""
    session = session_factory()
    session.mock_hook("rcpt", lambda self, transaction, rcpt, **params: (DENYSOFT, "5.7.1 greylisted"))
    session.command("HELO client.test")
    session.command("MAIL FROM:<a@b.test>")
    [reply] = session.command("RCPT TO:<c@d.test>")
    assert (reply.code, reply.text) == (450, "4.7.1 greylisted")


def test_status_for_keeps_default_or_a_status_the_text_carries():
    """Without a suffix the default is used; text that starts with its own status gets none added; None stays None."""
    assert status_for(550, "5.7.1", ["go away"]) == "5.7.1"
    assert status_for(550, "5.7.1", ["5.1.1 no such user"]) == ""
    assert status_for(220, None, ["hello"]) is None
    assert status_for(550, "5.7.1", []) == "5.7.1"


def test_multi_line_reply_uses_dash_on_all_but_last_line():
    """Three lines: ``250-``, ``250-``, ``250 ``, each with the status and one CRLF, in one bytes object."""
    raw = format_reply(250, "2.0.0", ["one", "two", "three"])
    assert raw == b"250-2.0.0 one\r\n250-2.0.0 two\r\n250 2.0.0 three\r\n"
    assert format_reply(220, None, ["hi"]) == b"220 hi\r\n"


def test_plugin_messages_split_on_newlines_and_empty_ones_dropped():
    """``"a\\nb"`` becomes two lines, CRs vanish, empty strings and None are dropped."""
    assert split_lines(["a\nb", "", None, "c\r\n", "\n\n"]) == ["a", "b", "c"]
    assert split_lines([]) == []
    assert split_lines([42]) == ["42"]


def test_plugin_message_with_newline_becomes_multi_line_reply(session_factory):
    """A rcpt plugin's ``"first\\nsecond"`` DENY message reaches the client as a two-line 550 5.7.1 reply."""
    session = session_factory()
    session.mock_hook("rcpt", lambda self, transaction, rcpt, **params: (901, "first\nsecond", ""))
    session.command("HELO client.test")
    session.command("MAIL FROM:<a@b.test>")
    replies = session.command("RCPT TO:<c@d.test>")
    assert [(r.code, r.lines) for r in replies] == [(550, ["5.7.1 first", "5.7.1 second"])]


def test_plugin_message_of_only_empty_lines_falls_back_to_default_text(session_factory):
    """A DENY whose messages are all empty gets the registry's default text, never an empty reply."""
    session = session_factory()
    session.mock_hook("mail", lambda self, transaction, sender, **params: (901, "", "\n"))
    session.command("HELO client.test")
    replies = session.command("MAIL FROM:<a@b.test>")
    assert [(r.code, r.text) for r in replies] == [(550, "5.7.1 <a@b.test>, denied")]
