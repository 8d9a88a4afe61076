"""milter: run a Sendmail/Postfix milter (opendkim, opendmarc, a spam or virus milter) as a plugin.

Arguments::

    milter NAME PORT                     # a milter on 127.0.0.1
    milter NAME HOST:PORT | NAME HOST PORT
    milter NAME inet:PORT@HOST | inet6:PORT@HOST | unix:/path | /path
           [default_action tempfail|accept] [connect_timeout S] [command_timeout S] [eom_timeout S]

``NAME`` labels the log lines and replies.  The plugin speaks the MTA side
of the milter protocol (version 6 negotiation, every step and every
end-of-message action), one milter connection per SMTP session:

``connect``, ``helo``/``ehlo``, ``mail``, ``rcpt``
    the SMTP step and its macros (``j``, ``_``, ``{client_addr}``,
    ``{client_name}``, ``{client_port}``, ``{daemon_name}``, ``{i}``,
    ``{mail_addr}``, ``{rcpt_addr}``, ``{auth_type}``, ``{auth_authen}``,
    ``{tls_version}``, ``{cipher}``) go to the milter as they happen;
``data_post``
    DATA, every header (our Received included), end of headers, the body in
    chunks of at most 65535 octets with CRLF line ends, then end of message.
    The milter's changes are applied to the transaction in the order it
    sent them: add, insert, change or delete a header, replace the body,
    add or delete a recipient, change the sender, quarantine (the reason
    goes in the transaction note ``quarantine`` and the log: there is no
    hold queue here; a queue plugin may honour the note).
``disconnect``
    QUIT to the milter.  A transaction given up half way (RSET, a new MAIL)
    is aborted at the next MAIL.

The milter's verdict: ``continue`` and ``accept`` decline (another plugin,
``rcpt_ok`` say, still has to accept a recipient; ``accept`` just stops
asking the milter, for the message or, at connect/HELO, the session);
``reject`` is a 5xx (a refused recipient is that recipient only; at connect
the client is refused and disconnected), ``tempfail`` a 4xx; a milter's own
reply code (``554 5.7.1 ...``) reaches the client unchanged; ``discard``
answers ``250`` at the end of DATA and drops the message (at connect or
HELO: every message of the session).  List the plugin before ``rcpt_ok``
(the first plugin to accept a recipient ends the rcpt hook) and before
content filters that accept messages.

When the milter cannot be reached, breaks the protocol or is slower than
the timeouts (``connect_timeout`` 5 s, ``command_timeout`` 10 s per step,
``eom_timeout`` 20 s for the end of message: each below ``plugin_timeout``),
``default_action`` decides, as Postfix's ``milter_default_action``:
``tempfail`` (the default, Postfix's too) answers 4xx at that step (4.3.0;
at connect 450 and disconnect); ``accept`` logs and goes on without the
milter for the rest of the session (fail open).

Differences from qpsmtpd: its plugin needs Net::Milter, speaks protocol
version 2, applies only header changes, and lets a milter reject but not
tempfail; this is a protocol client of its own with every action.

Config files: none.
"""
from typing import Dict, List, Optional

from qpgevent import DECLINED, DENY, DENYSOFT, DONE, LOGINFO, LOGNOTICE, LOGWARN, arguments
from qpgevent import milter as proto
from qpgevent.address import Address, AddressError
from qpgevent.milter import MilterClient, MilterError, Reply

POSITIONAL = ["name", "address", "port"]
ARGUMENTS = {
    "name": arguments.text(),
    "address": arguments.text(),
    "port": arguments.integer(minimum=1, maximum=65535),
    "default_action": arguments.choice("tempfail", "accept", default="tempfail"),
    "connect_timeout": arguments.number(default=5, minimum=0.1),
    "command_timeout": arguments.number(default=10, minimum=0.1),
    "eom_timeout": arguments.number(default=20, minimum=0.1),
}
_SEPARATOR = {False: b"\n", True: b"\r\n"}  # the blank line between header and body, as the transaction stores it
_ALLOWED = {"addheader": proto.SMFIF_ADDHDRS, "insheader": proto.SMFIF_ADDHDRS, "chgheader": proto.SMFIF_CHGHDRS,
            "replbody": proto.SMFIF_CHGBODY, "addrcpt": proto.SMFIF_ADDRCPT | proto.SMFIF_ADDRCPT_PAR,
            "delrcpt": proto.SMFIF_DELRCPT, "quarantine": proto.SMFIF_QUARANTINE, "chgfrom": proto.SMFIF_CHGFROM}


