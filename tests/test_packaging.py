"""A non-editable install (a wheel, no checkout around it) carries the plugins and the default config and serves mail."""
import shutil
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest

from qpgevent.testing import LiveServer

ROOT = Path(__file__).resolve().parent.parent
SKIP = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", "build", "dist", "Maildir", "bench", "tests",
                              ".pytest_cache", ".venv", "docs")


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """qpgevent installed with pip from a copy of the source into a new virtual environment; the copy is then removed."""
    tmp = tmp_path_factory.mktemp("packaging")
    source, env = tmp / "source", tmp / "venv"
    shutil.copytree(ROOT, source, ignore=SKIP)
    # The dependencies (gevent, ...) come from the system site-packages: nothing is downloaded.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(env)], check=True, timeout=120)
    subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    str(source)], check=True, timeout=300, capture_output=True)
    shutil.rmtree(source)
    return env


def test_installed_package_is_the_one_imported(venv, tmp_path):
    """The environment's python imports the installed copy, not this checkout."""
    result = subprocess.run([str(venv / "bin" / "python"), "-c", "import qpgevent; print(qpgevent.__file__)"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60, check=True)
    assert result.stdout.startswith(str(venv))


def test_check_config_finds_the_installed_plugins_and_config(venv, tmp_path):
    """--check-config with no --config-dir loads the bundled config and plugins from <prefix>/share/qpgevent."""
    result = subprocess.run([str(venv / "bin" / "qpsmtpd-server"), "--check-config"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "connect: relay" in result.stdout and "rcpt: rcpt_ok" in result.stdout
    assert "queue: queue/maildir" in result.stdout
    assert "from %s" % (venv / "share" / "qpgevent" / "config") in result.stdout


def test_installed_server_delivers_with_the_default_config(venv, tmp_path):
    """The installed daemon, started with no options but the address, puts a message into ./Maildir/new."""
    with LiveServer(None, cwd=tmp_path, program=[str(venv / "bin" / "qpsmtpd-server")]) as server:
        with smtplib.SMTP(*server.address, timeout=10) as client:
            refused = client.sendmail("a@sender.test", ["u@example.com"], "Subject: hi\r\n\r\nhello\r\n")
    assert refused == {}
    delivered = list((tmp_path / "Maildir" / "new").iterdir())
    assert len(delivered) == 1 and delivered[0].read_text().endswith("\nhello\n")


def test_installed_state_tool_reads_the_store(venv, tmp_path):
    """The installed ``qpsmtpd-state`` command lists what the store holds."""
    store = tmp_path / "state.db"
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "storage").write_text("sqlite:%s\n" % store)
    subprocess.run([str(venv / "bin" / "python"), "-c", "from qpgevent.state import open_store; "
                    "open_store('sqlite:%s').set('karma:192.0.2.1', '-2', 60)" % store], check=True, timeout=60)
    result = subprocess.run([str(venv / "bin" / "qpsmtpd-state"), "--config-dir", str(tmp_path / "config"), "list"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("karma:192.0.2.1\t-2\t")


def test_installed_dkim_keygen_writes_a_key(venv, tmp_path):
    """The installed ``qpsmtpd-dkim-keygen`` command writes config/dkim/<domain>/ and prints the TXT record."""
    result = subprocess.run([str(venv / "bin" / "qpsmtpd-dkim-keygen"), "--config-dir", str(tmp_path / "config"),
                             "--bits", "1024", "example.org", "sel1"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert 'sel1._domainkey.example.org. IN TXT "v=DKIM1; k=rsa; p=' in result.stdout
    assert (tmp_path / "config" / "dkim" / "example.org" / "selector").read_text() == "sel1\n"
