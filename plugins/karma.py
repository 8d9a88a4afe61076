"""karma: remember how each client IP behaved, and shut out the ones that keep sending junk.

Other plugins score a connection with ``self.adjust_karma(n)`` (the
connection note ``karma``: earlytalker, dnsbl, dont_require_anglebrackets,
...).  When the connection ends, karma records it in the state store under
``karma:<IP>``: a connection that reached ``strikes`` or more is nice, one at
``-strikes`` or less is naughty.  A client that sends a naughty connection
while its naughty ones outnumber its nice ones by ``negative`` or more goes
to the penalty box for ``penalty_days``: its connections are then refused
with ``You were naughty. You cannot connect for N.NN more days.`` (given at
once with ``reject 1``/``connect``, or left to the ``naughty`` plugin with
``reject naughty``, the default).  A client with no nice connection and a
history below -5 gets a day more per offence.

Notes for other plugins: ``karma_history`` (nice minus naughty connections
of this IP so far, set at pre-connection, so list karma before
``hosts_allow``) and ``karma`` (this connection's score; a history above 10
starts it at 1).  Its own: ``karma_record``, the record read at
pre-connection, which the connect hook uses rather than reading the store
again.

Arguments (qpsmtpd's, as pairs)::

    karma [negative N] [strikes N] [penalty_days DAYS] [reject 0|1|connect|naughty]
          [reject_type perm|temp|disconnect|temp_disconnect] [db_dir DIR] [loglevel N]

``negative N`` (default 1)
    How far naughty connections must outnumber nice ones for a naughty
    connection to send the client to the penalty box.
``strikes N`` (default 3)
    The score a connection needs to count as nice (``N``) or naughty (``-N``).
``penalty_days DAYS`` (default 1; fractions allowed)
    How long the penalty box lasts.
``reject`` (default ``naughty``) and ``reject_type`` (default ``disconnect``)
    How the penalty box refuses: ``0`` logs only, ``1`` and ``connect`` refuse
    at connect, ``naughty`` leaves it to the ``naughty`` plugin.
``db_dir DIR``
    Keep karma in ``sqlite:DIR/karma.db`` rather than the store of
    ``config/storage`` (so a qpsmtpd admin's line keeps its meaning).

It also scores, as qpsmtpd's karma does: -2 for a MAIL or RCPT whose path
does not follow the colon at once (``MAIL FROM: <a@b>``), the
``karma_tlds`` adjustment for the sender's top-level domain, and at DATA and
the end of data it refuses (through ``reject``) a connection whose score has
fallen below -4.  A client whose history is not positive and whose
connection has not scored above 0 may give one recipient per message: the
next ones get ``452 4.5.3 too many recipients for karma K (h: H)`` (qpsmtpd
says 550, which makes the sending MTA bounce them; RFC 5321 4.5.3.1.10 asks
for a 452, which has them sent in another transaction).

Relay clients and whitelisted hosts are neither checked nor recorded.
``bin/qpsmtpd-state list karma:`` lists the records (``PENALTY_START:NAUGHTY:
NICE:CONNECTS``, penalty start as a Unix time, 0 for none), ``clear
karma:IP`` forgives a client.  Records live a year after their last change
(qpsmtpd's never expire), longer if a penalty lasts longer.

Where we differ from qpsmtpd: the record's key is the IP as text, not as
an integer; a naughty connection is counted as such (qpsmtpd's current code
forgets to add it, so its penalty box only ever held first offenders); the
store being down (Redis stopped, sqlite locked past 2 s) lets the
connection through unscored, with a log line (and a count in
``qpgevent_state_unavailable_total{plugin="karma"}`` under ``--metrics``); ``nfslock`` and the
``penalty_box`` of qpsmtpd's sample config are accepted and ignored.

Config files:
  ``karma_tlds``  ``TLD:ADJUSTMENT`` a line (``work:-4``, ``fr:+1``): added to
                  the karma of a connection whose envelope sender is under ``.TLD``
"""
import ipaddress
import time

