"""``*_parse`` hooks (qpgevent/smtp.py Session._parse): a plugin's parser replaces the default one,
and a parser that fails is a plugin failure like any other: traceback logged, 451 4.3.0, no internal text."""
import smtplib

import pytest

from qpgevent import DENY, OK, LOGERROR
from qpgevent.testing import TestSession, make_smtpd

BAD_PARSER = '''
from qpgevent import OK

def parse(session, verb, line):
    raise ValueError("secret internal detail")

def hook_mail_parse(self, transaction, line):
    return OK, parse
'''


def test_a_raising_parser_is_451_and_logged(live_server):
    """The old code answered ``501 'secret internal detail'`` and logged nothing."""
    server = live_server(plugins=["bad_parser", "rcpt_ok", "queue/discard"], plugin_files={"bad_parser.py": BAD_PARSER})
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.ehlo("client.test")
        code, text = client.mail("a@b.test")
        assert (code, text) == (451, b"4.3.0 Temporary failure in a mail filter, try again later")
        assert client.noop()[0] == 250  # the session goes on
    server.stop()
    assert "Traceback" in server.stderr and "ValueError: secret internal detail" in server.stderr
    assert "bad_parser" in server.stderr


@pytest.mark.parametrize("parser, expected", [
    (lambda session, verb, line: (OK, "<x@y.test>", "SIZE=10"), (250, "2.1.0")),
    (lambda session, verb, line: (DENY, "no such syntax"), (501, "5.5.4")),
    (lambda session, verb, line: "garbage", (451, "4.3.0")),
    (lambda session, verb, line: None, (451, "4.3.0")),
])
def test_parser_answers(tmp_path, parser, expected):
    session = TestSession(make_smtpd(tmp_path))
    logged = session.capture_log()
    session.mock_hook("mail_parse", lambda plugin, transaction, line: (OK, parser))
    session.command("EHLO client.test")
    [reply] = session.command("MAIL FROM:<a@b.test>")
    assert (reply.code, reply.status) == expected
    failures = [m for level, hook, plugin, m in logged if level == LOGERROR and hook == "mail_parse"]
    assert bool(failures) == (expected[0] == 451)
