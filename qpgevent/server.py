"""The gevent daemon: listeners, connection limits, privileges, pid file, signals.

One greenlet per connection; ``qpgevent.cli`` has monkey-patched the process
before this module is imported, so plugins may block as they please.
"""
import argparse
import collections
import os
import pwd
import resource
import signal
import socket
import sys
import traceback
from typing import Dict, List, Optional, Tuple

import gevent
from gevent.event import Event
from gevent.server import StreamServer

from . import replies as R
from .connection import Connection
from .constants import LOGERROR, LOGINFO, LOGNOTICE, LOGWARN
from .errors import ConfigError
from .netlist import ip_in
from .proxy import MAX_HEADER as MAX_PROXY_HEADER, ProxyError, parse as parse_proxy
from .replies import format_reply
from .smtp import Session
from .smtpd import Smtpd
from .transport import SocketTransport

DEFAULT_PORT = 2525
SMTPS_PORT = 465
PROXY_TIMEOUT = 10.0  # seconds a trusted proxy has to send its header


def parse_listen(value: str, default_port: int) -> Tuple[str, int]:
    """``ADDR``, ``ADDR:PORT``, ``[v6]`` or ``[v6]:PORT`` -> (address, port)."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        host, port = value.split(":")
    else:
        host, port = value, ""
    try:
        return host, int(port) if port else default_port
    except ValueError:
        raise argparse.ArgumentTypeError("bad port in listen address %r" % value) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qpsmtpd-server", description="qpgevent: the qpsmtpd plugin model on gevent.")
    parser.add_argument("--config-dir", help="config directory (default: $QPSMTPD_CONFIG, else config/ beside the install)")
    parser.add_argument("-l", "--listen-address", action="append", default=[], metavar="ADDR[:PORT]",
                        help="address to listen on; repeatable; IPv6 as [::1]:2525 (default 127.0.0.1)")
    parser.add_argument("-p", "--port", type=int, default=DEFAULT_PORT, help="port for addresses without one (default 2525)")
    parser.add_argument("--smtps-listen", action="append", default=[], metavar="ADDR[:PORT]",
                        help="address for implicit TLS (RFC 8314; default port 465); needs the tls plugin")
    parser.add_argument("-c", "--limit-connections", type=int, default=1000, metavar="N",
                        help="most sessions at once; more get 421 (default 1000)")
    parser.add_argument("-m", "--max-from-ip", type=int, default=0, metavar="N",
                        help="most sessions from one address; more get 421 (default 0: no limit)")
    parser.add_argument("-u", "--user", help="drop privileges to USER after binding")
    parser.add_argument("--pid-file", help="write the pid here; refuse to start if that pid is alive")
    parser.add_argument("-d", "--detach", action="store_true", help="run in the background")
    parser.add_argument("-H", "--no-rdns", action="store_true", help="do not look up the client's host name")
    return parser


class ConnectionLimits:
    """Counts sessions, in all and per remote address."""

    def __init__(self, total: int, per_ip: int) -> None:
        self.total = total
        self.per_ip = per_ip
        self.active = 0
        self.by_ip: Dict[str, int] = collections.Counter()

    def refusal(self, ip: str) -> Optional[R.Reply]:
        if self.total and self.active >= self.total:
            return R.TOO_MANY_CONNECTIONS
        if self.per_ip and self.by_ip[ip] >= self.per_ip:
            return R.TOO_MANY_FROM_IP
        return None

    def enter(self, ip: str) -> None:
        self.active += 1
        self.by_ip[ip] += 1

    def leave(self, ip: str) -> None:
        self.active -= 1
        self.by_ip[ip] -= 1
        if not self.by_ip[ip]:
            del self.by_ip[ip]


def reverse_lookup(ip: str, seconds: float = 5.0) -> Optional[str]:
    with gevent.Timeout(seconds, False):
        try:
            return socket.gethostbyaddr(ip)[0]
        except (OSError, UnicodeError):
            return None
    return None


class Server:
    """Accepts connections on every listener and runs one session per connection."""

    def __init__(self, smtpd: Smtpd, options: argparse.Namespace) -> None:
        self.smtpd = smtpd
        self.options = options
        self.limits = ConnectionLimits(options.limit_connections, options.max_from_ip)
        self.listeners: List[StreamServer] = []
        self.sessions: set = set()

    def bind(self) -> None:
        plain = self.options.listen_address or ([] if self.options.smtps_listen else ["127.0.0.1"])
        for value, smtps in [(v, False) for v in plain] + [(v, True) for v in self.options.smtps_listen]:
            host, port = parse_listen(value, SMTPS_PORT if smtps else self.options.port)
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise ConfigError("cannot listen on %s port %d: %s" % (host, port, exc.strerror)) from None
            sock.listen(1024)
            listener = StreamServer(sock, self.handle_smtps if smtps else self.handle)
            self.listeners.append(listener)

    def check_plugins(self, smtpd: Smtpd) -> None:
        """Refuse a configuration that cannot serve the listeners asked for."""
        if self.options.smtps_listen and "tls" not in [plugin.name for plugin in smtpd.plugins]:
            raise ConfigError("--smtps-listen needs the tls plugin; add 'tls CERT KEY' to %s"
                              % (smtpd.config.path("plugins") or "config/plugins"))

    @property
    def addresses(self) -> List[Tuple[str, int]]:
        return [listener.socket.getsockname()[:2] for listener in self.listeners]

    def start(self) -> None:
        for listener in self.listeners:
            listener.start()

    def handle_smtps(self, sock: socket.socket, address: tuple) -> None:
        self.handle(sock, address, smtps=True)

    def handle(self, sock: socket.socket, address: tuple, smtps: bool = False) -> None:
        ip, port = address[:2]
        smtpd = self.smtpd  # the one that was current when the client came: reloads affect new sessions
        local = sock.getsockname()[:2]
        early = b""
        if ip_in(ip, smtpd.config_list("proxy_hosts")):
            proxied = read_proxy_header(sock, PROXY_TIMEOUT)
            if proxied is None:
                smtpd.log(LOGWARN, "proxy %s sent no valid PROXY header; connection closed" % ip)
                sock.close()
                return
            info, early = proxied
            if not info.local:
                ip, port, local = info.src_ip, info.src_port, (info.dst_ip, info.dst_port)
        if ip.startswith("::ffff:") and "." in ip:
            ip = ip[len("::ffff:"):]
        refusal = self.limits.refusal(ip)
        if refusal is not None:
            try:
                sock.sendall(format_reply(refusal.code, refusal.status, [refusal.text.format(me=smtpd.me)]))
            except OSError:
                pass
            sock.close()
            smtpd.log(LOGNOTICE, "refused %s: %s" % (ip, refusal.text.format(me="")))
            return
        self.limits.enter(ip)
        child_addrs = list(self.limits.by_ip.elements())
        transport = SocketTransport(sock)
        session = None
        try:
            host = None if self.options.no_rdns else reverse_lookup(ip)
            connection = Connection(ip, port, local[0], local[1], remote_host=host)
            if smtps:
                connection.notes["smtps"] = True
            session = Session(smtpd, transport, connection)
            self.sessions.add(session)
            session.log(LOGINFO, "connection from %s port %s" % (ip, port))
            session.run(transport, early, max_conn_ip=self.limits.per_ip, child_addrs=child_addrs)
        except Exception:
            smtpd.log(LOGERROR, "session crashed:\n" + traceback.format_exc(), session=session)
        finally:
            self.sessions.discard(session)
            self.limits.leave(ip)
            transport.close()

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, give sessions ``grace`` seconds, then tell the rest 421."""
        for listener in self.listeners:
            listener.close()
        deadline = gevent.Timeout(grace, False)
        with deadline:
            while self.sessions:
                gevent.sleep(0.1)
        for session in list(self.sessions):
            session.shutdown()


