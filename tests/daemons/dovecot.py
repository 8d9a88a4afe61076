"""A private Dovecot LMTP server (Debian's dovecot-lmtpd) for the queue/lmtp tests.

Its own dovecot.conf, run dir, log and mail store under one temporary
directory; it listens on a unix socket there and on a free 127.0.0.1 port,
and never reads /etc/dovecot.  Users come from a passwd-file userdb: only the
users listed exist, anyone else is refused at RCPT (``550 5.1.1``).  Dovecot
will not deliver as root, so when the tests run as root the mail belongs to
``nobody``, and the directory sits outside pytest's root-only tmp tree.
"""
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterable

from qpgevent.testing import free_port

CONFIG = """\
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
instance_name = qpgevent-test-{port}
protocols = lmtp
ssl = no
listen = 127.0.0.1
default_internal_user = {me}
default_internal_group = {my_group}
default_login_user = {me}
mail_location = maildir:{base}/mail/%u/Maildir
lmtp_add_received_header = no
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
}}
service anvil {{
  chroot =
}}
passdb {{
  driver = passwd-file
  args = {base}/users
}}
userdb {{
  driver = passwd-file
  args = {base}/users
  default_fields = uid={uid} gid={gid} home={base}/mail/%u
}}
"""


class Dovecot:
    """``start()``/``stop()`` the daemon; ``socket`` and ``port`` say where it listens."""

    def __init__(self, users: Iterable[str]) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="qpgevent-dovecot-"))
        self.base.chmod(0o755)
        self.port = free_port()
        self.socket = str(self.base / "run" / "lmtp")
        owner = pwd.getpwnam("nobody") if os.getuid() == 0 else pwd.getpwuid(os.getuid())
        (self.base / "mail").mkdir()
        os.chown(self.base / "mail", owner.pw_uid, owner.pw_gid)
        (self.base / "users").write_text("".join("%s:::::\n" % user for user in users))
        me = pwd.getpwuid(os.getuid())
        self.config = self.base / "dovecot.conf"
        self.config.write_text(CONFIG.format(base=self.base, port=self.port, me=me.pw_name,
                                             my_group=_group_name(me.pw_gid), uid=owner.pw_uid, gid=owner.pw_gid))

    def maildir(self, user: str) -> Path:
        return self.base / "mail" / user / "Maildir"

    def log(self) -> str:
        return "".join(path.read_text(errors="replace") for path in
                       (self.base / "startup.log", self.base / "dovecot.log") if path.exists())

    def start(self, wait: float = 15.0) -> "Dovecot":
        # The daemon keeps the descriptors it inherits: a file, not a pipe nobody would close.
        with open(self.base / "startup.log", "ab") as output:
            subprocess.run(["dovecot", "-c", str(self.config)], check=True, timeout=wait,
                           stdin=subprocess.DEVNULL, stdout=output, stderr=output)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if os.path.exists(self.socket) and _answers(("127.0.0.1", self.port)):
                return self
            time.sleep(0.05)
        raise RuntimeError("dovecot did not start within %s s:\n%s" % (wait, self.log()))

    def stop(self, wait: float = 15.0) -> None:
        """Stop the master and wait (bounded) until it has gone, so a new start cannot find it running."""
        pid_file = self.base / "run" / "master.pid"
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
        if pid_file.exists():
            pid_file.unlink()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def _group_name(gid: int) -> str:
    return grp.getgrgid(gid).gr_name


def _answers(address) -> bool:
    try:
        with socket.create_connection(address, timeout=1) as sock:
            sock.settimeout(2)
            return sock.recv(100).startswith(b"220")
    except OSError:
        return False
