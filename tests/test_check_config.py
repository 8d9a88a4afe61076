"""--check-config and start-up for an admin coming from qpsmtpd: every error at once, honest names, warnings."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qpgevent.errors import ConfigErrors
from qpgevent.testing import LiveServer, ROOT, free_port, make_smtpd, write_config

SERVER = [sys.executable, str(ROOT / "bin" / "qpsmtpd-server")]
SAMPLE = Path(__file__).parent / "fixtures" / "qpsmtpd-config.sample"
PORT_IT = "comment the line out, or port it to Python (see docs/writing-plugins.md)"


def check_config(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(SERVER + ["--config-dir", str(config), "--check-config"], capture_output=True, text=True,
                          timeout=30)


def start(config: Path) -> subprocess.CompletedProcess:
    """A normal start of the daemon (it is expected to refuse, so it ends by itself)."""
    return subprocess.run(SERVER + ["--config-dir", str(config), "-l", "127.0.0.1:%d" % free_port(), "-H"],
                          capture_output=True, text=True, timeout=30)


def our_config(tmp_path: Path, plugins: list, **values: str) -> Path:
    return write_config(tmp_path / "config", {"me": "mx.test", "spool_dir": str(tmp_path / "spool"),
                                              "plugins": plugins, **values})


def test_qpsmtpd_config_sample_loads_with_only_the_missing_queue_warned_about(tmp_path):
    """qpsmtpd's config.sample: every plugin it names is here (issue 10 brought spamassassin); no queue: a warning."""
    config = tmp_path / "config"
    shutil.copytree(SAMPLE, config)
    plugins = config / "plugins"
    result = check_config(config)
    assert result.stderr.splitlines() == [
        "qpsmtpd-server: warning: %s: no queue plugin is loaded, so every message would be refused after "
        "DATA with 451 4.3.0; add one, e.g. `queue/maildir ./Maildir`" % plugins]
    assert result.returncode == 0
    assert "data_post: " in result.stdout and "spamassassin" in result.stdout


def test_several_errors_in_one_config_are_reported_together(tmp_path):
    """A bad setting, a bad argument, a qpsmtpd plugin we lack and a typo: all four in one run, each with its line."""
    config = our_config(tmp_path, ["count_unrecognized_commands many", "dspam", "rcpt_okk", "queue/maildir ./M"],
                        max_rcpt="lots")
    result = check_config(config)
    lines = result.stderr.splitlines()
    assert lines[0] == "qpsmtpd-server: %s:1: max_rcpt must be a whole number of 0 or more, not 'lots'" % (
        config / "max_rcpt")
    assert lines[1].startswith("qpsmtpd-server: %s:1: plugin count_unrecognized_commands (arguments 'many') "
                               "refused to start: " % (config / "plugins"))
    assert lines[2] == "qpsmtpd-server: %s:2: qpsmtpd plugin `dspam` is not available in this version of " \
                       "qpgevent; %s" % (config / "plugins", PORT_IT)
    assert lines[3].startswith("qpsmtpd-server: %s:3: plugin 'rcpt_okk' not found in " % (config / "plugins"))
    assert lines[3].endswith("did you mean 'rcpt_ok'?")
    # rcpt_okk did not load, so nothing accepts recipients: said too, after the errors.
    assert lines[4].startswith("qpsmtpd-server: warning: %s: no plugin has a rcpt hook" % (config / "plugins"))
    assert lines[5:] == ["qpsmtpd-server: 4 errors, 1 warning: the server would not start"]
    assert (result.returncode, result.stdout) == (78, "")


def test_normal_start_refuses_with_every_error_listed(tmp_path):
    """The daemon itself (not only --check-config) lists all the errors before it refuses to start."""
    config = our_config(tmp_path, ["dspam", "rcpt_ok", "rcpt_okk", "queue/maildir ./M"])
    result = start(config)
    assert result.returncode == 78
    lines = result.stderr.splitlines()
    assert lines[:2] == [
        "qpsmtpd-server: 2 configuration errors:",
        "  %s:1: qpsmtpd plugin `dspam` is not available in this version of qpgevent; %s" % (config / "plugins", PORT_IT)]
    assert lines[2].startswith("  %s:3: plugin 'rcpt_okk' not found in " % (config / "plugins"))
    assert lines[2].endswith("; did you mean 'rcpt_ok'?")
    assert len(lines) == 3
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("plugins, warning", [
    (["rcpt_ok"], "no queue plugin is loaded, so every message would be refused after DATA with 451 4.3.0; "
                  "add one, e.g. `queue/maildir ./Maildir`"),
    (["queue/maildir ./M"], "no plugin has a rcpt hook, so none can accept a recipient: every RCPT TO would get "
                            "450 4.7.1; add `rcpt_ok` after your other rcpt plugins"),
])
def test_a_config_that_turns_all_mail_away_is_warned_about(tmp_path, plugins, warning):
    """No queue plugin, or no plugin that can accept a recipient: a warning; --check-config still exits 0."""
    config = our_config(tmp_path, plugins)
    result = check_config(config)
    assert result.stderr.splitlines() == ["qpsmtpd-server: warning: %s: %s" % (config / "plugins", warning)]
    assert result.returncode == 0
    assert result.stdout.splitlines()[-1] == "configuration ok: %d plugins from %s, 1 warning" % (len(plugins), config)


