"""SASL exchanges for SMTP AUTH (RFC 4954): PLAIN, LOGIN and CRAM-MD5, without I/O.

An exchange takes the client's lines and says what to do next: send a
``Challenge`` (a ``334`` line), check ``Credentials`` with the auth hooks, or
send a ``Failure``.
"""
import base64
import binascii
import hmac
import os
import re
import time
from typing import List, NamedTuple, Optional, Union

MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")


class Challenge(NamedTuple):
    text: str  # already base64, or "" for an empty challenge


class Credentials(NamedTuple):
    mechanism: str
    user: str
    password: Optional[str]  # clear text (PLAIN, LOGIN)
    digest: Optional[str]  # hex HMAC-MD5 (CRAM-MD5)
    ticket: Optional[str]  # the CRAM-MD5 challenge


class Failure(NamedTuple):
    code: int
    status: str
    text: str


Step = Union[Challenge, Credentials, Failure]

CANCELLED = Failure(501, "5.7.0", "Authentication canceled")
BAD_BASE64 = Failure(501, "5.5.2", "Cannot decode the response (bad base64)")
MALFORMED = Failure(535, "5.7.8", "Authentication invalid")
TOO_LONG = Failure(500, "5.5.6", "Authentication Exchange line is too long")

_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{32}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def printable(user: str) -> str:
    """A client-chosen user name fit for a reply or a log line: control characters dropped."""
    return _CONTROL.sub("", user)


def _decode(line: str) -> Optional[str]:
    try:
        return base64.b64decode(line.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None


def _encode(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


class Exchange:
    """One AUTH command's conversation; ``start`` then ``step`` for each client line."""

    def __init__(self, mechanism: str, me: str) -> None:
        self.mechanism = mechanism.upper()
        self.me = me
        self._user: Optional[str] = None
        self._ticket: Optional[str] = None

    def start(self, initial: Optional[str]) -> Step:
        """The step after ``AUTH <mech> [initial-response]``."""
        if self.mechanism == "CRAM-MD5":
            if initial is not None:
                return Failure(501, "5.5.2", "CRAM-MD5 takes no initial response")
            self._ticket = "<%x.%x@%s>" % (int.from_bytes(os.urandom(8), "big"), int(time.time()), self.me)
            return Challenge(_encode(self._ticket))
        if initial is None:
            return Challenge("" if self.mechanism == "PLAIN" else _encode("Username:"))
        return self.step(initial)

    def step(self, line: str) -> Step:
        """The step after a client response line."""
        if line.strip() == "*":
            return CANCELLED
        if self.mechanism == "PLAIN":
            return self._plain(line)
        if self.mechanism == "LOGIN":
            return self._login(line)
        return self._cram(line)

    def _plain(self, line: str) -> Step:
        if line.strip() == "=":
            line = ""
        decoded = _decode(line)
        if decoded is None:
            return BAD_BASE64
        parts = decoded.split("\0")
        if len(parts) != 3 or not parts[1]:
            return MALFORMED
        authzid, user, password = parts
        if authzid and authzid != user:
            return Failure(535, "5.7.8", "Authentication invalid for %s" % printable(user))
        return Credentials("PLAIN", user, password, None, None)

    def _login(self, line: str) -> Step:
        decoded = _decode(line)
        if decoded is None:
            return BAD_BASE64
        if self._user is None:
            if not decoded:
                return MALFORMED
            self._user = decoded
            return Challenge(_encode("Password:"))
        return Credentials("LOGIN", self._user, decoded, None, None)

    def _cram(self, line: str) -> Step:
        decoded = _decode(line)
        if decoded is None:
            return BAD_BASE64
        user, _, digest = decoded.rpartition(" ")
        if not user or not _HEX_DIGEST.match(digest):
            return Failure(504, "5.5.4", "Invalid authentication string")
        return Credentials("CRAM-MD5", user, None, digest.lower(), self._ticket)


class FailedCredentials:
    """The credentials that failed in one session, to tell a client's retry with another mechanism
    from a new guess.

    Clients such as Python's ``smtplib`` try each offered mechanism in turn
    with the same password: that is one wrong password, not three.  The same
    credentials again with a mechanism they already failed with count anew.
    Clear passwords are kept only as salted hashes; a failed CRAM-MD5 answer
    is recognised when the same password later comes in clear (PLAIN,
    LOGIN), not the other way round.  At most ``LIMIT`` are kept.
    """

    LIMIT = 16

    def __init__(self) -> None:
        self._salt = os.urandom(16)
        self._failed: List[tuple] = []  # (salted hash, or the CRAM-MD5 Credentials; mechanisms tried)

    def _hash(self, credentials: Credentials) -> bytes:
        text = "%s\0%s" % (credentials.user, credentials.password)
        return hmac.new(self._salt, text.encode("utf-8", "surrogatepass"), "sha256").digest()

    def retry(self, credentials: Credentials) -> bool:
        """Record credentials that failed; True if they failed before, with another mechanism."""
        key = None if credentials.password is None else self._hash(credentials)
        for known, mechanisms in self._failed:
            if isinstance(known, Credentials):  # a CRAM-MD5 answer: does this clear password make it?
                same = key is not None and known.user == credentials.user \
                    and check_password(credentials.password, None, known.digest, known.ticket)
            else:
                same = key == known
            if same:
                if credentials.mechanism in mechanisms:
                    return False
                mechanisms.add(credentials.mechanism)
                return True
        self._failed.append((credentials if key is None else key, {credentials.mechanism}))
        del self._failed[:-self.LIMIT]
        return False


def check_password(stored_clear: Optional[str], password: Optional[str], digest: Optional[str] = None,
                   ticket: Optional[str] = None) -> bool:
    """True if the auth hook's ``password`` (PLAIN, LOGIN) or ``digest`` and ``ticket`` (CRAM-MD5) prove
    knowledge of ``stored_clear``; always False without a stored password."""
    if stored_clear is None:
        return False
    secret = stored_clear.encode("utf-8")
    if digest is not None:
        expected = hmac.new(secret, (ticket or "").encode("utf-8"), "md5").hexdigest()
        return hmac.compare_digest(expected.encode("ascii"), digest.lower().encode("utf-8"))
    return password is not None and hmac.compare_digest(secret, password.encode("utf-8"))
