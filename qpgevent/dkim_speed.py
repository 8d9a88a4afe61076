"""Faster stand-ins for three of dkimpy's helpers, giving the same bytes; installed by ``install()``.

A profile of the sample filter chain on 100 KB messages (bench/filters.py)
spent three quarters of the server's CPU in dkimpy's body handling: a regex
substitution for every space of the body, although a body whose spaces come
one at a time has nothing to compress, and a split of the whole message into
lines to find the end of its header.  These versions skip the work when there
is none and look at the header block only; ``tests/test_dkim_speed.py``
checks them against dkimpy's own on generated messages.
"""
import re

import dkim
import dkim.canonicalization

_WSP_RUN = re.compile(rb"[\t ]+")
_TRAILING_WSP = re.compile(rb"[\t ]+\r\n")
_LINE_END = re.compile(rb"\r?\n")
_FIELD_NAME = re.compile(rb"([\x21-\x7e]+?):")
_BLANK_LINE = re.compile(rb"(?:\A|\n)(\r?\n)")
_ORIGINAL_PARSE = dkim.rfc822_parse


def compress_whitespace(content: bytes) -> bytes:
    """Every run of spaces and tabs as one space."""
    if b"\t" not in content and b"  " not in content:
        return content
    return _WSP_RUN.sub(b" ", content)


def strip_trailing_whitespace(content: bytes) -> bytes:
    """No space or tab before a CRLF."""
    if b" \r\n" not in content and b"\t\r\n" not in content:
        return content
    return _TRAILING_WSP.sub(b"\r\n", content)


def rfc822_parse(message: bytes) -> tuple:
    """(header fields as [name, value + CRLF] lists, body with CRLF line ends), as dkimpy's rfc822_parse."""
    blank = _BLANK_LINE.search(message)
    if blank is None:  # no body at all: rare, and dkimpy's own is as quick there
        return _ORIGINAL_PARSE(message)
    head = message[:blank.start(1)]
    fields: list = []
    for line in _LINE_END.split(head)[:-1] if head else []:
        if line[:1] in (b"\t", b" "):
            fields[-1][1] += line + b"\r\n"  # a folded line continues the field before it (IndexError as dkimpy)
            continue
        name = _FIELD_NAME.match(line)
        if name is not None:
            fields.append([name.group(1), line[name.end():] + b"\r\n"])
        elif not line.startswith(b"From "):
            raise dkim.MessageFormatError("Unexpected characters in RFC822 header: %s" % line)
    body = message[blank.end(1):].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return fields, body


def install() -> None:
    """Put these in dkimpy's place (DKIM and ARC alike); doing it twice is harmless."""
    dkim.canonicalization.compress_whitespace = compress_whitespace
    dkim.canonicalization.strip_trailing_whitespace = strip_trailing_whitespace
    dkim.rfc822_parse = rfc822_parse
