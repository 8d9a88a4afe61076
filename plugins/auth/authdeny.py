"""auth/authdeny: an example auth plugin that never lets anyone in.  Not for production.

Arguments: none (``loglevel`` as for every plugin).  Config files: none.

It hooks the generic ``auth`` hook, so the server offers PLAIN, LOGIN and
CRAM-MD5, and it declines every attempt: with no other plugin saying OK
the client gets ``535 5.7.8``.  Use it to watch how clients and the failure
pause behave, or as the last auth plugin to log attempts that nothing else
accepted.  It is no access control: a plugin listed before it that says
OK still lets the client in.
"""
from qpgevent import DECLINED, LOGWARN
from qpgevent.sasl import printable


def register(self, qp, *args):
    if args and (len(args) != 2 or args[0] != "loglevel"):
        raise ValueError("auth/authdeny takes no arguments but 'loglevel N', not %r" % " ".join(args))


def hook_auth(self, transaction, mechanism, user, password, digest, ticket):
    self.log(LOGWARN, "fail, authdeny declines %s (%s)" % (printable(user), mechanism))
    return DECLINED
