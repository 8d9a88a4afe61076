"""The gevent daemon: listeners, connection limits, privileges, pid file, signals.

One greenlet per connection; ``qpgevent.cli`` has monkey-patched the process
before this module is imported, so plugins may block as they please.

With ``--workers 1`` (the default) this one process serves.  With more, the
supervisor in ``qpgevent.master`` binds, forks the workers and watches them;
each worker runs ``run_worker`` below: the same server on the inherited sockets.
"""
import argparse
import functools
import ipaddress
import os
import pwd
import resource
import signal
import socket
import sys
import traceback
from typing import Callable, List, NamedTuple, Optional, Tuple

import gevent
from gevent.event import Event
from gevent.pool import Pool
from gevent.server import StreamServer

from . import metrics
from .connection import Connection
from .conversation import Conversation
from .constants import LOGERROR, LOGINFO, LOGNOTICE, LOGWARN
from .errors import ConfigError
from .hooks import HOOKS
from .limits import ConnectionLimits, SharedCounters
from .netlist import host_port, ip_in
from .proxy import MAX_HEADER as MAX_PROXY_HEADER, ProxyError, parse as parse_proxy
from .replies import format_reply
from .smtp import Session
from .smtpd import Smtpd
from .systemd import Notifier, inherited_sockets
from .transport import IdleSweeper, SocketTransport

DEFAULT_PORT = 2525
SMTPS_PORT = 465
PROXY_TIMEOUT = 10.0  # seconds a trusted proxy has to send its header
HEARTBEAT_INTERVAL = 1.0  # seconds between a worker's heartbeats to the master
FINISH_SECONDS = 4.0  # after the graceful timeout, for sessions to end their hook and say 421 (master.KILL_GRACE is 5)
EX_CONFIG = 78  # sysexits.h: the configuration is broken


class Listener(NamedTuple):
    """A bound, listening socket and whether it speaks implicit TLS."""

    socket: socket.socket
    smtps: bool


def parse_listen(value: str, default_port: int) -> Tuple[str, int]:
    """``ADDR``, ``ADDR:PORT``, ``[v6]`` or ``[v6]:PORT`` -> (address, port), for the command line."""
    try:
        return host_port(value, default_port)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def metrics_address(value: str) -> Tuple[str, int]:
    """``--metrics``: ``ADDR:PORT`` or ``[v6]:PORT``; the port is required."""
    host, port = parse_listen(value, 0)
    if not port:
        raise argparse.ArgumentTypeError("--metrics takes ADDR:PORT, e.g. 127.0.0.1:9465, not %r" % value)
    return host, port


def worker_count(value: str) -> int:
    """``--workers``: a number of 1 or more, or ``auto`` for one per usable core."""
    if value == "auto":
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            return os.cpu_count() or 1
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError("--workers takes a number of 1 or more, or 'auto', not %r" % value)
    return count


def seconds(value: str) -> float:
    """A number of seconds, 0 or more."""
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError("%r is not a number of seconds" % value)
    return number


def positive_seconds(value: str) -> float:
    number = seconds(value)
    if not number:
        raise argparse.ArgumentTypeError("%r: give a number of seconds above 0" % value)
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qpsmtpd-server", description="qpgevent: the qpsmtpd plugin model on gevent.")
    parser.add_argument("--config-dir", help="config directory (default: $QPSMTPD_CONFIG, else config/ beside the install)")
    parser.add_argument("-l", "--listen-address", action="append", default=[], metavar="ADDR[:PORT]",
                        help="address to listen on; repeatable; IPv6 as [::1]:2525 (default 127.0.0.1)")
    parser.add_argument("-p", "--port", type=int, default=DEFAULT_PORT, help="port for addresses without one (default 2525)")
    parser.add_argument("--smtps-listen", action="append", default=[], metavar="ADDR[:PORT]",
                        help="address for implicit TLS (RFC 8314; default port 465); needs the tls plugin")
    parser.add_argument("-c", "--limit-connections", type=int, default=1000, metavar="N",
                        help="most sessions at once, over all workers; more get 421 (default 1000; 0: no limit)")
    parser.add_argument("-m", "--max-from-ip", type=int, default=0, metavar="N",
                        help="most sessions from one address, over all workers; more get 421 (default 0: no limit)")
    parser.add_argument("-u", "--user", help="drop privileges to USER after binding")
    parser.add_argument("--pid-file", help="write the pid here; refuse to start if that pid is alive")
    parser.add_argument("-d", "--detach", action="store_true", help="run in the background")
    parser.add_argument("-H", "--no-rdns", action="store_true", help="do not look up the client's host name")
    parser.add_argument("-w", "--workers", type=worker_count, default=1, metavar="N|auto",
                        help="worker processes under a supervising master; 'auto' is one per core (default 1: "
                             "a single process, no master)")
    parser.add_argument("--graceful-timeout", type=seconds, default=30.0, metavar="SECONDS",
                        help="on SIGTERM (or when a reload retires a worker), sessions get this long to finish "
                             "before they are told 421 (default 30)")
    parser.add_argument("--heartbeat-timeout", type=positive_seconds, default=30.0, metavar="SECONDS",
                        help="the master kills and replaces a worker silent this long (default 30)")
    parser.add_argument("--metrics", type=metrics_address, metavar="ADDR:PORT",
                        help="serve Prometheus metrics over HTTP at http://ADDR:PORT/metrics (all workers added up)")
    parser.add_argument("--check-config", action="store_true",
                        help="load the config and every plugin, print each hook with its plugins in run order, exit")
    return parser


