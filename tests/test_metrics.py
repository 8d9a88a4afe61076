"""--metrics ADDR:PORT: Prometheus metrics over HTTP, counted by real sessions, added up across workers.

Every test runs bin/qpsmtpd-server, talks SMTP to it over loopback and reads
``/metrics`` with urllib, comparing a scrape taken before the traffic with one
taken after (the server's own start-up probe is one connection too).  A small
test plugin greets with the worker's pid and whether prometheus_client is
loaded in it, answers one recipient itself (DONE), and stalls past the
plugin timeout for messages that ask it to.
"""
import base64
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from qpgevent.testing import ROOT, free_port, read_reply, wait_for

pytestmark = pytest.mark.timeout(60)

PLUGIN = '''"""probe (tests): report the worker and its modules, answer one recipient itself, stall on request."""
import os
import sys
import time

from qpgevent import DECLINED, DONE


def hook_connect(self, transaction):
    self.qp.respond(220, "%s ESMTP pid %d prometheus %s"
                    % (self.qp.me, os.getpid(), "prometheus_client" in sys.modules))
    return DONE


def hook_rcpt(self, transaction, recipient, **params):
    if recipient.user == "self-answer":
        self.qp.respond(554, "5.7.1 answered by the plugin itself")
        return DONE
    return DECLINED


def hook_data_post(self, transaction):
    if transaction.header.get("X-Stall"):
        time.sleep(10)  # gevent's sleep: the plugin timeout ends it
    return DECLINED
'''

MESSAGE = "Subject: metrics\r\n\r\nhello\r\n"
STORED_SIZE = len(MESSAGE.replace("\r\n", "\n"))  # the message as the server keeps it
PLUGIN_TIMEOUT = 0.3


@pytest.fixture
def metrics_server(live_server, tmp_path):
    """``metrics_server(args=[...], plugins=[...])`` -> a started LiveServer with ``.metrics_url`` (or None)."""
    plugin_dir = tmp_path / "test-plugins"
    plugin_dir.mkdir()
    (plugin_dir / "probe.py").write_text(PLUGIN)

    def start(args=(), plugins=(), config=None, metrics=True):
        port = free_port()
        values = {"plugin_dirs": [str(plugin_dir)], "plugin_timeout": str(PLUGIN_TIMEOUT), **(config or {})}
        server = live_server(plugins=["probe", *plugins, "rcpt_ok", "queue/maildir %s" % (tmp_path / "Maildir")],
                             config=values, args=[*args, *(["--metrics", "127.0.0.1:%d" % port] if metrics else [])])
        server.metrics_url = "http://127.0.0.1:%d/metrics" % port if metrics else None
        return server
    return start


class Scrape(dict):
    """One scrape: ``{(sample name, ((label, value), ...)): value}``."""

    def get(self, name, **labels):
        return super().get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(server):
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = Scrape()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def wait_idle(server):
    """The scrape after every session has ended (the server closes them a moment after QUIT)."""
    assert wait_for(lambda: scrape(server).get("qpgevent_connections_open") == 0)
    return scrape(server)


def send(address, recipients=("u@example.com",), headers="", message=MESSAGE):
    """One connection, one message: [(code, text) of each RCPT], (code, text) of the end of data or None."""
    with smtplib.SMTP(*address, timeout=10) as client:
        client.ehlo("client.test")
        client.mail("a@sender.test")
        answers = [client.rcpt(r) for r in recipients]
        end = client.data(headers + message) if any(code == 250 for code, _ in answers) else None
    return answers, end


def delta(before, after, name, **labels):
    return after.get(name, **labels) - before.get(name, **labels)


def test_counts_connections_messages_bytes_and_plugin_latency(metrics_server):
    """One message accepted, one recipient refused by rcpt_ok, one answered by a plugin itself, one
    message deferred by a plugin timeout and one refused by the core as too big show up with their
    outcome, code, stage and plugin; bytes, connections and the per-hook, per-plugin latency
    histogram add up."""
    server = metrics_server(config={"databytes": "200"})
    before = wait_idle(server)
    assert send(server.address)[1][0] == 250
    answers, end = send(server.address, ["u@other.test", "self-answer@example.com", "v@example.com"],
                        headers="X-Stall: yes\r\n")
    assert [code for code, _ in answers] == [550, 554, 250]
    assert end[0] == 451
    big = MESSAGE + "x" * 300 + "\r\n"
    assert send(server.address, message=big)[1][0] == 552
    after = wait_idle(server)

    assert delta(before, after, "qpgevent_connections_total") == 3
    messages = "qpgevent_messages_total"
    assert delta(before, after, messages, outcome="accepted", code="250", stage="queue", plugin="queue/maildir") == 1
    assert delta(before, after, messages, outcome="rejected", code="550", stage="rcpt", plugin="rcpt_ok") == 1
    assert delta(before, after, messages, outcome="rejected", code="554", stage="rcpt", plugin="probe") == 1
    assert delta(before, after, messages, outcome="deferred", code="451", stage="data_post", plugin="probe") == 1
    assert delta(before, after, messages, outcome="rejected", code="552", stage="data_post", plugin="core") == 1
    assert sum(v for (name, _), v in after.items() if name == messages) == 5  # the 250s to RCPT are not outcomes
    assert delta(before, after, "qpgevent_received_bytes_total") == \
        STORED_SIZE * 2 + len("X-Stall: yes\n") + len(big.replace("\r\n", "\n"))

    histogram = "qpgevent_plugin_seconds"
    assert delta(before, after, histogram + "_count", hook="rcpt", plugin="rcpt_ok") == 4  # probe answered one itself
    assert delta(before, after, histogram + "_count", hook="rcpt", plugin="probe") == 5
    assert delta(before, after, histogram + "_count", hook="data_post", plugin="probe") == 2  # not the big one
    assert delta(before, after, histogram + "_bucket", hook="data_post", plugin="probe", le="0.25") == 1
    assert delta(before, after, histogram + "_bucket", hook="data_post", plugin="probe", le="+Inf") == 2
    assert PLUGIN_TIMEOUT <= delta(before, after, histogram + "_sum", hook="data_post", plugin="probe") < 5
    assert after.get("qpgevent_connections_open") == 0


