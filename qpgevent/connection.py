"""The TCP connection: addresses, greeting, relay status and notes that outlive transactions."""
import itertools
import os
import time
from typing import Optional

_counter = itertools.count(1)
_pid = [os.getpid()]  # getpid() is a system call; a forked worker updates this
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))


def new_connection_id() -> str:
    """``<start time hex>.<pid>.<n>``: unique per host, sortable by start."""
    return "%x.%d.%d" % (int(time.time()), _pid[0], next(_counter))


class Connection:
    """What plugins know about the client; notes last for the whole connection."""

    def __init__(self, remote_ip: str = "", remote_port: int = 0, local_ip: str = "", local_port: int = 0,
                 remote_host: Optional[str] = None, remote_info: Optional[str] = None) -> None:
        self.id = new_connection_id()
        self.started = time.time()
        if remote_ip.startswith("::ffff:") and "." in remote_ip:
            remote_ip = remote_ip[len("::ffff:"):]
        self.remote_ip = remote_ip
        self.remote_port = remote_port
        self.local_ip = local_ip
        self.local_port = local_port
        self.remote_host = remote_host or ("[%s]" % remote_ip if remote_ip else "unknown")
        self.remote_info = remote_info or self.remote_host
        self.hello: Optional[str] = None
        self.hello_host: Optional[str] = None
        self.relay_client = False
        self.notes: dict = {}

    def __repr__(self) -> str:
        return "Connection(%s %s:%s)" % (self.id, self.remote_ip, self.remote_port)
