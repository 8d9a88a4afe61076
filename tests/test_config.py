"""qpsmtpd-style config files (qpgevent/config.py): format, $include, directory fallback, reloads, ini files."""
import os
from types import SimpleNamespace

import pytest

from qpgevent import config as config_module
from qpgevent.config import Config
from qpgevent.errors import ConfigError
from qpgevent.testing import make_smtpd

SPEC = """\
port = integer(min=1, max=65535, default=25)
name = string(default="mx")
[limits]
strict = boolean(default=False)
"""


@pytest.fixture
def clock(monkeypatch):
    """A fake ``time.monotonic`` for the config module; ``clock.advance(s)`` moves it on."""
    class Clock:
        now = 1000.0

        def advance(self, seconds):
            self.now += seconds

    fake = Clock()
    # Only the config module's clock: gevent and pytest keep the real one.
    monkeypatch.setattr(config_module, "time", SimpleNamespace(monotonic=lambda: fake.now))
    return fake


@pytest.fixture
def qmail_control(tmp_path, monkeypatch):
    """A stand-in for /var/qmail/control: the second directory searched."""
    directory = tmp_path / "control"
    directory.mkdir()
    monkeypatch.setattr(config_module, "QMAIL_CONTROL", directory)
    return directory


@pytest.fixture
def config_dir(tmp_path, qmail_control):
    directory = tmp_path / "config"
    directory.mkdir()
    return directory


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_comments_blank_lines_and_whitespace_are_dropped(config_dir):
    """Blank lines and ``#`` lines vanish, values are stripped; an inline ``#`` stays part of the value."""
    write(config_dir / "rcpthosts", "# our domains\n\n  example.com  \n\t# indented comment\nexample.org # not a comment\n")
    assert Config(config_dir).lines("rcpthosts") == ["example.com", "example.org # not a comment"]


def test_get_returns_first_value_or_default(config_dir):
    """``get`` (and calling the config) gives the first value; a missing name gives the default or None."""
    write(config_dir / "me", "first.test\nsecond.test\n")
    config = Config(config_dir)
    assert config.get("me") == "first.test" == config("me")
    assert config.get("nosuchfile") is None
    assert config.get("nosuchfile", "fallback") == "fallback"
    assert config.lines("nosuchfile") == []


def test_builtin_defaults_for_me_and_timeout(config_dir):
    """Without files ``me`` is the host name and ``timeout`` is 300."""
    config = Config(config_dir)
    assert config.get("me") == os.uname().nodename
    assert config.get("timeout") == "300"


def test_include_of_a_file(config_dir):
    """``$include name`` splices that file's values in place, relative names resolved in the config dir."""
    write(config_dir / "extra-hosts", "b.test\nc.test\n")
    write(config_dir / "rcpthosts", "a.test\n$include extra-hosts\nd.test\n")
    assert Config(config_dir).lines("rcpthosts") == ["a.test", "b.test", "c.test", "d.test"]


def test_include_of_an_absolute_path(config_dir, tmp_path):
    """An absolute ``$include`` path is read as given."""
    other = write(tmp_path / "elsewhere" / "hosts", "far.test\n")
    write(config_dir / "rcpthosts", "$include %s\n" % other)
    assert Config(config_dir).lines("rcpthosts") == ["far.test"]


def test_include_of_a_directory_is_sorted_and_skips_dotfiles(config_dir):
    """``$include dir`` reads every regular file in name order; dotfiles (editor swap files) are skipped."""
    write(config_dir / "hosts.d" / "20-second", "two.test\n")
    write(config_dir / "hosts.d" / "10-first", "one.test\n")
    write(config_dir / "hosts.d" / ".10-first.swp", "swap.test\n")
    write(config_dir / "hosts.d" / "30-third", "# only a comment\nthree.test\n")
    (config_dir / "hosts.d" / "99-subdir").mkdir()
    write(config_dir / "rcpthosts", "$include hosts.d\n")
    assert Config(config_dir).lines("rcpthosts") == ["one.test", "two.test", "three.test"]


def test_include_of_a_missing_file_names_file_and_line(config_dir):
    """A ``$include`` of nothing is a ConfigError naming the including file and its line."""
    path = write(config_dir / "rcpthosts", "a.test\n$include nothere\n")
    with pytest.raises(ConfigError) as caught:
        Config(config_dir).lines("rcpthosts")
    assert (caught.value.path, caught.value.line) == (str(path), 2)
    assert "nothere" in str(caught.value)


def test_circular_include_is_an_error_naming_the_file(config_dir):
    """``a`` includes ``b`` includes ``a``: ConfigError that names the files involved, not a RecursionError."""
    write(config_dir / "a", "$include b\n")
    write(config_dir / "b", "x\n$include a\n")
    with pytest.raises(ConfigError) as caught:
        Config(config_dir).lines("a")
    message = str(caught.value)
    assert "circular" in message
    assert str(config_dir / "a") in message and str(config_dir / "b") in message


def test_self_include_is_circular(config_dir):
    """A file that includes itself is circular too."""
    write(config_dir / "loop", "$include loop\n")
    with pytest.raises(ConfigError, match="circular"):
        Config(config_dir).lines("loop")


def test_entries_know_file_and_line(config_dir):
    """``entries`` gives each value with the file and line it came from, through includes."""
    write(config_dir / "more", "# header\nb.test\n")
    plugins = write(config_dir / "plugins", "# comment\na.test\n$include more\n")
    entries = Config(config_dir).entries("plugins")
    assert [(e.value, e.path, e.line) for e in entries] == [
        ("a.test", str(plugins), 2), ("b.test", str(config_dir / "more"), 2)]