def test_connections_refused_by_limit_count_by_reason(metrics_server):
    """With -c 2 -m 1, a second session from one address is refused for max_from_ip, and once two
    sessions are open a third (from another loopback address) for limit_connections."""
    server = metrics_server(args=["-c", "2", "-m", "1"])
    before = wait_idle(server)
    held = []
    try:
        for ip, answer in (("127.0.0.1", 220), ("127.0.0.1", 421), ("127.0.0.2", 220), ("127.0.0.3", 421)):
            sock = socket.create_connection(server.address, timeout=5, source_address=(ip, 0))
            assert read_reply(sock).code == answer
            held.append(sock)
        assert scrape(server).get("qpgevent_connections_open") == 2
    finally:
        for sock in held:
            sock.close()
    after = wait_idle(server)
    refused = "qpgevent_connections_refused_total"
    assert delta(before, after, refused, reason="max_from_ip") == 1
    assert delta(before, after, refused, reason="limit_connections") == 1
    assert delta(before, after, "qpgevent_connections_total") == 4


def plain_credentials(user, password):
    return base64.b64encode(("\0%s\0%s" % (user, password)).encode()).decode()


def test_tls_sessions_and_auth_results(metrics_server, tmp_path):
    """Two STARTTLS handshakes count under their TLS version; a good and a wrong password count as
    one AUTH success and one failure."""
    subprocess.run([sys.executable, str(ROOT / "bin" / "qpsmtpd-tls-cert"), "--config-dir", str(tmp_path / "config"),
                    "--host", "127.0.0.1"], check=True, capture_output=True, timeout=30)
    context = ssl.create_default_context(cafile=str(tmp_path / "config" / "ssl" / "qpsmtpd-ca.crt"))
    server = metrics_server(plugins=["tls", "auth/auth_flat_file"],
                            config={"flat_auth_pw": "user@example.com:secret", "auth_failure_delay": "0",
                                    "plugin_timeout": "30"})
    before = wait_idle(server)
    versions = []
    for password in ("secret", "wrong"):
        with smtplib.SMTP(*server.address, timeout=10) as client:
            client.starttls(context=context)
            versions.append(client.sock.version())
            client.ehlo("client.test")
            code, _ = client.docmd("AUTH", "PLAIN " + plain_credentials("user@example.com", password))
            assert code == (235 if password == "secret" else 535)
    after = wait_idle(server)
    assert versions[0] == versions[1]
    assert delta(before, after, "qpgevent_tls_sessions_total", version=versions[0]) == 2
    assert delta(before, after, "qpgevent_auth_total", result="success") == 1
    assert delta(before, after, "qpgevent_auth_total", result="failure") == 1


def greet(address):
    """(socket, worker pid, greeting text) of a fresh, greeted connection."""
    sock = socket.create_connection(address, timeout=10)
    reply = read_reply(sock)
    assert reply.code == 220, reply
    return sock, int(re.search(r"pid (\d+)", reply.text).group(1)), reply.text


def one_session_per_worker(address, workers):
    """{pid: greeted socket} for ``workers`` distinct workers, and the extra sockets greeted meanwhile."""
    held, extra = {}, []
    deadline = time.monotonic() + 10
    while len(held) < workers and time.monotonic() < deadline:
        sock, pid, _ = greet(address)
        if pid in held:
            extra.append(sock)
        else:
            held[pid] = sock
    assert len(held) == workers, "only %d workers greeted" % len(held)
    return held, extra


def finish_message(sock, quit=True):
    """EHLO, MAIL, RCPT, DATA, the message (and QUIT) on a greeted socket; the code of the end of data."""
    for command in ("EHLO client.test", "MAIL FROM:<a@sender.test>", "RCPT TO:<u@example.com>"):
        sock.sendall(command.encode() + b"\r\n")
        assert read_reply(sock).code == 250, command
    sock.sendall(b"DATA\r\n")
    assert read_reply(sock).code == 354
    sock.sendall(MESSAGE.encode() + b".\r\n")
    code = read_reply(sock).code
    if quit:
        sock.sendall(b"QUIT\r\n")
        read_reply(sock)
        sock.close()
    return code


