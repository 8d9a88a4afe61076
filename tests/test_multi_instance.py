"""Several instances, one view of the world: real HAProxy (PROXY v2, SMTP health check) in front of two
qpgevent instances that share one redis-server (docs/deploy.md describes the same files).

Clients connect to HAProxy from 127.0.0.x source addresses; HAProxy connects to the instances from
127.0.0.1, the one address in their ``proxy_hosts``.  Each instance has its own maildir.
"""
import os
import re
import signal
import smtplib
import threading
import time
import urllib.request
from email import message_from_bytes

import pytest

from daemons.haproxy import HAProxy
from qpgevent.state import RETRY_AFTER, TIMEOUT, open_store
from qpgevent.testing import LiveServer, RedisServer, free_port, wait_for, write_config

INSTANCES = ("a", "b")
LOAD_IP = "127.0.0.50"  # in greylist_exclude: the load tests are about delivery, not greylisting
DEFERRED = (450, b"4.7.1 This mail is temporarily denied")
PLUGINS = ["karma reject 1", "greylisting black_timeout 60", "rcpt_ok", "queue/maildir {maildir}"]


class Cluster:
    """One redis-server, the instances (LiveServer each), HAProxy in front of them."""

    def __init__(self, base):
        self.base = base
        self.redis = RedisServer(base / "redis")
        self.instances, self.metrics_ports = {}, {}
        self.haproxy = None

    def start(self):
        base = self.base
        self.redis.start()
        (base / "greylist_exclude").write_text(LOAD_IP + "\n")
        for name in INSTANCES:
            config = write_config(base / name / "config", {
                "me": "mx-%s.test" % name, "rcpthosts": "example.test", "loglevel": "6",
                "storage": self.redis.url, "proxy_hosts": "127.0.0.1",
                "spool_dir": str(base / name / "spool"), "greylist_exclude_files": "../greylist_exclude",
                "plugins": [line.format(maildir=self.maildir(name)) for line in PLUGINS]})
            self.metrics_ports[name] = free_port()
            self.instances[name] = LiveServer(config, cwd=base / name,
                                              args=["--metrics", "127.0.0.1:%d" % self.metrics_ports[name]]).start()
        self.haproxy = HAProxy(base / "haproxy", {n: s.address for n, s in self.instances.items()}).start()
        self.store = open_store(self.redis.url)
        return self

    def maildir(self, name):
        return self.base / name / "Maildir"

    def stored(self):
        """Every message in every instance's maildir, parsed, with the instance's name."""
        return [(name, message_from_bytes(path.read_bytes()))
                for name in INSTANCES for path in sorted((self.maildir(name) / "new").glob("*"))]

    def unavailable(self, plugin):
        """Every instance's ``qpgevent_state_unavailable_total`` for ``plugin``, added up."""
        total = 0.0
        for port in self.metrics_ports.values():
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as response:
                found = re.search(r'^qpgevent_state_unavailable_total\{plugin="%s"\} (\S+)$' % plugin,
                                  response.read().decode(), re.M)
            total += float(found.group(1)) if found else 0.0
        return total

    def restart(self, name):
        self.instances[name].stop()
        self.instances[name].start()

    def stop(self):
        if self.haproxy is not None:
            self.haproxy.stop()
        for server in self.instances.values():
            server.stop()
        self.redis.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        for name in INSTANCES:
            assert cluster.haproxy.wait_status(name, "UP"), cluster.haproxy.stats()
        yield cluster
    finally:
        cluster.stop()


def send(cluster, ip, frontend="mx", subject="hi", sender="a@sender.test"):
    """One session through HAProxy from ``ip``: smtplib's sendmail result (raises on a refusal)."""
    with smtplib.SMTP(*cluster.haproxy.address(frontend), timeout=15, local_hostname="client.test",
                      source_address=(ip, 0)) as client:
        return client.sendmail(sender, ["u@example.test"], "Subject: %s\r\n\r\nhello\r\n" % subject)


def backdate_triplet(cluster, ip, seconds=3600):
    """Move a triplet's first try back in time, as if the client had waited past black_timeout."""
    key = "greylisting:" + ip
    first, rest = cluster.store.get(key).split(":", 1)
    cluster.store.set(key, "%d:%s" % (int(first) - seconds, rest), 600)


