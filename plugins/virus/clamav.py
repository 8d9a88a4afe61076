"""virus/clamav: scan the spooled message with ClamAV's command-line scanner, clamdscan or clamscan.

Arguments (qpsmtpd's ``name=value`` words; ``name value`` pairs work too)::

    virus/clamav [PATH] [clamscan_path=PATH] [clamd_conf=PATH] [action=add-header|reject]
                 [max_size=BYTES] [declined_on_fail] [timeout=SECONDS] [tmp_dir=PATH] [back_compat]

``clamscan_path=PATH`` (or a leading bare ``PATH``)
    The scanner: ``clamdscan`` (recommended: the daemon has its database
    loaded) or ``clamscan``.  Default: ``clamdscan``, else ``clamscan``, on
    the PATH.
``clamd_conf=PATH``
    clamd's configuration, given to ``clamdscan`` as ``--config-file`` so it
    finds the daemon (default ``/etc/clamav/clamd.conf``).  ``clamscan``
    does not take it: it reads its own database.
``action=add-header|reject``
    What to do with a virus: ``add-header`` (default) accepts it with
    ``X-Virus-Found: Yes`` and ``X-Virus-Details: NAME``; ``reject``
    refuses it, ``552 5.7.1 Virus Found: NAME``.
``max_size=BYTES``
    Bigger messages are not scanned (default 524288).
``declined_on_fail``
    When the scanner fails (exit code 2 or more, a signal, no answer within
    ``timeout``, or it cannot be run), let the message through unscanned
    (fail open).  Without it (the default) the message is refused for now,
    ``452 4.3.0 Unable to scan for viruses, try again later``.
``timeout=SECONDS``
    The longest the scanner may run (default 20, or two thirds of
    ``plugin_timeout`` if that is less); it is killed after that.
``tmp_dir=PATH``, ``back_compat``
    Accepted for qpsmtpd's config lines, and ignored: the spool file is
    scanned where it is, and ClamAV before 0.80 is long gone.

The scanner's exit code decides, as ClamAV documents it: 0 clean (the
message gets ``X-Virus-Checked: Checked by ClamAV on ME``), 1 virus found,
2 an error.  ``clamdscan`` is run with ``--stream``: it reads our spool file
itself and streams it to clamd, so clamd needs no access to the spool
directory (qpsmtpd changed the spool file's permissions instead).  The file
scanned is the message as received.

Config files: none (``me`` for X-Virus-Checked).
"""
import os
import shutil
import subprocess

from qpgevent import DECLINED, DENY, DENYSOFT, LOGERROR, LOGINFO, LOGNOTICE, arguments
from qpgevent.scanning import scan_timeout

_FLAGS = ("declined_on_fail", "back_compat")  # qpsmtpd's words that stand alone

SPEC = {
    "clamscan_path": arguments.text(),
    "clamd_conf": arguments.text(default="/etc/clamav/clamd.conf"),
    "action": arguments.choice("add-header", "reject", default="add-header"),
    "max_size": arguments.integer(default=524288, minimum=0),
    "declined_on_fail": arguments.flag(),
    "timeout": arguments.number(minimum=0.1),
    "tmp_dir": arguments.text(),
    "back_compat": arguments.flag(),
}


def register(self, qp, *args):
    words = []
    for word in args:
        if "=" in word:
            words += word.split("=", 1)
        else:
            words += [word, "1"] if word in _FLAGS else [word]
    self.options = options = arguments.parse(words, SPEC, ["clamscan_path"])
    self.scanner = options.clamscan_path or shutil.which("clamdscan") or shutil.which("clamscan")
    if not self.scanner or not os.access(self.scanner, os.X_OK):
        raise ValueError("no ClamAV scanner to run (%s); install clamdscan, or give clamscan_path=PATH"
                         % (self.scanner or "neither clamdscan nor clamscan is on the PATH"))
    self.timeout = scan_timeout(self, options.timeout)


def hook_data_post(self, transaction):
    size, limit = transaction.data_size, self.options.max_size
    if size > limit:
        self.log(LOGINFO, "skip, too big (%d bytes > max_size %d)" % (size, limit))
        return DECLINED
    command = [self.scanner, "--stdout", "--no-summary"]
    if os.path.basename(self.scanner).startswith("clamdscan"):
        command += ["--stream", "--config-file=%s" % self.options.clamd_conf]
    command.append(transaction.body_filename())
    try:
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=self.timeout)
    except subprocess.TimeoutExpired:
        return failed(self, "%s ran longer than %ss" % (self.scanner, self.timeout))
    except OSError as exc:
        return failed(self, "cannot run %s: %s" % (self.scanner, exc))
    output = result.stdout.decode("utf-8", "replace").strip()
    if result.returncode == 0:
        self.log(LOGINFO, "pass, clean")
        transaction.header.add("X-Virus-Checked", "Checked by ClamAV on %s" % self.qp.me, 0)
        return DECLINED
    if result.returncode != 1:
        return failed(self, "%s exited with %s: %s" % (self.scanner, result.returncode, output[-300:]))
    found = " ".join(line[:-len(" FOUND")].rsplit(": ", 1)[-1] for line in output.splitlines()
                     if line.endswith(" FOUND")) or "unknown"
    self.log(LOGNOTICE, "fail, found virus %s" % found)
    self.adjust_karma(-1)
    if self.options.action == "reject":
        return DENY, "Virus Found: %s (#5.7.1)" % found
    transaction.header.add("X-Virus-Found", "Yes", 0)
    transaction.header.add("X-Virus-Details", found, 0)
    return DECLINED


def failed(self, reason: str) -> tuple:
    """The scanner gave no verdict: refuse for now, or with ``declined_on_fail`` let the message through."""
    self.qp.transaction.notes["clamav_error"] = reason
    if self.options.declined_on_fail:
        self.log(LOGERROR, "error, message not scanned (failing open): %s" % reason)
        return (DECLINED,)
    self.log(LOGERROR, "error, deferring the message: %s" % reason)
    return DENYSOFT, "Unable to scan for viruses, try again later (#4.3.0)"
