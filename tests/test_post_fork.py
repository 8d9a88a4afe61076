"""The post-fork hook: once in every process that serves, after its plugins load, before its first client."""
import os
import re
import signal
import smtplib

import pytest

from qpgevent.testing import wait_for

pytestmark = pytest.mark.timeout(60)

RECORD_PID = '''"""record_pid (tests): post-fork writes this process's pid to a file; the argument 'fail' makes it raise."""
import os

from qpgevent import OK


def register(self, qp, path, mode="ok"):
    self.path, self.mode = path, mode


def hook_post_fork(self, transaction):
    with open(self.path, "a") as handle:
        handle.write("%d %s\\n" % (os.getpid(), transaction))
    if self.mode == "fail":
        raise RuntimeError("no database today")
    return OK
'''


@pytest.fixture
def recording(live_server, tmp_path):
    """``recording(*args, mode="ok")`` -> (server, path of the pid file) with record_pid loaded."""
    path = tmp_path / "post-fork.pids"

    def start(*args, mode="ok"):
        server = live_server(plugins=["record_pid %s %s" % (path, mode), "rcpt_ok",
                                      "queue/maildir %s" % (tmp_path / "Maildir")],
                             plugin_files={"record_pid.py": RECORD_PID}, args=list(args))
        return server, path
    return start


def recorded(path):
    """Pids the hook wrote, with the transaction it was given."""
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def test_runs_once_in_the_single_process(recording):
    """Without --workers the serving process itself runs the hook once, with no transaction."""
    server, path = recording()
    assert recorded(path) == [[str(server.process.pid), "None"]]


def test_runs_in_every_worker_not_in_the_master(recording):
    """With --workers 2 each worker runs it (two pids, neither the master's); a replacement worker runs it too."""
    server, path = recording("--workers", "2")
    assert wait_for(lambda: len(recorded(path)) == 2), server.log
    pids = {int(pid) for pid, _ in recorded(path)}
    assert len(pids) == 2 and server.process.pid not in pids
    os.kill(min(pids), signal.SIGKILL)
    assert wait_for(lambda: len(recorded(path)) == 3, 20), server.log
    assert int(recorded(path)[-1][0]) not in pids | {server.process.pid}


def test_a_reload_runs_the_new_plugins_hook(recording):
    """SIGHUP in the single process loads the plugins again and runs their post-fork."""
    server, path = recording()
    server.process.send_signal(signal.SIGHUP)
    assert wait_for(lambda: len(recorded(path)) == 2), server.log
    assert {pid for pid, _ in recorded(path)} == {str(server.process.pid)}


def test_a_failing_hook_is_logged_and_the_process_serves_on(recording, tmp_path):
    """A post-fork that raises is a logged plugin failure; mail is still received."""
    server, path = recording(mode="fail")
    assert recorded(path)
    assert re.search(r"FATAL PLUGIN ERROR \[record_pid\] in hook post-fork: raised an exception", server.log)
    with smtplib.SMTP(*server.address, timeout=10) as client:
        assert client.sendmail("a@sender.test", ["u@example.com"], "Subject: x\r\n\r\nbody\r\n") == {}
    assert len(list((tmp_path / "Maildir" / "new").iterdir())) == 1