def test_fallback_is_per_file_between_directories(config_dir, qmail_control):
    """Each name is looked up in config_dir first, then the next directory (qmail's control dir)."""
    write(config_dir / "me", "mine.test\n")
    write(qmail_control / "me", "qmail.test\n")
    write(qmail_control / "rcpthosts", "from-qmail.test\n")
    config = Config(config_dir)
    assert config.dirs == [config_dir.resolve(), qmail_control]
    assert config.get("me") == "mine.test"
    assert config.lines("rcpthosts") == ["from-qmail.test"]
    assert config.path("rcpthosts") == qmail_control / "rcpthosts"


def test_config_dir_from_environment(tmp_path, qmail_control, monkeypatch):
    """Without an explicit directory ``$QPSMTPD_CONFIG`` is the first directory."""
    write(tmp_path / "envconf" / "me", "env.test\n")
    monkeypatch.setenv("QPSMTPD_CONFIG", str(tmp_path / "envconf"))
    assert Config().get("me") == "env.test"


def test_changed_file_is_seen_after_recheck_interval(config_dir, clock):
    """A file edited while running is seen once RECHECK_SECONDS have passed, not before."""
    path = write(config_dir / "databytes", "1000\n")
    config = Config(config_dir)
    assert config.get("databytes") == "1000"
    write(path, "2000000\n")
    clock.advance(config_module.RECHECK_SECONDS / 2)
    assert config.get("databytes") == "1000"
    clock.advance(config_module.RECHECK_SECONDS)
    assert config.get("databytes") == "2000000"


def test_created_and_removed_files_are_seen_after_recheck(config_dir, clock):
    """A file that appears (or goes away) while running is picked up after RECHECK_SECONDS."""
    config = Config(config_dir)
    assert config.get("smtpgreeting") is None
    path = write(config_dir / "smtpgreeting", "hello there\n")
    clock.advance(config_module.RECHECK_SECONDS + 0.1)
    assert config.get("smtpgreeting") == "hello there"
    path.unlink()
    clock.advance(config_module.RECHECK_SECONDS + 0.1)
    assert config.get("smtpgreeting") is None


def test_changed_included_file_is_seen(config_dir, clock):
    """Editing a file that another one ``$include``s is seen after RECHECK_SECONDS, as is a new file in an included dir."""
    write(config_dir / "rcpthosts", "$include extra\n$include hosts.d\n")
    extra = write(config_dir / "extra", "old.test\n")
    write(config_dir / "hosts.d" / "1", "one.test\n")
    config = Config(config_dir)
    assert config.lines("rcpthosts") == ["old.test", "one.test"]
    write(extra, "newer.test\n")  # another size: mtimes may not tick between two quick writes
    write(config_dir / "hosts.d" / "2", "two.test\n")
    clock.advance(config_module.RECHECK_SECONDS + 0.1)
    assert config.lines("rcpthosts") == ["newer.test", "one.test", "two.test"]


def test_reload_forgets_everything(config_dir, clock):
    """``reload()`` (SIGHUP) makes the next lookup read the disk at once."""
    path = write(config_dir / "me", "before.test\n")
    config = Config(config_dir)
    assert config.get("me") == "before.test"
    write(path, "after.test\n")
    config.reload()
    assert config.get("me") == "after.test"


def test_ini_valid_file_is_validated_and_converted(config_dir):
    """``ini(name, spec)`` reads ``name.ini`` and converts values by the configspec, defaults filled in."""
    write(config_dir / "thing.ini", "port = 2525\n[limits]\nstrict = yes\n")
    parsed = Config(config_dir).ini("thing", SPEC)
    assert parsed["port"] == 2525
    assert parsed["name"] == "mx"
    assert parsed["limits"]["strict"] is True


def test_ini_missing_file_gives_defaults(config_dir):
    """A missing ini file is all defaults from the spec."""
    parsed = Config(config_dir).ini("absent", SPEC)
    assert dict(parsed) == {"port": 25, "name": "mx", "limits": {"strict": False}}


def test_ini_invalid_value_names_file_and_key(config_dir):
    """An out-of-range or mistyped value is a ConfigError naming the file and each bad key."""
    path = write(config_dir / "thing.ini", "port = 99999\n[limits]\nstrict = maybe\n")
    with pytest.raises(ConfigError) as caught:
        Config(config_dir).ini("thing", SPEC)
    assert caught.value.path == str(path)
    message = str(caught.value)
    assert str(path) in message and "port" in message and "limits.strict" in message


def test_ini_syntax_error_names_file_and_line(config_dir):
    """Broken ini syntax is a ConfigError naming the file and the line."""
    path = write(config_dir / "thing.ini", "port = 2525\n[limits\n")
    with pytest.raises(ConfigError) as caught:
        Config(config_dir).ini("thing.ini", SPEC)
    assert (caught.value.path, caught.value.line) == (str(path), 2)


@pytest.mark.parametrize("name, value, hint", [
    ("plugin_timeout", "soon", "number of seconds"),
    ("plugin_timeout", "-1", "number of seconds"),
    ("max_rcpt", "lots", "whole number"),
    ("size_threshold", "-5", "whole number"),
    ("bare_newline", "allow", "'reject' or 'normalize'"),
])
def test_bad_core_setting_stops_start_up_naming_file_and_line(tmp_path, qmail_control, name, value, hint):
    """A core setting that does not parse is a ConfigError at start-up with the file, the line and what is allowed."""
    with pytest.raises(ConfigError) as caught:
        make_smtpd(tmp_path, config={name: ["# comment", value]})
    assert (caught.value.path, caught.value.line) == (str(tmp_path / "config" / name), 2)
    assert hint in str(caught.value) and repr(value) in str(caught.value)
