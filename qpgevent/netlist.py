"""Address lists in config files: IPs, CIDR networks and qmail-style prefixes."""
import ipaddress
from functools import lru_cache
import re
from typing import Iterable, List, Optional, Tuple, Union

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
_NIBBLES = re.compile(r"^[0-9a-fA-F]{1,4}(:[0-9a-fA-F]{1,4}){1,7}$")


@lru_cache(maxsize=4096)
def entry_network(entry: str) -> Optional[Network]:
    """The network an entry stands for; a prefix ``10.1.`` or ``fdda:b13d:`` is a /16 or a /32.

    An IPv6 prefix without the trailing colon ends on any hex digit, as in
    qpsmtpd's ``relayclients`` (``2001:0DB8`` is a /32, ``2001:0db`` a /28):
    the last group is read digit by digit, the others as whole groups.  It
    needs at least one colon: a lone ``2`` would be all of 2000::/4.
    Prefixes become networks rather than string prefixes so that an IPv6
    client matches however its address happens to be written (``::``
    compression, upper case).  An entry that is none of the forms is None.
    """
    try:
        if entry.endswith(".") and "/" not in entry:
            octets = entry[:-1].split(".")
            return ipaddress.ip_network("%s/%d" % (".".join(octets + ["0"] * (4 - len(octets))), 8 * len(octets)))
        if entry.endswith(":") and "/" not in entry and "::" not in entry:
            groups = entry[:-1].split(":")
            return ipaddress.ip_network("%s::/%d" % (":".join(groups), 16 * len(groups)))
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return _nibble_prefix(entry)


def _nibble_prefix(entry: str) -> Optional[Network]:
    """``2001:0db8:1`` -> 2001:db8:1000::/36; None if ``entry`` is not such a prefix."""
    if not _NIBBLES.match(entry):
        return None
    *groups, last = entry.split(":")
    bits = 16 * len(groups) + 4 * len(last)
    address = ":".join(groups + [last.ljust(4, "0")] + ["0"] * (7 - len(groups)))
    return ipaddress.ip_network("%s/%d" % (address, bits))


def ip_keys(ip: str) -> List[str]:
    """The keys qpsmtpd looks an address up by in a map (``morerelayclients.cdb``), most specific first.

    IPv4 ``192.0.2.7``: itself, ``192.0.2.``, ``192.0.`` and ``192.``.  IPv6:
    the address as written, fully expanded in lower case, then that with
    one hex digit less at a time (``2001:0db8:0000:...``, ..., ``2001:0db8``,
    ``2001:0db``, ..., ``2``).  A string that is no address has no keys.
    """
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return []
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address.version == 4:
        octets = str(address).split(".")
        return [str(address)] + [".".join(octets[:n]) + "." for n in (3, 2, 1)]
    exploded = address.exploded
    keys = [ip, str(address), exploded]
    for end in range(len(exploded) - 1, 0, -1):
        if exploded[end - 1] != ":":
            keys.append(exploded[:end])
    return list(dict.fromkeys(keys))


def ip_in(ip: str, entries: Iterable[str]) -> bool:
    """True when ``ip`` is in one of ``entries`` (first word of each line; the rest is a comment)."""
    if not entries:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    for entry in entries:
        words = entry.split()
        network = entry_network(words[0]) if words else None
        if network is not None and address in network:
            return True
    return False


def same_network(first: str, second: str, ipv4_prefix: int = 24, ipv6_prefix: int = 96) -> bool:
    """True when two addresses of one family share the /24 (IPv4) or /96 (IPv6): qpsmtpd's "network match"."""
    try:
        a, b = ipaddress.ip_address(first), ipaddress.ip_address(second)
    except ValueError:
        return False
    if a.version != b.version:
        return False
    prefix = ipv4_prefix if a.version == 4 else ipv6_prefix
    return ipaddress.ip_network("%s/%d" % (a, prefix), strict=False) == ipaddress.ip_network("%s/%d" % (b, prefix), strict=False)


def host_port(value: str, default_port: int) -> Tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``[v6]`` or ``[v6]:PORT`` -> (host, port); ValueError on a bad port."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        host, port = value.split(":")
    else:
        host, port = value, ""
    if port and not port.isdigit():
        raise ValueError("bad port in address %r" % value)
    return host, int(port) if port else default_port
