"""auth/authdeny: the demo auth plugin that offers every mechanism and lets nobody in."""
import base64
import hmac
import smtplib

import pytest

from qpgevent.errors import ConfigError

CONFIG = {"tls_before_auth": "0", "auth_failure_delay": "0", "auth_max_failures": "0"}


def test_every_mechanism_fails_over_a_socket(live_server):
    """PLAIN, LOGIN and CRAM-MD5 are offered; each attempt gets 535 5.7.8 and relaying stays closed."""
    server = live_server(plugins=["auth/authdeny", "rcpt_ok", "queue/discard"], config=CONFIG)
    with smtplib.SMTP(*server.address, timeout=10) as smtp:
        smtp.ehlo("client.test")
        assert smtp.esmtp_features["auth"].split() == ["PLAIN", "LOGIN", "CRAM-MD5"]
        smtp.user, smtp.password = "joe@example.com", "anything"
        for mechanism, method in (("PLAIN", smtp.auth_plain), ("LOGIN", smtp.auth_login),
                                  ("CRAM-MD5", smtp.auth_cram_md5)):
            with pytest.raises(smtplib.SMTPAuthenticationError) as error:
                smtp.auth(mechanism, method, initial_response_ok=False)
            assert error.value.smtp_code == 535
            assert error.value.smtp_error.startswith(b"5.7.8 %s authentication failed" % mechanism.encode())
        smtp.docmd("MAIL", "FROM:<a@sender.test>")
        assert smtp.docmd("RCPT", "TO:<someone@elsewhere.test>")[0] == 550


def test_attempts_are_logged_without_passwords(session_factory):
    """Each declined attempt is logged with user and mechanism, never the password."""
    session = session_factory(["auth/authdeny"], CONFIG)
    logged = session.capture_log()
    session.command("EHLO client.test")
    session.command("AUTH PLAIN " + base64.b64encode(b"\0joe@example.com\0hunter2").decode())
    [challenge] = session.command("AUTH CRAM-MD5")
    digest = hmac.new(b"hunter2", base64.b64decode(challenge.lines[0]), "md5").hexdigest()
    session.command(base64.b64encode(b"ann@example.org " + digest.encode()).decode())
    messages = [m for _, _, plugin, m in logged if plugin == "auth/authdeny"]
    assert messages == ["fail, authdeny declines joe@example.com (plain)",
                        "fail, authdeny declines ann@example.org (cram-md5)"]
    assert not any("hunter2" in m or digest in m for _, _, _, m in logged)


def test_arguments_are_refused(smtpd_factory):
    """authdeny takes no arguments but ``loglevel``."""
    with pytest.raises(ConfigError, match="takes no arguments"):
        smtpd_factory(["auth/authdeny yes"])
