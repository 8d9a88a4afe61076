"""examples/quit_fortune: say goodbye with a fortune cookie.

Arguments::

    examples/quit_fortune [PATH]

At QUIT the client gets a multi-line ``221`` whose first line is the usual
farewell and whose other lines are the output of ``fortune -s``.  ``PATH`` is
the fortune program; by default it is looked up in ``PATH`` and in
``/usr/games``, where Debian installs it.  Without one the plugin logs a
warning at start-up and stays out of the way, as it does when fortune fails.

The cookie costs a process per QUIT; under gevent only this session waits
for it.

Config files: none.
"""
import os
import shutil
import subprocess

from qpgevent import DECLINED, DONE, LOGWARN

_SEARCH_PATH = os.pathsep.join(filter(None, (os.environ.get("PATH"), "/usr/games")))


def register(self, qp, path=None, *extra):
    if extra:
        raise ValueError("takes one optional argument, the path of the fortune program")
    self.fortune = shutil.which(path or "fortune", path=_SEARCH_PATH)
    if path and not self.fortune:
        raise ValueError("%s: no such program; give the path of fortune" % path)
    if not self.fortune:
        self.log(LOGWARN, "no fortune program in %s; QUIT gets the plain farewell" % _SEARCH_PATH)


def hook_quit(self, transaction):
    if not self.fortune:
        return DECLINED
    try:
        result = subprocess.run([self.fortune, "-s"], capture_output=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired) as exc:
        self.log(LOGWARN, "fortune failed: %s" % exc)
        return DECLINED
    if result.returncode != 0:
        self.log(LOGWARN, "fortune exited with %d" % result.returncode)
        return DECLINED
    cookie = result.stdout.decode("utf-8", "replace").expandtabs(4).splitlines()
    self.qp.respond(221, "%s closing connection. Have a wonderful day." % self.qp.me,
                    *("  " + line.rstrip() for line in cookie if line.strip()))
    return DONE
