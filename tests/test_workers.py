"""bin/qpsmtpd-server --workers: the master, its workers, signals, crash loops, --check-config.

Every test runs the real daemon in its own process group (so a test can kill
the whole group) with real clients on loopback.  Small plugins, written into a
temporary plugin directory, let the tests see which worker served a client
(its pid in the greeting, with the config generation it was loaded from),
crash a worker at boot, see who reopened its logs, and freeze a worker.
"""
import os
import pwd
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from qpgevent.master import EXIT_CRASH_LOOP
from qpgevent.testing import LiveServer, ROOT, free_port, read_reply, wait_for, write_config

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads worker pids from /proc")]

SERVER = [sys.executable, str(ROOT / "bin" / "qpsmtpd-server")]

PLUGINS = {
    "worker_pid.py": '''"""worker_pid (tests): greet with the worker's pid and the argument (a config label)."""
import os

from qpgevent import DONE


def register(self, qp, label="v1"):
    self.label = label


def hook_connect(self, transaction):
    self.qp.respond(220, "%s ESMTP pid %d config %s" % (self.qp.me, os.getpid(), self.label))
    return DONE
''',
    "crash_in_worker.py": '''"""crash_in_worker (tests): with QP_TEST_CRASH set, workers die loading plugins.

The master is the leader of its process group and loads the config too; it is spared.
"""
import os


def register(self, qp):
    if os.environ.get("QP_TEST_CRASH") and os.getpid() != os.getpgid(0):
        os._exit(7)
''',
    "reopen_marker.py": '''"""reopen_marker (tests): on a log reopen, mark this pid in $QP_TEST_MARKS."""
import os


def reopen():
    with open(os.path.join(os.environ["QP_TEST_MARKS"], str(os.getpid())), "w"):
        pass
''',
    "freeze.py": '''"""freeze (tests): the command FREEZE blocks the whole worker (no greenlet runs) for a minute."""
from gevent import monkey

from qpgevent import DECLINED


def hook_unrecognized_command(self, transaction, verb, rest):
    if verb.upper() == "FREEZE":
        monkey.get_original("time", "sleep")(60)
    return DECLINED
''',
}



