"""One SMTP session (RFC 5321): bytes in, replies out, plugins run at every phase.

The session does no socket I/O of its own and never waits for the client:
``start()`` greets, ``feed(bytes)`` takes whatever the client sent (any split,
any amount of pipelining) and ``eof()``/``timeout()``/``shutdown()`` end it;
replies go to ``transport.write`` once per call (every 100 replies at most).
``qpgevent.conversation`` reads from the client and drives it.  Hooks run
inline: a plugin that blocks only blocks its own greenlet.
"""
import re
import traceback
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from . import metrics
from . import replies as R
from . import summary
from . import trace
from .address import Address, AddressError
from .command import ParseError, check_dsn_mail, check_dsn_rcpt, parse_path_command, parse_words
from .connection import Connection
from .constants import DECLINED, DONE, LOGDEBUG, LOGERROR, LOGINFO, LOGNOTICE, OK
from .auth import AuthCommands
from .chunking import ChunkingCommands
from .data import ChunkReceiver, DataReceiver
from .errors import Disconnect
from .results import HookResult, PluginFailure, normalise
from .modes import COMMAND, MAX_AUTH_LINE, DataStream
from .outcomes import outcome
from .replies import Reply, format_reply, match_class, split_lines, status_for
from .transaction import PendingTransaction, Transaction
from .xclient import EHLO_KEYWORDS as XCLIENT_KEYWORDS, XclientCommands

