"""The default configuration receives mail end to end."""
import smtplib
import subprocess


def test_smtplib_message_lands_in_maildir(live_server, tmp_path):
    """A message sent with smtplib is in Maildir/new after the 250, with a Received header."""
    server = live_server()
    with smtplib.SMTP(*server.address, timeout=10) as client:
        refused = client.sendmail("a@sender.test", ["u@example.com"], "Subject: hi\r\n\r\nhello\r\n")
    assert refused == {}
    delivered = list((tmp_path / "Maildir" / "new").iterdir())
    assert len(delivered) == 1
    text = delivered[0].read_text()
    assert "Received: from " in text and "with ESMTP;" in text
    assert text.endswith("\nhello\n")


def test_swaks_relay_to_foreign_domain_is_refused(live_server):
    """swaks as a client: a foreign recipient from a non-relay client gets 550 5.7.1."""
    server = live_server()
    result = subprocess.run(["swaks", "--server", "%s:%d" % server.address, "--from", "a@sender.test",
                             "--to", "someone@elsewhere.test", "--timeout", "10"],
                            capture_output=True, text=True, timeout=30)
    assert "<** 550 5.7.1 Relaying denied (#5.7.1)" in result.stdout
