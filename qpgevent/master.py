"""The supervisor of ``--workers N``: it forks, reaps and signals, and nothing else.

The master owns the listening sockets (bound before privileges were dropped)
and a validated copy of the configuration; it never serves a client.  Each
worker is a forked process that loads its own plugins and runs the gevent
server on the inherited sockets (``qpgevent.server.run_worker``).

Signals are only recorded by their handlers (a queue plus one byte on a pipe
that wakes the main loop); the loop then calls ``handle_<name>``:

========  ================================================================
TERM/INT  workers stop accepting, finish their sessions within the graceful
          timeout, tell the rest 421 and exit; the master follows when all
          are gone, killing stragglers.
HUP       reload: the new config is loaded and checked here first; broken,
          it is refused and the old workers go on; sound, new workers start
          and the old ones are drained once the new ones serve.  If the new
          workers keep dying at boot, the reload is abandoned instead.
USR1      reopen log files, here and in every worker.
CHLD      wakes the loop, which reaps.
========  ================================================================

Each worker gets a slot of the shared session counters (``qpgevent.limits``)
that make ``-c`` and ``-m`` hold over all workers.  There are twice as many
slots as workers, for the old and the new workers of a reload; a slot is
zeroed when its worker is reaped, and only then given to a new one.  If a
further reload comes while the workers of two configurations still hold every
slot, the newest workers start as the oldest finish draining (the current ones
serve meanwhile).

Workers prove they are alive by writing a byte to their pipe every second; one
silent for ``heartbeat_timeout`` is killed (SIGKILL) and replaced.  A worker
that dies is replaced; if they keep dying at boot, with growing pauses between
attempts, the master gives up and exits with ``EXIT_CRASH_LOOP``.

Under systemd (``qpgevent.systemd``) the master says ``READY=1`` once all the
workers of a configuration serve (at start and after each reload),
``RELOADING=1`` on SIGHUP, ``STOPPING=1`` on TERM, and ``WATCHDOG=1`` only
while every worker's heartbeat is fresh (within ``WATCHDOG_STALE``): a stuck
worker withholds it, and if none is replaced before ``WatchdogSec`` runs out,
systemd restarts the service.

.. caution:: The master blocks in the original (unpatched) ``select`` and uses
   the original ``fork``, ``waitpid`` and ``signal``: gevent's patched versions
   would reap children behind its back.  Each worker calls ``gevent.reinit()``.
"""
import collections
import gc
import os
import signal
import sys
import time
import traceback
from typing import Any, Callable, Deque, Dict, List, Optional

from gevent import monkey

from . import metrics
from .constants import LOGCRIT, LOGERROR, LOGINFO, LOGNOTICE, LOGWARN
from .errors import ConfigError
from .limits import SharedCounters
from .systemd import Notifier

_fork = monkey.get_original("os", "fork")
_waitpid = monkey.get_original("os", "waitpid")
_select = monkey.get_original("select", "select")
_set_handler = monkey.get_original("signal", "signal")

EXIT_OK = 0
EXIT_CRASH_LOOP = 70  # sysexits.h EX_SOFTWARE: workers die at boot, restarting will not help

BOOT_WINDOW = 5.0  # a worker dying sooner than this after its fork counts as a failure to boot
CRASH_LOOP_LIMIT = 5  # boot failures in a row before the master gives up
BACKOFF_FIRST = 0.1  # seconds before replacing a worker after the first boot failure; doubles after each
BACKOFF_MAX = 5.0
KILL_GRACE = 5.0  # beyond the graceful timeout, for a stopping worker to send its 421s and exit
TICK = 0.5  # the longest the loop sleeps without a signal or a heartbeat
# A worker beats every second (server.HEARTBEAT_INTERVAL): one silent for
# three has a stuck event loop, and the master stops telling systemd all is well.
WATCHDOG_STALE = 3.0

SIGNALS = {signal.SIGTERM: "term", signal.SIGINT: "int", signal.SIGHUP: "hup", signal.SIGUSR1: "usr1",
           signal.SIGCHLD: "chld"}


class Worker:
    """What the master knows about one worker process."""

    def __init__(self, pid: int, heartbeat: int, generation: int, slot: Optional[int]) -> None:
        self.pid = pid
        self.slot = slot  # its region of the shared session counters; None without them
        self.heartbeat: Optional[int] = heartbeat  # read end of its pipe; None once the worker closed it
        self.generation = generation  # the configuration it was started for (one more on each reload)
        self.born = time.monotonic()
        self.last_beat = self.born
        self.serving = False  # its first heartbeat came: its listeners are open
        self.proven = False  # it has served past BOOT_WINDOW
        self.stop_by: Optional[float] = None  # told to stop; killed if still alive at this time
        self.killed = False


