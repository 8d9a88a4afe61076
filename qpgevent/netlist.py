"""Address lists in config files: IPs, CIDR networks and qmail-style prefixes."""
import ipaddress
from functools import lru_cache
from typing import Iterable, Optional, Tuple, Union

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


@lru_cache(maxsize=4096)
def entry_network(entry: str) -> Optional[Network]:
    """The network an entry stands for; a prefix ``10.1.`` or ``fdda:b13d:`` is a /16 or a /32.

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
        return None


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
