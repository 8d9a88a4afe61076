"""Built-in argument parsers for HELO/EHLO, MAIL and RCPT (RFC 5321 4.1.1, RFC 1869 parameters)."""
import re
from typing import Dict, List, Optional, Tuple

_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
# esmtp-value: printable ASCII but '=' and SP; RFC 6531 adds UTF-8.
_VALUE = re.compile(r"[^\x00-\x20=\x7f]+\Z")


class ParseError(ValueError):
    """The arguments do not parse; the message is the reply text."""


def split_path(text: str) -> Tuple[str, str]:
    """``<path> rest`` -> (``<path>``, ``rest``), honouring quoted strings inside the brackets."""
    if not text.startswith("<"):
        path, _, rest = text.partition(" ")
        return path, rest
    quoted = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return text[:index + 1], text[index + 1:]
    raise ParseError("Syntax error in address")


def parse_parameters(text: str) -> Dict[str, Optional[str]]:
    """``KEY=VALUE KEY2`` -> {``key``: ``VALUE``, ``key2``: None} (keys lower-cased)."""
    params: Dict[str, Optional[str]] = {}
    for word in text.split(" "):
        if not word:
            continue
        key, eq, value = word.partition("=")
        if not _KEYWORD.match(key) or (eq and not _VALUE.match(value)):
            raise ParseError("Syntax error in parameters")
        params[key.lower()] = value if eq else None
    return params


def parse_path_command(prefix: str, line: str) -> Tuple[str, Dict[str, Optional[str]]]:
    """``FROM:<a@b> SIZE=10`` -> (``<a@b>``, {``size``: ``10``}); ``prefix`` is ``from`` or ``to``."""
    head = prefix + ":"
    if line[:len(head)].lower() != head:
        raise ParseError("Syntax error in command")
    rest = line[len(head):].strip(" ")
    if not rest:
        return "", {}
    path, params = split_path(rest)
    return path, parse_parameters(params.strip(" "))


def parse_words(line: str) -> List[str]:
    """The default HELO/EHLO/AUTH parser: words split on spaces."""
    return line.split()