def describe_status(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            return "killed by %s" % signal.Signals(-code).name
        except ValueError:
            return "killed by signal %d" % -code
    return "exit status %d" % code


class Master:
    """Keep ``count`` workers of the current configuration serving until told to stop.

    ``smtpd`` is the configuration already loaded and checked (its logging
    plugins carry the master's own messages); ``load()`` loads and checks it
    again on SIGHUP, raising ConfigError if broken; ``run_worker(fd, slot)``
    is the body of a worker, given its heartbeat pipe and its slot of
    ``counters`` (None when there are none: no limit is set), returning its
    exit status.
    """

    def __init__(self, count: int, smtpd: Any, load: Callable[[], Any],
                 run_worker: Callable[[int, Optional[int]], int], reopen_logs: Callable[[Any], None],
                 listeners: List[Any], graceful_timeout: float, heartbeat_timeout: float,
                 counters: Optional[SharedCounters] = None, notifier: Optional[Notifier] = None) -> None:
        self.count = count
        self.smtpd = smtpd
        self.load = load
        self.run_worker = run_worker
        self.reopen_logs = reopen_logs
        self.listeners = listeners
        self.graceful_timeout = graceful_timeout
        self.heartbeat_timeout = heartbeat_timeout
        self.counters = counters
        self.free_slots: List[int] = list(range(counters.slots)) if counters is not None else []
        self.waiting_for_slot = False
        self.workers: Dict[int, Worker] = {}
        self.generation = 1
        self.boot_failures = 0
        self.next_spawn = 0.0
        self.stopping = False
        self.exit_code = EXIT_OK
        self.signals: Deque[int] = collections.deque()
        self.notifier = notifier or Notifier(None)
        self.announce: Optional[str] = "started"  # READY=1 is due once the current workers all serve
        self.next_watchdog = 0.0
        self.watchdog_withheld = False
        self.wake_read = self.wake_write = -1

    def log(self, level: int, message: str) -> None:
        self.smtpd.log(level, "master: " + message)

    # -- the loop ---------------------------------------------------------------
    def run(self) -> int:
        """Start the workers and supervise them; returns the exit status for the master."""
        self.wake_read, self.wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        for signum in SIGNALS:
            _set_handler(signum, self.record_signal)
        self.log(LOGWARN, "pid %d, %d workers, listening on %s" % (os.getpid(), self.count, ", ".join(
            "%s port %d" % sock.getsockname()[:2] for sock in self.listeners)))
        try:
            while not (self.stopping and not self.workers):
                self.maintain()
                self.sleep()
                while self.signals:
                    getattr(self, "handle_" + SIGNALS[self.signals.popleft()])()
                self.reap()
                self.check_workers()
                self.feed_watchdog()
        finally:
            for signum in SIGNALS:
                _set_handler(signum, signal.SIG_DFL)
            os.close(self.wake_read)
            os.close(self.wake_write)
        self.log(LOGWARN, "stopped")
        return self.exit_code

    def record_signal(self, signum: int, frame: Any) -> None:
        """The only thing a signal handler does: note the signal and wake the loop."""
        self.signals.append(signum)
        try:
            os.write(self.wake_write, b"!")
        except BlockingIOError:
            pass  # the loop has wake-ups pending already

    def sleep(self) -> None:
        """Wait for a signal, a heartbeat or the next tick; note which workers beat."""
        timeout = TICK
        if not self.stopping and self.next_spawn:
            timeout = max(0.0, min(timeout, self.next_spawn - time.monotonic()))
        if self.notifier.watchdog_interval is not None:
            timeout = max(0.0, min(timeout, self.next_watchdog - time.monotonic()))
        beating = {w.heartbeat: w for w in self.workers.values() if w.heartbeat is not None}
        readable, _, _ = _select([self.wake_read, *beating], [], [], timeout)
        now = time.monotonic()
        for fd in readable:
            if fd == self.wake_read:
                self._drain(fd)
                continue
            worker = beating[fd]
            if self._drain(fd):
                worker.last_beat = now
                if not worker.serving:
                    worker.serving = True
                    self.log(LOGINFO, "worker %d serving" % worker.pid)
            else:  # the worker closed its end: it is exiting, reap() will see it
                os.close(fd)
                worker.heartbeat = None

    @staticmethod
    def _drain(fd: int) -> bool:
        """Read everything waiting; False at end of file."""
        got = False
        while True:
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                return True
            if not data:
                return got
            got = True

    # -- workers ----------------------------------------------------------------
    def maintain(self) -> None:
        """Start missing workers of the current generation; retire older ones once it serves."""
        if self.stopping:
            return
        current = [w for w in self.workers.values() if w.generation == self.generation and w.stop_by is None]
        if len(current) < self.count and time.monotonic() >= self.next_spawn:
            self.next_spawn = 0.0
            for _ in range(self.count - len(current)):
                if self.counters is not None and not self.free_slots:
                    if not self.waiting_for_slot:
                        self.log(LOGNOTICE, "every slot of the session counters is taken; more workers start "
                                 "as the draining ones exit")
                        self.waiting_for_slot = True
                    return
                self.waiting_for_slot = False
                try:
                    self.spawn()
                except OSError as exc:  # out of processes or memory: try again later
                    self.log(LOGERROR, "cannot start a worker: %s" % exc)
                    self.next_spawn = time.monotonic() + BACKOFF_MAX
                    return
        elif sum(w.serving for w in current) >= self.count:
            if self.announce is not None:
                self.notifier.ready("%s; %d workers serving on %s" % (self.announce, self.count, ", ".join(
                    "%s port %d" % sock.getsockname()[:2] for sock in self.listeners)))
                self.announce = None
            for worker in list(self.workers.values()):
                if worker.generation != self.generation and worker.stop_by is None:
                    self.log(LOGINFO, "draining worker %d: its configuration is no longer current" % worker.pid)
                    self.stop_worker(worker)

    def spawn(self) -> None:
        slot = None
        if self.counters is not None:
            slot = min(self.free_slots)
            self.free_slots.remove(slot)
        try:
            self._fork_worker(slot)
        except OSError:
            if slot is not None:
                self.free_slots.append(slot)
            raise

    def _fork_worker(self, slot: Optional[int]) -> None:
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        sys.stdout.flush()
        sys.stderr.flush()
        # Signals wait until the child has dropped the master's handlers: a
        # SIGTERM caught by them in the child would be lost, not obeyed.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        # What the master has loaded stays shared with the worker only while
        # the worker's garbage collector leaves it alone: frozen objects are
        # never traversed, so their pages are not copied into every worker.
        gc.freeze()
        try:
            pid = _fork()
        except OSError:
            os.close(read_end)
            os.close(write_end)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            raise
        if pid == 0:
            self._become_worker(read_end, write_end, mask, slot)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(write_end)
        self.workers[pid] = Worker(pid, read_end, self.generation, slot)
        self.log(LOGINFO, "worker %d started" % pid)

    def _become_worker(self, read_end: int, write_end: int, mask: Any, slot: Optional[int]) -> None:
        """In the child: drop the master's state, run the worker, never return."""
        status = 1
        try:
            for signum in SIGNALS:
                _set_handler(signum, signal.SIG_DFL)
            # Ignored until the worker installs its own handlers: a log rotation
            # or a hangup must not kill a worker that is still booting.
            _set_handler(signal.SIGUSR1, signal.SIG_IGN)
            _set_handler(signal.SIGHUP, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            for fd in [read_end, self.wake_read, self.wake_write,
                       *(w.heartbeat for w in self.workers.values() if w.heartbeat is not None)]:
                os.close(fd)
            self.workers.clear()
            status = self.run_worker(write_end, slot)
        except SystemExit as exc:
            status = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(status)

    def stop_worker(self, worker: Worker) -> None:
        """Ask a worker to finish its sessions and exit; it is killed if it outlives the grace."""
        worker.stop_by = time.monotonic() + self.graceful_timeout + KILL_GRACE
        self._kill(worker, signal.SIGTERM)

    def _kill(self, worker: Worker, signum: int) -> None:
        try:
            os.kill(worker.pid, signum)
        except ProcessLookupError:
            pass  # already dead, not reaped yet

    def reap(self) -> None:
        while True:
            try:
                pid, status = _waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            metrics.process_dead(pid)
            if worker.slot is not None:
                # Whatever killed it, its sessions are gone: they must not hold the limits.
                self.counters.clear(worker.slot)
                self.free_slots.append(worker.slot)
            if worker.heartbeat is not None:
                os.close(worker.heartbeat)
            how = describe_status(status)
            if worker.stop_by is not None:
                self.log(LOGINFO, "worker %d stopped (%s)" % (pid, how))
                continue
            if worker.proven:
                self.log(LOGERROR, "worker %d died (%s); replacing it" % (pid, how))
            else:
                self.boot_failed(worker, how)

    def boot_failed(self, worker: Worker, how: str) -> None:
        """A worker died young: wait longer before the next, and give up after too many in a row."""
        self.boot_failures += 1
        if self.boot_failures >= CRASH_LOOP_LIMIT:
            if not self.abandon_reload():
                self.halt("workers keep dying at boot (%d in a row, the last, %d, with %s); giving up. "
                          "Run qpsmtpd-server --check-config, or start it with --workers 1 to see the error"
                          % (self.boot_failures, worker.pid, how))
            return
        delay = min(BACKOFF_FIRST * 2 ** (self.boot_failures - 1), BACKOFF_MAX)
        self.next_spawn = time.monotonic() + delay
        self.log(LOGERROR, "worker %d died %.1fs after its start (%s); replacing it in %.1fs"
                 % (worker.pid, time.monotonic() - worker.born, how, delay))

    def abandon_reload(self) -> bool:
        """If workers of an older configuration still serve, go back to them; True if so.

        The master checked the new configuration, but its workers cannot boot
        (a plugin that fails only after the fork, say): keep what works.
        """
        older = [w for w in self.workers.values() if w.generation < self.generation and w.stop_by is None]
        if not older:
            return False
        self.log(LOGERROR, "reload abandoned: workers of the new configuration die at boot (%d in a row); "
                 "the %d workers of the previous one go on serving" % (self.boot_failures, len(older)))
        self.generation = max(w.generation for w in older)
        self.announce = "reload abandoned (see the log); the previous configuration goes on"
        self.boot_failures = 0
        self.next_spawn = 0.0
        return True

    def check_workers(self) -> None:
        """Kill the silent, kill those that outstay their grace, and note the ones that booted."""
        now = time.monotonic()
        for worker in self.workers.values():
            if worker.killed:
                continue
            if worker.stop_by is not None and now > worker.stop_by:
                self.log(LOGWARN, "worker %d still running %.0fs after it was told to stop; killed"
                         % (worker.pid, self.graceful_timeout + KILL_GRACE))
            elif now - worker.last_beat > self.heartbeat_timeout:
                self.log(LOGERROR, "worker %d silent for %.0fs; killed" % (worker.pid, now - worker.last_beat))
            else:
                if worker.serving and not worker.proven and now - worker.born >= BOOT_WINDOW:
                    worker.proven = True
                    self.boot_failures = 0
                continue
            worker.killed = True
            self._kill(worker, signal.SIGKILL)

    def feed_watchdog(self) -> None:
        """WATCHDOG=1 every interval, withheld while a worker's heartbeat is stale."""
        interval = self.notifier.watchdog_interval
        now = time.monotonic()
        if interval is None or now < self.next_watchdog:
            return
        self.next_watchdog = now + interval
        stuck = [w.pid for w in self.workers.values()
                 if w.stop_by is None and not w.killed and now - w.last_beat > WATCHDOG_STALE]
        if stuck:
            if not self.watchdog_withheld:
                self.watchdog_withheld = True
                self.log(LOGERROR, "withholding WATCHDOG=1 from systemd: worker %s silent for more than %.0fs"
                         % (", ".join(map(str, stuck)), WATCHDOG_STALE))
            return
        if self.watchdog_withheld:
            self.watchdog_withheld = False
            self.log(LOGNOTICE, "every worker answers again; WATCHDOG=1 resumes")
        self.notifier.watchdog()

    # -- stopping -----------------------------------------------------------------
    def begin_stop(self, exit_code: int) -> None:
        """Close the master's listening sockets and drain every worker."""
        if self.stopping:
            return
        self.stopping = True
        self.exit_code = exit_code
        self.notifier.stopping("shutting down: draining %d workers" % len(self.workers))
        for sock in self.listeners:
            sock.close()
        for worker in self.workers.values():
            if worker.stop_by is None:
                self.stop_worker(worker)

    def halt(self, message: str) -> None:
        """Stop for good because of a failure that a restart will not cure."""
        sys.stderr.write("qpsmtpd-server: %s\n" % message)
        sys.stderr.flush()
        if self.smtpd.registry.has("logging"):
            self.log(LOGCRIT, message)
        self.begin_stop(EXIT_CRASH_LOOP)

    # -- signals ------------------------------------------------------------------
    def handle_term(self) -> None:
        if not self.stopping:
            self.log(LOGWARN, "shutting down: draining %d workers" % len(self.workers))
        self.begin_stop(EXIT_OK)

    handle_int = handle_term

    def handle_hup(self) -> None:
        if self.stopping:
            return
        self.notifier.reloading("reloading the configuration")
        try:
            smtpd = self.load()
        except Exception as exc:
            detail = ": %s" % exc if isinstance(exc, ConfigError) else ":\n" + traceback.format_exc()
            self.log(LOGERROR, "reload refused, keeping the old configuration and workers" + detail)
            self.notifier.ready("reload refused (see the log); the old configuration and workers go on")
            return
        self.smtpd = smtpd
        # The old configuration's cycles were frozen at the last fork: only a
        # collection after unfreezing frees them (the next fork freezes again).
        gc.unfreeze()
        gc.collect()
        self.generation += 1
        self.announce = "configuration reloaded"
        self.log(LOGNOTICE, "configuration reloaded; starting %d new workers" % self.count)

    def handle_usr1(self) -> None:
        self.reopen_logs(self.smtpd)
        for worker in self.workers.values():
            self._kill(worker, signal.SIGUSR1)

    def handle_chld(self) -> None:
        pass  # the loop reaps after every wake-up
