"""virus/clamdscan: the message is streamed to a real clamd (private, one test signature, no freshclam)."""
import email
import smtplib
import time

import pytest

from daemons.scanners import VIRUS_NAME, VIRUS_WORD, closed_port, silent_server, start_clamd
from qpgevent import clamd
from qpgevent.scanning import ScanError
from qpgevent.testing import capturing_session

CONFIG = {"rcpthosts": ["example.com"]}


@pytest.fixture(scope="session")
def clamd_daemon():
    daemon = start_clamd()
    yield daemon
    daemon.stop()


def message(word="nothing special", extra="", body_extra=""):
    return "From: a@sender.test\nTo: u@example.com\nSubject: hi\n%s\nA line with %s in it.\n%s" % (
        extra, word, body_extra)


def session_for(tmp_path, line):
    return capturing_session(tmp_path, [line, "rcpt_ok"], CONFIG, remote_ip="192.0.2.9")


def send(session, text):
    return session.send_message("a@sender.test", ["u@example.com"], text)[-1]


def test_instream_protocol_against_clamd(clamd_daemon):
    """INSTREAM in chunks, over the unix socket and TCP: the virus is named, clean data is None."""
    infected = [b"start ", VIRUS_WORD.encode(), b" end\n"]
    assert clamd.instream(clamd_daemon.socket_path, infected, 10, chunk_size=7) == VIRUS_NAME
    assert clamd.instream(clamd_daemon.address, [b"clean data\n"], 10) is None
    assert clamd.version(clamd_daemon.address, 10).startswith("ClamAV ")


def test_more_than_clamds_stream_limit_is_an_error(clamd_daemon):
    """clamd (StreamMaxLength 1M here) refuses more; that is an error, never 'clean'."""
    with pytest.raises(ScanError):
        clamd.instream(clamd_daemon.socket_path, [b"x" * 65536] * 20, 10)


def test_live_virus_is_refused_and_clean_mail_stored_with_headers(clamd_daemon, live_server, tmp_path):
    server = live_server(plugins=["virus/clamdscan clamd_socket %s" % clamd_daemon.socket_path, "rcpt_ok",
                                  "queue/maildir %s" % (tmp_path / "Maildir")])
    with smtplib.SMTP(*server.address, timeout=30) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("a@sender.test", ["u@example.com"], message(VIRUS_WORD))
        assert refused.value.smtp_code == 552
        assert refused.value.smtp_error == ("5.7.1 Virus found: %s (#5.7.1)" % VIRUS_NAME).encode()
        client.sendmail("a@sender.test", ["u@example.com"], message().replace("Subject", "X-Virus-Found: No\nSubject"))
    [path] = (tmp_path / "Maildir" / "new").iterdir()
    stored = email.message_from_bytes(path.read_bytes())
    assert stored.get_all("X-Virus-Found") == ["No"]
    assert stored["X-Virus-Checked"].startswith("by ClamAV ") and stored["X-Virus-Checked"].endswith(" on mx.test")
    # Our headers on top; below them the message exactly as the client sent it (the forged header removed).
    assert path.read_bytes().endswith(message().encode())


def test_deny_viruses_no_marks_the_virus_over_tcp(clamd_daemon, tmp_path):
    """clamd_host/clamd_port: TCP; deny_viruses no: stored with X-Virus-Found: Yes and the name."""
    host, port = clamd_daemon.address.split(":")
    session, capture = session_for(tmp_path, "virus/clamdscan deny_viruses no clamd_host %s clamd_port %s"
                                   % (host, port))
    assert send(session, message(VIRUS_WORD)).code == 250
    stored = email.message_from_bytes(capture.messages[-1])
    assert (stored["X-Virus-Found"], stored["X-Virus-Details"]) == ("Yes", VIRUS_NAME)


def test_a_virus_in_a_big_spooled_message_is_found(clamd_daemon, tmp_path):
    """The message is streamed from the spool file; a virus at its end, 500 KB in, is still seen."""
    session, capture = session_for(tmp_path, "virus/clamdscan clamd_socket %s" % clamd_daemon.socket_path)
    reply = send(session, message(body_extra="padding line\n" * 40000 + VIRUS_WORD + "\n"))
    assert reply.code == 552


def test_max_size_skips_bigger_messages(clamd_daemon, tmp_path):
    session, capture = session_for(tmp_path, "virus/clamdscan max_size 1 clamd_socket %s" % clamd_daemon.socket_path)
    assert send(session, message(VIRUS_WORD, body_extra="x" * 2000 + "\n")).code == 250
    assert email.message_from_bytes(capture.messages[-1])["X-Virus-Found"] is None


def test_scan_all_0_scans_only_multipart_messages(clamd_daemon, tmp_path):
    session, capture = session_for(tmp_path, "virus/clamdscan scan_all 0 clamd_socket %s" % clamd_daemon.socket_path)
    assert send(session, message(VIRUS_WORD)).code == 250
    multipart = 'Content-Type: multipart/mixed; boundary="b"\n'
    assert send(session, message(VIRUS_WORD, extra=multipart)).code == 552


def test_clamd_down_fails_closed_by_default(tmp_path):
    """Nothing at the socket: 452 4.3.0, quickly, and nothing is queued; the client will retry."""
    session, capture = session_for(tmp_path, "virus/clamdscan clamd_socket %s" % (tmp_path / "no-clamd.sock"))
    started = time.monotonic()
    reply = send(session, message())
    assert (reply.code, reply.status) == (452, "4.3.0")
    assert time.monotonic() - started < 5
    assert capture.messages == []


def test_clamd_down_with_defer_on_error_0_fails_open(tmp_path):
    host, port = closed_port().split(":")
    session, capture = session_for(tmp_path, "virus/clamdscan defer_on_error 0 clamd_port %s" % port)
    logged = session.capture_log()
    assert send(session, message(VIRUS_WORD)).code == 250
    assert email.message_from_bytes(capture.messages[-1])["X-Virus-Found"] is None
    assert any(entry[2] == "virus/clamdscan" and "failing open" in entry[3] for entry in logged)


@pytest.mark.parametrize("defer, code", [("1", 452), ("0", 250)])
def test_a_hung_clamd_is_given_up_on_after_timeout(tmp_path, defer, code):
    with silent_server() as address:
        session, capture = session_for(tmp_path, "virus/clamdscan timeout 1 defer_on_error %s clamd_port %s"
                                       % (defer, address.split(":")[1]))
        started = time.monotonic()
        assert send(session, message()).code == code
        assert 0.9 < time.monotonic() - started < 5

