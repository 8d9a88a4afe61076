"""The return-code matrix (spec section 2.2): what the core answers for every hook and return code.

Deliberate deviations from qpsmtpd that the matrix holds:

* connect and pre-connection DENY are ``554`` (RFC 5321 3.1; qpsmtpd: 550);
* helo/ehlo DENY and DENYSOFT have default texts (qpsmtpd sends no line at all);
* unrecognized_command DENY without a message gets the default text;
* queue_pre DENY-family is answered ``451 4.3.0`` and the transaction ends (qpsmtpd: no reply);
* the end of DATA always ends the transaction, so data_post and queue_pre DONE reset it too
  (qpsmtpd keeps it until the next MAIL; with nested MAIL refused that would block the next one);
* MAIL DENYSOFT_DISCONNECT is ``421`` as in qpsmtpd, every other temporary refusal is 4xx without
  a disconnect; a nested MAIL is ``503`` (see test_smtp.py).
"""
import time
from typing import NamedTuple, Optional

import gevent
import pytest

from qpgevent import DECLINED, DENY, DENY_DISCONNECT, DENYSOFT, DENYSOFT_DISCONNECT, DONE, OK, VERSION
from qpgevent.testing import TestSession, parse_replies

MESSAGE = "custom words from the plugin"
GREETING = "mx.test ESMTP qpgevent %s ready; send us your mail, but not your spam." % VERSION
MESSAGE_TEXT = b"Subject: test\r\n\r\nbody\r\n.\r\n"


class Row(NamedTuple):
    hook: str
    rc: int
    code: Optional[int]  # None: the core sends nothing (the plugin answered)
    status: Optional[str]
    text: Optional[str]  # first line of the default text, after the status
    uses_message: bool  # the plugin's message replaces the default text
    closed: bool
    effect: str  # what happened to the connection or transaction, see check_effect


def rows(hook, *entries):
    return [Row(hook, *entry) for entry in entries]


