"""bin/qpsmtpd-server: options, connection limits, timeouts, privileges, pid file, reload."""
import os
import pwd
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qpgevent.testing import LiveServer, ROOT, RawClient, free_port, read_reply, wait_for, write_config




def test_limit_connections_answers_421_instead_of_waiting(live_server):
    """With -c 2 a third client is told 421 4.7.0 at once and closed, never left in the backlog."""
    server = live_server(args=["-c", "2"])
    held = [socket.create_connection(server.address, timeout=5) for _ in range(2)]
    try:
        assert all(read_reply(s).code == 220 for s in held)
        with socket.create_connection(server.address, timeout=5) as third:
            reply = read_reply(third)
            assert (reply.code, reply.status) == (421, "4.7.0")
            assert third.recv(100) == b""  # closed after the reply
    finally:
        for s in held:
            s.close()
    # Once the others have gone, new clients are greeted again.
    assert wait_for(lambda: read_reply(socket.create_connection(server.address, timeout=5)).code == 220)


def test_max_from_ip_limits_one_address(live_server):
    """With -m 1 a second session from the same address gets 421 4.7.0."""
    server = live_server(args=["-m", "1"])
    with socket.create_connection(server.address, timeout=5) as first:
        assert read_reply(first).code == 220
        with socket.create_connection(server.address, timeout=5) as second:
            reply = read_reply(second)
            assert (reply.code, reply.status) == (421, "4.7.0")
            assert "from your address" in reply.text


def test_idle_timeout_says_421_and_closes(live_server):
    """A client silent for `timeout` seconds gets 421 4.4.2 and the connection is closed."""
    server = live_server(config={"timeout": "1"})
    with socket.create_connection(server.address, timeout=5) as client:
        assert read_reply(client).code == 220
        started = time.monotonic()
        reply = read_reply(client)
        assert (reply.code, reply.status) == (421, "4.4.2")
        assert 0.8 < time.monotonic() - started < 4
        assert client.recv(100) == b""


