"""help: HELP answered from files in the help directory."""
import pytest

from qpgevent.errors import ConfigError


@pytest.fixture
def help_dir(tmp_path):
    """``help/`` beside the test config directory, with texts for MAIL and a bare HELP."""
    directory = tmp_path / "help"
    directory.mkdir()
    (directory / "mail").write_text("MAIL FROM:<sender> [SIZE=n]\n\n\tStarts a transaction.\n")
    (directory / "default").write_text("Topics: MAIL\nSee RFC 5321.\n")
    (directory / "ehlo.txt").write_text("EHLO <domain>\n")
    return directory


def test_command_help_comes_from_its_file(session_factory, help_dir):
    """HELP MAIL (any case) sends help/mail as a 214 2.0.0 reply, one line per non-empty line."""
    ts = session_factory(["help"])
    assert [(r.code, r.lines) for r in ts.command("HELP mail")] == [
        (214, ["2.0.0 MAIL FROM:<sender> [SIZE=n]", "2.0.0     Starts a transaction."])]
    assert ts.command("HELP MAIL") == ts.command("help Mail")


def test_bare_help_sends_the_default_file(session_factory, help_dir):
    """HELP alone sends help/default."""
    ts = session_factory(["help"])
    assert [(r.code, r.lines) for r in ts.command("HELP")] == [(214, ["2.0.0 Topics: MAIL", "2.0.0 See RFC 5321."])]


def test_bare_help_without_default_file(session_factory, help_dir):
    """Without help/default a bare HELP gets qpsmtpd's hint."""
    (help_dir / "default").unlink()
    ts = session_factory(["help"])
    assert [str(r) for r in ts.command("HELP")] == ["214 2.0.0 Try 'HELP COMMAND' for getting help on COMMAND"]


def test_unknown_topic_gets_504(session_factory, help_dir):
    """A topic without a help file gets 504 5.5.4."""
    ts = session_factory(["help"])
    assert [str(r) for r in ts.command("HELP VRFY")] == ["504 5.5.4 No help available for SMTP command: vrfy"]


@pytest.mark.parametrize("topic", ["../config/me", "/etc/passwd", "mail.", "..", "MAIL\\x"])
def test_topic_that_is_not_a_word_gets_501(session_factory, help_dir, topic):
    """Topics are command names only: paths are refused with 501 5.5.4, never read."""
    ts = session_factory(["help"])
    assert [str(r) for r in ts.command("HELP " + topic)] == ["501 5.5.4 Invalid command name"]


def test_not_implemented(session_factory, help_dir):
    """not_implemented 1 answers every HELP with 502 5.5.1."""
    ts = session_factory(["help not_implemented 1"])
    assert [str(r) for r in ts.command("HELP MAIL")] == ["502 5.5.1 Not implemented."]
    assert [str(r) for r in ts.command("HELP")] == ["502 5.5.1 Not implemented."]


def test_help_dir_and_command_file_arguments(session_factory, tmp_path):
    """help_dir points elsewhere (relative to the config directory's parent); COMMAND FILE maps a topic."""
    directory = tmp_path / "texts"
    directory.mkdir()
    (directory / "ehlo-help").write_text("EHLO <domain>: say hello, ESMTP style\n")
    (directory / "rset").write_text("RSET: start over\n")
    ts = session_factory(["help help_dir texts EHLO ehlo-help"])
    assert [str(r) for r in ts.command("HELP EHLO")] == ["214 2.0.0 EHLO <domain>: say hello, ESMTP style"]
    assert [str(r) for r in ts.command("HELP RSET")] == ["214 2.0.0 RSET: start over"]


def test_files_are_read_at_each_help(session_factory, help_dir):
    """A help file added after start-up is served without a restart."""
    ts = session_factory(["help"])
    assert ts.command("HELP NOOP")[0].code == 504
    (help_dir / "noop").write_text("NOOP: does nothing\n")
    assert [str(r) for r in ts.command("HELP NOOP")] == ["214 2.0.0 NOOP: does nothing"]


@pytest.mark.parametrize("arguments", ["not_implemented", "EHLO missing-file", "../x y"])
def test_bad_arguments_stop_the_start_up(smtpd_factory, help_dir, arguments):
    """An odd argument count, a missing COMMAND FILE file or a bad command name is a start-up error."""
    with pytest.raises(ConfigError):
        smtpd_factory(["help " + arguments])
