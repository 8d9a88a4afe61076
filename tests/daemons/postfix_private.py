"""A private Postfix instance for tests: its own config, queue, log and maildirs under one tmp dir.

``PostfixInstance(base, relayhost=...)`` writes main.cf and master.cf (no
chroot, every daemon in ``base``), starts Postfix with ``postfix -c``, and
stops it (and any daemon it left behind) in ``stop()``.  It listens only on
127.0.0.1: its smtpd on ``smtpd_port``, its cleanup on the unix socket
``cleanup_socket`` and on TCP ``cleanup_port``.  Mail for ``virtual_domain`` is delivered by Postfix's
``virtual`` agent into ``base/vmail/<domain>/<user>/`` (Maildir); every other
domain goes to ``relayhost`` (qpgevent, for the first-hop tests) over
opportunistic STARTTLS.  ``base`` must be reachable by the postfix user: the
caller makes it with mode 755 (pytest's own tmp dirs are 700).

``main_cf`` lines are added at the end of main.cf (where they win over the
defaults above), and ``smtpd_services`` ``{name: ["option=value", ...]}`` adds
an smtpd listener per name, with those ``-o`` options, on ``ports[name]``.
"""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from qpgevent.testing import free_port, wait_for

MAIN_CF = """\
compatibility_level = 3.6
config_directory = {base}/etc
queue_directory = {base}/spool
data_directory = {base}/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = {base}/maillog
maillog_file_prefixes = {base}
myhostname = postfix.test
mydomain = postfix.test
myorigin = postfix.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
biff = no
smtputf8_enable = yes
smtp_dns_support_level = disabled
smtpd_banner = $myhostname ESMTP private test Postfix
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {base}/vmail
virtual_mailbox_maps = texthash:{base}/etc/vmailbox
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
header_checks = regexp:{base}/etc/header_checks
relayhost = {relayhost}
smtp_tls_security_level = may
smtp_tls_loglevel = 1
debug_peer_list = 127.0.0.1
debug_peer_level = 2
delay_warning_time = 0
"""

# Every service runs unchrooted, so nothing in the instance depends on a copy of /etc in the spool.
MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
127.0.0.1:{cleanup_port} inet n - n - 0 cleanup
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
tlsmgr    unix - - n 1000? 1 tlsmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
local     unix - n n - - local
virtual   unix - n n - - virtual
lmtp      unix - - n - - lmtp
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


class PostfixInstance:
    """One private Postfix under ``base``; see the module docstring."""

    def __init__(self, base, domain="pfq.test", users=("alice", "bob"), relayhost="", header_checks=(), main_cf=(),
                 smtpd_services=None):
        self.base = Path(base)
        self.domain = domain
        self.users = list(users)
        self.relayhost = relayhost
        self.header_checks = list(header_checks)
        self.main_cf = list(main_cf)
        self.smtpd_services = dict(smtpd_services or {})
        self.ports = {name: free_port() for name in self.smtpd_services}
        self.smtpd_port = free_port()
        self.cleanup_port = free_port()  # cleanup as an inet service too (qpsmtpd's host:port)
        self.config_dir = self.base / "etc"
        self.cleanup_socket = str(self.base / "spool" / "public" / "cleanup")
        self.log_path = self.base / "maillog"

    def _run(self, *command, check=True):
        result = subprocess.run(list(command), capture_output=True, text=True, timeout=60)
        if check and result.returncode:
            raise RuntimeError("%s failed (%d):\n%s%s\nmaillog:\n%s" % (" ".join(command), result.returncode,
                                                                       result.stdout, result.stderr, self.log))
        return result

    def write_config(self):
        """main.cf, master.cf, the mailbox map and header_checks; the dirs the daemons write to."""
        nobody = pwd.getpwnam("nobody")
        for name in ("etc", "spool", "data", "vmail"):
            (self.base / name).mkdir(parents=True, exist_ok=True)
        os.chown(self.base / "data", pwd.getpwnam("postfix").pw_uid, -1)
        os.chown(self.base / "vmail", nobody.pw_uid, nobody.pw_gid)
        (self.config_dir / "main.cf").write_text(MAIN_CF.format(base=self.base, domain=self.domain, uid=nobody.pw_uid,
                                                                 gid=nobody.pw_gid, relayhost=self.relayhost)
                                                  + "".join(line + "\n" for line in self.main_cf))
        services = "".join("127.0.0.1:%d inet n - n - - smtpd" % self.ports[name]
                           + "".join(" -o " + option for option in options) + "\n"
                           for name, options in self.smtpd_services.items())
        master_cf = MASTER_CF.format(port=self.smtpd_port, cleanup_port=self.cleanup_port)
        (self.config_dir / "master.cf").write_text(master_cf + services)
        (self.config_dir / "vmailbox").write_text("".join("%s@%s %s/%s/\n" % (user, self.domain, self.domain, user)
                                                          for user in self.users))
        (self.config_dir / "header_checks").write_text("".join(line + "\n" for line in self.header_checks))

    def start(self, wait=30.0):
        """Write the config, start Postfix, and wait until its cleanup socket and smtpd answer."""
        self.write_config()
        self.log_path.touch()
        self._run("postfix", "-c", str(self.config_dir), "set-permissions")
        self._run("postfix", "-c", str(self.config_dir), "start")
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            ports = [self.smtpd_port, *self.ports.values()]
            if os.path.exists(self.cleanup_socket) and all(map(self._smtpd_answers, ports)):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("Postfix did not start within %ss:\n%s" % (wait, self.log))

    def _smtpd_answers(self, port):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as probe:
                return probe.recv(3) == b"220"
        except OSError:
            return False

    @property
    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def master_pid(self):
        try:
            return int((self.base / "spool" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self):
        """``postfix stop``; then end any process of this instance still running, by its pid."""
        pid = self.master_pid()
        self._run("postfix", "-c", str(self.config_dir), "stop", check=False)
        if pid and not wait_for(lambda: not _alive(pid), seconds=15):
            os.kill(pid, signal.SIGKILL)

    def mailbox(self, user):
        """The files of ``user``'s Maildir ``new/``, oldest first."""
        new = self.base / "vmail" / self.domain / user / "new"
        return sorted(new.iterdir(), key=lambda path: path.stat().st_mtime) if new.is_dir() else []

    def queue(self):
        """``postqueue -p``: what Postfix still holds."""
        return self._run("postqueue", "-c", str(self.config_dir), "-p").stdout

    def flush(self):
        """Ask Postfix to retry its deferred mail now."""
        self._run("postqueue", "-c", str(self.config_dir), "-f")

    def remove(self):
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
