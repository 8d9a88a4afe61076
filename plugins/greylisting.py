"""greylisting: ask unknown senders to come back later (RFC 6647).

Mail is tracked by a triplet of the client IP, the envelope sender and the
recipient (by default the IP only).  The first time a triplet is seen, and
every time it is seen again within ``black_timeout``, the client gets
``450 4.7.1 This mail is temporarily denied`` (at MAIL or RCPT; ``451`` at
DATA with ``deny_late``).  A real MTA retries later and, once
``black_timeout`` has passed, gets through; the triplet is then white and
passes at once until it goes ``white_timeout`` without a delivery.
Fire-and-forget spamware never comes back.

Arguments (qpsmtpd's, as pairs)::

    greylisting [remote_ip 1|0] [sender 0|1] [recipient 0|1] [per_recipient 0|1] [deny_late 0|1]
                [black_timeout SECONDS] [white_timeout SECONDS] [reject 1|0] [db_dir DIR]
                [redis HOST[:PORT]] [p0f KEY,VALUE,...] [geoip CC,CC,...] [loglevel N]

``remote_ip``, ``sender``, ``recipient`` (defaults 1, 0, 0)
    What the triplet holds.  With ``recipient`` (or ``per_recipient``) the
    check is made at RCPT, else at MAIL.
``deny_late 1``
    At MAIL, note the deferral and give it at DATA instead, so that every
    recipient is logged.
``black_timeout`` (default 3000, 50 minutes), ``white_timeout`` (default 3110400, 36 days)
    Seconds: how long a new triplet is deferred, and how long a white one
    lasts without a delivery.
``reject 0``
    Record triplets but defer nothing: for seeding the store before going
    live.  (qpsmtpd's older ``mode testonly|off`` means the same.)
``per_recipient 1``
    Check at RCPT, with each recipient's own settings: the ``key value``
    lines a ``user_config`` plugin gives for ``denysoft_greylist`` and that
    recipient (say ``reject 0`` for a recipient who wants no delays).
``db_dir DIR`` / ``redis HOST[:PORT]``
    Keep triplets in ``sqlite:DIR/greylisting.db`` or in that Redis (database
    0) rather than the store of ``config/storage``; ``redis`` wins.
``p0f genre,windows,link,dsl,...``
    Greylist only clients whose p0f fingerprint (connection note ``p0f``)
    matches one of these: ``genre``, ``link`` (pattern, any case),
    ``distance`` (more hops than), ``uptime`` (fewer than); ``detail`` is
    accepted and, as in qpsmtpd, never matches.
``geoip US,CA``
    Do not greylist clients whose country (connection note
    ``geoip_country``) is listed.

Not greylisted: relay clients, whitelisted hosts and senders, clients in
the ``greylist_exclude_files``, and (our addition) clients whose
``karma_history`` is above 5, the threshold qpsmtpd's earlytalker uses: a client that
has sent us mostly good mail should not wait.  When the check is made at
RCPT, a deferred null sender (``<>``) is told at DATA rather than at each
RCPT, so that address probes learn nothing, as in qpsmtpd; the deferral at
DATA is skipped when every recipient is whitelisted (transaction note
``whitelistrcpt``).

Triplets live in the state store as ``greylisting:IP[:SENDER][:RECIPIENT]``,
value ``TIME:1:DEFERRALS:DELIVERIES`` (the first try, or once white the last
delivery, as a Unix time; then counts), each
key expiring ``white_timeout`` after its last change, which does what
qpsmtpd's ``prune_db`` did; ``bin/qpsmtpd-state list greylisting:`` shows
them.  If the store cannot answer (Redis down, sqlite locked for 2 s) the
mail is not greylisted (fail open, as qpsmtpd does when Redis is down) and
the log says ``UNABLE TO OBTAIN GREYLIST RESULT`` (and, under ``--metrics``,
``qpgevent_state_unavailable_total{plugin="greylisting"}`` counts it).

Differences from qpsmtpd: keys hold the IP as text (IPv6 safe), so
``upgrade`` has nothing to convert and is accepted and ignored, as are
``nfslock`` and ``grey_timeout`` (ignored by qpsmtpd too).

Config files:
  ``denysoft_greylist``         ``key value`` lines: defaults for the arguments above
                                (the plugin line wins)
  ``greylist_exclude_files``    names of files (relative to the config directory's
                                parent) listing clients never greylisted, one a line:
                                an IP, a host name (the client's reverse name), or
                                ``/regex/`` matched against the host name; ``#`` comments
"""
import ipaddress
import re
import time
from pathlib import Path

