"""examples/pipe_queue: the poor man's queue; hand each message to a program.

Arguments::

    examples/pipe_queue PROGRAM [ARG ...]

``PROGRAM`` (a path, or a name looked up in ``PATH``) runs once per accepted
message with the given arguments and the whole message (our headers, the
``Received`` line included, then the body, LF line endings; a
``BODY=BINARYMIME`` message exactly as received, CRLF) on its standard
input; the envelope is in its environment as ``SENDER`` and ``RECIPIENTS``
(space separated).  Exit status 0 means the message is safe and the client
gets ``250 Queued``; any other status, or a program that cannot be started,
declines, and the client is told to try again later (``451``).  What the
program prints is logged.

Plugin arguments are split at white space, so a shell command line with
spaces belongs in a script of its own.  Examples::

    examples/pipe_queue /usr/bin/tee -a /var/mail/everything
    examples/pipe_queue /usr/local/bin/to-sendmail

where ``to-sendmail`` hands the message on with its envelope::

    #!/bin/sh
    exec /usr/sbin/sendmail -oi -f "$SENDER" -- $RECIPIENTS

Config files: none.
"""
import os
import shutil
import subprocess

from qpgevent import DECLINED, LOGERROR, LOGINFO, OK


def register(self, qp, *command):
    if not command:
        raise ValueError("give the program to run and its arguments, e.g. 'examples/pipe_queue /usr/bin/tee /tmp/mail'")
    program = shutil.which(command[0])
    if program is None:
        raise ValueError("%s: no such program, or it is not executable" % command[0])
    self.command = [program, *command[1:]]


def hook_queue(self, transaction):
    env = dict(os.environ, SENDER=transaction.sender.address,
               RECIPIENTS=" ".join(r.address for r in transaction.recipients))
    with open(transaction.temp_file(), "w+b") as output:
        try:
            status = run(self.command, transaction.message_blocks(), output, env)
        except OSError as exc:
            self.log(LOGERROR, "fail, %s: %s" % (self.command[0], exc))
            return DECLINED, "Queuing failed, try again later"
        output.seek(0)
        said = output.read(2000).decode("utf-8", "replace").strip()
    if said:
        self.log(LOGINFO if status == 0 else LOGERROR, "%s said: %s" % (self.command[0], said))
    if status != 0:
        self.log(LOGERROR, "fail, %s exited with %d" % (self.command[0], status))
        return DECLINED, "Queuing failed, try again later"
    self.log(LOGINFO, "pass, %s took the message" % self.command[0])
    return OK, "Queued"


def run(command, blocks, output, env):
    """Stream ``blocks`` into ``command``; its exit status (the child is never left running)."""
    # Output goes to a file, not a pipe: a program that talks a lot while we
    # are still writing could otherwise fill the pipe and stall us both.
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=output, stderr=subprocess.STDOUT, env=env)
    try:
        try:
            with process.stdin:
                for block in blocks:
                    process.stdin.write(block)
        except BrokenPipeError:
            pass  # it stopped reading; its exit status says whether that was fine
        return process.wait()
    finally:
        if process.poll() is None:  # plugin_timeout cut us short
            process.kill()
            process.wait()
