"""uribl: look up the domains a message links to in URI blocklists (SURBL, URIBL).

After the message (``data_post``) its text parts are searched for URLs and
host names (see qpgevent/uris.py: quoted-printable and base64 parts
decoded, ``href=`` links, bare names such as ``www.example.com``); each
host counts by its registrable domain from the public suffix list
(``a.b.example.co.uk`` is ``example.co.uk``), IPv4 addresses in URLs as
``4.3.2.1.<zone>``.  Every domain is looked up in every zone at once.

Arguments (qpsmtpd's)::

    uribl [action add-header|deny|denysoft|log] [scan-headers 1] [checkip yes|no]
          [max-lookups N] [timeout N] [loglevel N]

``action``
    What a match does unless its zone line says otherwise: ``add-header``
    (default) adds ``X-URIBL-Match: <domain> in <zone>: <reason>``;
    ``deny`` refuses the message (552 5.7.1 with that text), ``denysoft``
    asks the client to try later (452), ``log`` only logs.  With several
    matches a ``deny`` wins over a ``denysoft``, which wins over headers.
``scan-headers 1`` (or ``check-headers 1``)
    Search the header values too (default: the body only).
``checkip no``
    Do not look up IP addresses (some lists list every address).
``max-lookups N``
    At most N lookups per message (default 50: domains times zones); the
    domains found first are checked, the rest are logged as skipped.
``timeout``
    qpsmtpd's wait for the answers; accepted and ignored: config
    ``dns_timeout`` bounds every lookup, and all are asked at once.

Config files:
  ``uribl_zones``  read at start-up; one zone a line: ``zone [mask [action]]``.
                   ``mask`` selects lists of a combined zone by their bits
                   in the A answer (``multi.surbl.org 2,8`` is 2|8: a
                   127.0.0.4 answer is no match), comma-separated, default
                   (or a negative number) all of them; ``action`` as above.
                   A bad mask or action stops the start-up, naming the line.
  ``uribl_whitelist_domains``  registrable domains never looked up

A zone that times out or answers SERVFAIL is logged and taken as no
match.  Relay clients and whitelisted hosts or senders are not checked.

Differences from qpsmtpd: the registrable domain comes from the public
suffix list (qpsmtpd guessed two or three labels from a list of ccTLDs and
looked up every label level of the host); only text parts are searched,
after decoding (qpsmtpd scanned every line raw, attachments included),
and only the first 1 MiB of the message; at most ``max-lookups`` lookups;
TXT records are asked only for matches (a second round of lookups); an A
answer outside 127.0.0.0/8 or a list's error code (127.255.255.x) is no
match; ``X-URIBL-Match`` goes at the end of the header, below our Received
line (qpsmtpd put it on top, above it).
"""
import ipaddress
from typing import NamedTuple

from qpgevent import DECLINED, DENY, DENYSOFT, LOGINFO, LOGWARN, arguments
from qpgevent.address import domain_key
from qpgevent.dnslist import listing_address
from qpgevent.errors import ConfigError
from qpgevent.uris import SCAN_LIMIT, message_texts, public_suffixes, targets

ACTIONS = ("add-header", "deny", "denysoft", "log")
ALL_LISTS = 0x00FFFFFF  # the list bits of an A answer 127.x.y.z: its last three octets
HEADER = "X-URIBL-Match"

ARGUMENTS = {
    "action": arguments.choice(*ACTIONS, default="add-header"),
    "scan-headers": arguments.flag(),
    "check-headers": arguments.flag(),
    "checkip": arguments.flag(default=True),
    "max-lookups": arguments.integer(default=50, minimum=1),
    "timeout": arguments.number(minimum=0),
}


class UriZone(NamedTuple):
    name: str
    mask: int
    action: str


def register(self, qp, *args):
    self.zones = [read_zone(entry, self.options.action) for entry in self.smtpd.config.entries("uribl_zones")]
    public_suffixes()  # read the list now, not in the first message's time


def read_zone(entry, default_action):
    """One ``zone [mask [action]]`` line; ConfigError naming the line when it is wrong."""
    name, *rest = entry.value.split()
    mask = 0
    for part in (rest[0].split(",") if rest else [str(ALL_LISTS)]):
        try:
            value = int(part)
        except ValueError:
            raise ConfigError("uribl_zones: mask %r of %s is not a number; write bit values such as 2,8 (or -1 for "
                              "every list)" % (part, name), entry.path, entry.line) from None
        mask |= value if value >= 0 else ALL_LISTS
    action = rest[1] if len(rest) > 1 else default_action
    if action not in ACTIONS or len(rest) > 2:
        raise ConfigError("uribl_zones: a line is 'zone [mask [action]]' with action one of %s, not %r"
                          % (", ".join(ACTIONS), entry.value), entry.path, entry.line)
    return UriZone(name.rstrip(".").lower(), mask, action)


def hook_data_post(self, transaction):
    if not self.zones or self.is_immune():
        return DECLINED
    found = hosts_of(self, transaction)
    if not found:
        self.log(LOGINFO, "pass, no URIs found in the message")
        return DECLINED
    budget = max(1, self.options.max_lookups // len(self.zones))
    if len(found) > budget:
        self.log(LOGWARN, "skip, %d of %d domains: at most %d lookups a message (max-lookups)"
                 % (len(found) - budget, len(found), self.options.max_lookups))
        found = found[:budget]
    matches = lookup(self, found)
    if not matches:
        self.log(LOGINFO, "pass, %d domains in none of %d zones" % (len(found), len(self.zones)))
        return DECLINED
    return act(self, transaction, matches)


def hosts_of(self, transaction):
    """The targets of the message's URIs, less uribl_whitelist_domains."""
    data = bytearray()
    for block in transaction.message_blocks():
        data += block[:SCAN_LIMIT - len(data)]
        if len(data) >= SCAN_LIMIT:
            break
    texts = message_texts(bytes(data), headers=self.options.scan_headers or self.options.check_headers)
    allowed = {domain_key(domain) for domain in self.qp.config_list("uribl_whitelist_domains")}
    return [target for target in targets(texts, check_ip=self.options.checkip) if target.key not in allowed]


def lookup(self, found):
    """``(description, zone)`` of every match: all A lookups at once, then the TXT of the matches at once."""
    pairs = [(target, zone) for target in found for zone in self.zones]
    answers = self.smtpd.dns.lookup_many(("%s.%s" % (target.key, zone.name), "A") for target, zone in pairs)
    hits = []
    for (target, zone), result in zip(pairs, answers):
        if result.temporary:
            self.log(LOGWARN, "skip, %s: no answer for %s (%s), taken as no match"
                     % (zone.name, result.name, result.status.value))
        elif result.found:
            address = next((a for a in result.records
                            if listing_address(a) and int(ipaddress.IPv4Address(a)) & zone.mask), None)
            if address is not None:
                hits.append((target, zone, result.name, address))
    reasons = self.smtpd.dns.lookup_many((name, "TXT") for _, _, name, _ in hits)
    return [("%s in %s: %s" % (target.name, zone.name, " ".join(txt.records) or address), zone)
            for (target, zone, _, address), txt in zip(hits, reasons)]


def act(self, transaction, matches):
    for description, _ in matches:
        self.log(LOGWARN, "fail, %s" % description)
    for action, code in (("deny", DENY), ("denysoft", DENYSOFT)):
        refusals = [description for description, zone in matches if zone.action == action]
        if refusals:
            return code, refusals[0]
    for description, zone in matches:
        if zone.action == "add-header":
            transaction.header.add(HEADER, description)
    return DECLINED
