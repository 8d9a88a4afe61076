"""queue/smtp-forward: hand each message to another SMTP server (a Postfix behind us, a smarthost).

Arguments (as in qpsmtpd)::

    queue/smtp-forward [HOST [PORT [xclient]]]

``HOST`` (a name or an address) and ``PORT`` (default 25) are the default
destination; ``xclient`` turns XCLIENT on for it.  ``queue/smtp_forward``
(the seed talk's spelling) loads this plugin too.

Config file ``smtp_forward.ini`` (optional; every setting has a default).
Settings at the top apply to every destination; each ``[section]`` is a
destination (``host``, ``port``) and may repeat any of them for itself.  A
section with ``domains`` takes the recipients of those domains
(``.example.com`` takes those of its subdomains, as in Postfix's transport
maps); the one section without ``domains`` is the default, in place of the
``HOST`` argument (give one or the other)::

    connect_timeout = 30      # seconds to connect and get the greeting
    timeout = 300             # seconds for each later reply, the one after the message too
    starttls = may            # may: when offered; require: 451 without it; no: never
    tls_verify = yes          # check the next hop's certificate and name
    tls_ca_file =             # CA certificates (PEM) to check it with; default: the system's
    xclient = no              # send XCLIENT NAME/ADDR/PORT/HELO/PROTO (and LOGIN) when the next hop offers it
    user =                    # AUTH to the next hop with this user and password (only over TLS, unless starttls = no)
    password =
    rcpt_check = no           # ask the next hop about each recipient at our RCPT time
    pool_size = 4             # idle connections kept per destination (0: a connection per message)
    pool_idle = 10            # seconds an idle connection is kept

    [internal]
    host = 10.0.0.5
    domains = example.com, .example.org
    xclient = yes

    [smarthost]
    host = smtp.provider.example
    port = 587
    starttls = require
    user = us
    password = secret

The hand-off: connect, EHLO (as config ``me``), STARTTLS when offered (and
``starttls`` is not ``no``), XCLIENT with the client's name, address, port,
HELO and protocol (and ``LOGIN``, the user it authenticated as, when it did:
Postfix takes it as the SASL user), then EHLO again with the client's HELO
name (as qpsmtpd does), AUTH; MAIL (with ``SIZE=``, RFC 1870, when the next
hop offers SIZE), one RCPT per recipient, the message streamed from the spool
(DATA, or BDAT for ``BODY=BINARYMIME``).  The client hears ``250`` only once
the next hop has answered ``250`` to the message, with its text (``queued as
...``).  The connection then waits in a small per-process pool for the next
message to the same destination (and, with XCLIENT, from the same client); a
pooled connection gets ``RSET`` before reuse, and one that does not answer it
is dropped and a fresh one opened.

What the client hears when the hand-off fails:

* the next hop cannot be reached, the connection breaks, a wait runs out, TLS
  or AUTH fails, or it answers 4xx: ``451`` (nothing is lost: the client keeps
  the message and tries again);
* it refuses the sender, every recipient, or the message with 5xx: ``552``
  (what qpsmtpd answers a queue plugin's DENY with, as our other queue plugins
  do) with its enhanced status code and text;
* the message is larger than the ``SIZE`` limit the next hop advertises:
  ``552 5.3.4`` naming that limit, before anything is sent;
* it refuses some recipients temporarily: ``451`` for the whole message (the
  others are not sent either, so the retry duplicates nothing);
* it refuses some recipients permanently and accepts others: the message goes
  to the accepted ones, the client hears ``250``, and the sender gets a
  delivery status notification (RFC 3464, sent through the same next hop) for
  the refused ones.  Our client heard ``250`` for them at RCPT and the DATA
  reply is one for all, so this is the only way left to tell it.  qpsmtpd
  answers ``451`` for the whole message instead, which the client retries
  until it expires and then bounces even the good recipients.  With
  ``rcpt_check = yes`` the next hop is asked at our RCPT (``MAIL``, ``RCPT``,
  ``RSET`` on a pooled connection) and its refusal reaches the client there
  (``550``/``450`` with its text); its acceptance decides nothing, the other
  rcpt plugins still do.  That check runs before them.

One transaction goes to one destination: a recipient for another destination
than the transaction's first gets ``452 4.5.3`` at RCPT and the client sends
it again in a new transaction (RFC 5321 3.3), so the answer after the message
is true for every recipient.

Extensions are passed on when the next hop offers them: the DSN parameters
(``RET``, ``ENVID``, ``NOTIFY``, ``ORCPT``; so this plugin declares ``DSN``),
``SMTPUTF8`` and ``BODY=8BITMIME``/``BINARYMIME``.  When it does not: a
message that needs SMTPUTF8 (a non-ASCII address or header) gets ``552
5.6.7``; 8-bit octets declared ``BODY=8BITMIME`` get ``552 5.6.3``, as does a
binary message (no conversion is done); ``NOTIFY=SUCCESS`` or ``NEVER``,
which the next hop would not honour, get ``552 5.3.3``; the other DSN
parameters are dropped (the next hop sends failure notices anyway).  A message
that only declared SMTPUTF8 or 8BITMIME but is ASCII goes without them.

Timeouts: every wait is bounded by ``connect_timeout`` or ``timeout``
(Postfix's 30 s and 300 s), and the whole hand-off by ``connect_timeout``
plus four times ``timeout`` (21 minutes by default; the largest of any
destination), which the plugin declares as its ``queue`` hook's own timeout
in place of ``plugin_timeout`` (which stays the bound when it is larger).
A next hop may so take its time over the final dot, as RFC 5321 4.5.3.2
allows.  A hand-off cut short answers ``451`` and drops the connection.
``rcpt_check``'s questions at RCPT stay within ``plugin_timeout``.

Differences from qpsmtpd: the ini file, STARTTLS, AUTH, the pool,
per-recipient results, extensions (SIZE too) and XCLIENT ``LOGIN`` are ours; qpsmtpd's plugin reports every
failure as ``451`` (it declines), we pass a permanent refusal on as ``552``.  XCLIENT
values are xtext-encoded, and an IPv6 ``ADDR`` is written ``IPV6:...``, as
Postfix expects.
"""
import re
import smtplib
import ssl
import time
from types import SimpleNamespace