from qpgevent import DECLINED, DENYSOFT, LOGDEBUG, LOGERROR, LOGINFO, LOGWARN, arguments, metrics
from qpgevent.state import StateUnavailable, plugin_store

DENYMSG = "This mail is temporarily denied"
PREFIX = "greylisting:"
GOOD_KARMA = 5
_P0F_KEYS = ("genre", "detail", "uptime", "link", "distance")

ARGUMENTS = {
    "remote_ip": arguments.flag(default=True),
    "sender": arguments.flag(),
    "recipient": arguments.flag(),
    "per_recipient": arguments.flag(),
    "deny_late": arguments.flag(),
    "black_timeout": arguments.number(default=50 * 60, minimum=0),
    "white_timeout": arguments.number(default=36 * 24 * 3600, minimum=1),
    "grey_timeout": arguments.number(),
    "reject": arguments.choice("0", "1", default="1"),
    "mode": arguments.choice("testonly", "off", "denysoft"),
    "db_dir": arguments.text(),
    "redis": arguments.text(),
    "nfslock": arguments.flag(),
    "upgrade": arguments.flag(),
    "p0f": arguments.words(),
    "geoip": arguments.words(),
}


def register(self, qp, *args):
    self.options = settings(qp.config_list("denysoft_greylist"), args)
    options = self.options
    if not (options.remote_ip or options.sender or options.recipient):
        raise ValueError("the triplet is empty: enable one of remote_ip, sender or recipient")
    if len(options.p0f or ()) % 2:
        raise ValueError("p0f takes KEY,VALUE pairs, e.g. p0f genre,windows,link,dsl")
    self.store = plugin_store(self.state, "greylisting", db_dir=options.db_dir, redis=options.redis)
    self.clock = time.time  # tests set their own
    self.exclude_ips, self.exclude_hosts, self.exclude_patterns = load_exclude_files(self, qp)
    if options.recipient or options.per_recipient:
        self.register_hook("rcpt", "rcpt_handler")
    else:
        self.register_hook("mail", "mail_handler")
    self.register_hook("data", "data_handler")


def settings(config_lines, args):
    """The options: ``denysoft_greylist`` pairs, overridden by the plugin line's."""
    pairs = {}
    for words in ([line.split(None, 1) for line in config_lines], [args[i:i + 2] for i in range(0, len(args), 2)]):
        pairs.update((w[0], w[1] if len(w) > 1 else "") for w in words)
    options = arguments.parse([word for pair in pairs.items() for word in pair], ARGUMENTS)
    if options.mode and "reject" not in pairs:
        options.reject = "0" if options.mode in ("testonly", "off") else "1"
    return options


def load_exclude_files(self, qp):
    ips, hosts, patterns = set(), set(), []
    base = qp.config.directory.parent
    for name in qp.config_list("greylist_exclude_files"):
        path = Path(name) if Path(name).is_absolute() else base / name
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise ValueError("greylist_exclude_files names %s, which cannot be read (%s); fix the name or "
                             "remove the line" % (path, exc.strerror)) from None
        for line in lines:
            entry = re.sub(r"\s", "", line.split("#", 1)[0])
            if len(entry) > 2 and entry.startswith("/") and entry.endswith("/"):
                try:
                    patterns.append(re.compile(entry[1:-1]))
                except re.error as exc:
                    raise ValueError("%s: %r is not a regular expression (%s)" % (path, entry, exc)) from None
            elif entry:
                try:
                    ips.add(str(ipaddress.ip_address(entry)))
                except ValueError:
                    hosts.add(entry.lower())
    return ips, hosts, patterns


def mail_handler(self, transaction, sender, **params):
    status, message = greylist(self, transaction, sender, None, self.options)
    if status != DENYSOFT:
        return DECLINED
    if not self.options.deny_late:
        return DENYSOFT, message
    transaction.notes["greylist"] = message
    return DECLINED


def rcpt_handler(self, transaction, recipient, **params):
    options = self.options
    if options.per_recipient:
        lines = self.qp.config_list("denysoft_greylist", recipient)
        options = settings(lines, self.args) if lines else options
    sender = transaction.sender
    status, message = greylist(self, transaction, sender, recipient, options)
    if status == DENYSOFT:
        if sender.address:
            return DENYSOFT, message
        transaction.notes["greylist"] = message  # a null sender is deferred at DATA: probes learn nothing
    return DECLINED


