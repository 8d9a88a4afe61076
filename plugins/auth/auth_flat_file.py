"""auth/auth_flat_file: SMTP AUTH against a file of users and clear-text passwords.

Arguments: none (``loglevel`` as for every plugin).

Config file ``flat_auth_pw``, one account a line::

    user@example.com:secret
    other@example.org:pass:with:colons

The user is everything before the first colon, the password everything
after it (so it may contain colons, but not leading or trailing white
space, and may not be empty).  A line of another form stops the start-up
with the file and line.  User names match without regard to case.  The
passwords are in clear text because CRAM-MD5 needs them: keep the file
readable by the server alone.  The file is read again when it changes,
without a restart.

Mechanisms: PLAIN, LOGIN and CRAM-MD5.  A known user with the right
password is accepted (``235``, and the client may relay).  As in qpsmtpd,
a user not in the file is ``DECLINED``, so a later auth plugin is asked
about it, and a known user's wrong password is ``DENY``, which asks no one
else.  When no plugin says yes the core answers ``535`` after its failure
pause.  The client is not told which it was, so it cannot learn which
accounts exist; the log says.
"""
from qpgevent import DECLINED, DENY, LOGERROR, LOGINFO, OK
from qpgevent.sasl import check_password, printable

_EXAMPLE = "write 'user@example.com:password' (the password may not be empty)"


def register(self, qp, *args):
    if args and (len(args) != 2 or args[0] != "loglevel"):
        raise ValueError("auth/auth_flat_file takes no arguments but 'loglevel N', not %r" % " ".join(args))
    for entry in qp.config.entries("flat_auth_pw"):
        if parse_line(entry.value) is None:
            raise ValueError("%s:%d: not 'user:password'; %s" % (entry.path, entry.line, _EXAMPLE))
    for hook in ("auth-plain", "auth-login", "auth-cram-md5"):
        self.register_hook(hook, "authenticate")


def parse_line(line):
    """``(user in lower case, password)`` from one ``flat_auth_pw`` line, or None if it is not one."""
    user, _, password = line.partition(":")
    if not user.strip() or not password:
        return None
    return user.strip().lower(), password


def stored_password(self, user):
    for line in self.qp.config_list("flat_auth_pw"):
        entry = parse_line(line)
        if entry is None:
            self.log(LOGERROR, "skipping a flat_auth_pw line that is not 'user:password'; %s" % _EXAMPLE)
            continue
        if entry[0] == user.lower():
            return entry[1]
    return None


def authenticate(self, transaction, mechanism, user, password, digest, ticket):
    stored = stored_password(self, user)
    if stored is None:
        self.log(LOGINFO, "skip, no such user %s" % printable(user))
        return DECLINED
    if not check_password(stored, password, digest, ticket):
        self.log(LOGINFO, "fail, wrong password for %s (%s)" % (printable(user), mechanism))
        return DENY
    self.log(LOGINFO, "pass, %s (%s)" % (printable(user), mechanism))
    return OK