from qpgevent import DECLINED, DENY, DENYSOFT, DONE, LOGERROR, LOGINFO, LOGWARN, OK, arguments
from qpgevent.address import domain_key
from qpgevent.replies import QUEUE_DENY
from qpgevent.smtp_client import Pool, close, send_bdat, send_data, split_reply, xtext

CAPABILITIES = ["DSN"]

ARGUMENTS = {
    "host": arguments.text(),
    "port": arguments.integer(default=25, minimum=1, maximum=65535),
    "flag": arguments.choice("xclient"),
}
POSITIONAL = ["host", "port", "flag"]

# Settings a destination section may repeat: configspec check, default.
SHARED = {
    "connect_timeout": ("float(min=0.1, default=%s)", "30"),
    "timeout": ("float(min=0.1, default=%s)", "300"),
    "starttls": ("option('may', 'require', 'no', default=%s)", "'may'"),
    "tls_verify": ("boolean(default=%s)", "True"),
    "tls_ca_file": ("string(default=%s)", "''"),
    "xclient": ("boolean(default=%s)", "False"),
    "user": ("string(default=%s)", "''"),
    "password": ("string(default=%s)", "''"),
    "rcpt_check": ("boolean(default=%s)", "False"),
}
SPEC = ["%s = %s" % (name, check % default) for name, (check, default) in SHARED.items()] + [
    "pool_size = integer(min=0, default=4)",
    "pool_idle = float(min=0, default=10)",
    "[__many__]",
    "host = string(min=1)",
    "port = integer(min=1, max=65535, default=25)",
    "domains = force_list(default=list())",
] + ["%s = %s" % (name, check % "None") for name, (check, _) in SHARED.items()]