from qpgevent import DECLINED, DONE, LOGDEBUG, LOGERROR, LOGINFO, arguments, metrics
from qpgevent.state import StateUnavailable, plugin_store

DAY = 86400
RECORD_TTL = 365 * DAY
PREFIX = "karma:"

ARGUMENTS = {
    "negative": arguments.integer(default=1, minimum=1),
    "strikes": arguments.integer(default=3, minimum=1),
    "penalty_days": arguments.number(default=1, minimum=0.0001),
    "reject": arguments.choice("0", "1", "connect", "naughty", default="naughty"),
    "reject_type": arguments.choice(*arguments.REJECT_TYPES, default="disconnect"),
    "db_dir": arguments.text(),
    "nfslock": arguments.flag(),
    "penalty_box": arguments.text(),
}


def register(self, qp, *args):
    options = self.options
    self.reject = "1" if options.reject == "connect" else options.reject
    self.reject_type = options.reject_type
    self.store = plugin_store(self.state, "karma", db_dir=options.db_dir)
    self.clock = time.time  # tests set their own


class Record:
    """One IP's history: ``PENALTY_START:NAUGHTY:NICE:CONNECTS``."""

    def __init__(self, text=None):
        fields = [_number(f) for f in (text or "").split(":")[:4]]
        fields += [0] * (4 - len(fields))
        self.penalty_start, self.naughty, self.nice, self.connects = fields

    def __str__(self):
        return "%d:%d:%d:%d" % (self.penalty_start, self.naughty, self.nice, self.connects)

    @property
    def history(self):
        return self.nice - self.naughty

    def summary(self):
        return "%d naughty, %d nice, %d connects" % (self.naughty, self.nice, self.connects)


def _number(text):
    try:
        return int(float(text or 0))
    except ValueError:
        return 0


def key(ip):
    """The record's key: the IP in its one canonical text form."""
    return PREFIX + str(ipaddress.ip_address(ip))


def load(self, ip):
    """(key, Record or None); None when the store cannot answer (logged: the connection goes unscored)."""
    try:
        name = key(ip)
    except ValueError:
        self.log(LOGERROR, "skip, unable to determine remote IP %r" % ip)
        return None, None
    try:
        value = self.store.get(name)
    except StateUnavailable as exc:
        self.log(LOGERROR, "skip, karma not checked: %s" % exc)
        metrics.state_unavailable(self.name)
        return name, None
    return name, Record(value) if value else Record()


def save(self, name, record):
    ttl = max(RECORD_TTL, record.penalty_start + self.options.penalty_days * DAY - self.clock() + DAY)
    try:
        self.store.set(name, str(record), ttl)
    except StateUnavailable as exc:
        self.log(LOGERROR, "karma not recorded: %s" % exc)
        metrics.state_unavailable(self.name)


def calc_karma(self, record):
    """Set ``karma_history`` from the record; a long good history starts the connection at +1."""
    if not record.naughty and not record.nice:
        return 0
    history = record.history
    self.qp.connection.notes["karma_history"] = history
    if history > 10:
        self.adjust_karma(1)
    return history


def hook_pre_connection(self, transaction, **params):
    self.qp.connection.notes["karma_history"] = 0
    ip = params.get("remote_ip") or self.qp.connection.remote_ip
    name, record = load(self, ip)
    if record is not None:
        calc_karma(self, record)
        # hook_connect, a moment later, decides from the same record: one read of the store, not two
        self.qp.connection.notes["karma_record"] = (ip, name, record)
    return DECLINED


def connect_record(self):
    """(key, Record or None) of the client: pre-connection's read, unless the client changed since (XCLIENT)."""
    ip = self.qp.connection.remote_ip
    read = self.qp.connection.notes.pop("karma_record", None)
    if read is not None and read[0] == ip:
        return read[1], read[2]
    return load(self, ip)


