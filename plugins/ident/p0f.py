"""ident/p0f: the client's operating system and network distance, from a p0f 3 watching the wire.

Arguments::

    ident/p0f SOCKET [timeout S] [smite_os REGEX] [add_headers true|false] [version 3] [local_ip IP]

Start p0f with its API socket, e.g. ``p0f -i eth0 -s /run/p0f.sock 'dst port
25'``, and give the socket's path (``p0f_socket PATH`` as a pair works too).
At connect the plugin asks p0f about the client's address (the p0f 3 API:
a 21-octet query with magic 0x50304601, a 232-octet answer with magic
0x50304602) and, when p0f has a match, sets the connection note ``p0f``, a
dict with p0f's fields (``first_seen``, ``last_seen``, ``total_conn``,
``uptime_min``, ``up_mod_days``, ``last_nat``, ``last_chg``, ``distance``,
``bad_sw``, ``os_match_q``, ``os_name``, ``os_flavor``, ``http_name``,
``http_flavor``, ``link_type``, ``language``) plus qpsmtpd's ``genre``
(``os_name os_flavor``), ``link`` and ``uptime``.  The ``greylisting``
plugin's ``p0f`` option reads it.

``timeout`` (default 2 s) bounds the query; p0f missing, slow or without a
match only logs (the plugin never fails a session).  ``smite_os REGEX``: a
client whose genre matches loses a point of karma.  ``add_headers`` (default
true) adds ``X-P0F-Genre`` and ``X-P0F-Link-Type`` to each message.
``local_ip`` is accepted for qpsmtpd's configs and unused (p0f 3 needs only
the client's address).

Config file ``p0f_blocked_operating_systems``: genres to refuse, one a line,
a phrase (matched exactly) or ``/regex/`` (without case); a matching client
has every recipient refused ``550 5.7.1 OS Blocked``, unless it is immune
(relay client, whitelisted).

Differences from qpsmtpd: p0f 2's API (``version 2``) is gone, as p0f 2 is;
start-up says so.
"""
import re
import socket
import struct

from qpgevent import DECLINED, DENY, LOGDEBUG, LOGINFO, LOGWARN, arguments

QUERY_MAGIC = 0x50304601
RESPONSE_MAGIC = 0x50304602
STATUS_BADQUERY, STATUS_OK, STATUS_NOMATCH = 0x00, 0x10, 0x20
# p0f's docs: native byte order; nine u32, s16 distance, u8 bad_sw, u8 os_match_q, six 32-octet strings
_RESPONSE = struct.Struct("=IIIIIIIIIhBB32s32s32s32s32s32s")
_FIELDS = ("magic", "status", "first_seen", "last_seen", "total_conn", "uptime_min", "up_mod_days", "last_nat",
           "last_chg", "distance", "bad_sw", "os_match_q", "os_name", "os_flavor", "http_name", "http_flavor",
           "link_type", "language")

POSITIONAL = ["p0f_socket"]
ARGUMENTS = {
    "p0f_socket": arguments.text(),
    "timeout": arguments.number(default=2, minimum=0.1),
    "smite_os": arguments.text(),
    "add_headers": arguments.flag(default=True),
    "version": arguments.choice("2", "3", default="3"),
    "local_ip": arguments.text(),
}


def register(self, qp, *args):
    options = self.options
    if not options.p0f_socket:
        raise ValueError("takes the path of p0f's API socket, e.g. 'ident/p0f /run/p0f.sock'")
    if options.version == "2":
        raise ValueError("version 2: p0f 2's API is not supported; run p0f 3 (p0f -s SOCKET) and drop 'version 2'")
    if qp.plugin_timeout and options.timeout >= qp.plugin_timeout:
        raise ValueError("timeout %s would outlast plugin_timeout (%ss)" % (options.timeout, qp.plugin_timeout))
    try:
        self.smite = re.compile(options.smite_os, re.I) if options.smite_os else None
    except re.error as exc:
        raise ValueError("smite_os %r is not a regular expression: %s" % (options.smite_os, exc))
    self.blocked = blocked_patterns(qp.config_list("p0f_blocked_operating_systems"))
    if self.blocked:
        self.register_hook("rcpt", "refuse_blocked_os")
    if options.add_headers:
        self.register_hook("data_post", "add_headers")