_EIGHT_BIT = re.compile(rb"[\x80-\xff]")
_XCLIENT_LINE = 500  # qpsmtpd's limit for one XCLIENT command's attributes
PERMANENT = QUEUE_DENY.code  # 552, as the core answers DENY from hook_queue and the other queue plugins do
# Replies a hand-off's budget lets take the whole ``timeout``: a live next hop is slow at a few (RFC 5321
# 4.5.3.2 gives the final dot 10 minutes), one slow at every reply is broken, and each reply is bounded anyway.
_SLOW_REPLIES = 4


class HandOffFailed(Exception):
    """The next hop did not take the message: the reply our client gets."""

    def __init__(self, code: int, status: str, text: str) -> None:
        super().__init__("%d %s %s" % (code, status, text))
        self.code, self.status, self.text = code, status, text


def register(self, qp, *args):
    ini = self.config_ini("smtp_forward", SPEC)
    options = self.options
    top = {name: ini[name] for name in SHARED}
    self.routes, self.default = {}, None
    if options.host:
        settings = dict(top, xclient=top["xclient"] or options.flag == "xclient")
        self.default = _destination("default", options.host, options.port, settings)
    for name in ini.sections:
        section = ini[name]
        settings = dict(top, **{key: section[key] for key in SHARED if section[key] is not None})
        destination = _destination(name, section["host"], section["port"], settings)
        if not section["domains"]:
            if self.default is not None:
                raise ValueError("smtp_forward.ini: section [%s] has no domains, so it is a second default "
                                 "destination after %s; give it `domains = ...` or drop one"
                                 % (name, self.default.name))
            self.default = destination
        for domain in section["domains"]:
            self.routes[("." if domain.startswith(".") else "") + domain_key(domain.lstrip("."))] = destination
    if self.default is None:
        raise ValueError("no default destination: give HOST [PORT] as arguments, or a section without "
                         "`domains` in smtp_forward.ini")
    self.pool = Pool(ini["pool_size"], ini["pool_idle"])  # process-wide, like the configuration
    destinations = [self.default, *self.routes.values()]
    budget = max(d.connect_timeout + d.timeout * _SLOW_REPLIES for d in destinations)
    self.set_hook_timeout("queue", max(budget, qp.plugin_timeout))
    self.register_hook("rcpt", "check_recipient", prepend=True)


def _destination(name, host, port, settings):
    context = None
    if settings["starttls"] != "no":
        try:
            context = ssl.create_default_context(cafile=settings["tls_ca_file"] or None)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError("smtp_forward.ini: tls_ca_file %r of destination %s does not load (%s); give a file of "
                             "PEM certificates" % (settings["tls_ca_file"], name, exc)) from None
        if not settings["tls_verify"]:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    return SimpleNamespace(name=name, host=host.strip("[]"), port=port, tls=context, **settings)


def destination_for(self, address):
    """The destination of a recipient: its domain's, a parent domain's ``.domain`` entry, or the default."""
    if not address.host:
        return self.default
    domain = domain_key(address.host)
    if domain in self.routes:
        return self.routes[domain]
    labels = domain.split(".")
    for start in range(1, len(labels)):
        found = self.routes.get("." + ".".join(labels[start:]))
        if found is not None:
            return found
    return self.default


# -- the connection ----------------------------------------------------------------------------
def xclient_items(self):
    """The XCLIENT attributes of our client, as qpsmtpd sends them."""
    connection = self.qp.connection
    name = connection.remote_host or ""
    if not name or name.startswith("[") or name.lower() == "unknown":
        name = "[UNAVAILABLE]"
    address = connection.remote_ip or ""
    items = {"NAME": name, "ADDR": "IPV6:" + address if ":" in address else address or "[UNAVAILABLE]",
             "PORT": str(connection.remote_port or "[UNAVAILABLE]"), "HELO": connection.hello_host or "[UNAVAILABLE]"}
    if connection.hello:
        items["PROTO"] = "ESMTP" if connection.hello.lower() == "ehlo" else "SMTP"
    if self.qp.auth_user:  # Postfix takes it as the SASL login (permit_sasl_authenticated, sasl_username)
        items["LOGIN"] = self.qp.auth_user
    return items