def children(pid):
    """Pids of the live (not zombie) child processes of ``pid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def alive(pid):
    try:
        stat = Path("/proc/%d/stat" % pid).read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"


def message_for(ident):
    lines = ["line %03d of %s: the quick brown fox jumps over the lazy dog" % (n, ident) for n in range(150)]
    return "Subject: load %s\r\nMessage-Id: <%s@load.test>\r\n\r\n%s\r\nend of %s\r\n" % (
        ident, ident, "\r\n".join(lines), ident)


def read_maildir(maildir):
    """{message id: copies} for every file in new/; fails on any file that is not a complete message."""
    found = {}
    for path in (maildir / "new").iterdir():
        text = path.read_text()
        match = re.search(r"^Subject: load (\S+)$", text, re.M)
        assert match, "%s has no Subject: %r" % (path.name, text[:200])
        ident = match.group(1)
        body = text.split("\n\n", 1)[1]
        assert body == message_for(ident).split("\r\n\r\n", 1)[1].replace("\r\n", "\n"), \
            "%s is not the complete message %s" % (path.name, ident)
        found[ident] = found.get(ident, 0) + 1
    return found


class Daemon:
    """bin/qpsmtpd-server in a process group of its own, on a free loopback port."""

    def __init__(self, base, args=(), env=None):
        self.base = base
        self.port = free_port()
        self.extra_args = list(args)
        self.env = dict(os.environ, **(env or {}))
        self.process = None

    @property
    def args(self):
        return ["--config-dir", str(self.base / "config"), "-l", "127.0.0.1:%d" % self.port, "-H", *self.extra_args]

    @property
    def log_path(self):
        return self.base / ("server-%d.log" % self.port)

    @property
    def address(self):
        return "127.0.0.1", self.port

    @property
    def pid(self):
        return self.process.pid

    @property
    def log(self):
        return self.log_path.read_text()

    def start(self, workers=2):
        for _ in range(3):
            with open(self.log_path, "w") as log:
                self.process = subprocess.Popen(SERVER + self.args, stdin=subprocess.DEVNULL, stdout=log,
                                                stderr=subprocess.STDOUT, env=self.env, cwd=self.base,
                                                start_new_session=True)
            if not wait_for(lambda: self.started(workers) or self.process.poll() is not None, 15):
                raise AssertionError("the server did not start:\n" + self.log)
            if self.process.poll() is None or "cannot listen" not in self.log:
                break
            self.port = free_port()  # someone took the port meanwhile
        assert self.process.poll() is None, self.log
        return self

    def run(self, *args):
        """Run the server to its end (a failure, or -d returning); a port taken meanwhile is retried."""
        for _ in range(3):
            result = subprocess.run(SERVER + self.args + list(args), capture_output=True, text=True, timeout=30,
                                    env=self.env, cwd=self.base, start_new_session=True)
            if "cannot listen" not in result.stderr:
                break
            self.port = free_port()
        return result

    def started(self, workers):
        if workers == 1:  # a single process: no master, no workers
            return _connects(self.address)
        return len(self.serving()) == workers

    def workers(self):
        return children(self.pid)

    def serving(self):
        """Workers that said they serve (their first heartbeat reached the master)."""
        return {pid for pid in self.workers() if "worker %d serving" % pid in self.log}

    def signal(self, signum):
        os.kill(self.pid, signum)

    def wait(self, seconds=15):
        return self.process.wait(seconds)

    def kill_group(self):
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)


@pytest.fixture
def daemon(tmp_path):
    """``daemon(args=[...], config={...}, env={...})`` -> a started Daemon with two workers by default."""
    started = []
    plugin_dir = tmp_path / "test-plugins"
    plugin_dir.mkdir()
    for name, text in PLUGINS.items():
        (plugin_dir / name).write_text(text)

    def factory(args=("--workers", "2"), config=None, env=None, workers=2, start=True):
        values = {"me": "mx.test", "rcpthosts": "example.com", "spool_dir": str(tmp_path / "spool"),
                  "plugin_dirs": str(plugin_dir), "loglevel": "6",
                  "plugins": ["worker_pid v1", "rcpt_ok", "queue/maildir %s" % (tmp_path / "Maildir")]}
        values.update(config or {})
        write_config(tmp_path / "config", values)
        server = Daemon(tmp_path, args, env)
        started.append(server)
        return server.start(workers) if start else server

    yield factory
    for server in started:
        if server.process is not None and server.process.poll() is None:
            server.kill_group()


def greet(address):
    """(socket, pid, config label) of a fresh connection."""
    sock = socket.create_connection(address, timeout=10)
    reply = read_reply(sock)
    match = re.search(r"pid (\d+) config (\S+)", reply.text)
    assert reply.code == 220 and match, reply
    return sock, int(match.group(1)), match.group(2)


class Load:
    """Client threads sending messages in a loop, one connection per message, recording every outcome."""

    def __init__(self, address, threads=4):
        self.address = address
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.records = []  # dicts: id, pid, config, phase, ok, error, at
        self.threads = [threading.Thread(target=self.client, args=(n,), daemon=True) for n in range(threads)]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join(20)
            assert not thread.is_alive()

    def client(self, number):
        count = 0
        while not self.stopping.is_set():
            count += 1
            record = {"id": "%d.%d" % (number, count), "pid": None, "config": None, "phase": "connect",
                      "ok": False, "error": None}
            try:
                client = smtplib.SMTP(timeout=10)
                try:
                    code, text = client.connect(*self.address)
                    match = re.search(rb"pid (\d+) config (\S+)", text)
                    if match:
                        record["pid"], record["config"] = int(match.group(1)), match.group(2).decode()
                    record["phase"] = "ehlo"
                    client.ehlo("load.test")
                    record["phase"] = "mail"
                    client.mail("sender@load.test")
                    record["phase"] = "rcpt"
                    code, text = client.rcpt("u@example.com")
                    if code != 250:
                        raise smtplib.SMTPRecipientsRefused({"u@example.com": (code, text)})
                    record["phase"] = "data"
                    code, text = client.data(message_for(record["id"]))
                    record["ok"] = code == 250
                    if not record["ok"]:
                        record["error"] = "%d %s" % (code, text)
                finally:
                    try:
                        client.quit() if record["ok"] else client.close()
                    except (OSError, smtplib.SMTPException):
                        client.close()
            except (OSError, smtplib.SMTPException) as exc:
                record["error"] = repr(exc)
            record["at"] = time.monotonic()
            with self.lock:
                self.records.append(record)
            if record["phase"] == "connect" and not record["ok"]:
                time.sleep(0.02)  # nobody listening right now; do not spin

    def sent(self):
        with self.lock:
            return [r for r in self.records if r["ok"]]

    def failed(self):
        with self.lock:
            return [r for r in self.records if not r["ok"]]

    def wait_sent(self, count, pid=None, seconds=10):
        """Wait until ``count`` more messages (served by ``pid`` if given) were answered 250."""
        goal = len([r for r in self.sent() if pid is None or r["pid"] == pid]) + count
        assert wait_for(lambda: len([r for r in self.sent() if pid is None or r["pid"] == pid]) >= goal, seconds)


def assert_no_loss(maildir, load):
    """Every message answered 250 is in Maildir/new exactly once and complete; every file there is whole."""
    delivered = read_maildir(maildir)
    missing = [r["id"] for r in load.sent() if delivered.get(r["id"]) != 1]
    assert not missing, "answered 250 but not delivered exactly once: %s" % missing


def test_two_workers_serve_clients(daemon):
    """--workers 2: a master with two worker children, each of which greets clients and takes mail."""
    server = daemon()
    assert len(server.workers()) == 2
    held = one_session_per_worker(server)  # asserts that both workers, and only they, greeted someone
    for pid, sock in held.items():
        with sock:
            for command in (b"EHLO two.test", b"MAIL FROM:<a@b.test>"):
                sock.sendall(command + b"\r\n")
                assert read_reply(sock).code == 250
            assert send_rest(sock, "via-%d" % pid).code == 250


def test_kill_9_of_one_worker_under_load(daemon, tmp_path):
    """kill -9 of a worker under load: it is replaced, only its own clients fail, every 250 is delivered."""
    server = daemon()
    with Load(server.address) as load:
        load.wait_sent(20)
        open_on = one_session_per_worker(server)
        for sock in open_on.values():
            for command in (b"EHLO held.test", b"MAIL FROM:<a@b.test>"):
                sock.sendall(command + b"\r\n")
                assert read_reply(sock).code == 250
        victim, survivor = sorted(open_on)
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(ConnectionError):
            read_reply(open_on[victim])
        assert send_rest(open_on[survivor], "held-by-survivor").code == 250  # its session never noticed
        assert wait_for(lambda: len(server.serving() - {victim, survivor}) == 1)
        replacement = (server.serving() - {survivor}).pop()
        load.wait_sent(5, pid=replacement)
        load.wait_sent(5, pid=survivor)
    for sock in open_on.values():
        sock.close()
    failed = load.failed()
    assert all(r["pid"] in (victim, None) for r in failed), failed
    assert all(r["at"] >= killed_at for r in failed), failed
    assert re.search(r"worker %d died .*\(killed by SIGKILL\); replacing it" % victim, server.log)
    assert_no_loss(tmp_path / "Maildir", load)
    assert read_maildir(tmp_path / "Maildir").get("held-by-survivor") == 1


def one_session_per_worker(server):
    """{worker pid: greeted socket}, one for each worker; the spare connections are closed."""
    held, spare = {}, []
    deadline = time.monotonic() + 10
    while len(held) < len(server.workers()) and time.monotonic() < deadline:
        sock, pid, _ = greet(server.address)
        if pid in held:
            spare.append(sock)
        else:
            held[pid] = sock
    for sock in spare:
        sock.close()
    assert set(held) == server.workers()
    return held


def send_rest(sock, ident):
    """RCPT, DATA and the message on a session that has sent MAIL; the reply to the final dot."""
    sock.sendall(b"RCPT TO:<u@example.com>\r\n")
    assert read_reply(sock).code == 250
    sock.sendall(b"DATA\r\n")
    assert read_reply(sock).code == 354
    sock.sendall(message_for(ident).encode() + b".\r\n")
    return read_reply(sock)


def test_kill_9_of_the_whole_server_under_load(daemon, tmp_path):
    """kill -9 of the master and all workers at once: every 250 is delivered, nothing half-written in new/."""
    server = daemon()
    with Load(server.address) as load:
        load.wait_sent(30)
        server.kill_group()
        load.stop()
    assert len(load.sent()) >= 30
    assert_no_loss(tmp_path / "Maildir", load)


def test_sighup_under_load_replaces_workers_without_dropping_a_session(daemon, tmp_path):
    """SIGHUP: new workers load the new plugins, the old drain; no client fails and nothing is lost."""
    server = daemon()
    old = server.serving()
    with Load(server.address) as load:
        load.wait_sent(20)
        (tmp_path / "config" / "plugins").write_text(
            "worker_pid v2\nrcpt_ok\nqueue/maildir %s\n" % (tmp_path / "Maildir"))
        server.signal(signal.SIGHUP)
        assert wait_for(lambda: len(server.serving() - old) == 2 and not server.workers() & old), server.log
        new = server.workers()
        load.wait_sent(10)
        for _ in range(5):
            sock, pid, label = greet(server.address)
            sock.close()
            assert pid in new and label == "v2"
    assert load.failed() == []
    assert {r["config"] for r in load.sent() if r["pid"] in old} == {"v1"}
    assert {r["config"] for r in load.sent() if r["pid"] in new} == {"v2"}
    assert_no_loss(tmp_path / "Maildir", load)


def test_sighup_with_a_broken_config_keeps_the_old_workers(daemon, tmp_path):
    """A config that does not load is refused on SIGHUP with file:line; the same workers go on serving."""
    server = daemon()
    workers = server.serving()
    plugins = tmp_path / "config" / "plugins"
    plugins.write_text("worker_pid v2\nno_such_plugin\n")
    server.signal(signal.SIGHUP)
    assert wait_for(lambda: "reload refused" in server.log)
    assert "%s:2:" % plugins in server.log
    with smtplib.SMTP(*server.address, timeout=10) as client:
        assert client.sendmail("a@b.test", ["u@example.com"], message_for("after-hup")) == {}
    sock, pid, label = greet(server.address)
    sock.close()
    assert (pid in workers, label) == (True, "v1")
    assert server.workers() == workers


def test_sighup_whose_workers_cannot_boot_is_abandoned(daemon, tmp_path):
    """A config the master loads but whose workers die at boot: the reload is abandoned, the old workers serve."""
    server = daemon(env={"QP_TEST_CRASH": "1"})
    workers = server.serving()
    (tmp_path / "config" / "plugins").write_text("crash_in_worker\nworker_pid v2\nrcpt_ok\n")
    server.signal(signal.SIGHUP)
    assert wait_for(lambda: "reload abandoned" in server.log), server.log
    assert "configuration reloaded" in server.log  # the master itself found nothing wrong
    sock, pid, label = greet(server.address)
    sock.close()
    assert (pid in workers, label) == (True, "v1")
    assert wait_for(lambda: server.workers() == workers)  # the last new worker is gone too
    assert server.process.poll() is None


def test_sigterm_under_load_finishes_every_data_in_flight(daemon, tmp_path):
    """SIGTERM: listeners close, a client mid-DATA still gets its 250, the master exits 0, the pid file goes."""
    pid_file = tmp_path / "qp.pid"
    server = daemon(args=["--workers", "2", "--pid-file", str(pid_file), "--graceful-timeout", "20"])
    assert wait_for(lambda: pid_file.exists() and pid_file.read_text() == "%d\n" % server.pid)
    message = message_for("mid-data").encode()
    with socket.create_connection(server.address, timeout=10) as sock, Load(server.address) as load:
        read_reply(sock)
        for command in (b"EHLO mid.test", b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>", b"DATA"):
            sock.sendall(command + b"\r\n")
            assert read_reply(sock).code in (250, 354)
        sock.sendall(message[:len(message) // 2])
        load.wait_sent(10)
        server.signal(signal.SIGTERM)
        assert wait_for(lambda: not _connects(server.address)), "still accepting after SIGTERM"
        sock.sendall(message[len(message) // 2:] + b".\r\n")
        reply = read_reply(sock)
        assert (reply.code, reply.status) == (250, "2.0.0"), reply
        sock.sendall(b"QUIT\r\n")
        assert read_reply(sock).code == 221
        assert server.wait(10) == 0
        load.stop()
    assert not pid_file.exists()
    assert [r for r in load.failed() if r["phase"] != "connect"] == []
    assert_no_loss(tmp_path / "Maildir", load)
    assert read_maildir(tmp_path / "Maildir").get("mid-data") == 1


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sessions_outliving_the_graceful_timeout_are_told_421(daemon, workers):
    """SIGTERM with --graceful-timeout 1: an idle session gets 421 4.3.2 after about a second; exit 0."""
    server = daemon(args=["--workers", workers, "--graceful-timeout", "1"], workers=int(workers))
    sock, _, _ = greet(server.address)
    with sock:
        sock.sendall(b"EHLO idle.test\r\n")
        assert read_reply(sock).code == 250
        server.signal(signal.SIGTERM)
        started = time.monotonic()
        reply = read_reply(sock)
        assert (reply.code, reply.status) == (421, "4.3.2")
        assert "shutting down" in reply.text
        assert 0.8 < time.monotonic() - started < 5
    assert server.wait(10) == 0


def test_sigusr1_reopens_logs_in_the_master_and_every_worker(daemon, tmp_path):
    """SIGUSR1 to the master: it reopens its own log files and forwards the signal to each worker."""
    marks = tmp_path / "marks"
    marks.mkdir()
    server = daemon(config={"plugins": ["worker_pid v1", "reopen_marker", "rcpt_ok"]},
                    env={"QP_TEST_MARKS": str(marks)})
    workers = server.serving()
    server.signal(signal.SIGUSR1)
    expected = {str(pid) for pid in workers | {server.pid}}
    assert wait_for(lambda: {path.name for path in marks.iterdir()} == expected)
    assert server.workers() == workers  # nobody died of the signal


def _connects(address):
    try:
        socket.create_connection(address, timeout=1).close()
        return True
    except OSError:
        return False


def test_silent_worker_is_killed_and_replaced(daemon):
    """A worker whose event loop stops (no heartbeat for --heartbeat-timeout) is SIGKILLed and replaced."""
    server = daemon(args=["--workers", "2", "--heartbeat-timeout", "1.5"],
                    config={"plugins": ["worker_pid v1", "freeze", "rcpt_ok"]})
    sock, frozen, _ = greet(server.address)
    with sock:
        sock.sendall(b"FREEZE\r\n")
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            read_reply(sock)  # no answer: the worker is killed under it
        assert time.monotonic() - started < 8
    assert "worker %d silent for" % frozen in server.log
    assert wait_for(lambda: len(server.serving()) == 2 and frozen not in server.workers())


def test_crash_loop_at_boot_stops_the_master(daemon):
    """Workers that die while loading plugins are retried with backoff, then the master exits 70 saying why."""
    server = daemon(config={"plugins": ["crash_in_worker", "rcpt_ok"]}, env={"QP_TEST_CRASH": "1"}, start=False)
    started = time.monotonic()
    result = server.run()
    assert result.returncode == EXIT_CRASH_LOOP == 70, result.stderr
    assert "workers keep dying at boot" in result.stderr
    assert "exit status 7" in result.stderr
    assert "replacing it in 0.1s" in result.stderr and "replacing it in 0.2s" in result.stderr  # backing off
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 15


def test_detached_master_owns_the_pid_file(daemon, tmp_path):
    """-d --workers 2 --pid-file: the command returns, the pid file names the master of two serving workers."""
    pid_file = tmp_path / "qp.pid"
    server = daemon(args=["--workers", "2", "-d", "--pid-file", str(pid_file)], start=False)
    result = server.run()
    assert result.returncode == 0, result.stderr
    assert wait_for(lambda: pid_file.exists() and pid_file.read_text().endswith("\n"))
    master = int(pid_file.read_text())
    group = os.getpgid(master)
    try:
        assert wait_for(lambda: len(children(master)) == 2)
        sock, pid, _ = greet(server.address)
        sock.close()
        assert pid in children(master)
        os.kill(master, signal.SIGTERM)
        assert wait_for(lambda: not pid_file.exists() and not alive(master))
    finally:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="auto is a single process on one core")
def test_workers_auto_starts_one_worker_per_core(daemon):
    """--workers auto forks one worker for each core this process may run on."""
    server = daemon(args=["--workers", "auto"], workers=len(os.sched_getaffinity(0)))
    assert len(server.workers()) == len(os.sched_getaffinity(0))


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_user_option_runs_master_and_workers_as_that_user(nobody_config):
    """As root, -u nobody --workers 2: the master binds, then it and both workers run as nobody and serve."""
    nobody = pwd.getpwnam("nobody")
    base, config, mail = nobody_config
    with LiveServer(config, args=["-u", "nobody", "--workers", "2"], cwd=base) as server:
        def uids():
            pids = [server.process.pid, *children(server.process.pid)]
            return [uid_of(pid) for pid in pids]
        assert wait_for(lambda: uids() == [nobody.pw_uid] * 3), uids()
        with smtplib.SMTP(*server.address, timeout=10) as client:
            assert client.sendmail("a@b.test", ["u@example.com"], "Subject: x\r\n\r\nbody\r\n") == {}
        assert len(list((mail / "new").iterdir())) == 1


def uid_of(pid):
    """The real uid of a process, or None once it is gone."""
    try:
        status = Path("/proc/%d/status" % pid).read_text()
    except OSError:
        return None
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


def test_bad_worker_options_are_refused(tmp_path):
    """--workers 0 and --heartbeat-timeout 0 are refused at once with a usage error."""
    for args in (["--workers", "0"], ["--workers", "many"], ["--heartbeat-timeout", "0"]):
        result = subprocess.run(SERVER + args, capture_output=True, text=True, timeout=20)
        assert result.returncode == 2 and args[0] in result.stderr, result.stderr


def test_check_config_lists_hooks_in_run_order(tmp_path):
    """--check-config prints each hook with its plugins in the order they run, and exits 0."""
    plugins = ["relay only 1", "rcpt_ok", "queue/maildir %s" % (tmp_path / "M")]
    config = write_config(tmp_path / "config", {"me": "mx.test", "relayclients": "127.0.0.1", "plugins": plugins})
    result = subprocess.run(SERVER + ["--config-dir", str(config), "--check-config"], capture_output=True, text=True,
                            timeout=20)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "connect: relay" in lines
    assert "rcpt: relay, rcpt_ok" in lines
    assert "queue: queue/maildir" in lines
    assert lines.index("connect: relay") < lines.index("rcpt: relay, rcpt_ok") < lines.index("queue: queue/maildir")


def test_check_config_reports_file_line_and_reason(tmp_path):
    """--check-config on a broken plugins file exits non-zero with file:line and the fix, no traceback."""
    config = write_config(tmp_path / "config", {"me": "mx.test", "plugins": ["rcpt_ok", "# comment", "quue/maildir"]})
    result = subprocess.run(SERVER + ["--config-dir", str(config), "--check-config"], capture_output=True, text=True,
                            timeout=20)
    assert result.returncode == 78
    assert "%s:3:" % (config / "plugins") in result.stderr
    assert "did you mean 'queue/maildir'" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
