"""Connection limits: ``-c`` (sessions in all) and ``-m`` (sessions from one address).

A single process counts its own sessions exactly, in its own memory.

With ``--workers N`` the limits hold over all workers together, as
qpsmtpd-forkserver's ``-c`` holds over all its children.  The master maps one
anonymous shared memory area (``SharedCounters``) before it forks, with one
region per worker slot; each worker learns its slot at fork and writes only
its own region, so no lock is needed:

* word 0 of a region: the worker's number of sessions (for ``-c``);
* after a ``HEADER`` of 16 words, ``BUCKETS`` counters: its sessions from each address, by bucket, the
  bucket being a stable hash of the address text (``zlib.crc32``, the same in
  every process, unlike the salted ``hash()``) (for ``-m``).

To judge a new client, a worker adds up the regions of all slots: its own
exact counts plus the others' totals, or the others' counters of the client's
bucket.  The sum is only made for a limit that is set.

.. caution:: Two addresses that share a bucket add up, for the sessions
   other workers hold: ``-m`` may then refuse a client early (never let one
   in beyond the limit).  With 65,536 buckets that is rare while the
   sessions are few.  A worker checks, then
   counts the new session in its region, while another worker may be doing
   the same: with N workers at most N-1 sessions more than the limit can get
   in at the same moment.

There are twice as many slots as workers, so that during a reload (SIGHUP)
the old workers, while they drain, still count beside the new ones (the
master hands the slots out: ``qpgevent.master``).  When the
master reaps a worker, however it died (``kill -9`` included), it zeroes that
worker's region before the slot is given to another: the sessions of a
crashed worker do not linger in the counts.
"""
import collections
import mmap
import struct
import zlib
from typing import Dict, Iterator, List, Optional

from . import replies as R

BUCKETS = 1 << 16  # per-address counters in each region
HEADER = 16  # words before the counters: one cache line, so regions never share one
REGION_WORDS = HEADER + BUCKETS
WORD = struct.calcsize("I")  # bytes in a counter: an unsigned int, 32 bits


def bucket(ip: str) -> int:
    """The counter an address is counted in: the same in every process."""
    return HEADER + (zlib.crc32(ip.encode()) & (BUCKETS - 1))


class SharedCounters:
    """One anonymous shared mapping, made before the fork: a region of counters per worker slot."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.memory = mmap.mmap(-1, slots * REGION_WORDS * WORD)  # shared with the children forked later
        self.words = memoryview(self.memory).cast("I")

    def region(self, slot: int) -> memoryview:
        return self.words[slot * REGION_WORDS:(slot + 1) * REGION_WORDS]

    def clear(self, slot: int) -> None:
        """Forget the sessions of the worker that had ``slot`` (the master calls this once it is reaped)."""
        start = slot * REGION_WORDS * WORD
        self.memory[start:start + REGION_WORDS * WORD] = bytes(REGION_WORDS * WORD)


class SessionAddresses:
    """The remote address of every open session: the ``pre-connection`` hook's ``child_addrs``.

    A live view of a per-address count kept by the server, so an accept costs
    O(1) however many sessions are open: ``count(ip)`` and ``ip in`` are O(1)
    (hosts_allow's ``max_conn_ip`` asks ``count``); iterating, as a plugin
    ported line by line from qpsmtpd does, yields each address once per session.
    """

    __slots__ = ("_counts",)

    def __init__(self, counts: Dict[str, int]) -> None:
        self._counts = counts

    def count(self, ip: str) -> int:
        """Open sessions from ``ip`` (the one being accepted included)."""
        return self._counts.get(ip, 0)

    def __contains__(self, ip: object) -> bool:
        return ip in self._counts

    def __bool__(self) -> bool:
        return bool(self._counts)

    def __iter__(self) -> Iterator[str]:
        for ip, count in list(self._counts.items()):
            for _ in range(count):
                yield ip

    def __len__(self) -> int:
        return sum(self._counts.values())

    def __repr__(self) -> str:
        return "<SessionAddresses %r>" % dict(self._counts)


class ConnectionLimits:
    """Counts sessions, in all and per remote address, and says when one more is too many.

    Without ``counters`` it judges by this process's sessions.  With them and
    this worker's ``slot``, it writes its counts into its region and judges by
    the sum over every worker (see the module docstring for what that costs in
    precision).  ``by_ip`` stays this process's own exact count: the
    ``pre-connection`` hook's ``child_addrs`` comes from it, so with workers a
    plugin there sees the sessions of its own worker only.
    """

    def __init__(self, total: int, per_ip: int, counters: Optional[SharedCounters] = None,
                 slot: Optional[int] = None) -> None:
        self.total = total
        self.per_ip = per_ip
        self.active = 0
        self.by_ip: Dict[str, int] = collections.Counter()
        self.addresses = SessionAddresses(self.by_ip)
        self.own: Optional[memoryview] = None
        self.others: List[memoryview] = []
        if counters is not None and slot is not None:
            self.own = counters.region(slot)
            self.others = [counters.region(other) for other in range(counters.slots) if other != slot]

    def refusal(self, ip: str) -> Optional[R.Reply]:
        if self.total:
            active = self.active
            for region in self.others:
                active += region[0]
            if active >= self.total:
                return R.TOO_MANY_CONNECTIONS
        if self.per_ip:
            count = self.by_ip[ip]
            if self.others:
                index = bucket(ip)
                for region in self.others:
                    count += region[index]
            if count >= self.per_ip:
                return R.TOO_MANY_FROM_IP
        return None

    def enter(self, ip: str) -> None:
        self.active += 1
        self.by_ip[ip] += 1
        if self.own is not None:
            self.own[0] = self.active
            if self.per_ip:
                self.own[bucket(ip)] += 1

    def leave(self, ip: str) -> None:
        self.active -= 1
        self.by_ip[ip] -= 1
        if not self.by_ip[ip]:
            del self.by_ip[ip]
        if self.own is not None:
            self.own[0] = self.active
            if self.per_ip:
                self.own[bucket(ip)] -= 1