def data_handler(self, transaction):
    message = transaction.notes.get("greylist")
    if not message:
        return DECLINED
    if (transaction.notes.get("whitelistrcpt") or 0) == len(transaction.recipients):
        self.log(LOGWARN, "skip: all recipients whitelisted")
        return DECLINED
    return DENYSOFT, message


def greylist(self, transaction, sender, recipient, options):
    """(DENYSOFT, message) for a triplet to defer; (DECLINED, None) otherwise."""
    if excluded(self, options):
        return DECLINED, None
    name = key(self, sender, recipient, options)
    try:
        return result(self, name, options)
    except StateUnavailable as exc:
        self.log(LOGERROR, "UNABLE TO OBTAIN GREYLIST RESULT: %s; not greylisted" % exc)
        metrics.state_unavailable(self.name)
        return DECLINED, None


def key(self, sender, recipient, options):
    parts = []
    if options.remote_ip:
        parts.append(str(ipaddress.ip_address(self.qp.connection.remote_ip)))
    if options.sender:
        parts.append(sender.address.lower() if sender is not None else "")
    if options.recipient and recipient is not None:
        parts.append(recipient.address.lower())
    return PREFIX + ":".join(parts)


def result(self, name, options):
    now = self.clock()
    value = self.store.get(name)
    first, new, black, white = (int(float(f or 0)) for f in ((value or "").split(":") + ["0"] * 4)[:4])
    if white and now - first >= options.white_timeout:
        # Stale (the store would have dropped it by now, had the clock been the store's): unknown again.
        self.log(LOGINFO, "key %s has timed out (white)" % name)
        value = None
    if not value:
        self.store.set(name, "%d:1:0:0" % now, options.white_timeout)
        self.log(LOGWARN, "fail: initial DENYSOFT, unknown")
        return failcode(options)
    if white:
        white += 1
        self.store.set(name, "%d:%d:%d:%d" % (now, new, black, white), options.white_timeout)
        self.log(LOGINFO, "pass: white, %d deliveries" % white)
        return DECLINED, None
    if now - first < options.black_timeout:
        black += 1
        self.store.set(name, "%d:%d:%d:0" % (first, new, black), options.white_timeout)
        self.log(LOGWARN, "fail: black DENYSOFT - %d deferred connections" % black)
        return failcode(options)
    # Retried after black_timeout: white from now on (qpsmtpd's code forgets to mark it white,
    # so its triplets stay grey, which passes too, until white_timeout after the first try).
    self.store.set(name, "%d:%d:%d:1" % (now, new, black), options.white_timeout)
    self.log(LOGWARN, "pass: timed out (grey)")
    return DECLINED, None


def failcode(options):
    if options.reject == "0":
        return DECLINED, None
    return DENYSOFT, DENYMSG


def excluded(self, options):
    """True (and logged) for a client greylisting leaves alone."""
    if self.is_immune():
        return True
    notes = self.qp.connection.notes
    history = notes.get("karma_history") or 0
    if history > GOOD_KARMA:
        self.log(LOGINFO, "skip, good karma (%d)" % history)
        return True
    if options.p0f and not p0f_match(self, options.p0f):
        return True
    countries = {c.lower() for c in options.geoip or ()}
    country = notes.get("geoip_country")
    if countries and country and country.lower() in countries:
        self.log(LOGINFO, "skip: geoip country match (%s)" % country)
        return True
    connection = self.qp.connection
    host = (connection.remote_host or "").lower()
    if connection.remote_ip in self.exclude_ips or (host and (
            host in self.exclude_hosts or any(p.search(host) for p in self.exclude_patterns))):
        self.log(LOGINFO, "skip: in greylist_exclude_files")
        return True
    return False


def p0f_match(self, pairs):
    """Whether the client's p0f fingerprint matches one of the ``p0f`` argument's conditions."""
    p0f = self.qp.connection.notes.get("p0f")
    if not isinstance(p0f, dict):
        self.log(LOGERROR, "p0f info missing")
        return False
    for name, wanted in zip(pairs[::2], pairs[1::2]):
        seen = p0f.get(name)
        if name not in _P0F_KEYS or seen is None:
            continue
        try:
            if name == "distance" and float(seen) > float(wanted) or \
                    name == "uptime" and float(seen) < float(wanted) or \
                    name in ("genre", "link") and re.search(wanted, str(seen), re.I):
                self.log(LOGDEBUG, "p0f %s match (%s)" % (name, wanted))
                return True
        except (ValueError, re.error):
            continue
    self.log(LOGINFO, "skip: no p0f match")
    return False
