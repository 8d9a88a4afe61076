"""Faster stand-ins for some of dkimpy's helpers, giving the same results; installed by ``install()``.

A profile of the sample filter chain on 100 KB messages (bench/filters.py)
spent three quarters of the server's CPU in dkimpy's body handling: a regex
substitution for every space of the body, although a body whose spaces come
one at a time has nothing to compress, and a split of the whole message into
lines to find the end of its header.  These versions skip the work when there
is none and look at the header block only.  On 1 KB messages the RSA
check took a fifth of the chain: dkimpy converts between integers and
bytes a byte at a time in Python (three times per signature, 256 steps each
for a 2048-bit key) and parses the sender's public key anew for every
message; here Python's own conversions do it, a parsed key is kept (the
same key record gives the same key), and OpenSSL (through ``cryptography``)
checks the signature.  ``tests/test_dkim_speed.py`` checks
them against dkimpy's own on generated input.
"""
import functools
import re
from typing import Any

import dkim
import dkim.canonicalization
import dkim.crypto
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

_WSP_RUN = re.compile(rb"[\t ]+")
_TRAILING_WSP = re.compile(rb"[\t ]+\r\n")
_LINE_END = re.compile(rb"\r?\n")
_FIELD_NAME = re.compile(rb"([\x21-\x7e]+?):")
_BLANK_LINE = re.compile(rb"(?:\A|\n)(\r?\n)")
_ORIGINAL_PARSE = dkim.rfc822_parse
_ORIGINAL_PARSE_KEY = dkim.crypto.parse_public_key
_ORIGINAL_VERIFY = dkim.crypto.RSASSA_PKCS1_v1_5_verify
_HASHES = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}


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
    body = message[blank.end(1):]
    if b"\r" in body:  # the spool's LF-only message (the usual case) has no CRLF to undo first
        body = body.replace(b"\r\n", b"\n")
    body = body.replace(b"\n", b"\r\n")
    return fields, body


def int2str(n: int, length: int = -1) -> bytearray:
    """``n`` big-endian: the fewest octets (at least one), or exactly ``length`` (higher octets dropped, as dkimpy)."""
    if length < 0:
        return bytearray(n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big"))
    return bytearray((n & ((1 << (8 * length)) - 1)).to_bytes(length, "big"))


def str2int(octets: bytes) -> int:
    """Big-endian octets as an integer."""
    return int.from_bytes(octets, "big")


@functools.lru_cache(maxsize=1024)
def parse_public_key(der: bytes) -> dict:
    """dkimpy's parse of a DER RSA public key, kept per key: a domain's key serves every message it signs.

    dkimpy only reads the dict it returns; a key that does not parse raises
    each time, as before.
    """
    return _ORIGINAL_PARSE_KEY(der)


@functools.lru_cache(maxsize=1024)
def _openssl_key(modulus: int, exponent: int) -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(exponent, modulus).public_key()


def rsa_verify(hash: Any, signature: bytes, public_key: dict) -> bool:
    """dkimpy's RSASSA-PKCS1-v1_5 check (RFC 8017 8.2.2) done by OpenSSL: 16 µs, not dkimpy's 130.

    The signature is read as dkimpy reads it, as an integer, and given to
    OpenSSL at the modulus's length (a signer may drop leading zero octets).
    What OpenSSL would not take as dkimpy does (a key under 1024 bits, a
    signature integer not below the modulus, a key OpenSSL refuses, another
    hash) goes to dkimpy's own code.
    """
    modulus, exponent = public_key["modulus"], public_key["publicExponent"]
    algorithm = _HASHES.get(hash.name.lower())
    value = int.from_bytes(signature, "big")
    if algorithm is None or modulus.bit_length() < 1024 or value >= modulus:
        return _ORIGINAL_VERIFY(hash, signature, public_key)
    try:
        key = _openssl_key(modulus, exponent)
    except (ValueError, UnsupportedAlgorithm):
        return _ORIGINAL_VERIFY(hash, signature, public_key)
    try:
        key.verify(value.to_bytes((modulus.bit_length() + 7) // 8, "big"), hash.digest(), padding.PKCS1v15(),
                   utils.Prehashed(algorithm()))
    except InvalidSignature:
        return False
    return True


def install() -> None:
    """Put these in dkimpy's place (DKIM and ARC alike); doing it twice is harmless."""
    dkim.canonicalization.compress_whitespace = compress_whitespace
    dkim.canonicalization.strip_trailing_whitespace = strip_trailing_whitespace
    dkim.rfc822_parse = rfc822_parse
    dkim.crypto.int2str = int2str  # looked up by dkim.crypto's RSA functions at each call
    dkim.crypto.str2int = str2int
    dkim.parse_public_key = parse_public_key  # dkim.evaluate_pk's own name for it
    dkim.RSASSA_PKCS1_v1_5_verify = rsa_verify  # DKIM and ARC signatures alike
