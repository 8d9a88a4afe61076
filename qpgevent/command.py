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


# RFC 3461 DSN parameters.
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*\Z")
_XTEXT_HEX = re.compile(r"\+([0-9A-F]{2})")
_ADDR_TYPE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+\Z")
_NOTIFY = {"SUCCESS", "FAILURE", "DELAY"}


def decode_xtext(text: str) -> str:
    """RFC 3461 xtext (``+XX`` for ``+``, ``=`` and bytes outside ``!``..``~``) -> the UTF-8 text; ValueError if not."""
    if not _XTEXT.match(text):
        raise ValueError("not xtext: %r" % text)
    return _XTEXT_HEX.sub(lambda m: "%c" % int(m.group(1), 16), text).encode("latin-1").decode("utf-8")


def check_dsn_mail(params: Dict[str, Optional[str]]) -> Dict[str, str]:
    """Validate RET and ENVID; the DSN settings to keep on the transaction."""
    dsn: Dict[str, str] = {}
    if "ret" in params:
        ret = (params["ret"] or "").upper()
        if ret not in ("FULL", "HDRS"):
            raise ParseError("RET must be FULL or HDRS")
        dsn["ret"] = ret
    if "envid" in params:
        envid = params["envid"] or ""
        if not envid or len(envid) > 100 or not _XTEXT.match(envid):
            raise ParseError("ENVID must be 1-100 characters of xtext (RFC 3461 4.4)")
        dsn["envid"] = envid
    return dsn


def check_dsn_rcpt(params: Dict[str, Optional[str]]) -> Dict[str, object]:
    """Validate NOTIFY and ORCPT; the DSN settings to keep on the recipient."""
    dsn: Dict[str, object] = {}
    if "notify" in params:
        words = [w.upper() for w in (params["notify"] or "").split(",")]
        if words != ["NEVER"] and (not set(words) <= _NOTIFY or len(set(words)) != len(words) or not words[0]):
            raise ParseError("NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")
        dsn["notify"] = words
    if "orcpt" in params:
        addr_type, semicolon, address = (params["orcpt"] or "").partition(";")
        if not semicolon or not _ADDR_TYPE.match(addr_type) or not address or not _XTEXT.match(address) \
                or len(params["orcpt"]) > 500:
            raise ParseError("ORCPT must be addr-type;xtext (RFC 3461 4.2)")
        dsn["orcpt"] = params["orcpt"]
    return dsn
