"""sender_permitted_from: SPF (RFC 7208), may this host send mail for the sender's domain?

At MAIL the sender's domain is checked with pyspf against the client's IP; a
null sender (a bounce) or a sender without a domain is checked by its HELO
name instead (RFC 7208 2.4).  Every DNS lookup goes through the server's one
resolver (config ``dns_servers``, ``dns_timeout``, its cache); the whole check
is bounded by 20 seconds (RFC 7208 4.6.4) or by 9/10 of ``plugin_timeout``,
whichever is less, and running out of time is a ``temperror``.

Arguments (qpsmtpd's, as pairs)::

    sender_permitted_from [reject 0-6] [reject_type perm|temp|disconnect|temp_disconnect]
                          [no_dmarc_policy 0-4] [spf_deny 0|1|2] [loglevel N]

``reject N`` (default 0, or config ``spfbehavior``), what to refuse:

    0, 1  annotate only: the Received-SPF and Authentication-Results headers, no refusals
    2     also defer (4xx) on ``fail`` and on DNS trouble (``temperror``)
    3     refuse (5xx) ``fail``; defer ``softfail``
    4     also refuse ``softfail``; defer ``permerror``
    5     also refuse ``neutral``
    6     also refuse ``none`` (no SPF record) and ``permerror``

Refusals come at MAIL: ``550 5.7.23 SPF - forgery: ...`` for ``fail`` and the
like (RFC 7372 codes: 5.7.23 validation failed, 4.7.24/5.7.24 errors).
``reject_type`` can make the permanent ones temporary (``temp``) or hang up
after them (``disconnect``); a ``temperror`` is only ever deferred.

``no_dmarc_policy N`` (default 0): with the ``dmarc`` plugin loaded after this
one, a second chance at the end of DATA, for mail whose From domain publishes
no DMARC record: 1 refuses ``fail``, 2 also ``softfail``, 3 also ``neutral``,
4 also ``none`` and ``permerror``.  Meant with ``reject 1`` or ``2``.

``spf_deny 1|2``: qpsmtpd's old name for ``reject 3|4``; ``reject``, when
given, wins (qpsmtpd let ``spf_deny`` win).

Relay clients and whitelisted hosts or senders are not checked; for them the
note ``dmarc_spf`` says ``pass`` (so ``dmarc`` does not fail our own users).

Notes it sets (the interface ``dmarc`` reads):
  transaction ``dmarc_spf``      ``{"domain": ..., "scope": "mfrom"|"helo", "result": "pass"|"fail"|
                                 "softfail"|"neutral"|"none"|"temperror"|"permerror"}``
  transaction ``spf_pass_host``  the sender's domain, lower case, when SPF passed
  transaction ``spfquery``       ``{"result", "explanation", "received_spf", "scope", "domain"}`` of the check

Headers: ``Received-SPF`` (RFC 7208 9.1), prepended at ``data_post`` so it
sits above our Received line as 9.1 asks; ``spf=RESULT smtp.mailfrom=DOMAIN``
(or ``smtp.helo=NAME``) in the Authentication-Results.

Config files: ``spfbehavior`` (qpsmtpd's: the default ``reject`` level).

Differences from qpsmtpd: a null sender is checked by its HELO name (qpsmtpd
skipped it, RFC 7208 2.4 says to check it); permanent refusals follow
``reject_type``; replies carry the RFC 7372 enhanced codes; the
Received-SPF header is written at ``data_post`` (qpsmtpd: data_post_headers,
below the Received line).
"""
import contextvars
import re

import gevent
import spf

from qpgevent import DECLINED, DENY, DENYSOFT, LOGINFO, arguments
from qpgevent.address import domain_key
from qpgevent.errors import ConfigError

ARGUMENTS = {
    "reject": arguments.integer(minimum=0, maximum=6),
    "no_dmarc_policy": arguments.integer(default=0, minimum=0, maximum=4),
    "spf_deny": arguments.integer(minimum=0, maximum=2),
}
RFC_TIME_LIMIT = 20.0  # RFC 7208 4.6.4: at least 20 seconds for the whole check
_SPF_DENY_LEVELS = {1: 3, 2: 4}
_HOSTNAME = re.compile(r"(?=.{1,253}\Z)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)+[a-z0-9-]{2,63}\Z", re.I)