def reverse_lookup(ip: str, seconds: float = 5.0) -> Optional[str]:
    with gevent.Timeout(seconds, False):
        try:
            return socket.gethostbyaddr(ip)[0]
        except (OSError, UnicodeError):
            return None
    return None


def bind_listeners(options: argparse.Namespace) -> List[Listener]:
    """Bind and listen on every ``-l`` and ``--smtps-listen`` address; ConfigError if one is taken."""
    plain = options.listen_address or ([] if options.smtps_listen else ["127.0.0.1"])
    listeners = []
    for value, smtps in [(v, False) for v in plain] + [(v, True) for v in options.smtps_listen]:
        host, port = parse_listen(value, SMTPS_PORT if smtps else options.port)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            for listener in listeners:
                listener.socket.close()
            raise ConfigError("cannot listen on %s port %d: %s" % (host, port, exc.strerror)) from None
        sock.listen(listen_backlog(options.limit_connections))
        listeners.append(Listener(sock, smtps))
    return listeners


def open_listeners(options: argparse.Namespace) -> List[Listener]:
    """The sockets systemd passed (socket activation), else those of ``-l`` and ``--smtps-listen``, bound here.

    Passed sockets replace the addresses of the command line, which then name
    them (for the checks and the logs); one named ``smtps``
    (``FileDescriptorName=smtps``) speaks implicit TLS.
    """
    inherited = inherited_sockets()
    if not inherited:
        return bind_listeners(options)
    if options.listen_address or options.smtps_listen:
        sys.stderr.write("qpsmtpd-server: listening on the %d sockets systemd passed (LISTEN_FDS); "
                         "-l and --smtps-listen are ignored\n" % len(inherited))
    listeners = [Listener(sock, name == "smtps") for sock, name in inherited]
    addresses = {True: [], False: []}  # type: dict
    for listener in listeners:
        host, port = listener.socket.getsockname()[:2]
        addresses[listener.smtps].append("[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port))
    options.listen_address, options.smtps_listen = addresses[False], addresses[True]
    return listeners


def check_plugins(smtpd: Smtpd, options: argparse.Namespace) -> None:
    """Refuse a configuration that cannot serve the listeners asked for."""
    if options.smtps_listen and "tls" not in [plugin.name for plugin in smtpd.plugins]:
        raise ConfigError("--smtps-listen needs the tls plugin; add 'tls CERT KEY' to %s"
                          % (smtpd.config.path("plugins") or "config/plugins"))


def load_smtpd(options: argparse.Namespace, log_warnings: bool = True) -> Smtpd:
    """The config and plugins, loaded and checked against the options; ConfigError if broken.

    Its warnings (no queue plugin, ...) are logged at LOGWARN unless told not
    to: a worker leaves that to the master, which loaded the same files.
    """
    smtpd = Smtpd(options.config_dir)
    check_plugins(smtpd, options)
    if log_warnings:
        for warning in smtpd.warnings:
            smtpd.log(LOGWARN, "warning: %s" % warning)
    return smtpd


def reopen_logs(smtpd: Smtpd) -> None:
    """SIGUSR1: logging plugins with a module-level ``reopen()`` reopen their files (after logrotate)."""
    for plugin in smtpd.plugins:
        reopen = getattr(plugin.module, "reopen", None)
        if callable(reopen):
            reopen()


class Server:
    """Accepts connections on every listener and runs one session per connection."""

    def __init__(self, smtpd: Smtpd, options: argparse.Namespace, counters: Optional[SharedCounters] = None,
                 slot: Optional[int] = None) -> None:
        self.smtpd = smtpd
        self.options = options
        # A worker's counts go to its slot of the master's shared counters: -c and -m hold over all workers.
        self.limits = ConnectionLimits(options.limit_connections, options.max_from_ip, counters, slot)
        self.listeners: List[StreamServer] = []
        self.conversations: set = set()
        self.stopping = False
        # Every connection's greenlet, from the accept on: one accepted just
        # before a stop, not yet a session, still gets served.
        self.connections = Pool()
        self.sweeper = IdleSweeper(log=lambda message: self.smtpd.log(LOGERROR, message))

    def bind(self) -> None:
        self.serve_on(bind_listeners(self.options))

    def serve_on(self, listeners: List[Listener]) -> None:
        """Accept on sockets already bound (here, or by the master before it forked this worker)."""
        for listener in listeners:
            host, port = listener.socket.getsockname()[:2]
            # Bound to one address, every session's local end is that one: no
            # getsockname() per connection, one string shared by all of them.
            local = None if ipaddress.ip_address(host).is_unspecified else (host, port)
            handle = functools.partial(self.handle, smtps=listener.smtps, local=local)
            self.listeners.append(StreamServer(listener.socket, handle, spawn=self.connections))

    def check_plugins(self, smtpd: Smtpd) -> None:
        check_plugins(smtpd, self.options)

    @property
    def addresses(self) -> List[Tuple[str, int]]:
        return [listener.socket.getsockname()[:2] for listener in self.listeners]

    def start(self) -> None:
        self.sweeper.start()
        for listener in self.listeners:
            listener.start()

    def handle(self, sock: socket.socket, address: tuple, smtps: bool = False, local: Optional[tuple] = None) -> None:
        """Serve one accepted connection; ``local`` is the listener's address when it is not a wildcard."""
        metrics.connection_accepted()
        ip, port = address[:2]
        smtpd = self.smtpd  # the one that was current when the client came: reloads affect new sessions
        if local is None:
            local = sock.getsockname()[:2]
        early, proxied_tls = b"", None
        if ip_in(ip, smtpd.config_list("proxy_hosts")):
            proxied = read_proxy_header(sock, PROXY_TIMEOUT)
            if proxied is None:
                smtpd.log(LOGWARN, "proxy %s sent no valid PROXY header; connection closed" % ip)
                sock.close()
                return
            info, early = proxied
            if not info.local:
                ip, port, local = info.src_ip, info.src_port, (info.dst_ip, info.dst_port)
            proxied_tls = info.tls_version if info.tls else None
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
            metrics.connection_refused(refusal)
            return
        self.limits.enter(ip)
        metrics.session_opened()
        transport = SocketTransport(sock, self.sweeper)
        session = conversation = None
        try:
            host = None if self.options.no_rdns else reverse_lookup(ip)
            connection = Connection(ip, port, local[0], local[1], remote_host=host)
            if smtps:
                connection.notes["smtps"] = True
            if proxied_tls is not None:  # the proxy ended TLS for us: the client did speak TLS
                connection.notes.update(tls_enabled=True, tls_version=proxied_tls or "TLS", tls_via_proxy=True)
            session = Session(smtpd, transport, connection)
            conversation = Conversation(session, transport)
            conversation.stopping = self.stopping  # accepted just before a stop: greeted, then told 421
            self.conversations.add(conversation)
            if LOGINFO <= smtpd.log_threshold:
                session.log(LOGINFO, "connection from %s port %s" % (ip, port))
            conversation.run(early, max_conn_ip=self.limits.per_ip, child_addrs=self.limits.addresses)
        except Exception:
            smtpd.log(LOGERROR, "session crashed:\n" + traceback.format_exc(), session=session)
        finally:
            self.conversations.discard(conversation)
            self.limits.leave(ip)
            metrics.session_closed()
            transport.close()

    def stop(self, grace: float = 30.0) -> None:
        """Stop accepting, give connections ``grace`` seconds, then have the remaining sessions say 421.

        Each session says it from its own greenlet: one waiting for a command
        at once, one inside a hook (a delivery, say) once the hook has
        returned and its reply is out; ``FINISH_SECONDS`` bound that.
        """
        for listener in self.listeners:
            listener.close()
        self.connections.join(timeout=grace)
        self.stopping = True
        for conversation in list(self.conversations):
            conversation.stop()
        self.connections.join(timeout=FINISH_SECONDS)


def listen_backlog(limit_connections: int) -> int:
    """A backlog as deep as the connection limit (up to the kernel's somaxconn).

    A burst larger than the backlog overflows into SYN cookies: the client
    believes it is connected while the server never hears of it.
    """
    try:
        with open("/proc/sys/net/core/somaxconn") as handle:
            ceiling = int(handle.read())
    except (OSError, ValueError):
        ceiling = 4096
    return max(1024, min(limit_connections or ceiling, ceiling))


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


def check_config(options: argparse.Namespace) -> int:
    """--check-config: load everything; list every error and warning on stderr, one a line.

    With no error: ``hook: plugin, plugin`` in run order on stdout, and exit 0
    (warnings too: the server would start); with errors: exit 78.
    """
    try:
        smtpd = load_smtpd(options, log_warnings=False)
    except ConfigError as exc:
        errors, warnings = getattr(exc, "errors", [exc]), getattr(exc, "warnings", [])
        for error in errors:
            sys.stderr.write("qpsmtpd-server: %s\n" % error)
        for warning in warnings:
            sys.stderr.write("qpsmtpd-server: warning: %s\n" % warning)
        sys.stderr.write("qpsmtpd-server: %s, %s: the server would not start\n"
                         % (_count(errors, "error"), _count(warnings, "warning")))
        return EX_CONFIG
    for warning in smtpd.warnings:
        sys.stderr.write("qpsmtpd-server: warning: %s\n" % warning)
    for hook in HOOKS:
        plugins = smtpd.registry.plugins_for(hook)
        if plugins:
            print("%s: %s" % (hook, ", ".join(plugins)))
    print("state store: %s" % smtpd.state.url)
    print("DNS servers: %s" % smtpd.dns.describe())
    print("configuration ok: %d plugins from %s, %s" % (len(smtpd.plugins), smtpd.config.directory,
                                                         _count(smtpd.warnings, "warning")))
    return 0


def _count(items: list, noun: str) -> str:
    return "%d %s%s" % (len(items), noun, "" if len(items) == 1 else "s")


def serve(server: Server, options: argparse.Namespace, notifier: Notifier) -> int:
    """The single-process daemon: serve until SIGTERM/SIGINT; SIGHUP reloads in place."""
    stopping = Event()
    serving = "serving on " + describe_addresses(server.addresses)

    def reload() -> None:
        notifier.reloading("reloading the configuration")
        try:
            smtpd = load_smtpd(options)
            smtpd.start_serving()
            server.smtpd = smtpd
            server.smtpd.log(LOGNOTICE, "configuration reloaded")
            status = "configuration reloaded; " + serving
        except ConfigError as exc:
            server.smtpd.log(LOGERROR, "reload refused, keeping the old configuration: %s" % exc)
            status = "reload refused (see the log); the old configuration goes on " + serving
        notifier.ready(status)

    gevent.signal_handler(signal.SIGHUP, reload)
    gevent.signal_handler(signal.SIGUSR1, lambda: reopen_logs(server.smtpd))
    gevent.signal_handler(signal.SIGTERM, stopping.set)
    gevent.signal_handler(signal.SIGINT, stopping.set)
    server.start()
    for host, port in server.addresses:
        server.smtpd.log(LOGWARN, "listening on %s port %d" % (host, port))
    notifier.ready(serving)
    if notifier.watchdog_interval is not None:
        gevent.spawn(send_watchdog, notifier)
    stopping.wait()
    server.smtpd.log(LOGWARN, "shutting down")
    notifier.stopping("shutting down: draining %d sessions" % len(server.conversations))
    server.stop(options.graceful_timeout)
    return 0


def describe_addresses(addresses: List[Tuple[str, int]]) -> str:
    return ", ".join("%s port %d" % (host, port) for host, port in addresses)


def send_watchdog(notifier: Notifier) -> None:
    """WATCHDOG=1 for as long as the event loop runs: a loop stuck in a plugin stops it."""
    while True:
        notifier.watchdog()
        gevent.sleep(notifier.watchdog_interval)


def run_worker(options: argparse.Namespace, listeners: List[Listener], heartbeat: int,
               counters: Optional[SharedCounters], slot: Optional[int]) -> int:
    """One worker process, forked by the master: load the config, serve, stop when told to.

    ``heartbeat`` is the write end of a pipe the master reads: one byte a
    second proves this worker's event loop is alive (the first one also says
    it is serving).  The worker loads its own plugins, so a reload takes
    effect by replacing workers.  If the master vanishes the worker stops.
    ``slot`` is this worker's region of ``counters`` (None when -c and -m are
    both 0), where it counts its sessions for the limits.
    """
    gevent.reinit()
    master = os.getppid()
    try:
        smtpd = load_smtpd(options, log_warnings=False)
    except ConfigError as exc:
        sys.stderr.write("qpsmtpd-server: worker %d: %s\n" % (os.getpid(), exc))
        return EX_CONFIG
    server = Server(smtpd, options, counters, slot)
    server.serve_on(listeners)
    smtpd.start_serving()
    stopping = Event()
    gevent.signal_handler(signal.SIGTERM, stopping.set)
    gevent.signal_handler(signal.SIGINT, stopping.set)
    gevent.signal_handler(signal.SIGUSR1, lambda: reopen_logs(smtpd))
    server.start()
    beats = gevent.spawn(send_heartbeats, heartbeat, master, stopping.set)
    stopping.wait()
    smtpd.log(LOGINFO, "worker stopping: %d sessions to finish" % len(server.conversations))
    server.stop(options.graceful_timeout)
    beats.kill()
    return 0


def send_heartbeats(fd: int, master: int, master_gone: Callable[[], None]) -> None:
    """Write a byte to the master every second, for as long as this worker lives."""
    while True:
        try:
            os.write(fd, b".")
        except BlockingIOError:
            pass  # the master is busy; the pipe already holds beats for it
        except OSError:
            master_gone()
            return
        if os.getppid() != master:
            master_gone()
            return
        gevent.sleep(HEARTBEAT_INTERVAL)


def main(argv: Optional[List[str]] = None) -> int:
    options = build_parser().parse_args(argv)
    if options.check_config:
        return check_config(options)
    notifier = Notifier.from_environment()
    try:
        raise_fd_limit()
        listeners = open_listeners(options)
        metrics_listener = metrics.bind(*options.metrics) if options.metrics else None
        if options.pid_file:
            check_pid_file(options.pid_file)
        if options.user:
            gevent.get_hub().threadpool  # imported lazily; the new user may not be able to read it
            drop_privileges(options.user)
        smtpd = load_smtpd(options)
    except ConfigError as exc:
        sys.stderr.write("qpsmtpd-server: %s\n" % exc)
        return EX_CONFIG
    if options.detach:
        detach()
    if options.pid_file:
        with open(options.pid_file, "w") as handle:
            handle.write("%d\n" % os.getpid())
    if metrics_listener is not None:
        metrics.enable(metrics_listener)  # here: after --detach and --user, before the workers fork
    try:
        if options.workers > 1:
            from .master import Master
            counters = None
            if options.limit_connections or options.max_from_ip:
                counters = SharedCounters(2 * options.workers)  # the old workers draining after a reload count too

            def worker(heartbeat: int, slot: Optional[int]) -> int:
                return run_worker(options, listeners, heartbeat, counters, slot)

            master = Master(options.workers, smtpd, load=lambda: load_smtpd(options), run_worker=worker,
                            reopen_logs=reopen_logs, listeners=[listener.socket for listener in listeners],
                            graceful_timeout=options.graceful_timeout, heartbeat_timeout=options.heartbeat_timeout,
                            counters=counters, notifier=notifier)
            notifier.log = lambda message: master.log(LOGWARN, message)
            return master.run()
        server = Server(smtpd, options)
        notifier.log = lambda message: server.smtpd.log(LOGWARN, message)
        server.serve_on(listeners)
        smtpd.start_serving()
        return serve(server, options, notifier)
    finally:
        if options.pid_file:
            try:
                os.unlink(options.pid_file)
            except OSError:
                pass