def pool_key(self, destination):
    """Connections are shared per destination; with XCLIENT, per client identity too."""
    return (destination.name, tuple(sorted(xclient_items(self).items())) if destination.xclient else None)


def connect(self, destination):
    """A connection ready for MAIL: from the pool after a good RSET, else a new one."""
    key = pool_key(self, destination)
    client = self.pool.take(key)
    if client is not None:
        try:
            if client.rset()[0] == 250:
                return client
        except (smtplib.SMTPException, OSError):
            pass
        self.log(LOGINFO, "pooled connection to %s is gone; opening a new one" % destination.name)
        close(client)
    return open_connection(self, destination)


def open_connection(self, destination):
    """A new connection, greeted; the details of a failure go to the log, not to our client."""
    where = "%s (%s port %d)" % (destination.name, destination.host, destination.port)
    try:
        client = smtplib.SMTP(destination.host, destination.port, local_hostname=self.qp.me,
                              timeout=destination.connect_timeout)
    except (smtplib.SMTPException, OSError) as exc:
        self.log(LOGERROR, "error, cannot reach next hop %s: %s: %s" % (where, type(exc).__name__, exc))
        raise HandOffFailed(451, "4.4.1", "next hop not reachable; try again later") from None
    try:
        client.sock.settimeout(destination.timeout)
        greet(self, client, destination)
        return client
    except ssl.SSLError as exc:
        close(client)
        self.log(LOGERROR, "error, TLS with next hop %s failed: %s (see tls_verify, tls_ca_file)" % (where, exc))
        raise HandOffFailed(451, "4.7.5", "TLS with the next hop failed; try again later") from None
    except BaseException:
        close(client)
        raise


def greet(self, client, destination):
    """EHLO, STARTTLS, XCLIENT and AUTH, as the destination wants and the next hop offers."""
    ehlo(client, self.qp.me)
    if destination.tls is not None and client.has_extn("starttls"):
        client.starttls(context=destination.tls)
        ehlo(client, self.qp.me)
    elif destination.starttls == "require":
        raise HandOffFailed(451, "4.7.5", "next hop %s does not offer STARTTLS, which smtp_forward.ini requires"
                            % destination.name)
    if destination.xclient:
        send_xclient(self, client, destination)
    if destination.user:
        if destination.starttls != "no" and not isinstance(client.sock, ssl.SSLSocket):
            raise HandOffFailed(451, "4.7.0", "next hop %s offers no STARTTLS, and the AUTH password is not sent in "
                                "clear unless smtp_forward.ini says starttls = no" % destination.name)
        if not client.has_extn("auth"):
            raise HandOffFailed(451, "4.7.0", "next hop %s does not offer AUTH" % destination.name)
        try:
            client.login(destination.user, destination.password)
        except smtplib.SMTPAuthenticationError as exc:
            raise HandOffFailed(451, "4.7.0", "next hop %s refused our AUTH: %d %s"
                                % (destination.name, exc.smtp_code, split_reply(exc.smtp_code, exc.smtp_error)[1]))


def ehlo(client, name):
    code, text = client.ehlo(name)
    if code != 250:
        code, text = client.helo(name)
        if code != 250:
            raise HandOffFailed(451, "4.4.0", "next hop refused HELO: %d %s" % (code, split_reply(code, text)[1]))