MATRIX = [
    *rows("pre-connection",
          (OK, 220, None, GREETING, False, False, "greeted"),
          (DECLINED, 220, None, GREETING, False, False, "greeted"),
          (DONE, 220, None, GREETING, False, False, "greeted"),
          (DENY, 554, "5.7.1", "Sorry, service not available for you", True, True, "closed"),
          (DENYSOFT, 451, "4.7.1", "Sorry, try again later", True, True, "closed"),
          (DENY_DISCONNECT, 554, "5.7.1", "Sorry, service not available for you", True, True, "closed"),
          (DENYSOFT_DISCONNECT, 451, "4.7.1", "Sorry, try again later", True, True, "closed")),
    *rows("connect",
          (OK, 220, None, GREETING, False, False, "greeted"),
          (DECLINED, 220, None, GREETING, False, False, "greeted"),
          (DONE, None, None, None, False, False, "open"),
          (DENY, 554, "5.7.1", "Connection from you denied, bye bye.", True, True, "closed"),
          (DENYSOFT, 450, "4.7.1", "Connection from you temporarily denied, bye bye.", True, True, "closed"),
          (DENY_DISCONNECT, 554, "5.7.1", "Connection from you denied, bye bye.", True, True, "closed"),
          (DENYSOFT_DISCONNECT, 450, "4.7.1", "Connection from you temporarily denied, bye bye.", True, True,
           "closed")),
    *rows("helo",
          (OK, 250, None, "mx.test Hi localhost [127.0.0.1]; I am so happy to meet you.", False, False, "hello"),
          (DECLINED, 250, None, "mx.test Hi localhost [127.0.0.1]; I am so happy to meet you.", False, False, "hello"),
          (DONE, None, None, None, False, False, "no hello"),
          (DENY, 550, "5.7.1", "HELO/EHLO denied", True, False, "no hello"),
          (DENYSOFT, 450, "4.7.1", "HELO/EHLO temporarily denied", True, False, "no hello"),
          (DENY_DISCONNECT, 550, "5.7.1", "HELO/EHLO denied", True, True, "closed"),
          (DENYSOFT_DISCONNECT, 450, "4.7.1", "HELO/EHLO temporarily denied", True, True, "closed")),
    *rows("ehlo",
          (OK, 250, None, "mx.test Hi localhost [127.0.0.1]", False, False, "hello"),
          (DECLINED, 250, None, "mx.test Hi localhost [127.0.0.1]", False, False, "hello"),
          (DONE, None, None, None, False, False, "no hello"),
          (DENY, 550, "5.7.1", "HELO/EHLO denied", True, False, "no hello"),
          (DENYSOFT, 450, "4.7.1", "HELO/EHLO temporarily denied", True, False, "no hello"),
          (DENY_DISCONNECT, 550, "5.7.1", "HELO/EHLO denied", True, True, "closed"),
          (DENYSOFT_DISCONNECT, 450, "4.7.1", "HELO/EHLO temporarily denied", True, True, "closed")),
    *rows("mail",
          (OK, 250, "2.1.0", "<a@b.test>, sender OK - how exciting to get mail from you!", True, False, "sender"),
          (DECLINED, 250, "2.1.0", "<a@b.test>, sender OK - how exciting to get mail from you!", False, False,
           "sender"),
          (DONE, None, None, None, False, False, "no sender"),
          (DENY, 550, "5.7.1", "<a@b.test>, denied", True, False, "no sender"),
          (DENYSOFT, 450, "4.7.1", "<a@b.test>, temporarily denied", True, False, "no sender"),
          (DENY_DISCONNECT, 550, "5.7.1", "<a@b.test>, denied", True, True, "closed"),
          (DENYSOFT_DISCONNECT, 421, "4.7.1", "<a@b.test>, temporarily denied", True, True, "closed")),
    *rows("rcpt",
          (OK, 250, "2.1.5", "<c@d.test>, recipient ok", True, False, "recipient"),
          (DECLINED, 450, "4.7.1", "No plugin decided if relaying is allowed", False, False, "no recipient"),
          (DONE, None, None, None, False, False, "no recipient"),
          (DENY, 550, "5.7.1", "relaying denied", True, False, "no recipient"),
          (DENYSOFT, 450, "4.7.1", "relaying denied", True, False, "no recipient"),
          (DENY_DISCONNECT, 550, "5.7.1", "delivery denied", True, True, "closed"),
          (DENYSOFT_DISCONNECT, 421, "4.7.1", "relaying denied", True, True, "closed")),
    *rows("data",
          (OK, 354, None, "go ahead", False, False, "kept"),
          (DECLINED, 354, None, "go ahead", False, False, "kept"),
          (DONE, None, None, None, False, False, "kept"),
          (DENY, 554, "5.7.1", "Message denied", True, False, "reset"),
          (DENYSOFT, 451, "4.7.1", "Message denied temporarily", True, False, "reset"),
          (DENY_DISCONNECT, 554, "5.7.1", "Message denied", True, True, "closed"),
          (DENYSOFT_DISCONNECT, 451, "4.7.1", "Message denied temporarily", True, True, "closed")),
    *rows("data_headers_end",
          (OK, 250, "2.0.0", "Queued", False, False, "queued"),
          (DECLINED, 250, "2.0.0", "Queued", False, False, "queued"),
          (DONE, 250, "2.0.0", "Queued", False, False, "queued"),
          (DENY, 250, "2.0.0", "Queued", False, False, "queued"),
          (DENYSOFT, 250, "2.0.0", "Queued", False, False, "queued"),
          (DENY_DISCONNECT, 554, "5.7.1", "Message denied", True, True, "closed"),
          (DENYSOFT_DISCONNECT, 421, "4.7.1", "Message denied temporarily", True, True, "closed")),
    *rows("data_post",
          (OK, 250, "2.0.0", "Queued", False, False, "queued"),
          (DECLINED, 250, "2.0.0", "Queued", False, False, "queued"),
          (DONE, None, None, None, False, False, "reset"),
          (DENY, 552, "5.7.1", "Message denied", True, False, "reset"),
          (DENYSOFT, 452, "4.7.1", "Message denied temporarily", True, False, "reset"),
          (DENY_DISCONNECT, 552, "5.7.1", "Message denied", True, True, "closed"),
          (DENYSOFT_DISCONNECT, 452, "4.7.1", "Message denied temporarily", True, True, "closed")),
    *rows("queue_pre",
          (OK, 250, "2.0.0", "Queued", False, False, "queued"),
          (DECLINED, 250, "2.0.0", "Queued", False, False, "queued"),
          (DONE, None, None, None, False, False, "reset"),
          (DENY, 451, "4.3.0", "Queuing declined or disabled; try again later", True, False, "reset"),
          (DENYSOFT, 451, "4.3.0", "Queuing declined or disabled; try again later", True, False, "reset"),
          (DENY_DISCONNECT, 451, "4.3.0", "Queuing declined or disabled; try again later", True, False, "reset"),
          (DENYSOFT_DISCONNECT, 451, "4.3.0", "Queuing declined or disabled; try again later", True, False,
           "reset")),
    *rows("queue",
          (OK, 250, "2.0.0", "Queued", True, False, "reset"),
          (DECLINED, 451, "4.3.0", "Queuing declined or disabled; try again later", True, False, "reset"),
          (DONE, None, None, None, False, False, "reset"),
          (DENY, 552, "5.7.1", "Message denied", True, False, "reset"),
          (DENYSOFT, 452, "4.7.1", "Message denied temporarily", True, False, "reset"),
          (DENY_DISCONNECT, 451, "4.3.0", "Queuing declined or disabled; try again later", True, False, "reset"),
          (DENYSOFT_DISCONNECT, 451, "4.3.0", "Queuing declined or disabled; try again later", True, False,
           "reset")),
    *rows("vrfy",
          (OK, 250, "2.1.5", "User OK", True, False, "kept"),
          (DECLINED, 252, "2.1.5", "Just try sending a mail and we'll see how it turns out ...", False, False, "kept"),
          (DONE, None, None, None, False, False, "kept"),
          (DENY, 554, "5.7.1", "Access Denied", True, False, "reset"),
          (DENYSOFT, 252, "2.1.5", "Just try sending a mail and we'll see how it turns out ...", False, False, "kept"),
          (DENY_DISCONNECT, 252, "2.1.5", "Just try sending a mail and we'll see how it turns out ...", False, False,
           "kept"),
          (DENYSOFT_DISCONNECT, 252, "2.1.5", "Just try sending a mail and we'll see how it turns out ...", False,
           False, "kept")),
    *rows("noop",
          (OK, 250, "2.0.0", "OK", False, False, "kept"),
          (DECLINED, 250, "2.0.0", "OK", False, False, "kept"),
          (DONE, None, None, None, False, False, "kept"),
          (DENY, 500, "5.5.1", "Stop wasting my time.", True, False, "kept"),
          (DENYSOFT, 250, "2.0.0", "OK", False, False, "kept"),
          (DENY_DISCONNECT, 500, "5.5.1", "Stop wasting my time.", True, True, "closed"),
          (DENYSOFT_DISCONNECT, 250, "2.0.0", "OK", False, False, "kept")),
    *rows("help",
          (OK, 214, "2.0.0", "This is qpgevent %s" % VERSION, True, False, "kept"),
          (DECLINED, 214, "2.0.0", "This is qpgevent %s" % VERSION, True, False, "kept"),
          (DONE, None, None, None, False, False, "kept"),
          (DENY, 500, "5.5.1", "Syntax error, command not recognized", True, False, "kept"),
          (DENYSOFT, 214, "2.0.0", "This is qpgevent %s" % VERSION, True, False, "kept"),
          (DENY_DISCONNECT, 214, "2.0.0", "This is qpgevent %s" % VERSION, True, False, "kept"),
          (DENYSOFT_DISCONNECT, 214, "2.0.0", "This is qpgevent %s" % VERSION, True, False, "kept")),
    *rows("quit", *[(rc, 221, "2.0.0", "mx.test closing connection. Have a wonderful day.", True, True, "closed")
                    for rc in (OK, DECLINED, DENY, DENYSOFT, DENY_DISCONNECT, DENYSOFT_DISCONNECT)],
          (DONE, None, None, None, False, True, "closed")),
    *rows("unrecognized_command",
          (OK, 500, "5.5.1", "Unrecognized command", False, False, "kept"),
          (DECLINED, 500, "5.5.1", "Unrecognized command", False, False, "kept"),
          (DONE, None, None, None, False, False, "kept"),
          (DENY, 500, "5.5.1", "Unrecognized command", True, False, "kept"),
          (DENYSOFT, 500, "5.5.1", "Unrecognized command", False, False, "kept"),
          (DENY_DISCONNECT, 521, "5.5.1", "Closing connection", True, True, "closed"),
          (DENYSOFT_DISCONNECT, 500, "5.5.1", "Unrecognized command", False, False, "kept")),
]


