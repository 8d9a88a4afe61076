"""queue/discard: every message is accepted and dropped."""
import os
import smtplib

import pytest

from qpgevent.errors import ConfigError

CONFIG = {"rcpthosts": ["example.com"]}


def test_message_is_accepted_and_not_stored(session_factory, tmp_path):
    """DATA ends in ``250 2.0.0 Queued (discarded)`` and nothing is left on disk for it."""
    session = session_factory(plugins=["rcpt_ok", "queue/discard"], config=CONFIG)
    before = {os.path.join(w, n) for w, _, names in os.walk(tmp_path) for n in names}
    message = "Subject: x\n\n" + ("y" * 70 + "\n") * 700  # beyond size_threshold: spooled to disk
    replies = session.send_message("a@sender.test", ["u@example.com"], message)
    assert (replies[-1].code, replies[-1].text) == (250, "2.0.0 Queued (discarded)")
    after = {os.path.join(w, n) for w, _, names in os.walk(tmp_path) for n in names}
    assert after == before


def test_many_transactions_on_one_connection(session_factory):
    """Each transaction of a session is accepted the same way (what a benchmark does)."""
    session = session_factory(plugins=["rcpt_ok", "queue/discard"], config=CONFIG)
    for n in range(5):
        replies = session.send_message("a@sender.test", ["u@example.com", "v@example.com"], "Subject: %d\n\nbody\n" % n)
        assert replies[-1].text == "2.0.0 Queued (discarded)"


def test_loading_it_logs_a_warning(tmp_path, session_factory):
    """Start-up logs a warning that mail is thrown away, through the logging plugins."""
    log = tmp_path / "log"
    session_factory(plugins=["logging/file loglevel LOGWARN %s" % log, "rcpt_ok", "queue/discard"], config=CONFIG)
    assert "LOGWARN queue/discard: every accepted message is thrown away" in log.read_text()


def test_arguments_are_refused(smtpd_factory):
    """It takes no arguments; one given stops start-up."""
    with pytest.raises(ConfigError, match="takes no arguments"):
        smtpd_factory(plugins=["rcpt_ok", "queue/discard /var/mail"])


def test_live_server_discards(live_server, tmp_path):
    """Over TCP, smtplib's message is accepted with the discard reply and no Maildir appears."""
    server = live_server(plugins=["rcpt_ok", "queue/discard"])
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.ehlo("client.test")
        client.mail("a@sender.test")
        client.rcpt("u@example.com")
        assert client.data(b"Subject: x\r\n\r\nhi\r\n") == (250, b"2.0.0 Queued (discarded)")
    assert not (tmp_path / "Maildir").exists()
