"""dont_require_anglebrackets: accept MAIL FROM and RCPT TO addresses without ``<>``.

RFC 5321 4.1.2 wants the path in angle brackets (``MAIL FROM:<user@example.com>``);
some old or hand-written clients send ``MAIL FROM:user@example.com``.  This
plugin adds the brackets before the address is parsed, so such clients get
through.  Each repair lowers the connection note ``karma`` by 2, as in
qpsmtpd: well-behaved MTAs never need it.

An empty path (``MAIL FROM:`` with nothing after it) is left alone and still
refused; qpsmtpd turned it into the null sender ``<>``, which would let any
broken client send bounces.  A path that already has brackets is passed on
untouched (DECLINED), so other ``*_pre`` plugins still see it.

Arguments: none (``loglevel L`` only).  Config files: none.
"""
from qpgevent import DECLINED, LOGINFO, OK


def register(self, qp, *args):
    if args and (len(args) != 2 or args[0] != "loglevel"):
        raise ValueError("takes no arguments but 'loglevel L', got %r" % " ".join(args))


def add_brackets(self, path, verb):
    if not path or (path.startswith("<") and path.endswith(">")):
        return DECLINED
    self.log(LOGINFO, "added %s angle brackets" % verb)
    self.adjust_karma(-2)
    return OK, "<%s>" % path


def hook_mail_pre(self, transaction, path, params):
    return add_brackets(self, path, "MAIL")


def hook_rcpt_pre(self, transaction, path, params):
    return add_brackets(self, path, "RCPT")