def accept(self, transaction, *args, **params):
    return OK


def drive(smtpd, hook, plugin):
    """Bring a session to the point where ``hook`` runs, with ``plugin`` first for it; return (session, replies)."""
    session = TestSession(smtpd, greet=False)
    if hook in ("pre-connection", "connect"):
        session.mock_hook(hook, plugin)
        session.session.start()
        return session, parse_replies(session.transport.take())
    session.session.start()
    session.transport.take()
    if hook in ("helo", "ehlo"):
        session.mock_hook(hook, plugin)
        return session, session.command("%s client.test" % hook.upper())
    session.command("EHLO client.test")
    if hook == "mail":
        session.mock_hook(hook, plugin)
        return session, session.command("MAIL FROM:<a@b.test>")
    if hook != "rcpt":
        session.mock_hook("rcpt", accept, name="accept_rcpt")
    assert session.command("MAIL FROM:<a@b.test>")[0].code == 250
    trigger = {"rcpt": "RCPT TO:<c@d.test>", "vrfy": "VRFY someone", "noop": "NOOP", "help": "HELP MAIL",
               "quit": "QUIT", "unrecognized_command": "XYZZY plugh", "data": "DATA"}
    if hook == "rcpt":
        session.mock_hook(hook, plugin)
        return session, session.command(trigger[hook])
    assert session.command("RCPT TO:<c@d.test>")[0].code == 250
    if hook in trigger:
        session.mock_hook(hook, plugin)
        return session, session.command(trigger[hook])
    if hook != "queue":
        session.mock_hook("queue", accept, name="accept_queue")
    assert session.command("DATA")[0].code == 354
    session.mock_hook(hook, plugin)
    return session, session.send(MESSAGE_TEXT)