class Link:
    """This session's milter connection and where the conversation with it stands."""

    def __init__(self, client: Optional[MilterClient]) -> None:
        self.client = client  # None: the milter is out of the session (failed, or it accepted the connection)
        self.in_message = False  # MAIL sent, end of message not yet
        self.skip_message = False  # the milter accepted or discarded this message: ask it no more
        self.discard_message = False
        self.discard_session = False  # discarded at connect or HELO: every message of the session


def register(self, qp, *args):
    options = self.options
    if not options.name or not options.address:
        raise ValueError("takes a name and the milter's address, e.g. 'milter opendkim 127.0.0.1:8891' "
                         "or 'milter opendkim unix:/run/opendkim.sock'")
    address = options.address if options.port is None else "%s:%d" % (options.address, options.port)
    self.address = proto.parse_address(address)
    self.label = options.name
    for name in ("connect_timeout", "command_timeout", "eom_timeout"):
        if qp.plugin_timeout and getattr(options, name) >= qp.plugin_timeout:
            raise ValueError("%s %s would outlast plugin_timeout (%ss); lower it or raise plugin_timeout"
                             % (name, getattr(options, name), qp.plugin_timeout))
    self.register_hook("ehlo", "hook_helo")


def link(self) -> Link:
    return self.qp.connection.notes.get("milter %s" % self.name) or Link(None)


def hook_connect(self, transaction):
    connection = self.qp.connection
    try:
        client = MilterClient(self.address, self.options.connect_timeout, self.options.command_timeout)
    except MilterError as exc:
        return failed(self, Link(None), exc)
    state = Link(client)
    connection.notes["milter %s" % self.name] = state
    macros = {"j": self.qp.me, "{daemon_name}": "qpgevent", "v": "qpgevent",
              "_": "%s [%s]" % (connection.remote_host or "unknown", connection.remote_ip),
              "{client_addr}": connection.remote_ip, "{client_port}": str(connection.remote_port or 0),
              "{client_name}": connection.remote_host or "unknown", "{if_addr}": connection.local_ip}
    host = connection.remote_host or "[%s]" % connection.remote_ip
    try:
        client.negotiate()
        reply = client.send(proto.SMFIC_CONNECT, proto.connect_data(host, connection.remote_ip,
                                                                       connection.remote_port), macros)
    except MilterError as exc:
        return failed(self, state, exc)
    return verdict(self, state, reply, "connect")


def hook_helo(self, transaction, host, *extra):
    state = link(self)
    if state.client is None:
        return DECLINED
    notes = self.qp.connection.notes
    macros = {"{tls_version}": notes["tls_version"], "{cipher}": notes.get("tls_cipher") or ""} \
        if notes.get("tls_enabled") else None
    return step(self, state, proto.SMFIC_HELO, proto.nul(host), macros, "HELO")


def hook_mail(self, transaction, sender, **params):
    state = link(self)
    if state.client is None:
        return DECLINED
    try:
        if state.in_message:
            state.client.abort()  # the previous transaction ended without an end of message
    except MilterError as exc:
        return failed(self, state, exc)
    state.in_message, state.skip_message, state.discard_message = True, False, False
    macros = {"{i}": transaction.id, "i": transaction.id, "{mail_addr}": sender.address,
              "{mail_host}": sender.host or ""}
    if self.qp.auth_user:
        macros.update({"{auth_authen}": self.qp.auth_user, "{auth_type}": (self.qp.auth_mechanism or "").upper()})
    words = [sender.format()] + [key.upper() if value is None else "%s=%s" % (key.upper(), value)
                                 for key, value in params.items()]
    return step(self, state, proto.SMFIC_MAIL, proto.nul(*words), macros, "MAIL FROM")


