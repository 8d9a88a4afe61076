"""quit_fortune: HELO clients get a fortune cookie in a multi-line 221 at QUIT."""
import os
import shutil
import socket

import pytest

from qpgevent.errors import ConfigError
from qpgevent.testing import read_reply

FAREWELL = "2.0.0 mx.test closing connection. Have a wonderful day."


def fake_fortune(directory, script):
    """A ``fortune`` shell script in ``directory``; returns a PATH that finds it first."""
    directory.mkdir(exist_ok=True)
    path = directory / "fortune"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return "%s%s%s" % (directory, os.pathsep, os.environ.get("PATH", os.defpath))



def test_live_helo_client_gets_a_fortune(live_server, tmp_path):
    """End to end: after HELO, QUIT is answered with a multi-line 221 holding fortune's output, then EOF."""
    env = None
    if shutil.which("fortune", path=os.pathsep.join((os.environ.get("PATH", ""), "/usr/games"))) is None:
        env = {"PATH": fake_fortune(tmp_path / "bin", "echo 'Never laugh at live dragons.'\n")}
    server = live_server(plugins=["quit_fortune", "rcpt_ok", "queue/maildir %s" % (tmp_path / "Maildir")], env=env)
    with socket.create_connection(server.address, timeout=10) as client:
        assert read_reply(client).code == 220
        client.sendall(b"HELO client.test\r\n")
        assert read_reply(client).code == 250
        client.sendall(b"QUIT\r\n")
        reply = read_reply(client)
        assert client.recv(100) == b""
    assert reply.code == 221
    assert len(reply.lines) >= 2
    assert reply.lines[0] == FAREWELL
    assert all(line.startswith("2.0.0   / ") and len(line) > len("2.0.0   / ") for line in reply.lines[1:])


def test_output_is_cleaned_up(session_factory, tmp_path, monkeypatch):
    """Tabs are expanded, control characters and blank lines dropped, each line prefixed with '  / '."""
    monkeypatch.setenv("PATH", fake_fortune(tmp_path / "bin", r"printf 'Line one\twith tab\n\n\033[1mbold\n'" + "\n"))
    ts = session_factory(["quit_fortune"])
    ts.command("HELO client.test")
    assert [r.lines for r in ts.command("QUIT")] == [[FAREWELL, "2.0.0   / Line one    with tab", "2.0.0   / [1mbold"]]
    assert ts.closed


def test_ehlo_clients_get_the_plain_farewell(session_factory, tmp_path, monkeypatch):
    """A client that said EHLO gets the usual one-line 221, as in qpsmtpd."""
    monkeypatch.setenv("PATH", fake_fortune(tmp_path / "bin", "echo cookie\n"))
    ts = session_factory(["quit_fortune"])
    ts.command("EHLO client.test")
    assert [str(r) for r in ts.command("QUIT")] == ["221 " + FAREWELL]
    assert ts.closed


def test_failing_fortune_gives_the_plain_farewell(session_factory, tmp_path, monkeypatch):
    """If fortune exits non-zero, QUIT still gets the usual 221."""
    monkeypatch.setenv("PATH", fake_fortune(tmp_path / "bin", "echo half a cookie; exit 3\n"))
    ts = session_factory(["quit_fortune"])
    ts.command("HELO client.test")
    assert [str(r) for r in ts.command("QUIT")] == ["221 " + FAREWELL]


def test_arguments_are_refused(smtpd_factory):
    """The plugin takes no arguments (but loglevel)."""
    with pytest.raises(ConfigError):
        smtpd_factory(["quit_fortune /usr/games/fortune"])
