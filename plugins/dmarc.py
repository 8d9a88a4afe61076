"""dmarc: apply the From domain's DMARC policy (RFC 7489) to mail that SPF and DKIM do not tie to it.

List it after ``sender_permitted_from`` and ``dkim``, and let those two
annotate rather than refuse (``reject 1`` and ``reject 0``), so the policy of
the domain decides.  At ``data_post_headers`` it finds the From domain's
policy record (``_dmarc.<domain>`` TXT, else that of the organisational
domain, the registrable domain by the Public Suffix List), checks alignment
and records ``dmarc=pass|fail|none|temperror (p=...) header.from=DOMAIN`` in
the Authentication-Results; at ``data_post`` it refuses what the policy says
to refuse.

A message passes when an SPF or a DKIM pass is *aligned* with the From
domain: the same domain (``aspf=s`` / ``adkim=s``, strict) or the same
organisational domain (``r``, relaxed, the default).  It reads two
transaction notes, the interface other plugins fill:

``dmarc_spf`` (set by ``sender_permitted_from`` at MAIL)
    ``{"domain": ..., "scope": "mfrom" or "helo", "result": "pass"|"fail"|...}``
``dkim_results`` (set by ``dkim`` at ``data_post_headers``, before this plugin runs)
    a list, one dict per DKIM-Signature: ``{"domain": d=, "selector": s=,
    "result": "pass"|"fail"|"neutral"|"temperror"|"permerror"}``

A failing message gets the policy of the record: ``p=``, or ``sp=`` (default
``p=``) when the record came from the organisational domain of a subdomain;
``pct=`` of the failing messages get it (chosen with ``random.randrange``),
the others one step less: reject becomes quarantine, quarantine none.

``p=reject``
    ``552 5.7.1 failed DMARC policy of DOMAIN`` at the end of DATA, shaped by
    the generic ``reject`` and ``reject_type`` arguments (``reject 0`` only
    annotates, ``reject naughty`` leaves it to the ``naughty`` plugin).
``p=quarantine``
    accepted, with the transaction note ``dmarc_quarantine`` (the From domain)
    for a later plugin or the delivery agent, and ``(p=quarantine)`` in the
    Authentication-Results; ``quarantine reject`` refuses it as qpsmtpd did.
``p=none``
    annotated only.

Both refused and quarantined mail cost the connection 3 karma points.  A DNS
failure looking up the policy of mail that has no aligned pass defers it
(452 4.7.0; only the temporary kind of refusal, ``reject 0`` tolerates it).
Mail without a From field, with more than one, or with one that names no
address is refused (qpsmtpd's ``empty from address`` and ``unparseable from
header``; RFC 7489 6.6.1); one From field naming addresses of several domains
has each domain's policy applied, the strictest outcome winning.  Relay
clients are not checked; whitelisted hosts and senders are checked and
annotated, never refused.

The transaction note ``dmarc_result`` holds ``{"domain", "result",
"policy" (the applied p or sp, None without a record), "disposition",
"aligned" (an aligned SPF or DKIM pass)}``;
``sender_permitted_from no_dmarc_policy`` reads it.

Arguments::

    dmarc [reject 0|1|naughty] [reject_type perm|temp|...] [quarantine note|reject] [reporting 0|1] [loglevel N]

``reporting``: accepted for qpsmtpd configs and ignored: aggregate and
failure reports (``rua=``, ``ruf=``) are out of scope here.

Config files: none.

Differences from qpsmtpd (which used Mail::DMARC): quarantine is not refused
unless ``quarantine reject``; no reports; the A-R names ``header.from``
(qpsmtpd wrote ``d=``) and says ``dmarc=none`` for a domain without a record.
"""
import random
from email.utils import getaddresses

from publicsuffixlist import PublicSuffixList

from qpgevent import DECLINED, DENYSOFT, LOGINFO, arguments
from qpgevent.address import domain_key

ARGUMENTS = {
    "quarantine": arguments.choice("note", "reject", default="note"),
    "reporting": arguments.flag(),
}
_POLICIES = ("none", "quarantine", "reject")
_WEAKER = {"reject": "quarantine", "quarantine": "none", "none": "none"}
# How much an outcome weighs when a From field names several domains: the heaviest decides.
_WEIGHT = {"reject": 5, "temperror": 4, "quarantine": 3, "fail": 2, "none": 1, "pass": 0}


def register(self, qp, *args):
    self.psl = PublicSuffixList()
    if self.options.reporting:
        self.log(LOGINFO, "reporting is not supported, no DMARC reports are sent")
    self.register_hook("data_post_headers", "check_dmarc")
    self.register_hook("data_post", "reject_dmarc")


def organizational_domain(self, domain):
    """The registrable domain of ``domain`` (RFC 7489 3.2), or ``domain`` itself when it has none."""
    return self.psl.privatesuffix(domain) or domain


def parse_record(text):
    """The tags of a DMARC record as a dict with p, sp, pct, adkim, aspf filled in; None if it is none or invalid."""
    tags = {}
    for part in text.split(";"):
        key, eq, value = part.partition("=")
        if eq:
            tags.setdefault(key.strip().lower(), value.strip())
        elif part.strip():
            return None
    if not text.lstrip().startswith("v") or tags.get("v") != "DMARC1":
        return None
    if tags.get("p", "").lower() not in _POLICIES:
        if not tags.get("rua"):
            return None  # RFC 7489 6.6.3: no valid p= and nowhere to report: no DMARC processing
        tags["p"] = "none"
    tags["p"] = tags["p"].lower()
    if tags.get("sp", "").lower() not in _POLICIES:
        tags["sp"] = tags["p"]
    tags["sp"] = tags["sp"].lower()
    pct = tags.get("pct", "100")
    tags["pct"] = int(pct) if pct.isdigit() and int(pct) <= 100 else 100
    for mode in ("adkim", "aspf"):
        tags[mode] = "s" if tags.get(mode, "r").lower() == "s" else "r"
    return tags


