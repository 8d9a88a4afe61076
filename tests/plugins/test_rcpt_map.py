"""rcpt_map: the recipients of one domain are answered from a map file, re-read when it changes."""
import os
import smtplib

import pytest

from qpgevent import LOGERROR
from qpgevent.errors import ConfigError
from qpgevent.testing import TestSession

MAP = """# example_org_map - config for rcpt_map plugin
me@example.org           OK
You@Example.org          OK       Welcome
info@example.org         DENY     User not found.
busy@example.org         DENYSOFT
"""
CONFIG = {"rcpthosts": ["example.org", "example.com"]}


@pytest.fixture
def map_file(tmp_path):
    path = tmp_path / "config" / "map_example_org"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(MAP)
    return path


def rcpt(smtpd, *recipients):
    ts = TestSession(smtpd)
    ts.command("HELO client.test")
    ts.command("MAIL FROM:<a@sender.test>")
    return [str(ts.command("RCPT TO:<%s>" % r)[0]) for r in recipients]


@pytest.mark.parametrize("recipient, reply", [
    ("me@example.org", "250 2.1.5 <me@example.org>, recipient ok"),
    ("ME@EXAMPLE.ORG", "250 2.1.5 <ME@EXAMPLE.ORG>, recipient ok"),
    ("you@example.org", "250 2.1.5 Welcome"),                  # upper case in the map matches too
    ("info@example.org", "550 5.1.1 User not found."),
    ("busy@example.org", "450 4.1.1 No such user."),
    ("nobody@example.org", "550 5.1.1 No such user."),         # the default
    ("nobody@example.com", "250 2.1.5 <nobody@example.com>, recipient ok"),  # other domain: rcpt_ok
])
def test_map_answers(smtpd_factory, map_file, recipient, reply):
    """qpsmtpd's map format (aligned columns, which qpsmtpd's own parser could not read) answers the domain."""
    smtpd = smtpd_factory(["rcpt_map domain example.org file config/map_example_org", "rcpt_ok"], CONFIG)
    assert rcpt(smtpd, recipient) == [reply]


def test_default_argument(smtpd_factory, map_file):
    """default CODE=MESSAGE answers addresses missing from the map, with _ as spaces; an absolute path works."""
    smtpd = smtpd_factory(["rcpt_map domain Example.ORG file %s default DENYSOFT=Not_yet_here" % map_file,
                           "rcpt_ok"], CONFIG)
    assert rcpt(smtpd, "new@example.org") == ["450 4.1.1 Not yet here"]


def test_map_is_read_again_when_it_changes(smtpd_factory, map_file):
    """A changed map takes effect at the next connection; an emptied one is logged and the old map kept."""
    smtpd = smtpd_factory(["rcpt_map domain example.org file config/map_example_org", "rcpt_ok"], CONFIG)
    assert rcpt(smtpd, "new@example.org")[0].startswith("550 ")
    map_file.write_text(MAP + "new@example.org OK\nbroken-line\n")
    os.utime(map_file, ns=(0, 10**18))  # a distinct mtime even on a coarse clock
    assert rcpt(smtpd, "new@example.org", "me@example.org") == [
        "250 2.1.5 <new@example.org>, recipient ok", "250 2.1.5 <me@example.org>, recipient ok"]
    map_file.write_text("# nothing left\n")
    ts = TestSession(smtpd, greet=False)
    logged = ts.capture_log()
    ts.start()
    assert any(level == LOGERROR and "holds no address" in m for level, _, _, m in logged)
    assert rcpt(smtpd, "new@example.org")[0].startswith("250 ")


@pytest.mark.parametrize("arguments, complaint", [
    ("file config/map_example_org", "needs 'domain NAME' and 'file MAP'"),
    ("domain example.org", "needs 'domain NAME' and 'file MAP'"),
    ("domain example.org file config/missing", "cannot read the map file"),
    ("domain example.org file config/map_example_org default MAYBE=x", "'MAYBE' is not a return code"),
    ("domain example.org file config/map_example_org colour blue", "unknown argument 'colour'"),
])
def test_bad_arguments_stop_the_start_up(smtpd_factory, map_file, arguments, complaint):
    """Missing or wrong arguments, or a map that cannot be read, stop the start-up with the fix."""
    with pytest.raises(ConfigError) as caught:
        smtpd_factory(["rcpt_map " + arguments], CONFIG)
    assert complaint in str(caught.value)


@pytest.mark.parametrize("text, line, complaint", [
    ("me@example.org OK\nyou@example.org\n", 2, "has no return code"),
    ("me@example.org OK\n# c\nyou@example.org SOMETIMES\n", 3, "'SOMETIMES' is not a return code"),
    ("me@example.org OK\nexample.org OK\n", 2, "is not an address"),
])
def test_bad_map_lines_stop_the_start_up_naming_file_and_line(smtpd_factory, map_file, text, line, complaint):
    """A bad map line is a start-up error naming the map file and its line."""
    map_file.write_text(text)
    with pytest.raises(ConfigError) as caught:
        smtpd_factory(["rcpt_map domain example.org file config/map_example_org"], CONFIG)
    assert "%s:%d:" % (map_file, line) in str(caught.value)
    assert complaint in str(caught.value)


def test_empty_map_stops_the_start_up(smtpd_factory, map_file):
    """As in qpsmtpd, a map with no address is refused at start-up."""
    map_file.write_text("# empty\n")
    with pytest.raises(ConfigError, match="holds no address"):
        smtpd_factory(["rcpt_map domain example.org file config/map_example_org"], CONFIG)


def test_live_map_and_reload(live_server, map_file):
    """Over a real socket, with the server running: the map answers, and an edit counts from the next connection."""
    server = live_server(plugins=["rcpt_map domain example.org file config/map_example_org", "rcpt_ok",
                                  "queue/discard"], config=CONFIG)
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.ehlo("client.test")
        client.mail("a@sender.test")
        assert client.rcpt("info@example.org") == (550, b"5.1.1 User not found.")
        assert client.rcpt("new@example.org") == (550, b"5.1.1 No such user.")
    map_file.write_text(MAP + "new@example.org OK\n")
    os.utime(map_file, ns=(0, 10**18))
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.ehlo("client.test")
        client.mail("a@sender.test")
        assert client.rcpt("new@example.org")[0] == 250