def hook_rcpt(self, transaction, recipient, **params):
    state = link(self)
    if state.client is None or state.skip_message:
        return DECLINED
    macros = {"{rcpt_addr}": recipient.address, "{rcpt_host}": recipient.host or ""}
    words = [recipient.format()] + ["%s=%s" % (key.upper(), value) for key, value in params.items()
                                    if not isinstance(value, dict)]
    return step(self, state, proto.SMFIC_RCPT, proto.nul(*words), macros, "RCPT TO")


def hook_data_post(self, transaction):
    state = link(self)
    if state.discard_session or state.discard_message:
        return discard(self)
    if state.client is None or state.skip_message:
        return DECLINED
    state.in_message = False
    try:
        reply = send_message(self, state.client, transaction)
    except MilterError as exc:
        return failed(self, state, exc)
    if reply.action in ("continue", "accept"):
        apply_changes(self, state.client, transaction, reply.changes)
    return verdict(self, state, reply, "end of DATA")


def hook_disconnect(self, transaction):
    state = self.qp.connection.notes.pop("milter %s" % self.name, None)
    if state is not None and state.client is not None:
        state.client.close()
    return DECLINED


def send_message(self, client: MilterClient, transaction) -> Reply:
    """DATA, the headers, end of headers, the body and end of message; the first final verdict but continue."""
    macros = {"i": transaction.id, "{i}": transaction.id}
    reply = client.send(proto.SMFIC_DATA, b"", macros)
    if reply.action != "continue":
        return reply
    lead_space = client.protocol & proto.SMFIP_HDR_LEADSPC
    for name, value in transaction.header:
        # a received header keeps the white space after its colon (ParsedValue.lead): simple canonicalization needs it
        value = (getattr(value, "lead", " ") if lead_space else "") + value.replace("\r\n", "\n")
        reply = client.send(proto.SMFIC_HEADER, proto.nul(name, value))
        if reply.action != "continue":
            return reply
    reply = client.send(proto.SMFIC_EOH, b"", macros)
    if reply.action != "continue":
        return reply
    for chunk in body_chunks(transaction):
        reply = client.send(proto.SMFIC_BODY, chunk)
        if reply.action == "skip":
            break
        if reply.action != "continue":
            return reply
    client.write(proto.SMFIC_MACRO, proto.SMFIC_BODYEOB + proto.nul(*(w for pair in macros.items() for w in pair)))
    client.write(proto.SMFIC_BODYEOB)
    return client.reply(self.options.eom_timeout)


def body_chunks(transaction):
    """The body after the blank separator line, CRLF line ends, in packets of at most 65535 octets."""
    pending = b""
    separator = _SEPARATOR[transaction.binary]
    first = True
    for block in transaction.body_blocks(size=32768):
        if first:
            block = block[len(separator):] if block.startswith(separator) else block
            first = False
        pending += block if transaction.binary else block.replace(b"\n", b"\r\n")
        while len(pending) >= proto.BODY_CHUNK:
            yield pending[:proto.BODY_CHUNK]
            pending = pending[proto.BODY_CHUNK:]
    if pending:
        yield pending


