"""inetd / tcpserver mode: one session on stdin and stdout."""
import argparse
import os
import socket
import sys
from typing import List, Optional

from . import replies as R
from .connection import Connection
from .conversation import Conversation
from .errors import ConfigError
from .replies import format_reply
from .server import reverse_lookup
from .smtp import Session
from .smtpd import Smtpd
from .transport import StdioTransport

# ucspi-tcp variables a tcpserver sets (and the ones plugins read from the session's env).
UCSPI = ("TCPREMOTEIP", "TCPREMOTEPORT", "TCPREMOTEHOST", "TCPREMOTEINFO", "TCPLOCALIP", "TCPLOCALPORT",
         "RELAYCLIENT", "RBLSMTPD")


def peer_connection(transport: StdioTransport, rdns: bool) -> Connection:
    """The client's addresses from tcpserver's environment, else from the socket on stdin."""
    env = os.environ
    remote_ip, remote_port = env.get("TCPREMOTEIP", ""), env.get("TCPREMOTEPORT", "0")
    local_ip, local_port = env.get("TCPLOCALIP", ""), env.get("TCPLOCALPORT", "0")
    if not remote_ip and transport.socket is not None:
        try:
            remote_ip, remote_port = transport.socket.getpeername()[:2]
            local_ip, local_port = transport.socket.getsockname()[:2]
        except (OSError, ValueError):
            pass
    host = env.get("TCPREMOTEHOST") or (reverse_lookup(remote_ip) if rdns and remote_ip else None)
    info = env.get("TCPREMOTEINFO")
    connection = Connection(remote_ip or "0.0.0.0", int(remote_port or 0), local_ip, int(local_port or 0),
                            remote_host=host, remote_info="%s@%s" % (info, host or "[%s]" % remote_ip) if info else None)
    return connection


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="qpsmtpd", description="qpgevent for inetd/tcpserver: one session on stdin/stdout.")
    parser.add_argument("--config-dir", help="config directory (default: $QPSMTPD_CONFIG, else config/ beside the install)")
    parser.add_argument("-H", "--no-rdns", action="store_true", help="do not look up the client's host name")
    options = parser.parse_args(argv)
    transport = StdioTransport()
    try:
        smtpd = Smtpd(options.config_dir)
    except ConfigError as exc:
        sys.stderr.write("qpsmtpd: %s\n" % exc)
        reply = R.SHUTDOWN
        transport.write(format_reply(reply.code, reply.status, [reply.text.format(me=socket.gethostname())]))
        return 78
    session = Session(smtpd, transport, peer_connection(transport, not options.no_rdns))
    session.env = {name: os.environ[name] for name in UCSPI if name in os.environ}
    Conversation(session, transport).run()
    return 0
