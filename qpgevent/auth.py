"""SMTP AUTH (RFC 4954): the AUTH verb, the SASL exchange and the auth hooks.

Mixed into ``Session``.  The exchanges themselves (PLAIN, LOGIN, CRAM-MD5)
are in ``sasl.py``; plugins check the credentials.
"""
import time
from typing import Any, Callable, List, Optional

from . import metrics
from . import replies as R
from . import sasl
from .command import parse_words
from .constants import DECLINED, DENY_DISCONNECT, DENYSOFT, DENYSOFT_DISCONNECT, DONE, LOGERROR, LOGINFO, OK
from .errors import Disconnect
from .results import HookResult, PluginFailure
from .modes import MAX_AUTH_LINE, SaslAnswer



class AuthCommands:
    """The AUTH verb and what follows it."""

    _failed_credentials: Optional[sasl.FailedCredentials] = None  # made at the first wrong password

    def auth_mechanisms(self) -> List[str]:
        """SASL mechanisms some plugin checks: all three with a generic ``auth`` hook."""
        if self.registry.has("auth"):
            return list(sasl.MECHANISMS)
        return [m for m in sasl.MECHANISMS if self.registry.has("auth-" + m.lower())]

    def _tls_required(self) -> bool:
        return not self.connection.notes.get("tls_enabled") and self.config("tls_before_auth", "1") != "0"

    def _auth_offered(self) -> bool:
        return not self.auth_user and not self._tls_required() and bool(self.auth_mechanisms())

    def smtp_auth(self, rest: str) -> None:
        mechanisms = self.auth_mechanisms()
        if not mechanisms:
            self._unrecognized("auth", rest)
            return
        # The initial response carries the credentials: they must not outlive the command.
        self.connection.notes["original_string"] = "AUTH " + rest.split(" ", 1)[0]
        if not self.connection.hello:
            self.reply(R.AUTH_NO_HELLO)
        elif self.connection.hello != "ehlo":
            self.reply(R.AUTH_NEEDS_EHLO)
        elif self._tls_required():
            self.reply(R.AUTH_NEEDS_TLS)
        elif self.auth_user:
            self.reply(R.AUTH_AGAIN)
        elif self.transaction.sender is not None:
            self.reply(R.AUTH_IN_TRANSACTION)
        else:
            words = self._parse("auth_parse", "auth", rest, parse_words)
            if words is None:
                return
            if not words or len(words) > 2:
                self.reply(R.SYNTAX_COMMAND)
                return
            mechanism = str(words[0]).upper()
            if mechanism not in mechanisms:
                self.reply(R.AUTH_UNKNOWN_MECHANISM, mechanism=sasl.printable(mechanism.lower()))
                return
            initial = None if len(words) == 1 else ("" if words[1] == "=" else str(words[1]))
            exchange = sasl.Exchange(mechanism, self.me)
            self._sasl_step(exchange, exchange.start(initial))

    def sasl_answer(self, exchange: sasl.Exchange, raw: bytes) -> None:
        """The client's line in answer to a challenge of ``exchange``."""
        if len(raw) > MAX_AUTH_LINE:
            self._sasl_step(exchange, sasl.TOO_LONG)
            return
        try:
            line = raw.rstrip(b"\r\n").decode("ascii")
        except UnicodeDecodeError:
            line = "?"  # not base64: the exchange says so
        self._sasl_step(exchange, exchange.step(line))

    def _sasl_step(self, exchange: sasl.Exchange, step: Any) -> None:
        if isinstance(step, sasl.Challenge):
            self.mode = SaslAnswer(exchange)
            self.respond(334, step.text, status=None)
        elif step is sasl.CANCELLED:
            # Nothing was guessed, so there is nothing to slow down or count.
            self.respond(step.code, step.text, status=step.status)
        elif isinstance(step, sasl.Failure):
            self._auth_failed(lambda: self.respond(step.code, step.text, status=step.status))
        else:
            self._check_credentials(step)

    def _check_credentials(self, credentials: sasl.Credentials) -> None:
        """Ask ``auth-<mech>`` then ``auth``: OK 235, DENYSOFT or a failing plugin 454 (RFC 4954 6), else 535."""
        mechanism = credentials.mechanism
        args = (mechanism.lower(), credentials.user, credentials.password, credentials.digest, credentials.ticket)
        try:
            result = self.run_hooks("auth-" + mechanism.lower(), *args)
            if result.rc in (DECLINED, 0):
                result = self.run_hooks("auth", *args)
        except PluginFailure:
            result = HookResult(DENYSOFT, [])  # a broken checker says nothing about the password
        rc = result.rc
        if rc == DONE:
            return
        user = sasl.printable(credentials.user)
        detail = (" - " + " ".join(map(str, result.messages))) if result.messages else ""
        if rc == OK:
            self.auth_user, self.auth_mechanism = user, mechanism
            self._relay_before_auth = self.connection.relay_client
            self.connection.relay_client = True
            self.connection.notes.pop("naughty", None)
            metrics.auth_result("success")
            self.reply(R.AUTH_OK, mechanism=mechanism, user=user, detail=detail)
            return
        if rc in (DENYSOFT, DENYSOFT_DISCONNECT):
            self.log(LOGINFO, "authentication for %s (%s) failed temporarily" % (user, mechanism))
            metrics.auth_result("tempfail")
            self.reply(R.AUTH_TEMPFAIL, detail=detail)
        else:
            failed = self._failed_credentials
            if failed is None:
                failed = self._failed_credentials = sasl.FailedCredentials()
            again = failed.retry(credentials)
            self.log(LOGINFO, "authentication failed for %s (%s)%s" % (user, mechanism, " again" if again else ""))
            self._auth_failed(lambda: self.reply(R.AUTH_FAILED, mechanism=mechanism, user=user,
                                                 ip=self.connection.remote_ip, detail=detail), again)
        if rc in (DENY_DISCONNECT, DENYSOFT_DISCONNECT):
            raise Disconnect

    def _auth_failed(self, answer: Callable, again: bool = False) -> None:
        """Answer a failed attempt after a growing pause; too many end the session.

        The pause is ``auth_failure_delay`` seconds (default 1) times the
        number of failures so far, at most 10; after ``auth_max_failures``
        (default 3, 0 for no limit) the client gets 421 and is disconnected.
        ``again``: the same credentials failed before with another mechanism,
        so nothing new was guessed: answered at once and not counted.
        """
        metrics.auth_result("failure")
        if again:
            answer()
            return
        self.auth_failures += 1
        try:
            delay = float(self.config("auth_failure_delay", "1"))
            limit = int(self.config("auth_max_failures", "3"))
            if not delay >= 0 or limit < 0:
                raise ValueError
        except ValueError:
            # A typo must not switch off the brake on password guessing.
            self.log(LOGERROR, "auth_failure_delay and auth_max_failures must be numbers of 0 or more; using 1 and 3")
            delay, limit = 1.0, 3
        if delay:
            time.sleep(min(delay * self.auth_failures, 10.0))  # cooperative: the server patches time
        answer()
        if limit and self.auth_failures >= limit:
            self.reply(R.AUTH_TOO_MANY)
            raise Disconnect
