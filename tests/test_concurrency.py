"""The cooperative promise: a plugin that blocks holds up only its own session.

Plugins here block the plain way (``time.sleep``, ``subprocess.run``); the
server runs them under gevent's monkey-patching, so many sessions wait at once
and the whole batch takes about as long as one session.
"""
import smtplib
import time
from concurrent.futures import ThreadPoolExecutor

SLEEPY_RCPT = '''"""sleepy_rcpt: take a second over every recipient, the blocking way."""
import time

from qpgevent import DECLINED


def hook_rcpt(self, transaction, recipient, **params):
    time.sleep(1)
    return DECLINED
'''

SLOW_QUIT = '''"""slow_quit: run a one-second program at QUIT."""
import subprocess

from qpgevent import DECLINED


def hook_quit(self, transaction):
    subprocess.run(["sleep", "1"], check=True)
    return DECLINED
'''


def start_with_plugin(live_server, tmp_path, name, source, plugins):
    """A live server whose config lists ``plugins``, with plugin ``name`` in a plugin_dirs directory."""
    directory = tmp_path / "test_plugins"
    directory.mkdir()
    (directory / (name + ".py")).write_text(source)
    # plugin_dirs lines are relative to the parent of the config directory, here tmp_path.
    # -c: room for every client at once, whatever the default connection limit.
    return live_server(plugins=plugins, config={"plugin_dirs": "test_plugins"}, args=["-c", "500"])


def run_clients(count, session):
    """Run ``session(i)`` for i in range(count), all at once; (results, wall time)."""
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(session, range(count)))
    return results, time.monotonic() - started


def test_hundred_sessions_sleeping_in_rcpt_run_concurrently(live_server, tmp_path):
    """100 clients whose RCPT takes a blocking time.sleep(1) all deliver in far less than the 100 s of one after another."""
    server = start_with_plugin(live_server, tmp_path, "sleepy_rcpt", SLEEPY_RCPT,
                               ["sleepy_rcpt", "rcpt_ok", "queue/maildir %s" % (tmp_path / "Maildir")])

    def session(i):
        with smtplib.SMTP(*server.address, timeout=30) as client:
            client.ehlo("client%d.test" % i)
            client.mail("a%d@sender.test" % i)
            started = time.monotonic()
            rcpt = client.rcpt("u%d@example.com" % i)
            waited = time.monotonic() - started
            data = client.data("Subject: %d\r\n\r\nhello\r\n" % i)
        return rcpt[0], waited, data[0]

    results, elapsed = run_clients(100, session)
    assert [(rcpt, data) for rcpt, _, data in results] == [(250, 250)] * 100
    assert min(waited for _, waited, _ in results) >= 0.9  # every RCPT really slept
    # One after another they would take 100 s; the margin is for a loaded 2-core machine.
    assert elapsed < 40, "100 one-second RCPTs took %.1f s: sessions are not concurrent" % elapsed
    assert len(list((tmp_path / "Maildir" / "new").iterdir())) == 100


def test_forty_sessions_running_a_subprocess_at_quit_run_concurrently(live_server, tmp_path):
    """40 clients whose QUIT runs a one-second program (subprocess.run) all get 221 in far less than 40 s."""
    server = start_with_plugin(live_server, tmp_path, "slow_quit", SLOW_QUIT, ["slow_quit", "rcpt_ok"])

    def session(i):
        client = smtplib.SMTP(*server.address, timeout=30)
        try:
            client.ehlo("client%d.test" % i)
            started = time.monotonic()
            code, _ = client.docmd("QUIT")
            return code, time.monotonic() - started
        finally:
            client.close()

    results, elapsed = run_clients(40, session)
    assert [code for code, _ in results] == [221] * 40
    assert min(waited for _, waited in results) >= 0.9  # every QUIT really ran the program
    # One after another they would take 40 s.
    assert elapsed < 20, "40 one-second QUITs took %.1f s: sessions are not concurrent" % elapsed
