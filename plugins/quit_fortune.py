"""quit_fortune: say goodbye to HELO clients with a fortune cookie.

At QUIT a client that greeted with HELO gets a multi-line ``221`` reply: the
usual farewell, then the output of ``fortune -s``::

    221-2.0.0 mx.example.com closing connection. Have a wonderful day.
    221-2.0.0   / Never laugh at live dragons.
    221 2.0.0   /     -- Bilbo Baggins [J.R.R. Tolkien, "The Hobbit"]

Clients that said EHLO get the plain farewell, as in qpsmtpd: they are
mail servers, nobody reads their transcript, and a busy MX would start a
process for every connection for nothing.  People typing SMTP by hand say
HELO.

``fortune`` is looked up in ``PATH`` and in ``/usr/games`` (where Debian's
fortune-mod puts it) when the plugin loads; without it the plugin stays out
of the way.  The program gets 5 seconds; if it fails, is slow or prints
nothing, the client gets the plain farewell.  Only printable ASCII of its
output is sent (fortunes may hold tabs and backspaces), at most 20 lines.
Under gevent the wait holds up only this session.

Arguments: none (``loglevel L`` only).  Config files: none.
"""
import os
import shutil
import subprocess

from qpgevent import DECLINED, DONE, LOGINFO, LOGWARN

TIMEOUT = 5
MAX_LINES = 20
MAX_LINE_LENGTH = 200


def register(self, qp, *args):
    if args and (len(args) != 2 or args[0] != "loglevel"):
        raise ValueError("takes no arguments but 'loglevel L', got %r" % " ".join(args))
    search = os.pathsep.join(filter(None, (os.environ.get("PATH", os.defpath), "/usr/games")))
    self.fortune = shutil.which("fortune", path=search)
    if self.fortune is None:
        self.log(LOGINFO, "no fortune program in %s; inactive" % search)


def hook_quit(self, transaction):
    if self.fortune is None or self.qp.connection.hello != "helo":
        return DECLINED
    try:
        result = subprocess.run([self.fortune, "-s"], stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        self.log(LOGWARN, "%s failed: %s" % (self.fortune, exc))
        return DECLINED
    if result.returncode != 0:
        self.log(LOGWARN, "%s exited with status %d" % (self.fortune, result.returncode))
        return DECLINED
    cookie = [printable(line) for line in result.stdout.decode("ascii", "replace").splitlines()]
    cookie = ["  / " + line for line in cookie if line.strip()][:MAX_LINES]
    if not cookie:
        return DECLINED
    self.qp.respond(221, "%s closing connection. Have a wonderful day." % self.qp.me, *cookie)
    return DONE


def printable(line):
    line = line.expandtabs(4)
    return "".join(char for char in line if " " <= char <= "~")[:MAX_LINE_LENGTH].rstrip()