def apply_changes(self, client: MilterClient, transaction, changes: List) -> None:
    """The milter's end-of-message actions, in order; one it did not negotiate is logged and ignored."""
    header = transaction.header
    new_body: Optional[List[bytes]] = None
    for kind, values in changes:
        if not client.actions & _ALLOWED[kind]:
            self.log(LOGWARN, "milter %s sent %s without negotiating it; ignored" % (self.label, kind))
            continue
        self.log(LOGINFO, "milter %s: %s %s" % (self.label, kind, " ".join(str(v)[:60] for v in values[:2])))
        if kind == "addheader":
            header.add(values[0], header_value(client, values[1]))
        elif kind == "insheader":
            header.add(values[1], header_value(client, values[2]), index=values[0])
        elif kind == "chgheader":
            index, name, value = values
            if value:
                header.replace(name, header_value(client, value), max(index, 1) - 1)
            else:
                header.delete(name, max(index, 1) - 1)
        elif kind == "replbody":
            new_body = (new_body or []) + [values[0]]
        elif kind == "addrcpt":
            address = parsed(self, values[0])
            if address is not None:
                transaction.add_recipient(address)
        elif kind == "delrcpt":
            transaction.remove_recipient(values[0].strip("<>"))
        elif kind == "chgfrom":
            address = parsed(self, values[0])
            if address is not None:
                transaction.sender = address
        elif kind == "quarantine":
            transaction.notes["quarantine"] = values[0]
            self.log(LOGNOTICE, "milter %s quarantines the message: %s" % (self.label, values[0]))
    if new_body is not None:
        body = b"".join(new_body)
        transaction.body_truncate()
        transaction.body_write(_SEPARATOR[transaction.binary] + (body if transaction.binary
                                                                 else body.replace(b"\r\n", b"\n")))


def header_value(client: MilterClient, value: str) -> str:
    """A header value from the milter as Header.add takes it (which writes one space after the colon)."""
    if client.protocol & proto.SMFIP_HDR_LEADSPC and value[:1] == " ":
        return value[1:]
    return value


def parsed(self, text: str) -> Optional[Address]:
    path = text if text.startswith("<") else "<%s>" % text
    try:
        return Address.parse(path, utf8=True)
    except AddressError as exc:
        self.log(LOGWARN, "milter %s gave a bad address %r: %s" % (self.label, text, exc))
        return None


def step(self, state: Link, command: bytes, data: bytes, macros: Optional[Dict[str, str]], where: str):
    try:
        reply = state.client.send(command, data, macros)
    except MilterError as exc:
        return failed(self, state, exc)
    return verdict(self, state, reply, where)


def verdict(self, state: Link, reply: Reply, where: str):
    """The milter's final reply at ``where`` as this hook's return (or a reply of its own, with DONE)."""
    action = reply.action
    session_wide = where in ("connect", "HELO")
    if action == "continue":
        return DECLINED
    self.log(LOGINFO, "milter %s at %s: %s %s" % (self.label, where, action, reply.text))
    if action in ("accept", "discard"):
        if session_wide:
            state.client.close()
            state.client = None
        state.skip_message = True
        if action == "accept":
            return DECLINED
        state.discard_session, state.discard_message = session_wide, True
        return discard(self) if where == "end of DATA" else DECLINED
    if action == "replycode" and reply.text[:1] in ("4", "5") and reply.text[:3].isdigit():
        self.qp.respond(int(reply.text[:3]), *reply_lines(reply.text))
        if where == "connect":
            self.qp.disconnect()
        return DONE
    if action == "reject" or action == "replycode":
        return DENY, "5.7.1 Rejected at %s by the %s milter" % (where, self.label)
    return DENYSOFT, "4.7.1 Temporarily rejected at %s by the %s milter, try again later" % (where, self.label)


def reply_lines(text: str) -> List[str]:
    """The lines of a milter's reply, without their ``550-``/``550 `` prefixes."""
    return [line[4:] if line[:3].isdigit() and line[3:4] in ("-", " ") else line
            for line in text.replace("\r\n", "\n").split("\n")]


def discard(self):
    """At the end of DATA of a message the milter discarded: 250, and the message goes nowhere."""
    self.log(LOGNOTICE, "milter %s: message discarded" % self.label)
    self.qp.respond(250, "2.0.0 Message accepted (discarded by the %s milter)" % self.label)
    return DONE


def failed(self, state: Link, exc: Exception):
    """The milter is unreachable or broken: out of this session, and ``default_action`` answers."""
    if state.client is not None:
        state.client.close()
        state.client = None
    self.log(LOGWARN, "milter %s failed: %s" % (self.label, exc))
    if self.options.default_action == "accept":
        self.log(LOGINFO, "skip, default_action accept: going on without the milter")
        return DECLINED
    return DENYSOFT, "4.3.0 Mail filter %s unavailable, try again later" % self.label
