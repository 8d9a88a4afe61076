"""The README's "Try it" commands, run against the bundled config: the answers it shows are the server's."""
import re
import shutil
import smtplib
from pathlib import Path

import pytest

from qpgevent.testing import LiveServer

ROOT = Path(__file__).resolve().parent.parent
TRY_IT = re.compile(r"^swaks --server 127\.0\.0\.1:2525 --to (\S+) +# (\d{3} .*)$", re.MULTILINE)


def try_it_lines():
    """(recipient, expected answer) for each swaks line of the README's "Try it" section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Try it", 1)[1].split("\n## ", 1)[0]
    found = TRY_IT.findall(section)
    assert len(found) == 2, "the Try it section changed shape: update this test with it"
    return found


def as_pattern(expected):
    """README text as a pattern: ``<anything in angle brackets>`` stands for one word."""
    return "".join(r"\S+" if part.startswith("<") else re.escape(part) for part in re.split(r"(<[^>]*>)", expected))


@pytest.fixture(scope="module")
def bundled_server(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "config", cwd / "config")  # a copy: the server's log goes beside its config dir
    with LiveServer(cwd / "config", cwd=cwd) as server:
        yield server, cwd


@pytest.mark.parametrize("recipient, expected", try_it_lines())
def test_try_it_answers_are_what_the_server_says(bundled_server, recipient, expected):
    server, cwd = bundled_server
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.ehlo("client.test")
        client.mail("me@client.test")
        code, text = client.rcpt(recipient)
        if code == 250:
            code, text = client.data(b"Subject: try it\r\n\r\nhello\r\n")
    answer = "%d %s" % (code, text.decode())
    assert re.fullmatch(as_pattern(expected), answer), (answer, expected)
    if code == 250:
        assert list((cwd / "Maildir" / "new").iterdir())