def hook_connect(self, transaction):
    notes = self.qp.connection.notes
    notes["karma"] = 0
    if self.is_immune():
        return DECLINED
    name, record = connect_record(self)
    if record is None:
        return DECLINED
    if not record.connects and not record.penalty_start:
        self.log(LOGINFO, "pass, no record")
        return DECLINED
    history = calc_karma(self, record)
    if not record.penalty_start:
        self.log(LOGINFO, "pass, no penalty (%s)" % record.summary())
        return DECLINED
    days_old = (self.clock() - record.penalty_start) / DAY
    if days_old >= self.options.penalty_days:
        self.log(LOGINFO, "pass, penalty expired (%s)" % record.summary())
        return DECLINED
    record.connects += 1
    save(self, name, record)
    left = self.options.penalty_days - days_old
    return self.get_reject("You were naughty. You cannot connect for %.2f more days." % left,
                           "%d (%s)" % (history, record.summary()))


def illegal_envelope_format(self, text, start):
    """-2 karma for ``MAIL FROM: <x>`` and the like: RFC 5321 puts the path right after the colon."""
    if not str(text or "").upper().startswith(start):
        self.log(LOGINFO, "illegal envelope address format: %s" % text)
        self.adjust_karma(-2)


def hook_mail(self, transaction, sender, **params):
    illegal_envelope_format(self, self.qp.connection.notes.get("envelope_from"), "FROM:<")
    host = (sender.host or "").lower().rstrip(".")
    for line in self.qp.config_list("karma_tlds"):
        tld, _, score = line.partition(":")
        tld = tld.strip().lower().lstrip(".")
        if tld and host.endswith("." + tld) and _number(score):
            self.log(LOGINFO, "adjusting karma for .%s envelope sender" % tld)
            self.adjust_karma(_number(score))
    return DECLINED


def hook_rcpt(self, transaction, recipient, **params):
    illegal_envelope_format(self, self.qp.connection.notes.get("envelope_rcpt"), "TO:<")
    if self.is_immune():
        return DECLINED
    accepted = len(transaction.recipients)
    if not accepted:
        return DECLINED
    notes = self.qp.connection.notes
    history, karma = notes.get("karma_history") or 0, notes.get("karma") or 0
    if history > 0:
        self.log(LOGINFO, "info, good history")
        return DECLINED
    if karma > 0:
        self.log(LOGINFO, "info, good connection")
        return DECLINED
    self.log(LOGINFO, "fail, recipient %d for karma %d (h: %d)" % (accepted + 1, karma, history))
    # 452 (RFC 5321 4.5.3.1.10), which no return code gives at RCPT: the client sends the rest later.
    self.qp.respond(452, "too many recipients for karma %d (h: %d)" % (karma, history), status="4.5.3")
    return DONE


def hook_data(self, transaction):
    return refuse_bad_karma(self)


def hook_data_post(self, transaction):
    return refuse_bad_karma(self)


def refuse_bad_karma(self):
    """Refuse (through ``reject``) before taking a message from a connection that scored below -4."""
    if self.is_immune() or self.is_naughty():
        return DECLINED
    karma = self.qp.connection.notes.get("karma") or 0
    if karma < -4:
        return self.get_reject("very bad karma: %d" % karma)
    return DECLINED


def hook_disconnect(self, transaction):
    karma = self.qp.connection.notes.get("karma")
    if not karma:
        self.log(LOGDEBUG, "no karma")
        return DECLINED
    if self.is_immune():
        return DECLINED
    name, record = load(self, self.qp.connection.remote_ip)
    if record is None:
        return DECLINED
    strikes = self.options.strikes
    if karma <= -strikes:
        record.naughty += 1
        history = record.history
        if history <= -self.options.negative:
            bonus = record.nice == 0 and history < -5
            now = self.clock()
            record.penalty_start = int(now + abs(history) * DAY if bonus else now)
            verdict = "negative, sent to penalty box" + (", penalty box bonus!" if bonus else "")
        else:
            verdict = "negative"
    elif karma >= strikes:
        record.nice += 1
        verdict = "positive"
    else:
        verdict = "neutral"
    self.log(LOGINFO, "%s, (msg: %d, his: %d)" % (verdict, karma, record.history))
    record.connects += 1
    save(self, name, record)
    return DECLINED
