"""Exim for the queue/exim-bsmtp tests: the exim4 binary tests/run unpacks from Debian's .deb.

Exim cannot be installed beside postfix (both are Debian's mail-transport-agent),
so tests/run extracts exim4-daemon-light into ``~/.cache/qpgevent/exim`` (or
``$QPGEVENT_EXIM`` names the binary).  Each test gets its own configuration
(``-C``), spool and log under a tmp dir; ``-odq`` keeps every message on Exim's
queue, where the test reads it back from the spool files.  Nothing listens:
``exim -bS`` runs once per message.
"""
import os
import pwd
import re
from pathlib import Path
from typing import List, Tuple

import pytest

DEFAULT = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qpgevent" / "exim" / "usr" / "sbin" / "exim4"

CONFIG = """\
primary_hostname = exim.test
spool_directory = {spool}
log_file_path = {spool}/%slog
exim_user = {user}
exim_group = {group}
trusted_users = {user}
keep_environment =
acl_not_smtp = check_message

begin acl

check_message:
  deny    condition = ${{if match{{$recipients}}{{refuse@}}}}
          message = 5.7.1 refused by exim
  defer   condition = ${{if match{{$recipients}}{{later@}}}}
          message = 4.3.2 not now, says exim
  accept

begin routers

everyone:
  driver = accept
  transport = nowhere

begin transports

nowhere:
  driver = appendfile
  file = /dev/null
"""


def binary() -> str:
    """The exim4 binary, or skip the test saying how to get it."""
    path = os.environ.get("QPGEVENT_EXIM") or str(DEFAULT)
    if not os.access(path, os.X_OK):
        pytest.skip("no exim binary at %s: bash tests/run unpacks it there" % path)
    return path


def write_config(base: Path) -> Path:
    """A private Exim configuration with its spool under ``base``; the ``-C`` file's path."""
    me = pwd.getpwuid(os.getuid())
    spool = base / "spool"
    spool.mkdir(parents=True)
    config = base / "exim.conf"
    config.write_text(CONFIG.format(spool=spool, user=me.pw_name, group=me.pw_gid))
    return config


def queued(config: Path) -> List[Tuple[str, List[str], bytes]]:
    """(sender, recipients, message as Exim will deliver it) of each message on the queue."""
    found = []
    for header_file in sorted((config.parent / "spool" / "input").glob("*-H")):
        sender, recipients, headers = parse_header_file(header_file.read_bytes())
        body = (header_file.parent / (header_file.name[:-2] + "-D")).read_bytes()
        body = body.split(b"\n", 1)[1]  # the first line is the file's own name
        found.append((sender, recipients, headers + b"\n" + body))
    return found


def parse_header_file(data: bytes) -> Tuple[str, List[str], bytes]:
    """Exim's ``-H`` spool file (spec chapter "Format of spool files"): the envelope and the header
    lines, each stored as ``NNNF text`` (length, flag; ``*`` marks a header Exim dropped)."""
    lines = data.split(b"\n")
    sender = lines[2].decode().strip("<>")
    position = lines.index(b"XX") + 1  # the (empty) tree of non-recipients ends the options
    count = int(lines[position])
    recipients = [line.decode().split(" ")[0] for line in lines[position + 1:position + 1 + count]]
    rest = b"\n".join(lines[position + 2 + count:])  # past the recipients and the blank line
    headers = b""
    while rest:
        match = re.match(rb"(\d{3,})(.) ", rest)
        length, flag = int(match.group(1)), match.group(2)
        text, rest = rest[match.end():match.end() + length], rest[match.end() + length:]
        if flag != b"*":
            headers += text
    return sender, recipients, headers
