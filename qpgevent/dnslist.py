"""DNS list lookups (RFC 5782): the query names and the verdicts dnsbl, rhsbl, dns_whitelist_soft and uribl share.

A list answers a query ``<key>.<zone>`` (the key is an address with its
labels reversed, or a domain) with an A record in 127.0.0.0/8 when the key
is listed, often with a TXT record saying why.  Every zone of a check is
asked at once (``Resolver.lookup_many``), so a check takes as long as the
slowest zone, and never longer than ``dns_timeout``; a listed key takes one
more such round for the TXT reasons.
"""
import ipaddress
from typing import Any, Iterable, List, NamedTuple, Optional

from .constants import LOGDEBUG, LOGINFO, LOGWARN

# RFC 5782 2.1: listings are 127.0.0.0/8.  Spamhaus answers 127.255.255.x for errors
# (queries through a public resolver, over quota): such an answer lists nobody.
_LISTED = ipaddress.ip_network("127.0.0.0/8")
_ERRORS = ipaddress.ip_network("127.255.255.0/24")


class Zone(NamedTuple):
    """A list from a zones config line: its DNS zone, and the admin's reply text if the line gives one."""

    name: str
    message: Optional[str] = None


class Listing(NamedTuple):
    """A key found in a zone: ``reason`` is the zone line's text, else the list's TXT record (None if it has none)."""

    zone: Zone
    reason: Optional[str]


def parse_zones(lines: Iterable[str], separator: Optional[str] = None) -> List[Zone]:
    """Zones config lines ``zone`` or ``zone<separator>message`` (None: white space) as Zones, duplicates dropped."""
    zones = {}
    for line in lines:
        name, *rest = line.strip().split(separator, 1)
        name = name.strip().rstrip(".").lower()
        message = rest[0].strip() if rest and rest[0].strip() else None
        if name and name not in zones:
            zones[name] = Zone(name, message)
    return list(zones.values())


def reversed_ip(ip: str) -> str:
    """``192.0.2.7`` -> ``7.2.0.192``; IPv6 by nibbles (RFC 5782 2.4); an IPv4-mapped address as IPv4.

    ValueError if ``ip`` is no address.
    """
    address = ipaddress.ip_address(ip)
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address.version == 4:
        return ".".join(reversed(str(address).split(".")))
    return ".".join(reversed(address.exploded.replace(":", "")))


def check(plugin: Any, key: str, zones: Iterable[Zone]) -> List[Listing]:
    """Look ``key`` up in every zone at once; the zones that list it, in config order.

    Every zone is asked for A (RFC 5782 2.1: the A record is the listing);
    then the listing zones whose line gives no message are asked for TXT, the
    reason, at once too.  A key that no zone lists, by far the most common
    case, so costs one question a zone, as in Postfix and Haraka (qpsmtpd asked
    TXT alone when the line had no message, and took a TXT record without an
    A record as a listing).  A zone that times out or fails is logged and
    counts as not listing the key.
    """
    zones = list(zones)
    answers = plugin.smtpd.dns.lookup_many(("%s.%s" % (key, zone.name), "A") for zone in zones)
    listed = [(zone, a) for zone, a in zip(zones, answers) if _lists(plugin, zone, a)]
    need_reason = [a.name for zone, a in listed if zone.message is None]
    reasons = dict(zip(need_reason, plugin.smtpd.dns.lookup_many((name, "TXT") for name in need_reason)))
    return [Listing(zone, zone.message if zone.message is not None else _reason(reasons[a.name]))
            for zone, a in listed]


def listings(plugin: Any, config_name: str, subject: str, domain: bool = False, separator: Optional[str] = None,
             reasons_from_dns: bool = False) -> List[Listing]:
    """The zones of config file ``config_name`` that list ``subject`` (an IP address, or with ``domain`` a domain).

    Logs why nothing was looked up (no zones, not an address) or that nothing
    lists it.  ``reasons_from_dns``: the zone lines' extra words are no reply
    texts, so A and TXT of every zone are asked.
    """
    zones = parse_zones(plugin.qp.config_list(config_name), separator)
    if reasons_from_dns:
        zones = [Zone(zone.name) for zone in zones]
    if not zones:
        plugin.log(LOGINFO, "skip, no zones in %s" % config_name)
        return []
    key = subject
    if not domain:
        try:
            key = reversed_ip(subject)
        except ValueError:
            plugin.log(LOGINFO, "skip, %r is not an IP address" % subject)
            return []
    found = check(plugin, key, zones)
    if not found:
        plugin.log(LOGINFO, "pass, %s is in none of %d zones" % (subject, len(zones)))
    return found


def _lists(plugin: Any, zone: Zone, a: Any) -> bool:
    """Whether the A answer ``a`` from ``zone`` is a listing; logs the answers that are not."""
    if a.temporary:
        plugin.log(LOGWARN, "skip, %s: no answer for %s (%s), taken as not listed"
                   % (zone.name, a.name, a.status.value))
        return False
    if not a.found:
        plugin.log(LOGDEBUG, "pass, %s not in %s" % (a.name, zone.name))
        return False
    if not any(listing_address(record) for record in a.records):
        plugin.log(LOGWARN, "skip, %s answered %s for %s: not a listing (RFC 5782)"
                   % (zone.name, ", ".join(a.records), a.name))
        return False
    return True


def _reason(txt: Any) -> Optional[str]:
    """The TXT records' text, or None when the list has none (or did not answer: the listing stands)."""
    return " ".join(txt.records) if txt.found else None


def listing_address(address: str) -> bool:
    """True for an A answer that lists (in 127.0.0.0/8, and no list's error code)."""
    ip = ipaddress.ip_address(address)
    return ip in _LISTED and ip not in _ERRORS
