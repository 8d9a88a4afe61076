"""rcpt_map: answer the recipients of one domain from a map file of addresses and return codes.

Arguments (qpsmtpd's, as pairs)::

    rcpt_map domain NAME file MAP [default CODE[=MESSAGE]] [loglevel N]

``domain NAME`` (required)
    Only recipients at this domain are looked up; the others are left to
    the next plugin.
``file MAP`` (required)
    The map file: an absolute path, or one relative to the directory above
    the config directory (as ``plugin_dirs``), so qpsmtpd's
    ``file config/map_example_org`` keeps its meaning.
``default CODE[=MESSAGE]``
    The answer for an address of the domain that is not in the map
    (default ``DENY=No_such_user.``).  A message cannot hold a space: write
    ``_``, which becomes one.

The map file has one address a line, a return code and an optional message::

    # map_example_org
    me@example.org           OK
    you@example.org          OK
    info@example.org         DENY     User not found.

The codes are ``OK``, ``DENY``, ``DENYSOFT``, ``DENY_DISCONNECT``,
``DENYSOFT_DISCONNECT`` and ``DECLINED``; a refusal without a message says
``No such user.``, and a refusal goes out with ``5.1.1`` unless its message
carries its own enhanced status (``5.7.1 ...`` or ``... (#5.7.1)``).
Addresses and the domain are compared without regard to case (and in their
IDNA form).  When the file changes it is read again at the next connection;
a new version that cannot be read, or holds no entry, is logged and the old
map kept.

Differences from qpsmtpd: fields are separated by any white space (qpsmtpd
split at single spaces, so its own example, with aligned columns, found no
code); addresses in the map match whatever their case (qpsmtpd matched only
lower-case ones); a line without a valid code stops the start-up naming the
file and line (qpsmtpd logged and skipped it; at a reload it still is).  The
map belongs to each plugin instance, so ``rcpt_map:0`` and ``rcpt_map:1``
can serve two domains (qpsmtpd shared one map among them).  ``DONE`` is not
a code here: it would leave the client without a reply.
"""
import os
from pathlib import Path
from typing import Dict, Tuple

from qpgevent import DECLINED, LOGERROR, LOGINFO, LOGWARN, arguments, return_code
from qpgevent.address import domain_key
from qpgevent.addresslist import address_key, answer, parse_answer
from qpgevent.errors import ConfigError

ARGUMENTS = {
    "domain": arguments.text(),
    "file": arguments.text(),
    "default": arguments.text(default="DENY=No_such_user."),
}
_EXAMPLE = "e.g. 'rcpt_map domain example.org file config/map_example_org'"

Answer = Tuple[int, str]


def register(self, qp, *args):
    options = self.options
    if not options.domain or not options.file:
        raise ValueError("needs 'domain NAME' and 'file MAP', %s" % _EXAMPLE)
    self.domain = domain_key(options.domain)
    path = Path(options.file)
    self.map_path = path if path.is_absolute() else self.smtpd.config.directory.parent / path
    name, _, message = options.default.partition("=")
    try:
        self.default = (parse_answer(name), message.replace("_", " "))
    except ValueError as exc:
        raise ValueError("default %s: %s" % (options.default, exc)) from None
    self.stamp, self.map = read_map(self.map_path, strict=True, warn=None)
    if not self.map:
        raise ConfigError("the map holds no address; list one a line with its code, e.g. 'me@%s OK'"
                          % options.domain, str(self.map_path))


def read_map(path: Path, strict: bool, warn) -> Tuple[tuple, Dict[str, Answer]]:
    """(stamp, map) of the file; a bad line is a ConfigError when ``strict``, else passed to ``warn`` and skipped."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            stat = os.fstat(file.fileno())
            text = file.read()
    except OSError as exc:
        raise ConfigError("cannot read the map file: %s (a relative path is relative to the directory above "
                          "the config directory)" % exc.strerror, str(path)) from None
    entries: Dict[str, Answer] = {}
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split(None, 2)
        if not words or words[0].startswith("#"):
            continue
        try:
            key, found = parse_entry(words)
        except ValueError as exc:
            if strict:
                raise ConfigError(str(exc), str(path), number) from None
            warn("%s:%d: skipping a bad line: %s" % (path, number, exc))
            continue
        entries.setdefault(key, found)
    return (stat.st_mtime_ns, stat.st_size), entries


def parse_entry(words) -> Tuple[str, Answer]:
    """(address key, (code, message)) of a map line split in up to three words."""
    user, at, host = words[0].rpartition("@")
    if not at or not user or not host:
        raise ValueError("%r is not an address; write user@domain CODE [message]" % words[0])
    if len(words) < 2:
        raise ValueError("%s has no return code; write e.g. '%s OK'" % (words[0], words[0]))
    return address_key(user, host), (parse_answer(words[1]), words[2].strip() if len(words) > 2 else "")


def hook_pre_connection(self, transaction, **params):
    try:
        stamp = os.stat(self.map_path)
    except OSError as exc:
        self.log(LOGERROR, "cannot read the map file %s: %s; keeping the map read before" % (self.map_path, exc.strerror))
        return DECLINED
    if (stamp.st_mtime_ns, stamp.st_size) == self.stamp:
        return DECLINED
    try:
        new_stamp, entries = read_map(self.map_path, strict=False, warn=lambda text: self.log(LOGWARN, text))
    except ConfigError as exc:
        self.log(LOGERROR, "%s; keeping the map read before" % exc)
        return DECLINED
    if not entries:
        self.stamp = new_stamp  # logged once, not at every connection
        self.log(LOGERROR, "%s holds no address now; keeping the map read before" % self.map_path)
        return DECLINED
    # Configuration, the same for every session: it belongs on the plugin, and is replaced whole.
    self.stamp, self.map = new_stamp, entries
    self.log(LOGINFO, "read %s again: %d addresses" % (self.map_path, len(entries)))
    return DECLINED


def hook_rcpt(self, transaction, recipient, **params):
    if not recipient.user or not recipient.host or domain_key(recipient.host) != self.domain:
        return DECLINED
    code, message = self.map.get(address_key(recipient.user, recipient.host), self.default)
    self.log(LOGINFO, "%s: %s" % (recipient, return_code(code)))
    return answer(code, message)
