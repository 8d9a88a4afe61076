"""auth/auth_checkpassword: SMTP AUTH through a checkpassword program (qmail's interface).

Arguments (as in qpsmtpd)::

    auth/auth_checkpassword [checkpw /path/to/checkpassword [true /path/to/true]]

Without arguments the programs come from the config file
``smtpauth-checkpassword``, qpsmtpd's one line ``CHECKPW TRUE``::

    /usr/local/vpopmail/bin/vchkpw /bin/true

``checkpw`` is any program that speaks D. J. Bernstein's checkpassword
interface (``checkpassword``, ``vchkpw``, ``checkpassword-pam``, a script
of your own); ``true`` is the program it runs when the password is right,
``true`` from ``PATH`` by default.  Both are looked up when the server
starts; a missing one stops the start-up.

For each PLAIN or LOGIN attempt the plugin runs ``checkpw true`` with
``user\\0password\\0timestamp\\0`` (the timestamp is the Unix time) on file
descriptor 3; the password never appears on a command line or in the
environment.  The exit status decides:

  * 0: the password is right; the client gets ``235`` and may relay.
  * 1: the password is wrong (or no such user): ``DECLINED``, as in
    qpsmtpd, so a later auth plugin is asked; if none says yes, ``535``.
  * anything else (111 is checkpassword's "temporary problem", 2 "misused"),
    death by a signal, or a program that cannot be started: ``DENYSOFT``,
    and the client gets ``454 4.7.0`` and may try again later.

A user or password containing a NUL byte, or longer together than the 512
bytes checkpassword reads, is refused without running the program.
CRAM-MD5 is not offered by this plugin: the program needs the clear password.
The program runs under ``plugin_timeout``; a program that overruns it is
killed and the client gets ``454``.

Where this differs from qpsmtpd: no ``sudo`` is put in front of the program;
run the server as a user allowed to run it, or give a wrapper script as
``checkpw``.  A status other than 0 and 1 is ``DENYSOFT`` (qpsmtpd:
``DECLINED``).  A missing program or a bad config line stops the start-up
(qpsmtpd logs it and leaves the plugin out).

Config files: ``smtpauth-checkpassword`` (read only without arguments).
"""
import shutil
import subprocess
import time

from qpgevent import DECLINED, DENY, DENYSOFT, LOGERROR, LOGINFO, OK
from qpgevent.sasl import printable

# The shell moves the pipe from standard input to descriptor 3, as qpsmtpd
# does; the program then gets an empty standard input.
_ON_FD_3 = 'exec "$@" 3<&0 </dev/null'
_MAX_INPUT = 512
_CONFIG = "smtpauth-checkpassword"


def register(self, qp, *args):
    if len(args) % 2:
        raise ValueError("arguments come in pairs: 'checkpw /path/to/checkpassword [true /path/to/true]'")
    options = dict(zip(args[::2], args[1::2]))
    unknown = set(options) - {"checkpw", "true", "loglevel"}
    if unknown:
        raise ValueError("unknown argument %r; use 'checkpw PROGRAM' and 'true PROGRAM'" % sorted(unknown)[0])
    where = ""
    if "checkpw" not in options:
        options, where = from_config_file(qp)
    command = []
    for name in ("checkpw", "true"):
        program = options.get(name, "true")
        found = shutil.which(program)
        if found is None:
            raise ValueError("%s%s %s: no such program, or it is not executable" % (where, name, program))
        command.append(found)
    self.command = command
    self.register_hook("auth-plain", "authenticate")
    self.register_hook("auth-login", "authenticate")


def from_config_file(qp):
    """The programs named in ``smtpauth-checkpassword`` (``CHECKPW TRUE``) and where they were read."""
    entries = qp.config.entries(_CONFIG)
    if not entries:
        raise ValueError("no checkpassword program: give 'checkpw /path/to/checkpassword [true /path/to/true]' "
                         "or write '/path/to/checkpassword /path/to/true' into config/%s" % _CONFIG)
    entry = entries[0]
    words = entry.value.split()
    if len(words) != 2:
        raise ValueError("%s:%d: write the two programs on one line: '/path/to/checkpassword /path/to/true'"
                         % (entry.path, entry.line))
    return {"checkpw": words[0], "true": words[1]}, "%s:%d: " % (entry.path, entry.line)


def authenticate(self, transaction, mechanism, user, password, digest, ticket):
    who = printable(user)
    data = b"%s\0%s\0%d\0" % (user.encode("utf-8"), password.encode("utf-8"), int(time.time()))
    if "\0" in user or "\0" in password or len(data) > _MAX_INPUT:
        self.log(LOGINFO, "fail, %s: a NUL byte in the user or password, or they are too long" % who)
        return DENY
    try:
        status, said = run(self.command, data)
    except OSError as exc:
        self.log(LOGERROR, "error, cannot run %s: %s" % (self.command[0], exc))
        return DENYSOFT
    if said:
        self.log(LOGINFO if status in (0, 1) else LOGERROR, "%s said: %s" % (self.command[0], said))
    if status == 0:
        self.log(LOGINFO, "pass, %s (%s)" % (who, mechanism))
        return OK
    if status == 1:
        self.log(LOGINFO, "fail, %s (%s): wrong password or no such user" % (who, mechanism))
        return DECLINED
    self.log(LOGERROR, "error, %s exited with %d (%s)" % (self.command[0], status,
                                                        "killed by a signal" if status < 0 else "temporary failure"))
    return DENYSOFT


def run(command, data):
    """Run ``command`` with ``data`` on descriptor 3: (exit status, the start of its standard error)."""
    process = subprocess.Popen(["/bin/sh", "-c", _ON_FD_3, "sh", *command], stdin=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, said = process.communicate(data)
    finally:
        if process.poll() is None:  # plugin_timeout cut us short
            process.kill()
            process.wait()
    return process.returncode, said[:500].decode("utf-8", "replace").strip()