def lookup_records(self, domain):
    """(valid DMARC records at ``_dmarc.<domain>``, temporary failure?)."""
    answer = self.smtpd.dns.txt("_dmarc." + domain)
    return [record for record in map(parse_record, answer.records) if record is not None], answer.temporary


def find_policy(self, domain):
    """(record or None, from the organisational domain?, temporary?) for From domain ``domain`` (RFC 7489 6.6.3).

    Several valid records at one name count as none, with no fallback.
    """
    records, temporary = lookup_records(self, domain)
    organizational = organizational_domain(self, domain)
    subdomain = not (records or temporary) and organizational != domain
    if subdomain:
        records, temporary = lookup_records(self, organizational)
    return (records[0] if len(records) == 1 else None), subdomain, temporary


def aligned(self, domain, other, mode):
    """True when ``other`` is aligned with From domain ``domain`` (``mode`` s: strict, r: relaxed)."""
    other = domain_key(other or "")
    if mode == "s":
        return other == domain
    return bool(other) and organizational_domain(self, other) == organizational_domain(self, domain)


def evaluate(self, transaction, domain):
    """The outcome for From domain ``domain``: the ``dmarc_result`` dict plus the A-R text."""
    record, subdomain, temporary = find_policy(self, domain)
    spf = transaction.notes.get("dmarc_spf") or {}
    dkim = transaction.notes.get("dkim_results") or []
    spf_mode = record["aspf"] if record else "r"
    dkim_mode = record["adkim"] if record else "r"
    passed = (spf.get("result") == "pass" and aligned(self, domain, spf.get("domain"), spf_mode)) or any(
        signature.get("result") == "pass" and aligned(self, domain, signature.get("domain"), dkim_mode)
        for signature in dkim)
    outcome = {"domain": domain, "policy": None, "disposition": "none", "aligned": passed}
    if record is None:
        outcome["result"] = "temperror" if temporary else "none"
        return outcome, "dmarc=%s header.from=%s" % (outcome["result"], domain)
    policy = record["sp"] if subdomain else record["p"]
    outcome["policy"] = policy
    outcome["result"] = "pass" if passed else "fail"
    if not passed:
        sampled = random.randrange(100) < record["pct"]
        outcome["disposition"] = policy if sampled else _WEAKER[policy]
    comment = "p=%s" % record["p"] + (" sp=%s" % record["sp"] if subdomain and record["sp"] != record["p"] else "")
    return outcome, "dmarc=%s (%s) header.from=%s" % (outcome["result"], comment, domain)


def from_domains(header):
    """The From domains (compared form, in order), or the reason why the From field is unusable."""
    values = header.get_all("From")
    if not values:
        return "empty from address, null sender?"
    if len(values) > 1:
        return "multiple From headers"
    domains = []
    for _, address in getaddresses(values):
        local, at, host = address.rpartition("@")
        if at and local and host:
            key = domain_key(host)
            if key not in domains:
                domains.append(key)
    return domains or "unparseable from header"


def check_dmarc(self, transaction):
    if self.qp.connection.relay_client:
        self.log(LOGINFO, "skip, relay client")
        return DECLINED
    domains = from_domains(transaction.header)
    if isinstance(domains, str):
        transaction.notes["dmarc_reject"] = (False, domains)
        self.log(LOGINFO, "fail, %s" % domains)
        return DECLINED
    outcomes = []
    for domain in domains:
        outcome, auth_result = evaluate(self, transaction, domain)
        self.store_auth_results(auth_result)
        self.log(LOGINFO, "%s, %s, %s" % (outcome["result"], domain, auth_result))
        outcomes.append(outcome)
    worst = max(outcomes, key=lambda o: max(_WEIGHT[o["result"]], _WEIGHT[o["disposition"]]))
    transaction.notes["dmarc_result"] = worst
    if worst["result"] == "temperror" and not worst["aligned"]:
        transaction.notes["dmarc_reject"] = (True, "DMARC policy of %s cannot be checked now (#4.7.0)"
                                             % worst["domain"])
    elif worst["disposition"] in ("reject", "quarantine"):
        self.adjust_karma(-3)
        if worst["disposition"] == "reject" or self.options.quarantine == "reject":
            transaction.notes["dmarc_reject"] = (False, "failed DMARC policy of %s (#5.7.1)" % worst["domain"])
        else:
            transaction.notes["dmarc_quarantine"] = worst["domain"]
    return DECLINED


def reject_dmarc(self, transaction):
    refusal = transaction.notes.get("dmarc_reject")
    if not refusal or self.is_immune():
        return DECLINED
    temporary, message = refusal
    if not temporary:
        return self.get_reject(message, message)
    if self.reject in ("0", ""):
        self.log(LOGINFO, "skip, tolerated, %s" % message)
        return DECLINED
    self.log(LOGINFO, "fail, deferred, %s" % message)
    return DENYSOFT, message  # never a permanent refusal, nor one left to naughty, for a DNS failure
