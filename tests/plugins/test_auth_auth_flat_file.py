"""auth/auth_flat_file: PLAIN, LOGIN and CRAM-MD5 against ``flat_auth_pw``; unknown user or wrong password DENY."""
import base64
import hmac
import subprocess

import pytest

from qpgevent.errors import ConfigError
from qpgevent.testing import TestSession

ACCOUNTS = ["# test accounts", "Joe@Example.com:s3cret:with:colons", "ann@example.org:Another#one"]
CONFIG = {"tls_before_auth": "0", "flat_auth_pw": ACCOUNTS, "auth_failure_delay": "0", "auth_max_failures": "0",
          "rcpthosts": ["example.com"]}


def b64(text):
    return base64.b64encode(text.encode()).decode()


def plain(user, password):
    return "AUTH PLAIN " + b64("\0%s\0%s" % (user, password))


@pytest.fixture
def session(session_factory):
    ts = session_factory(["auth/auth_flat_file", "rcpt_ok"], CONFIG)
    ts.command("EHLO client.test")
    return ts


def test_swaks_wrong_password_fails(live_server, tmp_path):
    """swaks with a wrong CRAM-MD5 password gets 535 5.7.8 and its message is not relayed (the right
    password with every mechanism is in tests/test_auth.py)."""
    server = live_server(plugins=["auth/auth_flat_file", "rcpt_ok", "queue/maildir %s" % (tmp_path / "Maildir")],
                         config=CONFIG)
    result = subprocess.run(["swaks", "--server", "%s:%d" % server.address, "--from", "a@sender.test",
                             "--to", "someone@elsewhere.test", "--auth", "CRAM-MD5", "--auth-user", "joe@example.com",
                             "--auth-password", "s3cret", "--timeout", "10"],
                            capture_output=True, text=True, timeout=30)
    assert "<** 535 5.7.8 CRAM-MD5 authentication failed for joe@example.com" in result.stdout, result.stdout
    assert "Queued" not in result.stdout


def test_user_names_ignore_case_passwords_do_not(session):
    """``JOE@example.COM`` is the file's ``Joe@Example.com``; the password must match exactly."""
    assert session.command(plain("joe@EXAMPLE.com", "S3CRET:with:colons"))[0].code == 535
    assert session.command(plain("JOE@example.COM", "s3cret:with:colons"))[0].code == 235


def test_password_with_hash_sign(session):
    """A ``#`` inside a password is part of it, not a comment."""
    assert session.command(plain("ann@example.org", "Another#one"))[0].code == 235


def test_unknown_user_and_wrong_password_look_the_same(session):
    """An unknown user and a wrong password get the same 535 text, so accounts cannot be probed;
    the log tells them apart."""
    logged = session.capture_log()
    unknown = session.command(plain("nobody@example.com", "x"))[0]
    wrong = session.command(plain("joe@example.com", "x"))[0]
    assert unknown.code == wrong.code == 535
    assert unknown.text.replace("nobody@example.com", "USER") == wrong.text.replace("joe@example.com", "USER")
    messages = [m for _, _, plugin, m in logged if plugin == "auth/auth_flat_file"]
    assert "skip, no such user nobody@example.com" in messages
    assert "fail, wrong password for joe@example.com (plain)" in messages
    assert not any("s3cret" in m for m in messages)


def test_wrong_password_stops_the_chain_unknown_user_does_not(smtpd_factory, tmp_path):
    """As in qpsmtpd: a known user's wrong password is DENY (a later auth plugin that would accept anyone is
    not asked), a user not in the file is DECLINED (the later plugin is asked)."""
    plugin_dir = tmp_path / "local_plugins"
    plugin_dir.mkdir()
    (plugin_dir / "accept_all.py").write_text(
        '"""Accepts every AUTH."""\nfrom qpgevent import OK\n\n\n'
        'def hook_auth_plain(self, transaction, *args):\n    return OK\n')
    smtpd = smtpd_factory(["auth/auth_flat_file", "accept_all"], dict(CONFIG, plugin_dirs="local_plugins"))
    ts = TestSession(smtpd)
    ts.command("EHLO client.test")
    assert ts.command(plain("joe@example.com", "wrong"))[0].code == 535
    assert ts.command(plain("nobody@example.com", "x"))[0].code == 235


def test_login_exchange(session):
    """LOGIN: user name and password in answer to two challenges; a wrong password then the right one."""
    for password, code in (("another#one", 535), ("Another#one", 235)):
        session.command("AUTH LOGIN")
        session.command(b64("ann@example.org"))
        assert session.command(b64(password))[0].code == code


def test_cram_md5_exchange(session_factory):
    """CRAM-MD5: the answer ``user hex(HMAC-MD5(password, challenge))`` is accepted; a digest made with
    another password is not."""
    for password, code in (("wrong", 535), ("Another#one", 235)):
        ts = session_factory(["auth/auth_flat_file"], CONFIG)
        ts.command("EHLO client.test")
        [challenge] = ts.command("AUTH CRAM-MD5")
        digest = hmac.new(password.encode(), base64.b64decode(challenge.lines[0]), "md5").hexdigest()
        assert ts.command(b64("ann@example.org " + digest))[0].code == code


def test_missing_file_refuses_everyone(session_factory):
    """Without ``flat_auth_pw`` the mechanisms are still offered but every attempt gets 535."""
    ts = session_factory(["auth/auth_flat_file"], {k: v for k, v in CONFIG.items() if k != "flat_auth_pw"})
    assert "AUTH PLAIN LOGIN CRAM-MD5" in ts.command("EHLO client.test")[0].lines
    assert ts.command(plain("joe@example.com", "s3cret:with:colons"))[0].code == 535


@pytest.mark.parametrize("line", ["no-colon-here", ":password-without-user", "user@example.com:"])
def test_bad_line_stops_start_up(smtpd_factory, line):
    """A line that is not ``user:password`` (or has an empty password) stops the start-up naming file and line."""
    with pytest.raises(ConfigError) as error:
        smtpd_factory(["auth/auth_flat_file"], {"flat_auth_pw": ["ok@example.com:pw", line]})
    assert "flat_auth_pw:2" in str(error.value) and "user:password" in str(error.value)


def test_arguments_are_refused(smtpd_factory):
    """The plugin takes no arguments but ``loglevel``."""
    smtpd_factory(["auth/auth_flat_file loglevel 7"])
    with pytest.raises(ConfigError, match="takes no arguments"):
        smtpd_factory(["auth/auth_flat_file /etc/passwd"])
