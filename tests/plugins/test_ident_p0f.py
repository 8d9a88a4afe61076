"""ident/p0f: against a real ``p0f -i lo`` (needs root or CAP_NET_RAW), and a stand-in for the rare answers.

The real p0f fingerprints the loopback SYNs of a client bound to 127.0.0.77
(as Linux, or as unknown on some kernels: either way the API round trip and
the note are checked against what p0f itself answers).  The stand-in is a
unix socket server speaking p0f 3's documented API (query magic 0x50304601,
232-octet answer with magic 0x50304602): it gives the answers a loopback
capture cannot (no match, a chosen OS, a broken answer).
"""
import os
import shutil
import smtplib
import socket
import struct
import subprocess
import threading
import time

import pytest

from qpgevent.testing import TestSession, make_smtpd

CLIENT_IP = "127.0.0.77"
ANSWER = struct.Struct("=IIIIIIIIIhBB32s32s32s32s32s32s")


def answer(status=0x10, os_name=b"Windows", os_flavor=b"7 or 8", link=b"Ethernet or modem", distance=3,
           magic=0x50304602):
    return ANSWER.pack(magic, status, 1, 2, 5, 600, 0, 0, 0, distance, 0, 0, os_name, os_flavor, b"", b"", link, b"")


class StandIn:
    """A stand-in p0f API server on a unix socket: records queries, sends ``reply``."""

    def __init__(self, path, reply):
        self.path, self.reply, self.queries = str(path), reply, []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(8)
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.queries.append(conn.recv(21))
                conn.sendall(self.reply)

    def close(self):
        self.sock.close()


@pytest.fixture
def stand_in(tmp_path):
    servers = []

    def factory(reply=None):
        servers.append(StandIn(tmp_path / ("p0f%d.sock" % len(servers)), answer() if reply is None else reply))
        return servers[-1]
    yield factory
    for server in servers:
        server.close()


def session(tmp_path, line, ip=CLIENT_IP, config=None, first=()):
    smtpd = make_smtpd(tmp_path, plugins=[*first, line, "rcpt_ok", "queue/maildir %s" % (tmp_path / "Maildir")],
                       config=dict({"rcpthosts": ["example.com"]}, **(config or {})))
    return TestSession(smtpd, remote_ip=ip)


def raw_query(path, ip):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(2)
        sock.connect(path)
        sock.sendall(struct.pack("=IB16s", 0x50304601, 4, socket.inet_aton(ip)))
        data = b""
        while len(data) < ANSWER.size:
            part = sock.recv(ANSWER.size - len(data))
            if not part:
                break
            data += part
    return ANSWER.unpack(data)