def check_effect(effect, session, queued):
    """The state after the reply: the documented effect of the row."""
    connection, transaction = session.connection, session.transaction
    if effect == "closed":
        assert session.closed
        return
    assert not session.closed
    if effect in ("greeted", "open"):
        assert connection.hello is None
    elif effect == "hello":
        assert connection.hello in ("helo", "ehlo") and connection.hello_host == "client.test"
    elif effect == "no hello":
        assert connection.hello is None and connection.hello_host is None
    elif effect == "sender":
        assert transaction.sender == "a@b.test"
    elif effect == "no sender":
        assert transaction.sender is None
    elif effect == "recipient":
        assert transaction.sender == "a@b.test" and transaction.recipients == ["c@d.test"]
    elif effect == "no recipient":
        assert transaction.sender == "a@b.test" and transaction.recipients == []
    elif effect == "kept":
        assert transaction.sender == "a@b.test" and transaction.recipients == ["c@d.test"]
    elif effect in ("reset", "queued"):
        assert transaction.sender is None and transaction.recipients == []
        assert queued == (effect == "queued")
    else:
        raise AssertionError("unknown effect %r" % effect)


@pytest.mark.parametrize("with_message", [False, True], ids=["default", "message"])
@pytest.mark.parametrize("row", MATRIX, ids=["%s-%s" % (row.hook, row.rc) for row in MATRIX])
def test_return_code_matrix(smtpd_factory, row, with_message):
    """Each (hook, rc): the reply code, enhanced status, text (default or the plugin's), disconnect and transaction."""
    smtpd = smtpd_factory()
    calls = []

    def plugin(self, transaction, *args, **params):
        calls.append(args)
        return (row.rc, MESSAGE) if with_message else row.rc

    session, replies = drive(smtpd, row.hook, plugin)
    queued = row.hook != "queue" and any(r.code == 250 and r.text.endswith("Queued") for r in replies)
    assert calls, "the mocked %s hook did not run" % row.hook
    if row.code is None:
        assert replies == []
    else:
        assert len(replies) == 1, replies
        [reply] = replies
        assert reply.code == row.code
        assert reply.status == row.status
        first = reply.lines[0]
        if row.status:
            assert first.startswith(row.status + " ")
            first = first[len(row.status) + 1:]
        expected = MESSAGE if with_message and row.uses_message else row.text
        assert first == expected
    assert session.closed == row.closed
    check_effect(row.effect, session, queued)