def test_two_workers_are_added_up(metrics_server):
    """--workers 2: ten messages on ten connections spread over both workers count as ten, once each,
    in one scrape served by the master."""
    server = metrics_server(args=["--workers", "2"])
    held, extra = one_session_per_worker(server.address, 2)
    sockets = [*held.values(), *extra]
    while len(sockets) < 10:
        sockets.append(greet(server.address)[0])
    assert wait_for(lambda: scrape(server).get("qpgevent_connections_open") == len(sockets))  # both workers
    before = scrape(server)
    assert [finish_message(sock) for sock in sockets] == [250] * len(sockets)
    after = wait_idle(server)
    assert delta(before, after, "qpgevent_messages_total", outcome="accepted", code="250", stage="queue",
                 plugin="queue/maildir") == len(sockets)
    assert delta(before, after, "qpgevent_received_bytes_total") == STORED_SIZE * len(sockets)
    assert delta(before, after, "qpgevent_plugin_seconds_count", hook="queue", plugin="queue/maildir") == len(sockets)
    assert after.get("qpgevent_connections_total") >= len(sockets)


def test_a_dead_workers_counts_stay_and_its_open_sessions_go(metrics_server):
    """kill -9 of a worker holding a session: the message it accepted stays counted, and its open
    session stops counting once the master has reaped it."""
    server = metrics_server(args=["--workers", "2"])
    held, extra = one_session_per_worker(server.address, 2)
    for sock in extra:
        sock.close()
    victim, survivor = sorted(held)
    assert finish_message(held[victim], quit=False) == 250
    accepted = dict(outcome="accepted", code="250", stage="queue", plugin="queue/maildir")
    assert wait_for(lambda: scrape(server).get("qpgevent_connections_open") == 2)
    assert scrape(server).get("qpgevent_messages_total", **accepted) == 1
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: scrape(server).get("qpgevent_connections_open") == 1)
    assert scrape(server).get("qpgevent_messages_total", **accepted) == 1
    for sock in held.values():
        sock.close()
    wait_idle(server)


def listening_ports(pid):
    """The TCP ports process ``pid`` listens on (from /proc: its socket inodes in LISTEN state)."""
    inodes = set()
    for fd in Path("/proc/%d/fd" % pid).iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads the server's sockets from /proc")
@pytest.mark.parametrize("workers", ["1", "2"])
def test_without_metrics_nothing_listens_and_prometheus_is_not_loaded(metrics_server, workers):
    """Without --metrics the server listens on its SMTP port alone and never imports prometheus_client;
    with it, the metrics port is open (in the master alone) and the workers have the library."""
    plain = metrics_server(args=["--workers", workers], metrics=False)
    sock, pid, greeting = greet(plain.address)
    with sock:
        assert "prometheus False" in greeting
        assert listening_ports(plain.process.pid) == {plain.port}
        assert listening_ports(pid) == {plain.port}  # the worker, or the single process again

    counted = metrics_server(args=["--workers", workers])
    metrics_port = int(counted.metrics_url.split(":")[2].split("/")[0])
    sock, pid, greeting = greet(counted.address)
    with sock:
        assert "prometheus True" in greeting
        assert listening_ports(counted.process.pid) == {counted.port, metrics_port}
        if workers == "2":
            assert listening_ports(pid) == {counted.port}  # a worker drops its copy of the metrics socket


def test_metrics_endpoint_answers_only_get_of_metrics(metrics_server):
    """GET / and /metrics give the exposition; another path is 404; HEAD has headers only."""
    server = metrics_server()
    root = server.metrics_url[:-len("metrics")]
    with urllib.request.urlopen(root, timeout=10) as response:
        assert b"qpgevent_connections_total" in response.read()
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(root + "nothing", timeout=10)
    assert missing.value.code == 404
    request = urllib.request.Request(server.metrics_url, method="HEAD")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200 and int(response.headers["Content-Length"]) > 0
        assert response.read() == b""


def run_server(tmp_path, *args):
    config = tmp_path / "config"
    config.mkdir(exist_ok=True)
    (config / "plugins").write_text("rcpt_ok\nqueue/maildir %s\n" % (tmp_path / "Maildir"))
    return subprocess.run([sys.executable, str(ROOT / "bin" / "qpsmtpd-server"), "--config-dir", str(config),
                           "-l", "127.0.0.1:%d" % free_port(), "-H", *args],
                          capture_output=True, text=True, timeout=20)


def test_bad_or_taken_metrics_address_stops_startup(tmp_path):
    """--metrics without a port is a usage error; a metrics port already taken stops the start-up
    with the address and the reason."""
    result = run_server(tmp_path, "--metrics", "127.0.0.1")
    assert result.returncode == 2 and "--metrics takes ADDR:PORT" in result.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_server(tmp_path, "--metrics", "127.0.0.1:%d" % port)
    assert result.returncode == 78
    assert "--metrics: cannot listen on 127.0.0.1 port %d: Address already in use" % port in result.stderr