# What each result does from which level on: (least level, temporary?, reply prefix, enhanced code).
# A result with two rows is deferred from the first level and refused from the second.
_POLICY = {
    "fail": [(2, True, "SPF - fail", "4.7.23"), (3, False, "SPF - forgery", "5.7.23")],
    "softfail": [(3, True, "SPF - fail", "4.7.23"), (4, False, "SPF - fail", "5.7.23")],
    "neutral": [(5, False, "SPF - neutral", "5.7.23")],
    "none": [(6, False, "SPF - none", "5.7.1")],
    "permerror": [(4, True, "SPF - permerror", "4.7.24"), (6, False, "SPF - permerror", "5.7.24")],
    "temperror": [(2, True, "SPF - temperror", "4.7.24")],
}
# no_dmarc_policy N refuses these results (at N and above).
_NO_DMARC_LEVELS = {"fail": 1, "softfail": 2, "neutral": 3, "none": 4, "permerror": 4}

def install_lookup():
    """Route pyspf's lookups through the resolver of the check running now; its context variable.

    pyspf looks every name up through its module function DNSLookup.  Ours
    asks the resolver a check puts in the returned context variable (several
    daemons may share a process in tests); with none set, pyspf's own
    function serves.  Installed once per process: this file runs again at
    each load of the plugin, and must not wrap its earlier self.
    """
    installed = getattr(spf.DNSLookup, "resolver_var", None)
    if installed is not None:
        return installed
    pyspf_lookup = spf.DNSLookup
    resolver_var = contextvars.ContextVar("spf_resolver", default=None)

    def lookup(name, qtype, strict=True, timeout=None):
        """pyspf's DNSLookup contract: ``[((name, type), value), ...]``; TempError on DNS trouble."""
        resolver = resolver_var.get()
        if resolver is None:
            return pyspf_lookup(name, qtype, strict, timeout)
        if qtype not in ("A", "AAAA", "MX", "TXT", "PTR"):
            return []  # the SPF RR type (99), which RFC 7208 retired
        result = resolver.lookup(name, qtype)
        if result.temporary:
            raise spf.TempError("DNS %s lookup of %s: %s" % (qtype, name, result.status.value))
        # pyspf joins a TXT record's strings itself; ours come joined already.
        return [((name, qtype), [value] if qtype == "TXT" else value) for value in result.records]

    lookup.resolver_var = resolver_var
    spf.DNSLookup = lookup
    return resolver_var


_resolver = install_lookup()


def register(self, qp, *args):
    options = self.options
    level = options.reject
    if level is None and options.spf_deny:
        level = _SPF_DENY_LEVELS[options.spf_deny]
    if level is None:
        level = spfbehavior(qp)
    self.level = level
    budget = qp.plugin_timeout * 0.9 if qp.plugin_timeout else RFC_TIME_LIMIT
    self.time_limit = min(RFC_TIME_LIMIT, budget)
    self.register_hook("mail", "evaluate_spf")
    self.register_hook("data_post_headers", "store_results")
    self.register_hook("data_post", "add_spf_header")
    if options.no_dmarc_policy:
        self.register_hook("data_post", "no_dmarc_policy")


def spfbehavior(qp):
    """The level config ``spfbehavior`` gives (0 without the file); ConfigError naming the file when bad."""
    for entry in qp.config.entries("spfbehavior")[:1]:
        if not (entry.value.isdigit() and int(entry.value) <= 6):
            raise ConfigError("spfbehavior must be a level from 0 to 6 (see sender_permitted_from), not %r"
                              % entry.value, entry.path, entry.line)
        return int(entry.value)
    return 0