def test_matrix_covers_every_return_code_of_every_hook():
    """Every hook of the matrix has a row for each of the seven return codes."""
    rcs = {OK, DECLINED, DONE, DENY, DENYSOFT, DENY_DISCONNECT, DENYSOFT_DISCONNECT}
    hooks = {row.hook for row in MATRIX}
    assert len(hooks) == 16
    for hook in hooks:
        assert {row.rc for row in MATRIX if row.hook == hook} == rcs, hook


def test_no_plugin_for_a_hook_counts_as_declined(session_factory):
    """Without rcpt plugins RCPT is 450 (nobody decided), without a queue plugin the message is 451."""
    session = session_factory()
    session.command("EHLO client.test")
    session.command("MAIL FROM:<a@b.test>")
    assert session.command("RCPT TO:<c@d.test>")[0].code == 450
    session.mock_hook("rcpt", accept)
    session.command("RCPT TO:<c@d.test>")
    [reply] = session.data("Subject: x\n\nbody\n")
    assert (reply.code, reply.status) == (451, "4.3.0")


def test_declined_passes_to_next_plugin(session_factory):
    """DECLINED lets the next plugin decide; the first non-DECLINED answer wins and the rest do not run."""
    session = session_factory()
    calls = []

    def make(name, rc):
        def plugin(self, transaction, recipient, **params):
            calls.append(name)
            return rc
        return plugin

    # mock_hook prepends: register the last one first.
    session.mock_hook("rcpt", make("third", DENY), name="third")
    session.mock_hook("rcpt", make("second", OK), name="second")
    session.mock_hook("rcpt", make("first", DECLINED), name="first")
    session.command("EHLO client.test")
    session.command("MAIL FROM:<a@b.test>")
    assert session.command("RCPT TO:<c@d.test>")[0].code == 250
    assert calls == ["first", "second"]


def test_pre_connection_receives_connection_facts(smtpd_factory):
    """pre-connection gets remote/local address and port plus the server's max_conn_ip and child_addrs."""
    session = TestSession(smtpd_factory(), greet=False)
    seen = {}

    def plugin(self, transaction, **params):
        seen.update(params)
        return DECLINED

    session.mock_hook("pre-connection", plugin)
    session.session.start(max_conn_ip=5, child_addrs=["127.0.0.1"])
    assert seen == {"remote_ip": "127.0.0.1", "remote_port": 40000, "local_ip": "127.0.0.1", "local_port": 25,
                    "max_conn_ip": 5, "child_addrs": ["127.0.0.1"]}


# -- misbehaving plugins --------------------------------------------------------------------------

def raising(self, transaction, *args, **params):
    raise RuntimeError("boom in the plugin")


def garbage(self, transaction, *args, **params):
    return "yes please"


def sleepy(self, transaction, *args, **params):
    gevent.sleep(5)
    return OK


