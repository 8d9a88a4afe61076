"""rcpt_regexp: answer recipients from a list of patterns and addresses, each with a return code.

Arguments: only the generic ``loglevel``.

Config files:
  ``rcpt_regexp``  one rule a line: a pattern or an address, a return code, an optional message::

                       me@myhost.org           OK       Accepting mail
                       /^user\\d+@doma\\.in$/    OK       Accepting mail
                       info@myhost.com         DENY     User not found.
                       /^unused@.*/            DENY     User not found.
                       /^.*$/                  DECLINED Fall through to next rcpt plugin

                   ``/.../`` is a regular expression searched for in the
                   recipient's ``user@host`` without regard to case; anything
                   else is compared with the whole address, also without
                   regard to case.  The code is one of ``OK``, ``DENY``,
                   ``DENYSOFT``, ``DENY_DISCONNECT``, ``DENYSOFT_DISCONNECT``
                   and ``DECLINED``.  The first rule that matches answers.
                   The file is read again when it changes.

``OK`` accepts the recipient (``250`` with the message); a refusal goes out
with its message (``No such user.`` when the line has none) and ``5.1.1``
unless the message carries its own enhanced status (``5.7.1 ...`` or
``... (#5.7.1)``).

Differences from qpsmtpd: a rule with a bad pattern, no code or an unknown
code stops the start-up naming the file and line (qpsmtpd logged it at each
recipient and skipped it; one edited in while the server runs still is).
``DONE`` is refused as a code: it would leave the client without a reply.
Patterns are Python regular expressions; hosts are compared as written.
"""
import re
from functools import lru_cache
from typing import NamedTuple, Optional, Pattern

from qpgevent import DECLINED, LOGDEBUG, LOGWARN
from qpgevent.addresslist import answer, check_entries, parse_answer

ARGUMENTS = {}  # the generic ones only: anything else on the line is a start-up error
_SLASHED = re.compile(r"/(.*)/\Z")


class Rule(NamedTuple):
    entry: str
    pattern: Optional[Pattern]
    code: int
    message: str

    def matches(self, address: str) -> bool:
        if self.pattern is not None:
            return self.pattern.search(address) is not None
        return self.entry.lower() == address


@lru_cache(maxsize=4096)
def parse_rule(line: str) -> Rule:
    """The rule of a config line; ValueError saying what is wrong."""
    words = line.split(None, 2)
    if len(words) < 2:
        raise ValueError("%r has no return code; write e.g. '%s DENY User not found.'" % (line, line))
    entry, name, message = words[0], words[1], words[2] if len(words) > 2 else ""
    pattern = None
    slashed = _SLASHED.match(entry)
    if slashed:
        try:
            pattern = re.compile(slashed.group(1), re.IGNORECASE)
        except re.error as exc:
            raise ValueError("%r is not a valid regular expression (%s)" % (entry, exc)) from None
    return Rule(entry, pattern, parse_answer(name), message)


def register(self, qp, *args):
    check_entries(self.smtpd.config.entries("rcpt_regexp"), parse_rule)


def hook_rcpt(self, transaction, recipient, **params):
    if not recipient.user or not recipient.host:
        return DECLINED
    address = ("%s@%s" % (recipient.user, recipient.host)).lower()
    for line in self.qp.config_list("rcpt_regexp"):
        try:
            rule = parse_rule(line)
        except ValueError as exc:
            self.log(LOGWARN, "skipping a bad line: %s" % exc)
            continue
        if rule.matches(address):
            self.log(LOGDEBUG, "%s matches %s" % (address, rule.entry))
            return answer(rule.code, rule.message)
    return DECLINED