def read_proxy_header(sock: socket.socket, timeout: float) -> Optional[tuple]:
    """(ProxyInfo, bytes read past the header) from a trusted proxy, or None if it sent none in time."""
    data = b""
    try:
        with gevent.Timeout(timeout):
            while True:
                info, consumed = parse_proxy(data)
                if info is not None:
                    return info, data[consumed:]
                chunk = sock.recv(MAX_PROXY_HEADER - len(data))
                if not chunk:
                    return None
                data += chunk
    except (ProxyError, OSError, gevent.Timeout):
        return None


def drop_privileges(user: str) -> None:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ConfigError("--user %s: no such user; create it or name another" % user) from None
    if os.getuid() == entry.pw_uid:
        return
    os.initgroups(entry.pw_name, entry.pw_gid)
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


def check_pid_file(path: str) -> None:
    try:
        with open(path) as handle:
            pid = int(handle.read().strip() or 0)
    except (OSError, ValueError):
        return
    if pid:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass
        raise ConfigError("%s: pid %d is still running; stop it or remove the file" % (path, pid))


def detach() -> None:
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    gevent.reinit()


def raise_fd_limit() -> None:
    """Thousands of sessions need thousands of descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))
        except (ValueError, OSError):
            pass


def main(argv: Optional[List[str]] = None) -> int:
    options = build_parser().parse_args(argv)
    try:
        raise_fd_limit()
        server = Server(None, options)
        server.bind()
        if options.pid_file:
            check_pid_file(options.pid_file)
        if options.user:
            gevent.get_hub().threadpool  # imported lazily; the new user may not be able to read it
            drop_privileges(options.user)
        server.smtpd = Smtpd(options.config_dir)
        server.check_plugins(server.smtpd)
    except ConfigError as exc:
        sys.stderr.write("qpsmtpd-server: %s\n" % exc)
        return 78  # EX_CONFIG
    if options.detach:
        detach()
    if options.pid_file:
        with open(options.pid_file, "w") as handle:
            handle.write("%d\n" % os.getpid())
    stopping = Event()

    def reload() -> None:
        try:
            smtpd = Smtpd(options.config_dir)
            server.check_plugins(smtpd)
            server.smtpd = smtpd
            server.smtpd.log(LOGNOTICE, "configuration reloaded")
        except ConfigError as exc:
            server.smtpd.log(LOGERROR, "reload refused, keeping the old configuration: %s" % exc)

    def reopen_logs() -> None:
        for plugin in server.smtpd.plugins:
            reopen = getattr(plugin.module, "reopen", None)
            if callable(reopen):
                reopen()

    gevent.signal_handler(signal.SIGHUP, reload)
    gevent.signal_handler(signal.SIGUSR1, reopen_logs)
    gevent.signal_handler(signal.SIGTERM, stopping.set)
    gevent.signal_handler(signal.SIGINT, stopping.set)
    server.start()
    for host, port in server.addresses:
        server.smtpd.log(LOGWARN, "listening on %s port %d" % (host, port))
    stopping.wait()
    server.smtpd.log(LOGWARN, "shutting down")
    server.stop()
    if options.pid_file:
        try:
            os.unlink(options.pid_file)
        except OSError:
            pass
    return 0