def test_ipv6_listener(live_server):
    """-l [::1]:PORT serves IPv6 clients."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 on this machine")
    server = live_server(host="::1")
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        code, text = client.ehlo("v6.test")
        assert code == 250 and b"[::1]" in text.splitlines()[0]


def test_bad_config_stops_startup_with_file_and_line(tmp_path):
    """A missing plugin stops the server at start with the plugins file, the line and a suggestion."""
    config = write_config(tmp_path / "config", {"me": "mx.test", "plugins": ["# comment", "rcpt_okk"]})
    result = subprocess.run([sys.executable, str(ROOT / "bin" / "qpsmtpd-server"), "--config-dir", str(config),
                             "-p", str(free_port())], capture_output=True, text=True, timeout=20)
    assert result.returncode != 0
    assert "%s:2:" % (config / "plugins") in result.stderr
    assert "did you mean 'rcpt_ok'" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_the_forkserver_options():
    """--help documents the qpsmtpd-forkserver compatible options."""
    result = subprocess.run([sys.executable, str(ROOT / "bin" / "qpsmtpd-server"), "--help"],
                            capture_output=True, text=True, timeout=20)
    for option in ("--config-dir", "--listen-address", "--port", "--limit-connections", "--max-from-ip",
                   "--user", "--pid-file", "--detach"):
        assert option in result.stdout


def test_detach_writes_pid_file_and_sigterm_removes_it(tmp_path):
    """-d --pid-file: the command returns, the daemon serves, SIGTERM stops it and removes the pid file."""
    config = write_config(tmp_path / "config", {"me": "mx.test", "plugins": ["rcpt_ok"]})
    pid_file = tmp_path / "qp.pid"
    port = free_port()
    result = subprocess.run([sys.executable, str(ROOT / "bin" / "qpsmtpd-server"), "--config-dir", str(config),
                             "-l", "127.0.0.1:%d" % port, "-H", "-d", "--pid-file", str(pid_file)],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 0
    assert wait_for(lambda: pid_file.exists() and pid_file.read_text().endswith("\n"))
    pid = int(pid_file.read_text())
    try:
        assert wait_for(lambda: _connects(port))
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            assert client.noop()[0] == 250
    finally:
        os.kill(pid, signal.SIGTERM)
    assert wait_for(lambda: not pid_file.exists())


def test_pid_file_of_a_live_process_refuses_start(tmp_path):
    """A pid file naming a running process stops a second start with a clear error."""
    config = write_config(tmp_path / "config", {"me": "mx.test", "plugins": ["rcpt_ok"]})
    pid_file = tmp_path / "qp.pid"
    pid_file.write_text("%d\n" % os.getpid())
    result = subprocess.run([sys.executable, str(ROOT / "bin" / "qpsmtpd-server"), "--config-dir", str(config),
                             "-p", str(free_port()), "--pid-file", str(pid_file)],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode != 0
    assert "still running" in result.stderr


def _connects(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_user_option_drops_privileges_after_binding(nobody_config):
    """As root, -u nobody binds first, then runs (and loads plugins) as nobody."""
    nobody = pwd.getpwnam("nobody")
    base, config, mail = nobody_config
    with LiveServer(config, args=["-u", "nobody"], cwd=base) as server:
        def uids():
            status = Path("/proc/%d/status" % server.process.pid).read_text()
            return next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        # The socket accepts (into the backlog) as soon as it is bound, before the drop.
        assert wait_for(lambda: uids() == [str(nobody.pw_uid)] * 4), uids()
        with smtplib.SMTP(*server.address, timeout=10) as client:
            refused = client.sendmail("a@b.test", ["u@example.com"], "Subject: x\r\n\r\nbody\r\n")
        assert refused == {}, server.log
        assert len(list((mail / "new").iterdir())) == 1


def test_sighup_reloads_plugins_for_new_sessions(live_server, tmp_path):
    """SIGHUP rereads config/plugins: new sessions see the new plugin list."""
    server = live_server()
    with smtplib.SMTP(*server.address, timeout=10) as client:
        assert client.ehlo("x.test")[0] == 250
        assert client.docmd("RCPT", "TO:<u@example.com>")[0] == 503  # no MAIL yet: engine alive
    (tmp_path / "config" / "rcpthosts").write_text("other.test\n")
    (tmp_path / "config" / "plugins").write_text("relay only 1\nrcpt_ok\n")
    server.process.send_signal(signal.SIGHUP)

    def refused():
        with smtplib.SMTP(*server.address, timeout=10) as client:
            client.ehlo("x.test")
            client.mail("a@b.test")
            return client.rcpt("u@other.test")[0] == 550
    assert wait_for(refused, 10)


def test_sighup_with_broken_config_keeps_serving(live_server, tmp_path):
    """A broken config on SIGHUP is refused (logged) and the old plugins go on serving."""
    server = live_server()
    (tmp_path / "config" / "plugins").write_text("no_such_plugin\n")
    server.process.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    with smtplib.SMTP(*server.address, timeout=10) as client:
        assert client.sendmail("a@b.test", ["u@example.com"], "Subject: x\r\n\r\nbody\r\n") == {}
    server.stop()
    assert "reload refused" in server.stderr


def test_sigusr1_reopens_log_files(live_server, tmp_path):
    """After logrotate moves the log away, SIGUSR1 makes logging/file write a fresh file at the old path."""
    log = tmp_path / "smtp.log"
    server = live_server(config={"logging": ["logging/file loglevel 6 %s" % log]})

    def send():
        with smtplib.SMTP(*server.address, timeout=10) as client:
            client.sendmail("a@b.test", ["u@example.com"], "Subject: x\r\n\r\nbody\r\n")
    send()
    assert wait_for(lambda: "Queued" in log.read_text())
    log.rename(tmp_path / "smtp.log.1")
    server.process.send_signal(signal.SIGUSR1)
    time.sleep(0.2)
    send()
    assert wait_for(lambda: log.exists() and "Queued" in log.read_text())


SLOW_QUEUE = '''
import time

from qpgevent import DECLINED


def hook_queue(self, transaction):
    time.sleep(2)  # a slow delivery (gevent's sleep: the process serves others meanwhile)
    return DECLINED
'''


def test_sigterm_during_a_delivery_answers_250_then_421(live_server, tmp_path):
    """SIGTERM while a queue hook is delivering, with a graceful timeout shorter than the delivery: the
    session's own greenlet finishes the hook, the client gets its 250, then 421 4.3.2; the message is stored.
    An idle client is told 421 4.3.2 at the end of the graceful timeout."""
    server = live_server(plugins=["rcpt_ok", "slow_queue", "queue/maildir %s" % (tmp_path / "Maildir")],
                         plugin_files={"slow_queue.py": SLOW_QUEUE}, args=["--graceful-timeout", "1"])
    idle = RawClient(server.address)
    client = RawClient(server.address)
    try:
        assert (idle.reply().code, idle.command("EHLO idle.test").code) == (220, 250)
        assert client.reply().code == 220
        for line, code in (("EHLO busy.test", 250), ("MAIL FROM:<a@example.org>", 250),
                           ("RCPT TO:<b@example.com>", 250), ("DATA", 354)):
            assert client.command(line).code == code
        client.send(b"Subject: in flight\r\n\r\nbody\r\n.\r\n")
        time.sleep(0.5)  # the queue hook is running
        server.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        reply = client.reply()
        assert (reply.code, reply.status) == (250, "2.0.0"), reply
        reply = client.reply()
        assert (reply.code, reply.status) == (421, "4.3.2"), reply
        assert client.read_to_eof(5) == b""
        reply = idle.reply()
        assert (reply.code, reply.status) == (421, "4.3.2")
        assert time.monotonic() - started < 5
    finally:
        client.close()
        idle.close()
    assert server.process.wait(10) == 0
    [stored] = list((tmp_path / "Maildir" / "new").iterdir())
    assert "Subject: in flight" in stored.read_text()
