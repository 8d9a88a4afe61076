"""The real content-scanning daemons for the tests: spamd, clamd and rspamd, each private and offline.

Each ``start_*`` writes the daemon's own config into a fresh directory,
starts it on a free 127.0.0.1 port (and a unix socket where the daemon has
one), waits until it answers (bounded), and returns a ``Daemon`` whose
``stop()`` ends it.  Nothing from /etc is read and nothing is downloaded:
spamd gets a local rule file, clamd a one-line signature database written
here, rspamd a lua file of test rules.  The test modules wrap them in
session-scoped fixtures, so each daemon starts once per run.
"""
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest

from qpgevent.testing import end_process, free_port

# Words the test rules look for.  Unusual strings, so that no real rule or signature matches them by chance.
SPAM_WORD = "qpgevent-spam-word"          # spamd: 20 points; rspamd: 20 points (reject)
MILD_WORD = "qpgevent-mild-word"          # spamd: 6 points (over spamd's 5, under reject 12)
VIRUS_WORD = "qpgevent-virus-word-7f3a"   # clamd: QPG.Test.Virus
HEADER_WORD = "qpgevent-header-word"      # rspamd: 7 points (add header)
SUBJECT_WORD = "qpgevent-subject-word"    # rspamd: 11 points (rewrite subject)
SOFT_WORD = "qpgevent-soft-word"          # rspamd: soft reject
GREYLIST_WORD = "qpgevent-grey-word"      # rspamd: 5 points (greylist)
VIRUS_NAME = "QPG.Test.Virus.UNOFFICIAL"  # clamd marks signatures from a local database UNOFFICIAL


class Daemon:
    """A started daemon: where it listens, its directory and log, and ``stop()``."""

    def __init__(self, name: str, process: subprocess.Popen, directory: Path, log: Path, address: str,
                 socket_path: Optional[str] = None) -> None:
        self.name, self.process, self.directory, self.log_path = name, process, directory, log
        self.address = address          # HOST:PORT
        self.socket_path = socket_path  # a unix socket, when the daemon has one

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        end_process(self.process)
        shutil.rmtree(self.directory, ignore_errors=True)


def _private_dir(name: str) -> Path:
    """A fresh directory the daemon's unprivileged user can read (pytest's tmp dirs are 0700, owner only)."""
    directory = Path(tempfile.mkdtemp(prefix="qpgevent-%s-" % name))
    directory.chmod(0o755)
    return directory


def _start(name: str, command: List[str], directory: Path, log: Path, ready: Callable[[], bool],
           seconds: float, **where: str) -> Daemon:
    """Run ``command`` and wait (at most ``seconds``) for ``ready``; skip the tests if the daemon cannot run."""
    if shutil.which(command[0]) is None:
        shutil.rmtree(directory, ignore_errors=True)
        pytest.skip("%s is not installed (tests/run installs it)" % command[0])
    with open(log, "ab") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=directory)
    daemon = Daemon(name, process, directory, log, **where)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        if ready():
            return daemon
        time.sleep(0.1)
    text = daemon.log()
    daemon.stop()
    raise RuntimeError("%s did not start within %ss (exit %s); its log:\n%s" % (name, seconds, process.poll(), text))


def _answers(address: str) -> Callable[[], bool]:
    def ready() -> bool:
        family = socket.AF_UNIX if "/" in address else socket.AF_INET
        target = address if family == socket.AF_UNIX else (address.rsplit(":", 1)[0], int(address.rsplit(":", 1)[1]))
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.settimeout(1)
            try:
                probe.connect(target)
                return True
            except OSError:
                return False
    return ready


# --- spamd ------------------------------------------------------------------------------------------------

SPAMD_RULES = """\
# The test's whole rule set (--configpath): two body rules, no network tests, no Bayes.
body QPG_TEST /%(spam)s/
describe QPG_TEST Contains the qpgevent test spam word
score QPG_TEST 20
body QPG_MILD /%(mild)s/
describe QPG_MILD Contains the qpgevent test mild word
score QPG_MILD 6
required_score 5
skip_rbl_checks 1
use_bayes 0
bayes_auto_learn 0
report_safe 0
# The headers as Debian's default preferences (10_default_prefs.cf) add them.
clear_headers
add_header spam Flag _YESNOCAPS_
add_header all Status _YESNO_, score=_SCORE_ required=_REQD_ tests=_TESTS_ autolearn=_AUTOLEARN_ version=_VERSION_
add_header all Level _STARS(*)_
add_header all Checker-Version SpamAssassin _VERSION_ (_SUBVERSION_) on _HOSTNAME_
add_header spam Report _REPORT_
clear_report_template
report Content analysis details:   (_SCORE_ points, _REQD_ required)
report _SUMMARY_
""" % {"spam": SPAM_WORD, "mild": MILD_WORD}


