"""Client sockets to the daemons plugins talk to, named as admins write them: a unix socket path or HOST[:PORT]."""
import socket
from typing import Optional

from .netlist import host_port


def connect(address: str, timeout: float, default_port: Optional[int] = None) -> socket.socket:
    """A stream socket to ``address`` (a path with a ``/``: unix; else ``host:port`` or ``[v6]:port``), within ``timeout``.

    The socket keeps ``timeout`` for every later read and write.  OSError (or
    ValueError for an address without a port and no ``default_port``) on failure.
    """
    if "/" in address:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
        return sock
    host, port = host_port(address, default_port)
    if port is None:
        raise ValueError("%r names no port" % address)
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.settimeout(timeout)
    return sock
