"""Run a local program that takes a message on its standard input (qmail-queue, exim -bS), bounded.

The message is streamed block by block through a pipe, so it is never held
in memory whole; the program's standard error (and standard output, unless
it is a second input) goes to a file, so a chatty program cannot stall us.
gevent's subprocess and non-blocking writes keep the wait to this session,
and one deadline covers writing and waiting: past it the program is killed.
"""
import os
import subprocess as std_subprocess
from typing import BinaryIO, Iterable, Mapping, Optional, Sequence

import gevent
import gevent.os
from gevent import subprocess


class ProgramTimeout(Exception):
    """The program outlived its deadline and was killed."""


class Outcome:
    """How the program ended: ``status`` (its exit code, or minus the signal), ``pid``."""

    def __init__(self, status: int, pid: int) -> None:
        self.status = status
        self.pid = pid


def run(command: Sequence[str], message: Iterable[bytes], output: BinaryIO, timeout: float,
        fd1: Optional[Iterable[bytes]] = None, env: Optional[Mapping[str, str]] = None) -> Outcome:
    """Run ``command`` with ``message`` on fd 0 and, when given, ``fd1`` on fd 1 (written after it).

    Raises ``OSError`` when it cannot start, ``ProgramTimeout`` past ``timeout`` seconds.
    """
    fd1_read = fd1_write = None
    if fd1 is not None:
        fd1_read, fd1_write = os.pipe()
    try:
        process = subprocess.Popen(list(command), stdin=std_subprocess.PIPE,
                                   stdout=output if fd1_read is None else fd1_read,
                                   stderr=output, env=dict(env) if env is not None else None)
    except BaseException:
        if fd1_write is not None:
            os.close(fd1_write)
        raise
    finally:
        if fd1_read is not None:
            os.close(fd1_read)
    try:
        with gevent.Timeout(timeout, ProgramTimeout("%s did not finish within %s seconds" % (command[0], timeout))):
            _write_all(process, message, fd1_write, fd1)
            if fd1_write is not None:
                _close(fd1_write)  # end of the second input: the program may be waiting for it
                fd1_write = None
            return Outcome(process.wait(), process.pid)
    finally:
        if fd1_write is not None:
            _close(fd1_write)
        if process.poll() is None:  # timed out, or the hook was cut short
            process.kill()
            process.wait()


def _write_all(process, message: Iterable[bytes], fd1_write: Optional[int], fd1: Optional[Iterable[bytes]]) -> None:
    try:
        with process.stdin:
            for block in message:
                process.stdin.write(block)
        if fd1_write is not None:
            gevent.os.make_nonblocking(fd1_write)
            for block in fd1:
                view = memoryview(block)
                while view:
                    view = view[gevent.os.nb_write(fd1_write, view):]
    except BrokenPipeError:
        pass  # it stopped reading: its exit status says whether that was fine


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
