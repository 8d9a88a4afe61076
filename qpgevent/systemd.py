"""systemd without libsystemd: the notify protocol (sd_notify(3)) and socket activation (sd_listen_fds(3)).

Both read the environment systemd sets, once, at start-up, and take their
variables out of it: a program a plugin runs must not inherit them (another
process sending ``READY=1`` or grabbing fd 3 would confuse the manager).
Outside systemd, with none of the variables set, both do nothing.
"""
import os
import socket
import sys
import time
from typing import Callable, List, MutableMapping, NamedTuple, Optional

from gevent import monkey

from .errors import ConfigError

# The original socket class: the master sends from outside any gevent loop,
# and a notification must never wait (MSG_DONTWAIT), so gevent's is not wanted.
_socket = monkey.get_original("socket", "socket")

LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START: the first descriptor systemd passes


def _stderr(message: str) -> None:
    sys.stderr.write("qpsmtpd-server: %s\n" % message)
    sys.stderr.flush()


class Notifier:
    """Tells the service manager about state changes; does nothing when it is not listening.

    ``address`` is ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract
    namespace); ``watchdog_interval`` is half of ``$WATCHDOG_USEC`` in seconds,
    None when systemd expects no ``WATCHDOG=1``.  A failed send is reported
    once through ``log`` and never raised: losing the service manager must not
    stop the mail.
    """

    def __init__(self, address: Optional[str], watchdog_interval: Optional[float] = None,
                 log: Callable[[str], None] = _stderr) -> None:
        if address and address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address or None
        self.watchdog_interval = watchdog_interval if self.address else None
        self.log = log
        self.failed = False

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] = os.environ,
                         log: Callable[[str], None] = _stderr) -> "Notifier":
        """$NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID, taken out of ``environ``."""
        address = environ.pop("NOTIFY_SOCKET", None)
        usec, pid = environ.pop("WATCHDOG_USEC", ""), environ.pop("WATCHDOG_PID", "")
        interval = None
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            interval = int(usec) / 2e6  # sd_watchdog_enabled(3): ping at half the timeout
        return cls(address, interval, log)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        """One datagram of ``NAME=value`` lines; False if not sent."""
        if self.address is None:
            return False
        try:
            with _socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(assignments).encode("utf-8", "replace"), socket.MSG_DONTWAIT, self.address)
        except OSError as exc:
            if not self.failed:
                self.failed = True
                self.log("cannot notify systemd at %s (%s); serving on without telling it (logged once)"
                         % (self.address.replace("\0", "@"), exc))
            return False
        return True

    def ready(self, status: str) -> bool:
        """Serving: the start or the reload is complete."""
        return self.send("READY=1", "MAINPID=%d" % os.getpid(), "STATUS=" + status)

    def reloading(self, status: str) -> bool:
        """A reload begins; ``READY=1`` ends it.  MONOTONIC_USEC lets systemd tell this reload from an older one."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", "MONOTONIC_USEC=%d" % usec, "STATUS=" + status)

    def stopping(self, status: str) -> bool:
        return self.send("STOPPING=1", "STATUS=" + status)

    def watchdog(self) -> bool:
        """Alive: sent every ``watchdog_interval`` while every process answers."""
        return self.send("WATCHDOG=1")


class Inherited(NamedTuple):
    """A listening socket systemd passed, with its ``FileDescriptorName=``."""

    socket: socket.socket
    name: str


def inherited_sockets(environ: MutableMapping[str, str] = os.environ) -> List[Inherited]:
    """The sockets of a socket unit (``$LISTEN_FDS`` from fd 3), taken out of ``environ``.

    Empty when none were passed, or when ``$LISTEN_PID`` names another process
    (they were meant for a parent that exec'd us without cleaning up).
    ConfigError, naming the fix, for a descriptor that is not a listening TCP socket.
    """
    count, pid = environ.pop("LISTEN_FDS", ""), environ.pop("LISTEN_PID", "")
    names = environ.pop("LISTEN_FDNAMES", "").split(":")
    if not count.isdigit() or pid != str(os.getpid()):
        return []
    found = []
    for index in range(int(count)):
        fd = LISTEN_FDS_START + index
        try:
            os.set_inheritable(fd, False)  # as if we had opened it: workers fork, programs plugins run do not get it
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise ConfigError("LISTEN_FDS=%s: descriptor %d is not a socket (%s); check the .socket unit"
                              % (count, fd, exc.strerror)) from None
        if (sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM
                or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)):
            raise ConfigError("LISTEN_FDS: descriptor %d is not a listening TCP socket; the .socket unit needs "
                              "ListenStream=[ADDR:]PORT and Accept=no" % fd)
        found.append(Inherited(sock, names[index] if index < len(names) else ""))
    return found
