"""auth/auth_checkpassword: the checkpassword interface against a real program reading descriptor 3.

The program is a small checkpassword written for the tests: it reads
``user\\0password\\0timestamp\\0`` from descriptor 3, checks it against an
accounts file, records what it saw (never the password) and runs the
``true`` program on success, as qmail's checkpassword does.
"""
import base64
import json
import os
import shutil
import smtplib
import sys
import time

import pytest

from qpgevent.errors import ConfigError

USER, PASSWORD = "joe@example.com", "s3cret pass"
CHECKER = '''#!%(python)s
import json, os, sys, time
data = b""
while len(data) < 512:
    chunk = os.read(3, 512 - len(data))
    if not chunk:
        break
    data += chunk
fields = data.split(b"\\0")
user, password, stamp = (field.decode() for field in fields[:3])
exposed = any(password in value for value in sys.argv + list(os.environ.values()))
with open(%(record)r, "a") as record:
    record.write(json.dumps({"argv": sys.argv[1:], "user": user, "stamp": stamp, "ends_with_nul": data.endswith(b"\\0"),
                             "fields": len(fields), "stdin": sys.stdin.read(), "exposed": exposed,
                             "pid": os.getpid()}) + "\\n")
if user == "tempfail@example.com":
    sys.exit(111)
if user == "crash@example.com":
    os.kill(os.getpid(), 9)
if user == "sleeper@example.com":
    time.sleep(60)
accounts = dict(line.split(":", 1) for line in open(%(accounts)r).read().splitlines())
if accounts.get(user) != password:
    sys.exit(1)
os.execv(sys.argv[1], sys.argv[1:])
'''
TRUE = shutil.which("true")


def b64(text):
    return base64.b64encode(text.encode()).decode()


def plain(user=USER, password=PASSWORD):
    return "AUTH PLAIN " + b64("\0%s\0%s" % (user, password))


@pytest.fixture
def checker(tmp_path):
    """The checkpassword program (path) and a function returning what it recorded so far."""
    (tmp_path / "accounts").write_text("%s:%s\n" % (USER, PASSWORD))
    program = tmp_path / "checkpassword"
    program.write_text(CHECKER % {"python": sys.executable, "record": str(tmp_path / "record"),
                                  "accounts": str(tmp_path / "accounts")})
    program.chmod(0o755)

    def records():
        path = tmp_path / "record"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return program, records


CONFIG = {"tls_before_auth": "0", "auth_failure_delay": "0", "rcpthosts": ["example.com"]}


@pytest.fixture
def session(session_factory, checker):
    ts = session_factory(["auth/auth_checkpassword checkpw %s true %s" % (checker[0], TRUE), "rcpt_ok"], CONFIG)
    ts.command("EHLO client.test")
    return ts


def test_plain_and_login_authenticate_and_relay(live_server, tmp_path, checker):
    """Over a socket: AUTH PLAIN LOGIN is offered (no CRAM-MD5), both succeed with the right password and
    the client may then relay to a foreign domain."""
    server = live_server(plugins=["auth/auth_checkpassword checkpw %s true %s" % (checker[0], TRUE), "rcpt_ok",
                                  "queue/maildir %s" % (tmp_path / "Maildir")], config=CONFIG)
    for login in ("PLAIN", "LOGIN"):
        with smtplib.SMTP(*server.address, timeout=10) as smtp:
            smtp.ehlo("client.test")
            assert smtp.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
            smtp.user, smtp.password = USER, PASSWORD
            code, _ = smtp.auth(login, smtp.auth_plain if login == "PLAIN" else smtp.auth_login)
            assert code == 235
            assert smtp.sendmail("a@sender.test", ["someone@elsewhere.test"], "Subject: x\r\n\r\nhi\r\n") == {}
    assert len(list((tmp_path / "Maildir" / "new").iterdir())) == 2


def test_protocol_on_descriptor_3(session, checker):
    """The program gets ``user\\0password\\0timestamp\\0`` on descriptor 3 (timestamp: the Unix time), the
    ``true`` program as its argument, an empty standard input, and no password in its arguments or environment."""
    assert session.command(plain())[0].code == 235
    [seen] = checker[1]()
    assert seen["argv"] == [TRUE] and seen["user"] == USER
    assert seen["ends_with_nul"] and seen["fields"] == 4
    assert abs(int(seen["stamp"]) - time.time()) < 60
    assert seen["stdin"] == "" and not seen["exposed"]