def test_the_client_address_reaches_every_plugin_through_proxy_v2(cluster):
    for name, ip in (("a", "127.0.0.11"), ("b", "127.0.0.12")):
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            send(cluster, ip, frontend=name, subject="proxied " + ip)
        assert (refused.value.smtp_code, refused.value.smtp_error) == DEFERRED
        assert cluster.store.get("greylisting:" + ip)  # greylisting saw the client, not HAProxy
        backdate_triplet(cluster, ip)
        assert send(cluster, ip, frontend=name, subject="proxied " + ip) == {}
        [(where, message)] = [(n, m) for n, m in cluster.stored() if m["Subject"] == "proxied " + ip]
        assert where == name
        assert set(re.findall(r"\d+\.\d+\.\d+\.\d+", message["Received"])) == {ip}, message["Received"]
        log = cluster.instances[name].log
        assert re.search(r"session end: client=\S*\[%s\]:\d+ helo=client.test .* messages=1/1" % re.escape(ip), log)
        assert "greylisting:127.0.0.1" not in [k for k, _ in cluster.store.scan("greylisting:")]


def test_a_triplet_deferred_through_one_instance_passes_on_retry_through_another(cluster):
    ip = "127.0.0.21"
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        send(cluster, ip, frontend="a", subject="retried")
    assert (refused.value.smtp_code, refused.value.smtp_error) == DEFERRED
    with pytest.raises(smtplib.SMTPSenderRefused):
        send(cluster, ip, frontend="b", subject="retried")  # too soon, and b knows it
    assert "fail: black DENYSOFT - 1 deferred connections" in cluster.instances["b"].log
    backdate_triplet(cluster, ip)
    assert send(cluster, ip, frontend="b", subject="retried") == {}
    assert [n for n, m in cluster.stored() if m["Subject"] == "retried"] == ["b"]


def test_a_karma_penalty_earned_on_one_instance_is_enforced_on_another(cluster):
    ip = "127.0.0.31"
    with smtplib.SMTP(*cluster.haproxy.address("a"), timeout=15, source_address=(ip, 0)) as client:
        client.ehlo("naughty.test")
        for _ in range(2):  # a space after the colon: -2 karma each (refused by greylisting too)
            assert client.docmd("MAIL FROM: <a@sender.test>")[0] == 450
    assert wait_for(lambda: (cluster.store.get("karma:" + ip) or "0:").split(":")[1] == "1", 5)
    assert "negative, sent to penalty box" in cluster.instances["a"].log
    with smtplib.SMTP(timeout=15, source_address=(ip, 0)) as client:
        code, text = client.connect(*cluster.haproxy.address("b"))
    assert code // 100 == 5 and b"You were naughty" in text, (code, text)
    with smtplib.SMTP(*cluster.haproxy.address("b"), timeout=15, source_address=("127.0.0.32", 0)) as client:
        assert client.ehlo()[0] == 250  # the penalty is that client's alone


class Load:
    """``threads`` clients, each sending its share of ``count`` messages through HAProxy, a few per session,
    retrying a message whose session failed until ``deadline``; ``accepted`` holds every subject that got 250."""

    def __init__(self, cluster, count=200, threads=4, per_session=10, prefix="load", ip=LOAD_IP, deadline=30.0):
        self.cluster, self.count, self.per_session, self.prefix, self.ip = cluster, count, per_session, prefix, ip
        self.deadline = time.monotonic() + deadline
        self.accepted, self.failures = set(), []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(range(i, count, threads),)) for i in range(threads)]

    def start(self):
        for thread in self.threads:
            thread.start()
        return self

    def join(self):
        for thread in self.threads:
            thread.join(max(self.deadline - time.monotonic(), 0) + 5)
        assert not any(t.is_alive() for t in self.threads), "load threads still running"

    def _run(self, numbers):
        pending = list(numbers)
        while pending and time.monotonic() < self.deadline:
            try:
                with smtplib.SMTP(*self.cluster.haproxy.address(), timeout=10, source_address=(self.ip, 0)) as client:
                    for _ in range(min(self.per_session, len(pending))):
                        subject = "%s %d" % (self.prefix, pending[0])
                        client.sendmail("a@sender.test", ["u@example.test"], "Subject: %s\r\n\r\nhi\r\n" % subject)
                        with self.lock:
                            self.accepted.add(subject)
                        pending.pop(0)
            except (OSError, smtplib.SMTPException) as exc:
                with self.lock:
                    self.failures.append(repr(exc))  # the message in hand is tried again in a new session
                time.sleep(0.05)


def test_killing_an_instance_mid_load_loses_no_accepted_message(cluster):
    haproxy, victim = cluster.haproxy, cluster.instances["a"]
    load = Load(cluster).start()
    assert wait_for(lambda: len(load.accepted) >= 60, 20)
    victim.process.kill()  # SIGKILL: no goodbye to its clients
    at_kill = len(load.accepted)
    load.join()
    assert at_kill < load.count  # it died mid-load
    stored = {m["Subject"] for _, m in cluster.stored()}
    assert load.accepted <= stored, sorted(load.accepted - stored)
    assert len(load.accepted) == load.count, load.failures  # the clients retried what failed
    # The health check takes it out: every session now succeeds, on b.
    assert haproxy.wait_status("a", "DOWN"), haproxy.stats()[("mx", "a")]
    after = Load(cluster, count=10, threads=1, per_session=1, prefix="while down").start()
    after.join()
    assert (len(after.accepted), after.failures) == (10, [])
    assert {n for n, m in cluster.stored() if m["Subject"].startswith("while down")} == {"b"}
    # ... and back in once it answers again: round robin gives it sessions.
    cluster.restart("a")
    assert haproxy.wait_status("a", "UP"), haproxy.stats()[("mx", "a")]
    again = Load(cluster, count=6, threads=1, per_session=1, prefix="back up").start()
    again.join()
    assert (len(again.accepted), again.failures) == (6, [])
    assert {n for n, m in cluster.stored() if m["Subject"].startswith("back up")} == {"a", "b"}