def start_spamd() -> Daemon:
    """spamd on 127.0.0.1:PORT and a unix socket, with only the rules above."""
    directory = _private_dir("spamd")
    rules, site = directory / "rules", directory / "site"
    rules.mkdir()
    site.mkdir()
    (rules / "50_qpgevent.cf").write_text(SPAMD_RULES)
    (site / "init.pre").write_text("loadplugin Mail::SpamAssassin::Plugin::Check\n")  # the scanner itself
    for path in (rules, site, *rules.iterdir(), *site.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    port, socket_path = free_port(), str(directory / "spamd.sock")
    command = ["spamd", "--listen=127.0.0.1:%d" % port, "--listen=%s" % socket_path, "--socketmode=0666",
               "--configpath=%s" % rules, "--siteconfigpath=%s" % site, "--nouser-config", "--max-children=2",
               "--syslog=stderr", "--pidfile=%s" % (directory / "spamd.pid")]
    if os.geteuid() == 0:
        command += ["--username=nobody"]  # spamd will not scan as root
    return _start("spamd", command, directory, directory / "spamd.log",
                  lambda: _answers("127.0.0.1:%d" % port)() and _answers(socket_path)(), 60,
                  address="127.0.0.1:%d" % port, socket_path=socket_path)


# --- clamd ------------------------------------------------------------------------------------------------

def start_clamd() -> Daemon:
    """clamd on a unix socket and 127.0.0.1:PORT, with a database of one signature (no freshclam)."""
    directory = _private_dir("clamd")
    database = directory / "db"
    database.mkdir()
    (database / "qpgevent.ndb").write_text("QPG.Test.Virus:0:*:%s\n" % VIRUS_WORD.encode().hex())
    port, socket_path = free_port(), str(directory / "clamd.sock")
    config = directory / "clamd.conf"
    config.write_text("\n".join([
        "LocalSocket %s" % socket_path, "LocalSocketMode 666", "TCPSocket %d" % port, "TCPAddr 127.0.0.1",
        "DatabaseDirectory %s" % database, "Foreground yes", "LogFile %s" % (directory / "clamd.log"),
        "PidFile %s" % (directory / "clamd.pid"), "TemporaryDirectory %s" % directory,
        "StreamMaxLength 1M", "SelfCheck 0", "User %s" % _user(),
    ]) + "\n")
    return _start("clamd", ["clamd", "-c", str(config)], directory, directory / "clamd.out",
                  lambda: _answers(socket_path)() and _answers("127.0.0.1:%d" % port)(), 60,
                  address="127.0.0.1:%d" % port, socket_path=socket_path)


def _user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


# --- rspamd -----------------------------------------------------------------------------------------------

RSPAMD_RULES = """\
-- The test's rules: a word in a text part gives a score (or a soft reject).
local function has_word(task, word)
  for _, part in ipairs(task:get_text_parts() or {}) do
    local content = part:get_content()
    if content and tostring(content):find(word, 1, true) then return true end
  end
  return false
end
local function rule(name, word, score)
  rspamd_config[name] = { callback = function(task) return has_word(task, word) end, score = score }
end
rule("QPG_SPAM", "%(spam)s", 20.0)
rule("QPG_SUBJECT", "%(subject)s", 11.0)
rule("QPG_HEADER", "%(header)s", 7.0)
rule("QPG_GREY", "%(grey)s", 5.0)
rspamd_config.QPG_SOFT = { score = 0.0, callback = function(task)
  if has_word(task, "%(soft)s") then
    task:set_pre_result("soft reject", "try again later, says the test")
    return true
  end
  return false
end }
-- Echo what the client told rspamd, so the tests can see the envelope and user arrived.
rspamd_config.QPG_ENVELOPE = { score = 0.0, callback = function(task)
  local user = task:get_user() or "-"
  local ip = task:get_from_ip()
  local helo = task:get_helo() or "-"
  local rcpts = {}
  for _, rcpt in ipairs(task:get_recipients("smtp") or {}) do table.insert(rcpts, rcpt.addr) end
  local from = task:get_from("smtp")
  return true, 1.0, string.format("ip=%%s helo=%%s from=%%s rcpt=%%s user=%%s qid=%%s", ip and ip:to_string() or "-",
    helo, from and from[1] and from[1].addr or "-", table.concat(rcpts, ","), user, task:get_queue_id() or "-")
end }
""" % {"spam": SPAM_WORD, "subject": SUBJECT_WORD, "header": HEADER_WORD, "grey": GREYLIST_WORD, "soft": SOFT_WORD}


def start_rspamd() -> Daemon:
    """rspamd's normal worker on 127.0.0.1:PORT with only the rules above (DNS pointed at a closed port)."""
    directory = _private_dir("rspamd")
    port = free_port()
    (directory / "rules.lua").write_text(RSPAMD_RULES)
    config = directory / "rspamd.conf"
    config.write_text("""\
options {
  pidfile = "%(dir)s/rspamd.pid";
  dbdir = "%(dir)s";
  tempdir = "%(dir)s";
  dns { nameserver = ["127.0.0.1:9"]; timeout = 1s; retransmits = 1; }
}
logging { type = "file"; filename = "%(dir)s/rspamd.log"; level = "info"; }
worker "normal" { bind_socket = "127.0.0.1:%(port)d"; count = 1; }
actions { reject = 15; "rewrite subject" = 10; "add header" = 6; greylist = 4; }
lua = "%(dir)s/rules.lua";
""" % {"dir": directory, "port": port})
    user = _user()
    return _start("rspamd", ["rspamd", "-f", "-u", user, "-g", user, "-c", str(config)], directory,
                  directory / "rspamd.log", _answers("127.0.0.1:%d" % port), 90, address="127.0.0.1:%d" % port)


# --- daemons that are not there, or never answer ---------------------------------------------------------

def closed_port() -> str:
    """HOST:PORT where nothing listens: the daemon is down."""
    return "127.0.0.1:%d" % free_port()


@contextmanager
def silent_server() -> Iterator[str]:
    """HOST:PORT of a server that accepts connections and never answers: a hung daemon."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: List[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1:%d" % listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for sock in accepted + [listener]:
            sock.close()