MAX_COMMAND_LINE = 512  # RFC 5321 4.5.3.1.4, CRLF included
MAX_QUEUED_REPLIES = 100  # replies held before they are written, however many commands one read brought
_VERB = re.compile(r"\w{1,12}\Z")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class Session(AuthCommands, ChunkingCommands, XclientCommands):
    """The state of one client conversation, driven by the server or by tests.

    One method per verb (``smtp_<verb>``); AUTH (``auth.py``) and BDAT
    (``chunking.py``) and XCLIENT (``xclient.py``) are mixed in from their own modules.  What the next
    input is (a command, message data, a BDAT chunk, an AUTH answer) is the
    one ``mode`` object (``modes.py``); what a hook's return code makes the
    session answer is the one table of ``outcomes.py``.
    """

    verbs: Dict[str, Callable] = {}

    def __init__(self, smtpd: Any, transport: Any, connection: Connection) -> None:
        self.smtpd = smtpd
        self.registry = smtpd.registry
        self.transport = transport
        self.connection = connection
        self.socket = getattr(transport, "socket", None)
        self._transaction: Optional[Transaction] = None  # made when first needed: idle sessions stay small
        self.mode: Any = COMMAND  # what the client's next bytes are (modes.py)
        self.closed = False
        self.command_counter = 0
        self.env: Dict[str, str] = {}
        self.auth_user: Optional[str] = None
        self.auth_mechanism: Optional[str] = None
        self.auth_failures = 0
        self._relay_before_auth = False
        # The message a transaction's BDAT chunks build, or why they are read and then refused
        # ((reply or None, messages, hang up?)): both end with the transaction.
        self._chunk: Optional[ChunkReceiver] = None
        self._chunk_error: Optional[tuple] = None
        self._buffer = bytearray()  # replaced, not emptied, by STARTTLS: see feed()
        self._out: List[bytes] = []
        self._ended = False
        self._greenlets: Optional[set] = None  # started by plugins with self.spawn: they end with the session
        # For the summary lines (summary.py): messages that reached their end, those we accepted,
        # the last reply sent and how the session ended (quit, eof, timeout; None: we hung up).
        self.messages = self.messages_accepted = 0
        self._last_reply: Optional[bytes] = None
        self.ended_by: Optional[str] = None
        self._pre_connection: Dict[str, Any] = {}  # what start() was given: XCLIENT starts again with it

    def __repr__(self) -> str:
        return "<Session %s>" % self.connection.id

    # -- driving ---------------------------------------------------------------
    def start(self, **pre_connection: Any) -> None:
        """Run the ``pre-connection`` and ``connect`` hooks, then greet (or refuse).

        ``pre_connection`` holds what the server knows before the session
        (``max_conn_ip``, ``child_addrs``); it reaches the hook as keywords.
        """
        self._pre_connection = pre_connection
        self._connect(self._greet)

    def _greet(self) -> None:
        self.respond(220, self.greeting(), status=None)

    def _connect(self, then: Callable[[], None]) -> None:
        """The ``pre-connection`` and ``connect`` hooks; ``then`` answers the client when neither refused."""
        connection = self.connection
        params = dict(remote_ip=connection.remote_ip, remote_port=connection.remote_port,
                      local_ip=connection.local_ip, local_port=connection.local_port, **self._pre_connection)
        try:
            self.answer("pre-connection", self.run_hooks("pre-connection", params=params))
            if not self.answer("connect", self.run_hooks("connect")):
                then()
        except PluginFailure:
            self.reply(R.PLUGIN_FAILED_DISCONNECT)
            self.disconnect()
        except Disconnect:
            self.disconnect()
        self.flush()

    def restart(self, connection: Connection, then: Optional[Callable[[], None]] = None) -> None:
        """Begin again as if ``connection``'s client had just connected (XCLIENT, XFORWARD).

        The transaction and AUTH of the proxy's part of the session are
        forgotten; the ``pre-connection`` and ``connect`` hooks run for the new
        client, then ``then`` answers (by default the 220 greeting).  The
        disconnect hooks do not run: the TCP connection goes on.
        """
        self.end_transaction()
        self.connection = connection
        self.auth_user = self.auth_mechanism = None
        self.auth_failures = 0
        self._relay_before_auth = False
        self._connect(then or self._greet)

    def feed(self, data: bytes) -> None:
        """Process what the client sent; reply to every complete command in order.

        The mode in force takes what it can; a mode that neither moves on nor
        hands over waits for more.  STARTTLS gives the session a new buffer:
        what was read before the handshake is dropped with the old one, never
        read as commands on the secure channel (CVE-2011-0411).
        """
        buf = self._buffer
        buf += data
        position = 0
        try:
            while not self.closed and self._buffer is buf:
                mode = self.mode
                after = mode.feed(self, buf, position)
                if after == position and self.mode is mode:
                    break
                position = after
        except Disconnect:
            self.disconnect()
        finally:
            del buf[:position]
            self.flush()

    def eof(self) -> None:
        """The client closed its side."""
        self.ended_by = self.ended_by or "eof"
        if self.mode.in_data or self._chunk is not None:
            self.mode, self._chunk = COMMAND, None
            self.reply(R.DATA_INCOMPLETE)
        self.disconnect()
        self.flush()

    def timeout(self, session_too_long: bool = False) -> None:
        """The client said nothing for ``timeout`` seconds, or the session reached ``max_session_seconds``."""
        self.ended_by = "max_session_seconds" if session_too_long else "timeout"
        self.reply(R.SESSION_TOO_LONG if session_too_long else R.TIMEOUT)
        self.disconnect()
        self.flush()

    def shutdown(self) -> None:
        """The server is stopping: tell the client and end the session."""
        self.ended_by = "shutdown"
        self.reply(R.SHUTDOWN)
        self.disconnect()
        self.flush()

    def in_data(self) -> bool:
        """True while a message is being received (DATA or BDAT): the ``timeout`` for data applies."""
        return self.mode.in_data

    # -- output -----------------------------------------------------------------
    def respond(self, code: int, *lines: str, status: Any = "default") -> None:
        """Queue a reply; plugins may call this and then return DONE.

        ``status`` is the enhanced status code; by default ``X.0.0`` (none for 220).
        """
        text_lines = match_class(code, split_lines(lines) or [""])
        if status == "default":
            status = None if code == 220 or code // 100 not in (2, 4, 5) else "%d.0.0" % (code // 100)
            status = status_for(code, status, text_lines)
        self._emit(format_reply(code, status, text_lines))

    def reply(self, reply: Reply, messages: Sequence[Any] = (), **fields: Any) -> None:
        """Send a registry reply, with the plugin's message text in place of the default when given."""
        if metrics.on:
            metrics.replied(self, reply)
        lines = split_lines(messages) if messages else None
        if lines:
            self.respond(reply.code, *lines, status=status_for(reply.code, reply.status, lines))
            return
        # Our own text: its status is right as it stands and it needs no cleaning (tests/test_replies.py).
        text = reply.text
        if "{" in text:
            if "{me}" in text:
                fields["me"] = self.me
            text = text.format(version=self.smtpd.version, **fields)
        self._emit(format_reply(reply.code, reply.status, text.split("\n")))

    def _emit(self, wire: bytes) -> None:
        if LOGINFO <= self.smtpd.log_threshold:
            self.log(LOGINFO, wire.decode("utf-8", "replace").rstrip("\r\n").replace("\r\n", "\n"))
        out = self._out
        out.append(wire)
        self._last_reply = wire
        if len(out) >= MAX_QUEUED_REPLIES:
            self.flush()  # a client that pipelines without reading waits on its own replies, not our memory

    def flush(self) -> None:
        """Write every queued reply in one write."""
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            try:
                self.transport.write(data)
            except OSError as exc:
                self.log(LOGINFO, "client went away while we wrote: %s" % exc)
                self.closed = True

    def answer(self, hook: str, result: HookResult, **fields: Any) -> bool:
        """Answer ``result`` of ``hook`` as the outcome table says; True when that ends the command."""
        row = outcome(hook, result.rc)
        if row is None:
            return False
        if row.reply is not None:
            self.reply(row.reply, result.messages if row.plugin_text else (), **fields)
        if row.close:
            raise Disconnect  # disconnect() ends the transaction after the disconnect hooks
        if row.end:
            self.end_transaction()
        return True

    # -- services for plugins -----------------------------------------------------
    @property
    def me(self) -> str:
        return self.config("me")

    def config(self, name: str, default: Optional[str] = None, address: Optional[Address] = None) -> Optional[str]:
        """The first value of config ``name``, asking the ``config`` hook first (``user_config`` with an address)."""
        values = self.config_list(name, address)
        return values[0] if values else default

    def config_list(self, name: str, address: Optional[Address] = None) -> List[str]:
        """All values of ``name``; for ``address``, a ``user_config`` plugin's answer comes before anything else."""
        if address is not None and self.registry.has("user_config"):
            result = self.run_hooks("user_config", address, name, failures="log")
            if result.rc == OK:
                return [str(v) for v in result.messages]
        if self.registry.has("config"):
            result = self.run_hooks("config", name, failures="log")
            if result.rc == OK:
                return [str(v) for v in result.messages]
        return self.smtpd.config.lines(name)

    def config_map(self, name: str) -> Mapping[str, str]:
        """qpsmtpd's ``config(name, 'map')``: ``<name>.cdb``, else the ``key [value]`` lines of ``name``."""
        return self.smtpd.config.mapping(name)

    def log(self, level: int, message: str, hook: Optional[str] = None, plugin: Optional[str] = None) -> None:
        self.smtpd.log(level, message, hook, plugin, session=self)

    def run_hooks(self, hook: str, *args: Any, params: Optional[dict] = None, failures: str = "raise") -> HookResult:
        """Run ``hook``; with ``failures="log"`` a failing plugin counts as DECLINED."""
        try:
            return self.registry.run(self, hook, args, params)
        except PluginFailure:
            if failures == "raise":
                raise
            return HookResult(DECLINED, [])

    @property
    def transaction(self) -> Transaction:
        """The current transaction (there always is one; it is made on first use)."""
        if self._transaction is None:
            self._transaction = self._new_transaction()
        return self._transaction

    @transaction.setter
    def transaction(self, value: Transaction) -> None:
        self._transaction = value

    @property
    def made_transaction(self) -> Optional[Transaction]:
        """The current transaction if something has made it, else None (never makes one)."""
        return self._transaction

    @property
    def hook_transaction(self) -> Any:
        """What hooks get as ``transaction``: the current one, or a stand-in that makes it when a plugin uses it."""
        transaction = self._transaction
        return transaction if transaction is not None else PendingTransaction(self)

    def reset_transaction(self) -> Transaction:
        """End the current transaction (``reset_transaction`` hook) and start a new one."""
        self.end_transaction()
        return self.transaction

    def end_transaction(self) -> None:
        """End the current transaction; the next is made when something asks for it."""
        old = self._transaction
        if old is not None:
            if self.registry.has("reset_transaction"):
                self.run_hooks("reset_transaction", failures="log")
            old.close()
            self._transaction = None
        self._chunk = self._chunk_error = None  # BDAT chunks belong to the transaction that ended

    def disconnect(self) -> None:
        """Run the end-of-session hooks once and mark the session closed."""
        if self._ended:
            self.closed = True
            return
        self._ended = True
        self.closed = True
        self.mode = COMMAND
        self.connection.notes["disconnected"] = True
        if LOGNOTICE <= self.smtpd.log_threshold:  # before the hooks: a logging plugin may close its file there
            ended = self.ended_by or "after " + summary.reply_line(self._last_reply)[:3]
            self.log(LOGNOTICE, summary.session_line(self, ended))
        self.run_hooks("disconnect", failures="log")
        self.end_transaction()
        self.run_hooks("post-connection", failures="log")
        if self._transaction is not None:
            self._transaction.close()
        for greenlet in list(self._greenlets or ()):
            greenlet.kill(block=False)

    def keep_greenlet(self, greenlet: Any) -> None:
        """Own a greenlet a plugin started (``Plugin.spawn``): one still running when the session ends is killed."""
        if self._greenlets is None:
            self._greenlets = set()
        self._greenlets.add(greenlet)
        greenlet.link(self._greenlets.discard)

    def start_tls(self, context: Any, timeout: float, reset: bool = True) -> None:
        """Turn the connection into TLS; plugins (``tls``) call this after their ``220``.

        Whatever the client sent after the command is thrown away, never read
        as commands on the secure channel (CVE-2011-0411).  With ``reset`` the
        HELO and the transaction are forgotten, so the client must EHLO again
        (RFC 3207 4.2).  Raises OSError (or TimeoutError) when the handshake fails.
        """
        self.flush()
        self._buffer = bytearray()
        self.transport.start_tls(context, timeout)
        self.socket = self.transport.socket
        notes = self.connection.notes
        notes["tls_enabled"] = True
        notes["tls_version"] = self.socket.version()
        metrics.tls_started(notes["tls_version"])
        notes["tls_cipher"] = self.socket.cipher()[0]
        notes["tls_peer_certificate"] = self.socket.getpeercert()
        if reset:  # RFC 3207 4.2: forget everything the plaintext session established
            self.connection.hello = self.connection.hello_host = None
            if self.auth_user:
                self.connection.relay_client = self._relay_before_auth
                self.auth_user = self.auth_mechanism = None
            self.end_transaction()

    def greeting(self) -> str:
        custom = self.config("smtpgreeting")
        if custom:
            return custom if re.search(r"(^|\W)ESMTP(\W|$)", custom) else custom + " ESMTP"
        return R.GREETING.text.format(me=self.me, version=self.smtpd.version)

    def _new_transaction(self) -> Transaction:
        smtpd = self.smtpd
        return Transaction(self.connection.id, smtpd.spool_dir, smtpd.size_threshold)

    # -- command dispatch ---------------------------------------------------------
    def command_line(self, raw: bytes) -> None:
        """One line from the client in command mode, CRLF included: checked, decoded, dispatched."""
        if not raw.endswith(b"\r\n") or b"\r" in raw[:-2]:
            if self.smtpd.bare_newline != "normalize" or b"\r" in raw.rstrip(b"\r\n"):
                # 521 says we hang up (as Postfix does); going on would leave the
                # client guessing where its next command starts.
                self.reply(R.BARE_NEWLINE, where="a command")
                raise Disconnect
        body = raw.rstrip(b"\r\n")
        limit = MAX_AUTH_LINE if body[:5].upper() == b"AUTH " else MAX_COMMAND_LINE
        if len(body) + 2 > limit:
            self.reply(R.LINE_TOO_LONG)
            return
        try:
            line = body.decode("utf-8")
        except UnicodeDecodeError:
            self.reply(R.BAD_BYTES)
            return
        if _CONTROL.search(line):
            self.reply(R.BAD_BYTES)
            return
        self.command(line)

    def command(self, line: str) -> None:
        """Dispatch one command line (without CRLF)."""
        self.connection.notes["original_string"] = line
        verb, _, rest = line.partition(" ")
        rest = rest.lstrip(" ")
        lower = verb.lower()
        if LOGDEBUG <= self.smtpd.log_threshold:
            self.log(LOGDEBUG, "dispatching %s" % ("AUTH <hidden credentials>" if lower == "auth" else line))
        if lower:
            self.command_counter += 1
        method = self.verbs.get(lower) if _VERB.match(verb or "-") else None
        if method is None:
            self.guarded(lower, self._unrecognized, lower, rest)
        else:
            self.guarded(lower, method, self, rest)

    def guarded(self, verb: str, function: Callable, *args: Any) -> None:
        """Run a command handler; a plugin failure or a bug is a 451, never a dead session."""
        try:
            function(*args)
        except PluginFailure:
            self.reply(R.PLUGIN_FAILED)
        except Disconnect:
            raise
        except Exception:
            self.log(LOGERROR, "command %r failed unexpectedly:\n%s" % (verb, traceback.format_exc()))
            self.reply(R.INTERNAL_ERROR, detail="command '%s' failed unexpectedly" % verb)

    def _unrecognized(self, verb: str, rest: str) -> None:
        result = self.run_hooks("unrecognized_command", verb, rest)
        if verb == "proxy" and result.rc != DONE:  # only trusted proxies may say who the client is (proxy_hosts)
            self.reply(R.PROXY_REFUSED)
            raise Disconnect
        self.answer("unrecognized_command", result)

    # -- verbs ---------------------------------------------------------------------
    def smtp_helo(self, rest: str) -> None:
        self._hello("helo", rest)

    def smtp_ehlo(self, rest: str) -> None:
        self._hello("ehlo", rest)

    def _hello(self, verb: str, rest: str) -> None:
        words = self._parse(verb + "_parse", verb, rest, parse_words)
        if words is None:
            return
        if not words:
            self.reply(R.HELO_NO_HOST, verb=verb)
            return
        if self.connection.hello:
            self.reply(R.HELO_AGAIN)
            return
        host = self.xclient_helo() or words[0]
        if self.answer(verb, self.run_hooks(verb, host, *words[1:])):
            return
        self.connection.hello = verb
        self.connection.hello_host = host
        fields = dict(remote_info=self.connection.remote_info, remote_ip=self.connection.remote_ip)
        if verb == "helo":
            self.reply(R.HELO_OK, **fields)
            return
        lines = [R.EHLO_OK.text.format(me=self.me, **fields)]
        lines.extend(self.ehlo_keywords())
        self.respond(250, *lines, status=None)

    def ehlo_keywords(self) -> List[str]:
        """The extensions EHLO advertises: the core's, plugins' declared ``CAPABILITIES`` (``DSN``), then ``capabilities`` notes."""
        databytes = self.databytes()
        keywords = ["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SIZE %d" % databytes if databytes else "SIZE",
                    "SMTPUTF8", "CHUNKING", "BINARYMIME"]
        keywords.extend(self.smtpd.capabilities)
        if self._transaction is not None:
            keywords.extend(self._transaction.notes.get("capabilities", ()))
        keywords.extend(self.connection.notes.get("capabilities", ()))
        if self._auth_offered():
            keywords.append("AUTH " + " ".join(self.auth_mechanisms()))
        if self.xclient_allowed():
            keywords.extend(XCLIENT_KEYWORDS)
        return keywords

    def databytes(self) -> int:
        value = self.config("databytes")
        try:
            return max(0, int(value)) if value else 0
        except ValueError:
            return 0

    def _parse(self, hook: str, verb: str, line: str, default: Callable) -> Any:
        """Run a ``*_parse`` hook; a callable it returns replaces the default parser.  None = refused.

        A parser that raises (or returns something that is not ``(rc, ...)``)
        is a plugin failure: logged with its traceback, ``451 4.3.0`` to the
        client, never its text.
        """
        result = self.run_hooks(hook, line)
        if result.messages and callable(result.messages[0]):
            try:
                answer = result.messages[0](self, verb, line)
                checked = normalise(answer) if isinstance(answer, (tuple, list)) else None
                if checked is None:
                    raise TypeError("a parser must return (rc, ...), not %r" % (answer,))
                rc, values = checked
            except Exception:
                self.log(LOGERROR, "the parser plugin %s returned for %s failed:\n%s"
                         % (result.plugin, hook, traceback.format_exc().rstrip()), hook=hook, plugin=result.plugin)
                raise PluginFailure(hook, result.plugin or "?", "its parser raised") from None
            if rc != OK:
                self.reply(R.SYNTAX_COMMAND, values[:1])
                return None
            return values
        try:
            return default(line)
        except ParseError as exc:
            self.respond(501, str(exc), status="5.5.4")
            return None

    def _path_command(self, verb: str, prefix: str, rest: str, allowed: set) -> Any:
        """Parse MAIL/RCPT arguments through the parse and pre hooks: (path string, params) or None."""
        parsed = self._parse(verb + "_parse", verb, rest, lambda line: parse_path_command(prefix, line))
        if parsed is None:
            return None
        if isinstance(parsed, tuple):
            path, params = parsed
        else:  # a plugin parser: [path, "KEY=VALUE", ...]
            path, params = parsed[0], {}
            for word in parsed[1:]:
                key, eq, value = str(word).partition("=")
                params[key.lower()] = value if eq else None
        unknown = [key for key in params if key not in allowed]
        if unknown:
            self.reply(R.BAD_PARAMETER, param=unknown[0].upper())
            return None
        result = self.run_hooks(verb + "_pre", path, params)
        if result.rc == OK and result.messages:
            path = str(result.messages[0])
        return path, params

    def smtp_mail(self, rest: str) -> None:
        if not self.connection.hello:
            self.reply(R.MAIL_NO_HELO)
            return
        if self._transaction is not None and self._transaction.sender is not None:
            self.reply(R.MAIL_NESTED)
            return
        self.connection.notes["envelope_from"] = rest
        transaction = self.reset_transaction()
        parsed = self._path_command("mail", "from", rest, self.smtpd.mail_parameters)
        if parsed is None:
            return
        path, params = parsed
        size = params.get("size")
        if size is not None:
            if not size.isdigit():
                self.reply(R.SYNTAX_PARAMETERS)
                return
            databytes = self.databytes()
            if databytes and int(size) > databytes:
                self.reply(R.MAIL_TOO_BIG, databytes=databytes)
                return
        body = params.get("body")
        if body is not None and body.upper() not in ("7BIT", "8BITMIME", "BINARYMIME"):
            self.reply(R.SYNTAX_PARAMETERS)
            return
        if params.get("smtputf8", None) is not None or ("auth" in params and not params["auth"]):
            self.reply(R.SYNTAX_PARAMETERS)
            return
        try:
            transaction.dsn = check_dsn_mail(params)
        except ParseError as exc:
            self.respond(501, str(exc), status="5.5.4")
            return
        sender = self._address(path, "smtputf8" in params, R.MAIL_SYNTAX)
        if sender is None:
            return
        result = self.run_hooks("mail", sender, params=params)
        fields = {"addr": sender.format()}
        if self.answer("mail", result, **fields):
            return
        transaction.sender = sender
        transaction.notes["mail_parameters"] = params
        self.reply(R.MAIL_OK, result.messages if result.rc == OK else (), **fields)

    def _address(self, path: str, utf8: bool, syntax_error: Reply) -> Optional[Address]:
        """Parse a path; None once the client has been told why it does not parse."""
        if not utf8 and not path.isascii():
            self.reply(R.NEED_SMTPUTF8)
            return None
        try:
            return Address.parse(path, utf8=utf8)
        except AddressError:
            self.reply(syntax_error)
            return None

    def smtp_rcpt(self, rest: str) -> None:
        self.connection.notes["envelope_rcpt"] = rest
        transaction = self.transaction
        if transaction.sender is None:
            self.reply(R.RCPT_NO_MAIL)
            return
        parsed = self._path_command("rcpt", "to", rest, self.smtpd.rcpt_parameters)
        if parsed is None:
            return
        path, params = parsed
        recipient = self._address(path, "smtputf8" in transaction.notes.get("mail_parameters", {}), R.RCPT_SYNTAX)
        if recipient is None:
            return
        if recipient.is_null:
            self.reply(R.RCPT_SYNTAX)
            return
        try:
            recipient.notes["dsn"] = check_dsn_rcpt(params)
        except ParseError as exc:
            self.respond(501, str(exc), status="5.5.4")
            return
        if self.smtpd.max_rcpt and len(transaction.recipients) >= self.smtpd.max_rcpt:
            self.reply(R.RCPT_TOO_MANY)
            return
        result = self.run_hooks("rcpt", recipient, params=params)
        fields = {"addr": recipient.format()}
        if self.answer("rcpt", result, **fields):
            return
        transaction.add_recipient(recipient)  # only OK goes on: the table answers every other code
        self.reply(R.RCPT_OK, result.messages, **fields)

    def smtp_data(self, rest: str) -> None:
        if self.answer("data", self.run_hooks("data")):
            return
        if self._chunk is not None:
            self.reply(R.DATA_AFTER_BDAT)
            return
        if (self.transaction.notes.get("mail_parameters", {}).get("body") or "").upper() == "BINARYMIME":
            self.reply(R.BINARYMIME_NEEDS_BDAT)
            return
        if self.transaction.sender is None:
            self.reply(R.DATA_NO_MAIL)
            return
        if not self.transaction.recipients:
            self.reply(R.DATA_NO_RCPT)
            return
        self.reply(R.DATA_GO_AHEAD)
        self.flush()
        smtpd = self.smtpd
        self.mode = DataStream(DataReceiver(self.transaction, self.databytes(), smtpd.max_line_length,
                                            smtpd.bare_newline))

    def headers_end(self) -> None:
        """The header block is in: ``data_headers_end`` may refuse (and hang up) before the body is stored.

        A failing plugin is answered at the end of the data, once the client listens again.
        """
        try:
            result = self.run_hooks("data_headers_end")
        except PluginFailure:
            self.transaction.notes["plugin_failed"] = True
            return
        self.answer("data_headers_end", result)

    def end_of_data(self, receiver: DataReceiver) -> None:
        """The message is in (DATA or BDAT LAST): answer it, and log one line for it."""
        transaction, before = self.transaction, self._last_reply
        self.messages += 1
        try:
            self._take_message(receiver)
        except PluginFailure:
            self._message_done(transaction, receiver, b"451 4.3.0 (plugin failure)")
            raise
        self._message_done(transaction, receiver, self._last_reply if self._last_reply is not before else None)

    def _message_done(self, transaction: Transaction, receiver: DataReceiver, reply: Optional[bytes]) -> None:
        if reply is not None and reply[:1] == b"2":
            self.messages_accepted += 1
        if LOGNOTICE <= self.smtpd.log_threshold:
            self.log(LOGNOTICE, summary.message_line(transaction, receiver.size, reply))

    def _take_message(self, receiver: DataReceiver) -> None:
        metrics.data_received(receiver.size)
        transaction = self.transaction
        if receiver.too_big:
            self.log(LOGERROR, "message too big: %d bytes > databytes %d" % (receiver.size, receiver.max_size))
            self.reply(R.DATA_TOO_BIG)
            self.end_transaction()
            return
        if receiver.line_too_long:
            self.reply(R.DATA_LINE_TOO_LONG, limit=receiver.line_limit)
            self.end_transaction()
            return
        if transaction.notes.get("plugin_failed"):
            raise PluginFailure("data_headers_end", "?", "failed earlier")
        self.run_hooks("data_post_headers", failures="log")
        trace.stamp(self)
        if not self.answer("data_post", self.run_hooks("data_post")):
            self._queue()

    def _queue(self) -> None:
        result = self.run_hooks("queue_pre")
        if result.rc not in (OK, DECLINED, 0, DONE):
            self.log(LOGERROR, "queue_pre plugin %s returned %s" % (result.plugin, result.rc))
        if self.answer("queue_pre", result):
            return
        try:
            result = self.run_hooks("queue")
        finally:
            # The message is gone from our hands either way: the spool must not outlive this.
            self.end_transaction()
        self.answer("queue", result)
        if result.rc == DONE:
            return
        post = self.run_hooks("queue_post", failures="log")
        if post.rc not in (OK, 0, DECLINED):
            self.log(LOGERROR, "queue_post: %s" % " ".join(map(str, post.messages)))

    def smtp_rset(self, rest: str) -> None:
        self.end_transaction()
        self.reply(R.RSET_OK)

    def smtp_noop(self, rest: str) -> None:
        self.answer("noop", self.run_hooks("noop"))

    def smtp_vrfy(self, rest: str) -> None:
        self.answer("vrfy", self.run_hooks("vrfy"))

    def smtp_help(self, rest: str) -> None:
        self.answer("help", self.run_hooks("help", rest))

    def smtp_quit(self, rest: str) -> None:
        self.ended_by = "quit"
        self.answer("quit", self.run_hooks("quit", failures="log"))


Session.verbs = {name[len("smtp_"):]: getattr(Session, name) for name in dir(Session) if name.startswith("smtp_")}
