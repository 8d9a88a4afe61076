"""count_unrecognized_commands: the Nth unrecognized command closes the connection."""
import pytest

from qpgevent.errors import ConfigError
from qpgevent.testing import TestSession


def test_fourth_unrecognized_command_disconnects_by_default(session_factory):
    """Three unknown commands get 500 5.5.1; the fourth gets 521 5.5.1 and the session ends."""
    ts = session_factory(["count_unrecognized_commands"])
    for verb in ("FOO", "GET / HTTP/1.0", "BAR"):
        assert [(r.code, r.status) for r in ts.command(verb)] == [(500, "5.5.1")]
        assert not ts.closed
    assert [str(r) for r in ts.command("BAZ")] == [
        "521 5.5.1 Closing connection, 4 unrecognized commands. Perhaps you should read RFC 5321?"]
    assert ts.closed
    assert ts.connection.notes["unrec_cmd_count"] == 4


def test_argument_sets_the_limit_and_known_commands_do_not_count(session_factory):
    """With N=2 the second unknown command disconnects, however many known commands came between."""
    ts = session_factory(["count_unrecognized_commands 2"])
    assert ts.command("XYZZY")[0].code == 500
    for line in ("EHLO client.test", "NOOP", "RSET"):
        assert ts.command(line)[0].code == 250
    replies = ts.command("PLUGH")
    assert (replies[0].code, replies[0].status) == (521, "5.5.1")
    assert "2 unrecognized commands" in replies[0].text
    assert ts.closed


def test_counts_are_per_connection(smtpd_factory):
    """Each connection has its own count."""
    smtpd = smtpd_factory(["count_unrecognized_commands 2"])
    first, second = TestSession(smtpd), TestSession(smtpd)
    assert first.command("XYZZY")[0].code == 500
    assert second.command("XYZZY")[0].code == 500
    assert not first.closed and not second.closed


def test_limit_of_one_closes_at_the_first(session_factory):
    """N=1 closes the connection at the first unknown command."""
    ts = session_factory(["count_unrecognized_commands 1"])
    assert ts.command("HELLO")[0].code == 521
    assert ts.closed


@pytest.mark.parametrize("arguments", ["0", "four", "4 5", "-1"])
def test_bad_arguments_stop_the_start_up(smtpd_factory, arguments):
    """A limit that is not a whole number of 1 or more, or an extra argument, is a start-up error."""
    with pytest.raises(ConfigError):
        smtpd_factory(["count_unrecognized_commands " + arguments])
