"""Shared fixtures: a daemon with its own config dir, in-memory sessions, live servers."""
from pathlib import Path

import pytest

from qpgevent.testing import LiveServer, RedisServer, TestSession, make_smtpd, write_config

ROOT = Path(__file__).resolve().parent.parent
# Plugins written for the tests (``dsn_queue`` declares DSN): name them with ``with_dsn``.
TEST_PLUGIN_DIR = ROOT / "tests" / "fixtures" / "plugins"


def with_dsn(config=None):
    """``config`` plus the test plugin dir, for a daemon that loads ``dsn_queue`` (DSN advertised)."""
    return dict(config or {}, plugin_dirs=str(TEST_PLUGIN_DIR))


@pytest.fixture
def smtpd_factory(tmp_path):
    """``smtpd_factory(plugins=[...], config={...})`` -> a loaded Smtpd with its own config dir."""
    def factory(plugins=(), config=None):
        return make_smtpd(tmp_path, plugins=plugins, config=config)
    return factory


@pytest.fixture
def session_factory(smtpd_factory):
    """``session_factory(plugins=[...], config={...}, remote_ip=...)`` -> a greeted TestSession."""
    def factory(plugins=(), config=None, **kwargs):
        return TestSession(smtpd_factory(plugins, config), **kwargs)
    return factory


@pytest.fixture
def live_server(tmp_path):
    """``live_server(plugins=[...], config={...}, args=[...])`` -> a started LiveServer; stopped after the test.

    ``plugin_files={"name.py": source}`` writes test plugins into a ``plugin_dirs`` directory of their own.
    """
    servers = []

    def factory(plugins=("rcpt_ok", "queue/maildir %s" % (tmp_path / "Maildir")), config=None, args=(), host="127.0.0.1",
                env=None, plugin_files=None):
        values = {"me": "mx.test", "rcpthosts": ["example.com"], "spool_dir": str(tmp_path / "spool"),
                  "plugins": list(plugins), "loglevel": "6"}
        if plugin_files:
            plugin_dir = tmp_path / "test-plugins"
            plugin_dir.mkdir(exist_ok=True)
            for name, source in plugin_files.items():
                (plugin_dir / name).write_text(source)
            values["plugin_dirs"] = str(plugin_dir)
        values.update(config or {})
        config_dir = write_config(tmp_path / "config", values)
        server = LiveServer(config_dir, args=args, host=host, env=env, cwd=tmp_path).start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def nobody_config():
    """A config (rcpt_ok, queue/maildir) that user ``nobody`` can read, with a Maildir it can write.

    Yields ``(base, config_dir, maildir)``; pytest's own tmp_path is private to root.
    """
    import os
    import pwd
    import shutil
    import tempfile

    nobody = pwd.getpwnam("nobody")
    base = Path(tempfile.mkdtemp(prefix="qpgevent-nobody-"))
    try:
        base.chmod(0o755)
        mail = base / "Maildir"
        mail.mkdir()
        os.chown(mail, nobody.pw_uid, nobody.pw_gid)
        config = write_config(base / "config", {"me": "mx.test", "rcpthosts": "example.com",
                                                "spool_dir": str(mail / "spool"),
                                                "plugins": ["rcpt_ok", "queue/maildir %s" % mail]})
        yield base, config, mail
    finally:
        shutil.rmtree(base, ignore_errors=True)


# The zones of the test DNS server (tests/dnsserver.py): names under ``slow.test`` are answered after a
# second, ``timeout.test`` after 3 s (past the short timeouts tests give), ``broken.test`` with SERVFAIL.
DNS_ZONES = {
    "test.": [
        "host 300 IN A 192.0.2.1", "host 300 IN A 192.0.2.2", "host 300 IN AAAA 2001:db8::1",
        "mail 300 IN MX 20 mx2.test.", "mail 300 IN MX 10 mx1.test.",
        "text 300 IN TXT \"v=spf1 -all\"", "text 300 IN TXT \"two \" \"parts\"",
        "big 300 IN TXT \"%s\" \"%s\"" % ("x" * 250, "y" * 250), "big 300 IN TXT \"%s\"" % ("z" * 200),
        "short 1 IN A 192.0.2.9",
        "*.slow 300 IN A 127.0.0.2", "timeout 300 IN A 127.0.0.3", "broken 300 IN A 127.0.0.4",
    ],
    "2.0.192.in-addr.arpa.": ["1 300 IN PTR host.test."],
    "8.b.d.0.1.0.0.2.ip6.arpa.": ["1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0 300 IN PTR host.test."],
}


@pytest.fixture(scope="session")
def dns_server():
    """One test DNS server for the whole run on 127.0.0.1 (UDP and TCP): see DNS_ZONES."""
    from dnsserver import DNSServer, zone_text

    server = DNSServer({origin: zone_text(records) for origin, records in DNS_ZONES.items()})
    server.delay.update({"slow.test": 1.0, "timeout.test": 3.0})
    server.servfail.add("broken.test")
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A ``redis-server`` (the Debian package) on a free port for the whole run; its ``url`` for config/storage."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()