@pytest.mark.parametrize("plugin, reason", [
    (raising, "RuntimeError: boom in the plugin"),
    (garbage, "'yes please'"),
    (sleepy, "plugin_timeout"),
], ids=["raises", "garbage", "timeout"])
def test_failing_rcpt_plugin_is_a_temporary_failure(smtpd_factory, plugin, reason):
    """A rcpt plugin that raises, returns garbage or outlives plugin_timeout: 451 4.3.0, recipient NOT added, logged."""
    session = TestSession(smtpd_factory(config={"plugin_timeout": "0.2"}))
    logged = session.capture_log()
    session.command("EHLO client.test")
    session.command("MAIL FROM:<a@b.test>")
    # mock_hook prepends: the broken plugin runs first, then one that would say OK if a failure were skipped.
    session.mock_hook("rcpt", accept, name="later_plugin")
    session.mock_hook("rcpt", plugin, name="broken_plugin")
    [reply] = session.command("RCPT TO:<c@d.test>")
    assert (reply.code, reply.status) == (451, "4.3.0")
    assert session.transaction.recipients == []
    assert not session.closed
    failures = [entry for entry in logged if entry[2] == "broken_plugin" and "FATAL PLUGIN ERROR" in entry[3]]
    assert len(failures) == 1
    level, hook, name, message = failures[0]
    assert (level, hook) == (2, "rcpt")
    assert reason in message
    if plugin is raising:
        assert "Traceback (most recent call last)" in message and "in raising" in message
    # The session still works afterwards.
    session.unmock_hook("rcpt", name="broken_plugin")
    assert session.command("RCPT TO:<c@d.test>")[0].code == 250


def test_plugin_timeout_is_bounded(smtpd_factory):
    """A plugin stuck in gevent.sleep(5) is cut off after plugin_timeout (0.2 s), not after 5 s."""
    session = TestSession(smtpd_factory(config={"plugin_timeout": "0.2"}))
    session.command("HELO client.test")
    session.mock_hook("mail", sleepy)
    started = time.monotonic()
    [reply] = session.command("MAIL FROM:<a@b.test>")
    assert reply.code == 451
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("hook", ["connect", "pre-connection"])
def test_failing_connect_plugin_refuses_with_421(smtpd_factory, hook):
    """A plugin that raises before the greeting: ``421 4.3.0`` and the connection is closed."""
    session = TestSession(smtpd_factory(), greet=False)
    logged = session.capture_log()
    session.mock_hook(hook, raising, name="broken_connect")
    session.session.start()
    [reply] = parse_replies(session.transport.take())
    assert (reply.code, reply.status) == (421, "4.3.0")
    assert session.closed
    assert any(entry[2] == "broken_connect" and "Traceback" in entry[3] for entry in logged)


def test_failing_data_post_plugin_is_451_and_nothing_queued(smtpd_factory):
    """A data_post plugin that raises: 451 4.3.0 after the dot, the queue never sees the message."""
    session = TestSession(smtpd_factory())
    queued = []
    session.mock_hook("rcpt", accept, name="accept_rcpt")
    session.mock_hook("queue", lambda self, transaction: queued.append(1) or OK, name="queue")
    session.mock_hook("data_post", raising)
    replies = session.send_message("a@b.test", ["c@d.test"], "Subject: x\n\nbody\n")
    assert (replies[-1].code, replies[-1].status) == (451, "4.3.0")
    assert queued == [] and session.transaction.sender is None


def test_failing_data_headers_end_plugin_is_451_at_the_end(smtpd_factory):
    """A data_headers_end plugin that raises: the data is read to the end, then 451 4.3.0 and nothing queued."""
    session = TestSession(smtpd_factory())
    queued = []
    session.mock_hook("rcpt", accept, name="accept_rcpt")
    session.mock_hook("queue", lambda self, transaction: queued.append(1) or OK, name="queue")
    session.mock_hook("data_headers_end", raising)
    replies = session.send_message("a@b.test", ["c@d.test"], "Subject: x\n\nbody\n")
    assert (replies[-1].code, replies[-1].status) == (451, "4.3.0")
    assert queued == [] and not session.closed
    assert session.command("NOOP")[0].code == 250
