"""Address lists of the policy config files (badmailfrom, badrcptto, badmailfromto, rcpt_map, rcpt_regexp).

An entry is the first word of a line; the rest of the line is its reason.
As in qpsmtpd an entry is

* a regular expression when it holds one of ``/ ^ $ * + ! % ? \\``
  (so ``user+tag@example.com`` is a pattern, as it was in qpsmtpd), searched
  for in ``user@host`` without regard to case;
* ``@host``: every address at that host;
* ``user@host``: that address.

Hosts compare as :func:`qpgevent.address.domain_key` does (case, root dot,
IDNA forms), users without regard to case.  Patterns are Python regular
expressions: the Perl ones qpsmtpd admins write (anchors, classes,
quantifiers) mean the same.
"""
import re
from functools import lru_cache
from typing import Callable, Iterable, List, NamedTuple, Optional, Pattern

from . import replies
from .address import Address, domain_key
from .config import Entry
from .constants import DENY_CODES, DONE, RETURN_CODES, return_code
from .errors import ConfigError

# What a list may answer for an address: DONE would leave the client without a reply.
ANSWER_NAMES = sorted(name for code, name in RETURN_CODES.items() if code != DONE)

_PATTERN_CHARS = re.compile(r"[/^$*+!%?\\]")


class Rule(NamedTuple):
    """One entry: exactly one of ``pattern``, ``host`` and ``address`` is set."""

    entry: str
    reason: str
    pattern: Optional[Pattern] = None
    host: Optional[str] = None
    address: Optional[str] = None

    def matches(self, address: Address) -> bool:
        if not address.user or not address.host:
            return False
        if self.pattern is not None:
            return self.pattern.search("%s@%s" % (address.user, address.host)) is not None
        if self.host is not None:
            return self.host == domain_key(address.host)
        return self.address == address_key(address.user, address.host)


def address_key(user: str, host: str) -> str:
    """``user@host`` as entries compare it."""
    return "%s@%s" % (user.lower(), domain_key(host))


@lru_cache(maxsize=4096)
def parse_rule(line: str, patterns: bool = True) -> Rule:
    """The rule a config line stands for; ValueError (saying what to write) when it stands for none."""
    if not line.strip():
        raise ValueError("an empty entry")
    entry, *rest = line.split(None, 1)
    reason = rest[0].strip() if rest else ""
    if patterns and _PATTERN_CHARS.search(entry):
        try:
            return Rule(entry, reason, pattern=re.compile(entry, re.IGNORECASE))
        except re.error as exc:
            raise ValueError("%r is not a valid regular expression (%s); fix it, or escape the "
                             "character with a backslash" % (entry, exc)) from None
    user, at, host = entry.rpartition("@")
    if not at or not host:
        raise ValueError("%r is neither an address, an @host nor a pattern; write user@host or @host" % entry)
    if not user:
        return Rule(entry, reason, host=domain_key(host))
    return Rule(entry, reason, address=address_key(user, host))


def read_rules(lines: Iterable[str], warn: Callable[[str], None], patterns: bool = True) -> List[Rule]:
    """The rules of ``lines``; a line that is none (a file edited while we run) is passed to ``warn`` and skipped."""
    rules = []
    for line in lines:
        if not line.strip():
            continue
        try:
            rules.append(parse_rule(line, patterns))
        except ValueError as exc:
            warn("skipping a bad line: %s" % exc)
    return rules


def check_entries(entries: Iterable[Entry], parse: Callable[[str], object]) -> None:
    """Start-up check of a config file: ConfigError naming the file and line of every line ``parse`` refuses."""
    problems = []
    for entry in entries:
        try:
            parse(entry.value)
        except ValueError as exc:
            problems.append((entry, str(exc)))
    if problems:
        (first, message), rest = problems[0], problems[1:]
        also = "".join("; also %s:%d: %s" % (entry.path, entry.line, text) for entry, text in rest)
        raise ConfigError(message + also, first.path, first.line)


def parse_answer(name: str) -> int:
    """The return code named ``name`` (``OK``, ``DENY``, ...); ValueError naming the ones there are."""
    code = return_code(name)
    if code is None or code == DONE:
        raise ValueError("%r is not a return code; use one of %s" % (name, ", ".join(ANSWER_NAMES)))
    return code


def answer(code: int, message: str, status: str = "5.1.1") -> tuple:
    """``(code, message)`` for a hook; a refusal says ``No such user.`` when it has no message, and
    gets ``status`` when its message carries no enhanced status of its own."""
    if code not in DENY_CODES:
        return (code, message) if message else (code,)
    message = message or "No such user."
    given = replies.status_for(550, status, [message])
    return code, "%s %s" % (given, message) if given else message