@pytest.fixture(scope="module")
def real_p0f(tmp_path_factory):
    """``p0f -i lo`` on SYNs from CLIENT_IP, its API at a private socket; warmed up with one connection."""
    if not shutil.which("p0f"):
        pytest.skip("p0f is not installed (tests/run installs it)")
    base = tmp_path_factory.mktemp("p0f")
    path = str(base / "p0f.sock")
    process = subprocess.Popen(["p0f", "-i", "lo", "-s", path, "src host %s" % CLIENT_IP],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(path):
            if process.poll() is not None:
                pytest.skip("p0f cannot capture on lo here (needs root or CAP_NET_RAW): %s"
                            % process.stderr.read().decode()[-300:])
            assert time.monotonic() < deadline, "p0f did not open its socket"
            time.sleep(0.05)
        with socket.socket() as listener:  # one connection from CLIENT_IP, so p0f has seen the host
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            client = socket.create_connection(listener.getsockname(), timeout=5, source_address=(CLIENT_IP, 0))
            listener.accept()[0].close()
            client.close()
        while raw_query(path, CLIENT_IP)[1] != 0x10:
            assert time.monotonic() < deadline, "p0f never matched the warm-up connection"
            time.sleep(0.1)
        yield path
    finally:
        process.terminate()
        process.wait(5)


def test_real_p0f_fingerprint_becomes_the_note_and_headers(live_server, tmp_path, real_p0f):
    """smtplib from 127.0.0.77 -> qpgevent -> p0f's API: the stored message carries p0f's own OS answer."""
    fields = raw_query(real_p0f, CLIENT_IP)
    genre = ("%s %s" % (fields[12].rstrip(b"\0").decode(), fields[13].rstrip(b"\0").decode())).strip()
    server = live_server(plugins=["ident/p0f %s" % real_p0f, "rcpt_ok", "queue/maildir %s" % (tmp_path / "Maildir")])
    with smtplib.SMTP(timeout=10, source_address=(CLIENT_IP, 0)) as client:
        client.connect(*server.address)
        client.sendmail("a@sender.test", ["u@example.com"], "Subject: hi\r\n\r\nbody\r\n")
    [path] = (tmp_path / "Maildir" / "new").iterdir()
    head = path.read_text().split("\n\n")[0].splitlines()
    if genre:
        assert "X-P0F-Genre: %s" % genre in head
    else:  # p0f matched the host but named no OS: the note holds no genre, so no header
        assert not [line for line in head if line.startswith("X-P0F-Genre")]


def test_real_p0f_note_fields(tmp_path, real_p0f):
    notes = session(tmp_path, "ident/p0f %s" % real_p0f).connection.notes
    fields = raw_query(real_p0f, CLIENT_IP)
    assert notes["p0f"]["status"] == 0x10 and notes["p0f"]["distance"] == fields[9]
    assert notes["p0f"]["os_name"] == fields[12].rstrip(b"\0").decode()
    assert notes["p0f"]["first_seen"] == fields[2]


def test_stand_in_note_query_and_headers(tmp_path, stand_in):
    p0f = stand_in()
    test_session = session(tmp_path, "ident/p0f p0f_socket %s" % p0f.path)
    note = test_session.connection.notes["p0f"]
    assert p0f.queries == [struct.pack("=IB16s", 0x50304601, 4, socket.inet_aton(CLIENT_IP))]
    assert (note["genre"], note["link"], note["distance"], note["uptime"]) == ("Windows 7 or 8", "Ethernet or modem",
                                                                               3, 600)
    assert test_session.send_message("a@sender.test", ["u@example.com"], "Subject: hi\n\nb\n")[-1].code == 250
    [path] = (tmp_path / "Maildir" / "new").iterdir()
    head = path.read_text().split("\n\n")[0].splitlines()
    assert "X-P0F-Genre: Windows 7 or 8" in head and "X-P0F-Link-Type: Ethernet or modem" in head


@pytest.mark.parametrize("reply", [answer(status=0x20), answer(magic=0xdeadbeef), b"short"])
def test_no_match_or_broken_answer_sets_no_note(tmp_path, stand_in, reply):
    p0f = stand_in(reply)
    test_session = session(tmp_path, "ident/p0f %s" % p0f.path)
    assert "p0f" not in test_session.connection.notes
    assert test_session.send_message("a@sender.test", ["u@example.com"], "Subject: hi\n\nb\n")[-1].code == 250


def test_p0f_not_running_only_logs(tmp_path):
    test_session = session(tmp_path, "ident/p0f %s" % (tmp_path / "absent.sock"))
    assert test_session.send_message("a@sender.test", ["u@example.com"], "Subject: hi\n\nb\n")[-1].code == 250


def test_blocked_os_and_smite_os(tmp_path, stand_in):
    p0f = stand_in()
    config = {"p0f_blocked_operating_systems": ["Linux 2.6", "/^windows/"]}
    test_session = session(tmp_path, "ident/p0f %s smite_os windows" % p0f.path, config=config)
    test_session.command("EHLO client.test")
    test_session.command("MAIL FROM:<a@sender.test>")
    [rcpt] = test_session.command("RCPT TO:<u@example.com>")
    assert (rcpt.code, rcpt.text) == (550, "5.7.1 OS Blocked (#5.7.1)")
    assert test_session.connection.notes["karma"] == -1
    relay = session(tmp_path / "relay", "ident/p0f %s" % p0f.path, config=dict(config, relayclients=[CLIENT_IP]),
                    first=["relay"])
    assert relay.send_message("a@sender.test", ["u@example.com"], "Subject: hi\n\nb\n")[-1].code == 250  # immune


def test_version_2_is_refused_at_start_up(tmp_path):
    with pytest.raises(Exception) as error:
        make_smtpd(tmp_path, plugins=["ident/p0f /run/p0f.sock version 2"])
    assert "p0f 2's API is not supported" in str(error.value)
