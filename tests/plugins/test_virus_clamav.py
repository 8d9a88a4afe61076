"""virus/clamav: the real clamdscan command scans the spool file through a private clamd; exit codes decide."""
import email
import shutil
import time

import pytest

from daemons.scanners import VIRUS_NAME, VIRUS_WORD, start_clamd
from qpgevent.errors import ConfigError
from qpgevent.testing import capturing_session, make_smtpd

CONFIG = {"rcpthosts": ["example.com"]}
CLAMDSCAN = shutil.which("clamdscan")
pytestmark = pytest.mark.skipif(CLAMDSCAN is None, reason="clamdscan is not installed (tests/run installs it)")


@pytest.fixture(scope="module")
def clamd_conf():
    """A private clamd, and the clamd.conf clamdscan reads to find it."""
    daemon = start_clamd()
    yield str(daemon.directory / "clamd.conf")
    daemon.stop()


def session_for(tmp_path, line):
    return capturing_session(tmp_path, [line, "rcpt_ok"], CONFIG, remote_ip="192.0.2.9")


def message(word="nothing special"):
    return "From: a@sender.test\nSubject: hi\n\nA line with %s in it.\n" % word


def send(session, text):
    return session.send_message("a@sender.test", ["u@example.com"], text)[-1]


def test_clean_message_is_marked_checked(clamd_conf, tmp_path):
    session, capture = session_for(tmp_path, "virus/clamav clamscan_path=%s clamd_conf=%s" % (CLAMDSCAN, clamd_conf))
    assert send(session, message()).code == 250
    assert email.message_from_bytes(capture.messages[-1])["X-Virus-Checked"] == "Checked by ClamAV on mx.test"


def test_virus_gets_headers_by_default_and_552_with_action_reject(clamd_conf, tmp_path):
    """Exit code 1: add-header (qpsmtpd's default) marks it; action=reject refuses it with the name."""
    session, capture = session_for(tmp_path / "mark", "virus/clamav %s clamd_conf=%s" % (CLAMDSCAN, clamd_conf))
    assert send(session, message(VIRUS_WORD)).code == 250
    stored = email.message_from_bytes(capture.messages[-1])
    assert (stored["X-Virus-Found"], stored["X-Virus-Details"]) == ("Yes", VIRUS_NAME)
    session, capture = session_for(tmp_path / "reject", "virus/clamav clamscan_path %s clamd_conf %s action reject"
                                   % (CLAMDSCAN, clamd_conf))
    reply = send(session, message(VIRUS_WORD))
    assert str(reply) == "552 5.7.1 Virus Found: %s (#5.7.1)" % VIRUS_NAME
    assert capture.messages == []


def test_scanner_error_defers_by_default_and_passes_with_declined_on_fail(tmp_path):
    """Exit code 2 (here: clamd.conf names no running clamd): 452 4.3.0, or with declined_on_fail, let through."""
    conf = tmp_path / "clamd.conf"
    conf.write_text("LocalSocket %s\n" % (tmp_path / "nobody-here.sock"))
    session, capture = session_for(tmp_path / "closed", "virus/clamav clamd_conf=%s" % conf)
    started = time.monotonic()
    reply = send(session, message(VIRUS_WORD))
    assert (reply.code, reply.status) == (452, "4.3.0")
    assert time.monotonic() - started < 10
    session, capture = session_for(tmp_path / "open", "virus/clamav clamd_conf=%s declined_on_fail" % conf)
    assert send(session, message(VIRUS_WORD)).code == 250
    assert email.message_from_bytes(capture.messages[-1])["X-Virus-Checked"] is None


def test_a_scanner_that_hangs_is_killed_after_timeout(tmp_path):
    slow = tmp_path / "slow-scanner"
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(0o755)
    session, capture = session_for(tmp_path, "virus/clamav clamscan_path=%s timeout=1" % slow)
    started = time.monotonic()
    assert send(session, message()).code == 452
    assert 0.9 < time.monotonic() - started < 5


def test_max_size_skips_bigger_messages(tmp_path):
    """Not even run: the scanner here would fail."""
    session, capture = session_for(tmp_path, "virus/clamav clamscan_path=/bin/false max_size=10")
    assert send(session, message()).code == 250


def test_a_scanner_that_cannot_run_stops_the_start(tmp_path):
    with pytest.raises(ConfigError, match="no ClamAV scanner to run"):
        make_smtpd(tmp_path, plugins=["virus/clamav clamscan_path=%s" % (tmp_path / "missing"), "rcpt_ok"],
                   config=CONFIG)