def evaluate_spf(self, transaction, sender, **params):
    notes = transaction.notes
    notes.pop("spfquery", None)
    notes.pop("spf_pass_host", None)
    if self.is_immune():
        notes["dmarc_spf"] = {"domain": domain_key(sender.host or ""), "scope": "mfrom", "result": "pass"}
        return DECLINED
    connection = self.qp.connection
    helo = connection.hello_host or ""
    if sender.user and sender.host:
        scope, domain = "mfrom", domain_key(sender.host)
        identity = "%s@%s" % (sender.user, domain)
    else:  # a null sender: pyspf checks postmaster@HELO (RFC 7208 2.4)
        scope, domain, identity = "helo", helo.lower(), ""
    notes["dmarc_spf"] = {"domain": domain, "scope": scope, "result": "none"}
    if scope == "helo" and not _HOSTNAME.match(domain):
        self.log(LOGINFO, "skip, null sender and HELO %r is no host name" % helo)
        return DECLINED
    result, received_spf, why = check(self, connection.remote_ip, identity, helo)
    notes["dmarc_spf"]["result"] = result
    notes["spfquery"] = {"result": result, "explanation": why, "received_spf": received_spf,
                         "scope": scope, "domain": domain}
    if result == "pass":
        self.adjust_karma(1)
        notes["spf_pass_host"] = domain
        self.log(LOGINFO, "pass, %s" % why)
        return DECLINED
    if result in ("fail", "softfail"):
        self.adjust_karma(-1)
    return refusal(self, self.level, result, why)


def check(self, ip, identity, helo):
    """(result, Received-SPF value, local explanation) of the SPF check, within ``self.time_limit``."""
    query = spf.query(i=ip, s=identity, h=helo, receiver=self.qp.me, querytime=self.time_limit)
    token = _resolver.set(self.smtpd.dns)
    # gevent.Timeout is a BaseException: no library on the way (dnspython retries after an Exception) eats it.
    timer = gevent.Timeout(self.time_limit)
    timer.start()
    try:
        result, _, _ = query.check()
    except gevent.Timeout as exc:
        if exc is not timer:
            raise
        self.log(LOGINFO, "SPF check ran out of its %gs" % self.time_limit)
        result = "temperror"
    finally:
        timer.close()
        _resolver.reset(token)
    tag, _, rest = query.get_header(result).partition(" ")
    return result, "%s %s" % (tag.lower(), rest), query.get_header_comment(result)


def refusal(self, level, result, why):
    """What ``reject level`` does with ``result``: DECLINED, or the deferral or refusal."""
    decision = None
    for least, temporary, prefix, status in _POLICY.get(result, ()):
        if level >= least:
            decision = temporary, prefix, status
    if decision is None:
        self.log(LOGINFO, "skip, tolerated, %s, %s" % (result, why))
        return DECLINED
    temporary, prefix, status = decision
    self.log(LOGINFO, "fail, %s, %s" % (result, why))
    code = DENYSOFT if temporary else self.get_reject_type(DENY)
    return code, "%s: %s (#%s)" % (prefix, why, status)


def store_results(self, transaction):
    query = transaction.notes.get("spfquery")
    if query:
        key = "smtp.mailfrom" if query["scope"] == "mfrom" else "smtp.helo"
        self.store_auth_results("spf=%s %s=%s" % (query["result"], key, query["domain"]))
    return DECLINED


def add_spf_header(self, transaction):
    query = transaction.notes.get("spfquery")
    if query:
        transaction.header.add("Received-SPF", query["received_spf"], 0)
    return DECLINED


def no_dmarc_policy(self, transaction):
    """Refuse by SPF alone the mail whose From domain has no DMARC record (note ``dmarc_result`` of dmarc)."""
    query, dmarc = transaction.notes.get("spfquery"), transaction.notes.get("dmarc_result")
    if not query or not dmarc or dmarc.get("result") != "none" or self.is_immune():
        return DECLINED
    result = query["result"]
    least = _NO_DMARC_LEVELS.get(result)
    if least is None or self.options.no_dmarc_policy < least:
        self.log(LOGINFO, "pass, %s tolerated without a DMARC policy" % result)
        return DECLINED
    self.log(LOGINFO, "fail, %s and no DMARC policy, %s" % (result, query["explanation"]))
    return self.get_reject_type(DENY), "SPF - %s: %s (#5.7.23)" % (result, query["explanation"])