def test_redis_down_greylisting_and_karma_fail_open_and_mail_flows(cluster):
    """Sessions from new clients (each would be greylisted) run while redis-server is stopped under them;
    each plugin's fail-open is logged and counted (``--metrics``)."""
    results, lock = [], threading.Lock()
    stopped = threading.Event()
    deadline = time.monotonic() + 20

    def client(first):
        for n in range(first, 1000, 4):
            if time.monotonic() > deadline or len([r for r in results if r[0]]) >= 12:
                return
            was_stopped, started = stopped.is_set(), time.monotonic()
            try:
                outcome = send(cluster, "127.1.%d.%d" % (n // 250, n % 250 + 1), subject="redis down %d" % n)
            except smtplib.SMTPSenderRefused as exc:
                outcome = (exc.smtp_code, exc.smtp_error)
            except (OSError, smtplib.SMTPException) as exc:
                outcome = repr(exc)
            with lock:
                results.append((was_stopped, time.monotonic() - started, outcome))
            time.sleep(0.05)  # a small load

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        assert wait_for(lambda: len(results) >= 4, 10)
        cluster.redis.stop()
        stopped.set()
        for thread in threads:
            thread.join(30)
        assert not any(t.is_alive() for t in threads)
        before = [outcome for was_stopped, _, outcome in results if not was_stopped]
        after = [outcome for was_stopped, _, outcome in results if was_stopped]
        assert before and all(o in (DEFERRED, {}) for o in before), before  # deferred, or fail-open at the stop
        assert len(after) >= 12 and all(o == {} for o in after), after  # every new client's mail is taken
        assert max(seconds for _, seconds, _ in results) < 3 * TIMEOUT + 2  # nothing waits past its bound
        logs = "".join(server.log for server in cluster.instances.values())
        assert "UNABLE TO OBTAIN GREYLIST RESULT: state store redis://" in logs
        assert "skip, karma not checked" in logs
        assert cluster.unavailable("greylisting") >= len(after) and cluster.unavailable("karma") >= len(after)
        assert {h: cluster.haproxy.status(h) for h in INSTANCES} == {"a": "UP", "b": "UP"}
    finally:
        stopped.set()
        cluster.redis.start()
    # Redis back: the plugins use it again, with no restart, once RETRY_AFTER has passed.
    assert wait_for(lambda: deferred(cluster, "127.0.0.250"), RETRY_AFTER + 3, step=0.5)


def deferred(cluster, ip):
    """Whether a client from ``ip`` is greylisted (the instances can read and write the store)."""
    try:
        send(cluster, ip)
    except smtplib.SMTPSenderRefused as exc:
        return (exc.smtp_code, exc.smtp_error) == DEFERRED
    return False


def test_a_hung_redis_costs_one_timeout_not_every_session_nor_the_health_checks(cluster):
    """redis-server paused (SIGSTOP: connections accepted, nothing answered): mail flows, instances stay UP."""
    for name in INSTANCES:  # wait out the pause of the test before, if any
        assert wait_for(lambda: cluster.haproxy.status(name) == "UP", 5)
    os.kill(cluster.redis.process.pid, signal.SIGSTOP)
    try:
        seconds, statuses, deadline = [], set(), time.monotonic() + 4
        while time.monotonic() < deadline:
            started = time.monotonic()
            assert send(cluster, "127.0.0.%d" % (200 + len(seconds)), subject="hung redis") == {}
            seconds.append(time.monotonic() - started)
            statuses.update(cluster.haproxy.status(name) for name in INSTANCES)
        # Never out of service: a check that began before the first timeout marked the store down may wait
        # that timeout and fail once ("UP 1/2"; fall 2), but not two in a row, as every later one is quick.
        assert all(status.startswith("UP") for status in statuses), statuses
        assert sum(1 for s in seconds if s > TIMEOUT / 2) <= 2 * len(INSTANCES), seconds  # one wait per instance
        assert max(seconds) < 3 * TIMEOUT + 1, seconds
        assert "not asked again" in "".join(server.log for server in cluster.instances.values())
    finally:
        os.kill(cluster.redis.process.pid, signal.SIGCONT)
