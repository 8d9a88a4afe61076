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


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A ``redis-server`` (the Debian package) on a free port for the whole run; its ``url`` for config/storage."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()
