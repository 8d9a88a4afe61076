"""virus/klez_filter: big messages with a base64 executable after an audio/application part are refused."""
import smtplib

import pytest

from qpgevent.errors import ConfigError

CONFIG = {"rcpthosts": ["example.com"]}
EXECUTABLE = "TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
FILLER = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\n" * 1000
HEAD = "From: a@sender.test\nSubject: hi\nContent-Type: multipart/mixed; boundary=b\n\n"
DETECTED = "552 5.7.1 Klez Virus Detected"


def worm(part_type="Content-Type: audio/x-wav; name=a.exe", lines_before=3, filler=FILLER):
    """A Klez-like message: ``lines_before`` body lines, the part's type, a blank line, the executable."""
    body = "text\n" * lines_before + "--b\n%s\nContent-Transfer-Encoding: base64\n\n%s\n" % (part_type, EXECUTABLE)
    return HEAD + body + filler


def last_reply(session_factory, message, line="virus/klez_filter"):
    session = session_factory([line, "rcpt_ok", "queue/discard"], CONFIG)
    return str(session.send_message("a@sender.test", ["u@example.com"], message)[-1])


@pytest.mark.parametrize("part_type", ["Content-Type: audio/x-wav; name=a.exe",
                                       "content-type: application/octet-stream",
                                       "CONTENT-TYPE: Application/x-msdownload"])
def test_worm_is_refused(session_factory, part_type):
    assert last_reply(session_factory, worm(part_type)) == DETECTED


def test_small_messages_are_not_read(session_factory):
    """Under 60,000 bytes the message passes whatever it holds."""
    small = worm(filler="")
    assert len(small) < 60000
    assert last_reply(session_factory, small).startswith("250 ")


def test_only_the_first_41_body_lines_are_read(session_factory):
    """The executable on body line 42 is not seen; on line 41 it is (the body starts at the blank line)."""
    assert last_reply(session_factory, worm(lines_before=35)) == DETECTED
    assert last_reply(session_factory, worm(lines_before=36)).startswith("250 ")


@pytest.mark.parametrize("part_type", ["Content-Type: text/plain", "X-Content-Type: application/zip"])
def test_executable_needs_an_audio_or_application_part_before_it(session_factory, part_type):
    assert last_reply(session_factory, worm(part_type)).startswith("250 ")


def test_reject_0_only_logs(session_factory):
    session = session_factory(["virus/klez_filter reject 0", "rcpt_ok", "queue/discard"], CONFIG)
    logged = session.capture_log()
    assert session.send_message("a@sender.test", ["u@example.com"], worm())[-1].code == 250
    assert any(entry[2] == "virus/klez_filter" and entry[3].startswith("fail, tolerated") for entry in logged)


def test_reject_type_temp(session_factory):
    assert last_reply(session_factory, worm(), "virus/klez_filter reject_type temp") == \
        "452 4.7.1 Klez Virus Detected"


@pytest.mark.parametrize("line, complaint", [
    ("virus/klez_filter 60000", "'60000' has no value"),
    ("virus/klez_filter max_size 1", "unknown argument 'max_size'"),
])
def test_bad_arguments_stop_start_up(smtpd_factory, line, complaint):
    with pytest.raises(ConfigError, match=complaint):
        smtpd_factory([line, "rcpt_ok"])


def test_live_worm_is_refused(live_server, tmp_path):
    """Over a real socket the worm gets 552 5.7.1 and is not queued; a clean big message is."""
    maildir = tmp_path / "Maildir"
    server = live_server(plugins=["virus/klez_filter", "rcpt_ok", "queue/maildir %s" % maildir])
    with smtplib.SMTP(*server.address, timeout=10) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("a@sender.test", ["u@example.com"], worm().replace("\n", "\r\n"))
        assert (refused.value.smtp_code, refused.value.smtp_error) == (552, b"5.7.1 Klez Virus Detected")
        clean = worm("Content-Type: text/plain").replace("\n", "\r\n")
        assert client.sendmail("a@sender.test", ["u@example.com"], clean) == {}
    assert len(list((maildir / "new").iterdir())) == 1