def send_xclient(self, client, destination):
    """XCLIENT with the attributes the next hop names, then EHLO as the client did (qpsmtpd's order)."""
    if not client.has_extn("xclient"):
        raise HandOffFailed(451, "4.3.5", "next hop %s does not offer XCLIENT, which is configured"
                            % destination.name)
    wanted = set(client.esmtp_features["xclient"].upper().split())
    items = ["%s=%s" % (name, xtext(value)) for name, value in xclient_items(self).items() if name in wanted]
    while items:
        line = []
        while items and (not line or len(" ".join(line + items[:1])) <= _XCLIENT_LINE):
            line.append(items.pop(0))
        code, text = client.docmd("XCLIENT", " ".join(line))
        if code not in (220, 250):
            raise HandOffFailed(451, "4.3.5", "next hop %s refused XCLIENT: %d %s"
                                % (destination.name, code, split_reply(code, text)[1]))
    helo = self.qp.connection.hello_host or ""
    ehlo(client, helo if helo.isascii() and helo else self.qp.me)


# -- the message -------------------------------------------------------------------------------
def is_eight_bit(transaction):
    return any(_EIGHT_BIT.search(block) for block in transaction.message_blocks())


def needs_smtputf8(transaction):
    addresses = [transaction.sender.address] + [r.address for r in transaction.recipients]
    header = transaction.header.as_bytes() if transaction.header is not None else b""
    return not all(a.isascii() for a in addresses) or not header.isascii()


def message_blocks(transaction):
    """The message as it goes to the next hop: CRLF line ends, or a binary message's octets untouched."""
    return transaction.message_blocks() if transaction.binary else transaction.message_blocks(crlf=True)


def size_option(client, transaction):
    """``SIZE=<octets>`` (RFC 1870) when the next hop offers SIZE; HandOffFailed when the message is over its limit."""
    if not client.has_extn("size"):
        return []
    size = sum(len(block) for block in message_blocks(transaction))  # read from the spool, never held whole
    limit = client.esmtp_features["size"].strip()
    if limit.isdigit() and 0 < int(limit) < size:
        raise HandOffFailed(PERMANENT, "5.3.4", "message is %d octets, over the next hop's limit of %s"
                            % (size, limit))
    return ["SIZE=%d" % size]


def envelope_options(self, client, transaction):
    """(MAIL parameters, {recipient: RCPT parameters}) for the next hop; HandOffFailed when it lacks one we need."""
    requested = transaction.notes.get("mail_parameters", {})
    mail, rcpt = size_option(client, transaction), {r.address: [] for r in transaction.recipients}
    body = (requested.get("body") or "").upper()
    if transaction.binary:
        if not (client.has_extn("binarymime") and client.has_extn("chunking")):
            raise HandOffFailed(PERMANENT, "5.6.3", "next hop does not take BODY=BINARYMIME, and we do not convert")
        mail.append("BODY=BINARYMIME")
    elif body == "8BITMIME":
        if client.has_extn("8bitmime"):
            mail.append("BODY=8BITMIME")
        elif is_eight_bit(transaction):
            raise HandOffFailed(PERMANENT, "5.6.3",
                                "next hop does not take 8-bit data (8BITMIME), and we do not convert")
    if "smtputf8" in requested:
        if client.has_extn("smtputf8"):
            mail.append("SMTPUTF8")
            client.command_encoding = "utf-8"
        elif needs_smtputf8(transaction):
            raise HandOffFailed(PERMANENT, "5.6.7", "next hop does not take internationalised mail (SMTPUTF8)")
    if client.has_extn("dsn"):
        mail += ["%s=%s" % (name.upper(), value) for name, value in sorted(transaction.dsn.items())]
        for recipient in transaction.recipients:
            dsn = recipient.notes.get("dsn") or {}
            if "notify" in dsn:
                rcpt[recipient.address].append("NOTIFY=" + ",".join(dsn["notify"]))
            if "orcpt" in dsn:
                rcpt[recipient.address].append("ORCPT=" + dsn["orcpt"])
    else:
        for recipient in transaction.recipients:
            notify = set((recipient.notes.get("dsn") or {}).get("notify", ()))
            if notify & {"SUCCESS", "NEVER"}:
                raise HandOffFailed(PERMANENT, "5.3.3", "next hop does not take DSN requests, so NOTIFY=%s cannot be "
                                    "honoured" % ",".join(sorted(notify)))
    return mail, rcpt