def test_reject_naughty_without_the_naughty_plugin_is_warned_about_with_its_line(tmp_path):
    """``reject naughty`` with no ``naughty`` plugin: a warning naming the line, saying the rejection never happens."""
    config = our_config(tmp_path, ["rcpt_ok", "earlytalker wait 0 reject naughty", "queue/maildir ./M"])
    result = check_config(config)
    assert result.stderr.splitlines() == [
        "qpsmtpd-server: warning: %s:2: plugin earlytalker: `reject naughty` leaves its rejections to the `naughty` "
        "plugin, which is not loaded; add a `naughty` line after it: they are logged and never applied (as with "
        "`reject 0`); write `reject 1` to refuse at once" % (config / "plugins")]
    assert result.returncode == 0


def test_start_up_logs_the_warnings_and_serves(tmp_path):
    """The daemon starts with a warned-about config, and its log says what is wrong, once."""
    config = our_config(tmp_path, ["rcpt_ok"])
    with LiveServer(config) as server:
        log = server.log
    assert log.count("warning: %s: no queue plugin is loaded" % (config / "plugins")) == 1


def test_naughty_present_but_not_loaded_says_so(tmp_path):
    """With a ``naughty`` plugin in plugin_dirs but not loaded, the warning says to load it, not that it is missing."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "naughty.py").write_text('"""A stand-in naughty plugin."""\n')
    smtpd = make_smtpd(tmp_path, ["rcpt_ok", "earlytalker reject naughty", "queue/maildir ./M"],
                       {"plugin_dirs": str(mine)})
    [warning] = smtpd.warnings
    assert "which is not loaded; add a `naughty` line after it" in warning.message
    assert make_smtpd(tmp_path, ["rcpt_ok", "earlytalker reject naughty", "queue/maildir ./M", "naughty"],
                      {"plugin_dirs": str(mine)}).warnings == []


@pytest.mark.parametrize("line, message", [
    ("check_norelay", "`check_norelay` is an old qpsmtpd name of the `relay` plugin; write `relay`"),
    ("authsql", "qpsmtpd plugin `authsql` (now called `auth/auth_vpopmail_sql`) is not available in this "
                "version of qpgevent; " + PORT_IT),
    ("virus/sophie:1", "qpsmtpd plugin `virus/sophie` is not available in this version of qpgevent; " + PORT_IT),
    ("logging/apache", "qpsmtpd plugin `logging/apache` is not available in this version of qpgevent; " + PORT_IT),
    ("check_basicheaders", "`check_basicheaders` is an old qpsmtpd name of the `headers` plugin; write `headers`"),
    ("My::Plugin", "`My::Plugin` names a Perl module, and Perl plugins do not run here; " + PORT_IT),
])
def test_qpsmtpd_names_get_an_honest_message(tmp_path, line, message):
    """qpsmtpd's plugins we lack, its former names and Perl modules are named as such, never 'did you mean'."""
    with pytest.raises(ConfigErrors) as caught:
        make_smtpd(tmp_path, [line, "rcpt_ok", "queue/maildir ./M"])
    [error] = caught.value.errors
    assert (error.message, error.line) == (message, 1)


def test_a_far_fetched_guess_is_not_offered(tmp_path):
    """An unknown name like nothing we ship gets no 'did you mean'; a typo of a shipped one does."""
    with pytest.raises(ConfigErrors) as caught:
        make_smtpd(tmp_path, ["spf", "rcpt-ok", "rcpt_ok"])
    far, typo = caught.value.errors
    assert "did you mean" not in far.message and far.message.endswith("check the spelling or add its directory "
                                                                      "to plugin_dirs")
    assert typo.message.endswith("did you mean 'rcpt_ok'?")


@pytest.mark.parametrize("line, loaded", [("check_relay", "relay"), ("async/earlytalker", "earlytalker"),
                                          ("async/check_earlytalker", "earlytalker")])
def test_names_qpsmtpd_kept_load_their_plugin_with_a_warning(tmp_path, line, loaded):
    """Debian's check_* wrappers and 0.94's async/* copies still load (the current plugin), and say so at start-up."""
    smtpd = make_smtpd(tmp_path, ["rcpt_ok", line, "queue/maildir ./M"])
    plugin = smtpd.plugins[1]
    assert (plugin.name, Path(plugin.path).stem) == (line, loaded)
    [warning] = smtpd.warnings
    assert (warning.message, warning.line) == (
        "`%s` is an old qpsmtpd name of the `%s` plugin, which is loaded with the same arguments; "
        "write `%s` to silence this" % (line, loaded, loaded), 2)


def test_check_config_names_the_state_store_and_the_dns_servers(tmp_path):
    """Where shared state lives and which DNS servers plugins ask: what an admin checks before going live."""
    config = our_config(tmp_path, ["rcpt_ok", "queue/maildir ./M"], dns_servers=["127.0.0.1:5353", "[::1]:53"],
                        dns_timeout="2", storage="sqlite:%s" % (tmp_path / "state.db"))
    result = check_config(config)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "state store: sqlite:%s" % (tmp_path / "state.db") in lines
    assert "DNS servers: 127.0.0.1:5353, [::1]:53 (timeout 2s)" in lines