def test_wrong_password_is_denied(session, checker):
    """Exit status 1 (wrong password or no such user) gives 535 5.7.8 and no relaying."""
    for user, password in ((USER, "guess"), ("nobody@example.com", PASSWORD)):
        assert session.command(plain(user, password))[0].code == 535
    session.command("MAIL FROM:<a@sender.test>")
    assert session.command("RCPT TO:<someone@elsewhere.test>")[0].code == 550
    assert len(checker[1]()) == 2


def test_true_program_decides_too(session_factory, checker):
    """The ``true`` argument is what the program runs on success: with ``/bin/false`` nobody gets in."""
    ts = session_factory(["auth/auth_checkpassword checkpw %s true %s" % (checker[0], shutil.which("false"))],
                         CONFIG)
    ts.command("EHLO client.test")
    assert ts.command(plain())[0].code == 535


@pytest.mark.parametrize("user", ["tempfail@example.com", "crash@example.com"])
def test_temporary_failure_gets_454(session_factory, checker, user):
    """Exit 111 (or death by a signal) is a temporary failure: 454 4.7.0, not counted towards
    ``auth_max_failures``, the client stays connected and unauthenticated."""
    ts = session_factory(["auth/auth_checkpassword checkpw %s" % checker[0]], dict(CONFIG, auth_max_failures="1"))
    ts.command("EHLO client.test")
    for _ in range(2):
        [reply] = ts.command(plain(user, "x"))
        assert (reply.code, reply.status) == (454, "4.7.0")
    assert not ts.closed and ts.session.auth_user is None


def test_login_with_nul_in_password_never_reaches_the_program(session, checker):
    """A LOGIN password containing NUL (which would shift the fields) or an overlong one is refused (535)
    without running the program."""
    for password in ("pw\0" + USER, "x" * 600):
        session.command("AUTH LOGIN")
        session.command(b64(USER))
        assert session.command(b64(password))[0].code == 535
    assert checker[1]() == []


def test_cram_md5_is_not_offered(session):
    """The program needs the clear password, so CRAM-MD5 gets 504."""
    assert session.command("AUTH CRAM-MD5")[0].code == 504


def test_program_overrunning_plugin_timeout_is_killed(live_server, tmp_path, checker):
    """A program still running at ``plugin_timeout`` is killed and the client gets 454 4.7.0."""
    server = live_server(plugins=["auth/auth_checkpassword checkpw %s" % checker[0], "rcpt_ok"],
                         config=dict(CONFIG, plugin_timeout="1"))
    with smtplib.SMTP(*server.address, timeout=10) as smtp:
        smtp.ehlo("client.test")
        began = time.monotonic()
        code, text = smtp.docmd(plain("sleeper@example.com", "x"))
        assert code == 454 and text.startswith(b"4.7.0 ")
        assert time.monotonic() - began < 10
        assert smtp.noop()[0] == 250
    [seen] = checker[1]()
    with pytest.raises(ProcessLookupError):
        os.kill(seen["pid"], 0)


def test_unstartable_program_gets_454(session_factory, checker):
    """A program no longer executable after start-up is a temporary failure (454), logged as an error."""
    ts = session_factory(["auth/auth_checkpassword checkpw %s" % checker[0]], CONFIG)
    logged = ts.capture_log()
    ts.command("EHLO client.test")
    checker[0].chmod(0o644)
    assert ts.command(plain())[0].code == 454
    assert any(level <= 3 and "exited with 126" in message for level, _, _, message in logged)


@pytest.mark.parametrize("args, problem", [
    ("", "no checkpassword program.*smtpauth-checkpassword"),
    ("checkpw /nonexistent/checkpassword", "no such program"),
    ("checkpw %s true /nonexistent/true" % TRUE, "no such program"),
    ("checkpw %s sudo_path /usr/bin/sudo" % TRUE, "unknown argument 'sudo_path'"),
    ("checkpw", "arguments come in pairs"),
])
def test_bad_arguments_stop_start_up(smtpd_factory, args, problem):
    """A missing or unusable program, or an unknown argument, stops the start-up with the reason."""
    with pytest.raises(ConfigError, match=problem):
        smtpd_factory(["auth/auth_checkpassword " + args])