def command(client, verb, path, options):
    return client.docmd(verb, "%s:%s%s" % ("FROM" if verb == "MAIL" else "TO", path,
                                           "".join(" " + o for o in options)))


def refusal(code, text, what):
    """HandOffFailed for a next hop's 4xx/5xx: 451 or 552, its enhanced status code, its text."""
    status, detail = split_reply(code, text)
    ours = PERMANENT if code >= 500 else 451
    return HandOffFailed(ours, status or "%d.0.0" % (ours // 100),
                         "next hop refused %s: %s (%d)" % (what, detail, code))


def transfer(self, client, destination, transaction):
    """The whole transaction on ``client``; the next hop's final text, and the recipients it refused for good."""
    mail_options, rcpt_options = envelope_options(self, client, transaction)
    code, text = command(client, "MAIL", transaction.sender.format(), mail_options)
    if code != 250:
        raise refusal(code, text, "the sender")
    accepted, refused = [], []
    for recipient in transaction.recipients:
        code, text = command(client, "RCPT", recipient.format(), rcpt_options[recipient.address])
        (accepted if code in (250, 251) else refused).append((recipient, code, text))
    temporary = [r for r in refused if r[1] < 500]
    if temporary or not accepted:
        client.rset()
        recipient, code, text = (temporary or refused)[0]
        raise refusal(code, text, "recipient %s" % recipient.format())
    if transaction.binary:
        code, text = send_bdat(client, message_blocks(transaction))
    else:
        code, text = send_data(client, message_blocks(transaction))
    if code != 250:
        raise refusal(code, text, "the message")
    return split_reply(code, text)[1], refused


def hook_queue(self, transaction):
    destination = destination_for(self, transaction.recipients[0])
    client = None
    try:
        client = connect(self, destination)
        queued, refused = transfer(self, client, destination, transaction)
        if refused:
            notify_sender(self, client, destination, transaction, refused)
        self.pool.put(pool_key(self, destination), client)
        client = None
    except HandOffFailed as exc:
        self.log(LOGINFO if exc.code < 500 else LOGWARN, "fail, %s: %d %s %s" % (destination.name, exc.code,
                                                                              exc.status, exc.text))
        if client is not None:
            self.pool.put(pool_key(self, destination), client)  # the conversation is in order: reusable
            client = None
        self.qp.respond(exc.code, exc.text, status=exc.status)
        return DONE
    except (smtplib.SMTPException, OSError) as exc:
        self.log(LOGERROR, "fail, %s: %s: %s" % (destination.name, type(exc).__name__, exc))
        self.qp.respond(451, "lost the connection to the next hop; try again later", status="4.4.2")
        return DONE
    finally:
        if client is not None:
            close(client)  # broken, or cut short by the hook timeout: its state is unknown
    self.log(LOGINFO, "pass, %s: %s" % (destination.name, queued))
    return OK, "Queued (next hop: %s)" % queued


# -- recipients, at RCPT time -------------------------------------------------------------------
def check_recipient(self, transaction, recipient, **params):
    """One destination per transaction; with ``rcpt_check``, the next hop's opinion of the recipient."""
    destination = destination_for(self, recipient)
    if transaction.recipients and destination_for(self, transaction.recipients[0]) is not destination:
        self.qp.respond(452, "%s goes to another next hop; send it in a new transaction" % recipient.format(),
                        status="4.5.3")
        return DONE
    if not destination.rcpt_check:
        return DECLINED
    client = None
    try:
        client = connect(self, destination)
        utf8 = client.has_extn("smtputf8") and "smtputf8" in transaction.notes.get("mail_parameters", {})
        if utf8:
            client.command_encoding = "utf-8"
        code, text = command(client, "MAIL", transaction.sender.format(), ["SMTPUTF8"] if utf8 else [])
        if code == 250:
            code, text = command(client, "RCPT", recipient.format(), [])
        client.rset()
        self.pool.put(pool_key(self, destination), client)
        client = None
    except HandOffFailed as exc:
        self.log(LOGINFO, "skip, cannot check %s: %s" % (recipient.format(), exc))
        return DECLINED
    except (smtplib.SMTPException, OSError) as exc:
        self.log(LOGINFO, "skip, cannot check %s: %s: %s" % (recipient.format(), type(exc).__name__, exc))
        return DECLINED
    finally:
        if client is not None:
            close(client)
    if code in (250, 251):
        return DECLINED
    status, detail = split_reply(code, text)
    self.log(LOGINFO, "fail, next hop %s refused %s: %d %s" % (destination.name, recipient.format(), code, detail))
    return (DENY if code >= 500 else DENYSOFT), "%s%s" % (status + " " if status else "", detail)


# -- non-delivery report ------------------------------------------------------------------------
def notify_sender(self, client, destination, transaction, refused):
    """Tell the sender, through the same next hop, which recipients it refused after we said 250 (RFC 3464)."""
    for recipient, code, text in refused:
        self.log(LOGWARN, "next hop %s refused %s after our 250: %d %s"
                 % (destination.name, recipient.format(), code, split_reply(code, text)[1]))
    if transaction.sender.is_null:
        return  # never a notice about a notice
    report = delivery_report(self, destination, transaction, refused)
    try:
        code, text = command(client, "MAIL", "<>", [])
        if code == 250:
            code, text = command(client, "RCPT", transaction.sender.format(), [])
        if code == 250:
            code, text = send_data(client, [report])
    except (smtplib.SMTPException, OSError) as exc:  # the message is with the next hop: still a 250
        code, text = 0, str(exc).encode()
    if code != 250:
        self.log(LOGERROR, "could not send the non-delivery report to %s: %d %s"
                 % (transaction.sender.format(), code, split_reply(code, text)[1]))


def delivery_report(self, destination, transaction, refused):
    """A multipart/report (RFC 3464) naming each refused recipient, with the message's header, CRLF line ends."""
    boundary = "%d.%s/%s" % (time.time() * 1000, transaction.id, self.qp.me)
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
    lines = ["From: Mail Delivery System <MAILER-DAEMON@%s>" % self.qp.me,
             "To: %s" % transaction.sender.format(), "Subject: Undelivered Mail Returned to Sender",
             "Date: %s" % date, "Auto-Submitted: auto-replied", "MIME-Version: 1.0",
             'Content-Type: multipart/report; report-type=delivery-status; boundary="%s"' % boundary, "",
             "--" + boundary, "Content-Type: text/plain; charset=utf-8", "",
             "%s accepted your message, but the next mail server refused these recipients:" % self.qp.me, ""]
    lines += ["  %s: %d %s" % (r.format(), code, split_reply(code, text)[1]) for r, code, text in refused]
    lines += ["", "The other recipients will get the message.", "",
              "--" + boundary, "Content-Type: message/delivery-status", "",
              "Reporting-MTA: dns; %s" % self.qp.me, "Arrival-Date: %s" % date]
    for recipient, code, text in refused:
        status, detail = split_reply(code, text)
        lines += ["", "Final-Recipient: rfc822; %s" % recipient.address, "Action: failed",
                  "Status: %s" % (status or "5.0.0"), "Remote-MTA: dns; %s" % destination.host,
                  "Diagnostic-Code: smtp; %d %s" % (code, detail)]
    header = transaction.header.as_bytes() if transaction.header is not None else b""
    head = ("\r\n".join(lines) + "\r\n\r\n--%s\r\nContent-Type: text/rfc822-headers\r\n\r\n" % boundary)
    return (head.encode("utf-8") + header.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            + ("\r\n--%s--\r\n" % boundary).encode())