def blocked_patterns(lines):
    """``p0f_blocked_operating_systems`` as a test: a phrase matches exactly, ``/re/`` without case."""
    phrases = {line for line in lines if not (len(line) > 1 and line.startswith("/") and line.endswith("/"))}
    regexes = [re.compile(line[1:-1], re.I) for line in lines if line not in phrases]
    if not lines:
        return None
    return lambda genre: genre in phrases or any(regex.search(genre) for regex in regexes)


def query(ip: str) -> bytes:
    """The 21-octet p0f 3 query for ``ip``."""
    if ":" in ip:
        return struct.pack("=IB16s", QUERY_MAGIC, 6, socket.inet_pton(socket.AF_INET6, ip))
    return struct.pack("=IB16s", QUERY_MAGIC, 4, socket.inet_aton(ip))


def parse(answer: bytes) -> dict:
    """p0f's answer as a dict of its fields (strings without their NUL padding); ValueError if malformed."""
    if len(answer) != _RESPONSE.size:
        raise ValueError("answer of %d octets, not %d" % (len(answer), _RESPONSE.size))
    values = _RESPONSE.unpack(answer)
    if values[0] != RESPONSE_MAGIC:
        raise ValueError("bad magic 0x%08x" % values[0])
    return {name: value.split(b"\0", 1)[0].decode("ascii", "replace") if isinstance(value, bytes) else value
            for name, value in zip(_FIELDS, values)}


def ask(path: str, ip: str, timeout: float) -> dict:
    """One query over p0f's unix socket; OSError or ValueError when it fails."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(query(ip))
        answer = b""
        while len(answer) < _RESPONSE.size:
            part = sock.recv(_RESPONSE.size - len(answer))
            if not part:
                break
            answer += part
    return parse(answer)


def hook_connect(self, transaction):
    ip = self.qp.connection.remote_ip
    if not ip:
        return DECLINED
    try:
        result = ask(self.options.p0f_socket, ip, self.options.timeout)
    except (OSError, ValueError) as exc:
        self.log(LOGWARN, "skip, p0f at %s: %s" % (self.options.p0f_socket, exc))
        return DECLINED
    if result["status"] != STATUS_OK:
        self.log(LOGINFO, "skip, %s" % ("no match" if result["status"] == STATUS_NOMATCH else "bad query"))
        return DECLINED
    if result["os_name"]:  # the names qpsmtpd's p0f 2 code gave, which greylisting's p0f option reads
        result["genre"] = ("%s %s" % (result["os_name"], result["os_flavor"])).strip()
    result["link"] = result["link_type"]
    result["uptime"] = result["uptime_min"]
    self.qp.connection.notes["p0f"] = result
    if self.smite and self.smite.search(result.get("genre", "")):
        self.adjust_karma(-1)
    self.log(LOGINFO, "%s, distance %s" % (result.get("genre") or "unknown OS", result["distance"]))
    self.log(LOGDEBUG, repr(result))
    return DECLINED


def refuse_blocked_os(self, transaction, recipient, **params):
    genre = (self.qp.connection.notes.get("p0f") or {}).get("genre")
    if not genre or not self.blocked(genre) or self.is_immune():
        return DECLINED
    self.log(LOGINFO, "fail, %s is blocked" % genre)
    return DENY, "OS Blocked (#5.7.1)"


def add_headers(self, transaction):
    p0f = self.qp.connection.notes.get("p0f") or {}
    for name, key in (("X-P0F-Genre", "genre"), ("X-P0F-Link-Type", "link_type")):
        if p0f.get(key):
            transaction.header.delete(name)
            transaction.header.add(name, p0f[key], 0)
    return DECLINED
