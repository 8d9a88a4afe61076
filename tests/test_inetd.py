"""bin/qpsmtpd: one session on stdin/stdout, as inetd or tcpserver runs it."""
import os
import socket
import subprocess
import sys

from qpgevent.testing import ROOT, parse_replies, write_config

COMMANDS = b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.com>\r\nDATA\r\n" \
           b"Subject: inetd\r\n\r\nbody\r\n.\r\nQUIT\r\n"


def make_config(tmp_path, plugins=None):
    return write_config(tmp_path / "config", {
        "me": "mx.test", "rcpthosts": "example.com", "spool_dir": str(tmp_path / "spool"),
        "plugins": plugins or ["relay", "rcpt_ok", "queue/maildir %s" % (tmp_path / "Maildir")]})


def run_inetd(config, data, env):
    return subprocess.run([sys.executable, str(ROOT / "bin" / "qpsmtpd"), "--config-dir", str(config), "-H"],
                          input=data, capture_output=True, env=dict(os.environ, **env), timeout=20)


def test_tcpserver_environment_gives_the_remote_address(tmp_path):
    """Under tcpserver, TCPREMOTEIP/TCPREMOTEHOST name the client; a whole transaction runs on pipes."""
    result = subprocess.run([sys.executable, str(ROOT / "bin" / "qpsmtpd"), "--config-dir", str(make_config(tmp_path))],
                            input=COMMANDS, capture_output=True, timeout=20,
                            env=dict(os.environ, TCPREMOTEIP="192.0.2.9", TCPREMOTEHOST="client.example",
                                     TCPREMOTEPORT="4242"))
    replies = parse_replies(result.stdout)
    assert [r.code for r in replies] == [220, 250, 250, 250, 354, 250, 221]
    assert replies[1].lines[0] == "mx.test Hi client.example [192.0.2.9]"
    delivered = list((tmp_path / "Maildir" / "new").iterdir())
    assert len(delivered) == 1
    assert "from client.example (HELO client.test) (192.0.2.9)" in delivered[0].read_text()


def test_relayclient_variable_allows_relaying(tmp_path):
    """tcpserver's RELAYCLIENT lets the client send to foreign domains (relay plugin)."""
    session = b"HELO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@elsewhere.test>\r\nQUIT\r\n"
    config = make_config(tmp_path)
    plain = run_inetd(config, session, {"TCPREMOTEIP": "192.0.2.9"})
    relaying = run_inetd(config, session, {"TCPREMOTEIP": "192.0.2.9", "RELAYCLIENT": ""})
    assert parse_replies(plain.stdout)[3].code == 550
    assert parse_replies(relaying.stdout)[3].code == 250


def test_inetd_socket_on_stdin_gives_peer_address(tmp_path):
    """Under inetd the client socket is stdin/stdout; its peer address comes from getpeername."""
    config = make_config(tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=10)
        accepted, _ = listener.accept()
        with client, accepted:
            process = subprocess.Popen([sys.executable, str(ROOT / "bin" / "qpsmtpd"), "--config-dir", str(config),
                                        "-H"], stdin=accepted, stdout=accepted, stderr=subprocess.PIPE,
                                       env={k: v for k, v in os.environ.items() if not k.startswith("TCP")})
            accepted.close()
            client.sendall(b"EHLO client.test\r\nQUIT\r\n")
            data = b""
            while not data.endswith(b"day.\r\n"):
                chunk = client.recv(4096)
                if not chunk:
                    break
                data += chunk
            process.wait(timeout=20)
    replies = parse_replies(data)
    assert replies[0].code == 220
    assert "[127.0.0.1]" in replies[1].lines[0]
    assert replies[-1].code == 221


def test_broken_config_answers_421_and_exits(tmp_path):
    """A config error is reported on stderr with file and line, and the client gets 421, not silence."""
    config = make_config(tmp_path, plugins=["nonexistent_plugin"])
    result = subprocess.run([sys.executable, str(ROOT / "bin" / "qpsmtpd"), "--config-dir", str(config)],
                            input=b"", capture_output=True, timeout=20)
    assert result.returncode != 0
    assert parse_replies(result.stdout)[0].code == 421
    assert b"%s:1:" % str(config / "plugins").encode() in result.stderr
