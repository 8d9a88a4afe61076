"""naughty: refuse, at one chosen moment, the connections other plugins marked as naughty.

A plugin given ``reject naughty`` does not refuse a client itself: its
``get_reject`` stores the refusal in the connection note ``naughty`` (several
refusals are joined, one a line, each led by its plugin's name) and the
storing plugin's ``reject_type`` in ``naughty_reject_type``.  This plugin
gives that refusal at the hook ``reject`` names, so every check can run to
completion early while the client is refused where the admin wants: after
AUTH, for example, since a client that authenticates has its ``naughty`` note
cleared (roaming users behind listed addresses can still send).

Arguments (qpsmtpd's, as pairs)::

    naughty [reject connect|mail|rcpt|data|data_post] [reject_type perm|temp|disconnect|temp_disconnect]
            [loglevel N]

``reject HOOK`` (default ``rcpt``)
    The hook at which a naughty connection is refused.  Plugins of that hook
    listed before ``naughty`` that answer first (``rcpt_ok`` says OK to a
    recipient) leave it unasked, so list ``naughty`` before them, or pick a
    later hook.  Whatever the hook, ``data_post`` refuses too: a connection
    marked naughty after its hook has passed never has its message accepted.
``reject_type`` (default ``disconnect``)
    The refusal when the plugin that stored it named none: ``disconnect``
    (5xx, then the connection is closed), ``temp_disconnect``, ``perm``
    (5xx), ``temp`` (4xx).

Relay clients and whitelisted hosts or senders (``whitelisthost``,
``whitelistsender``) are never refused here.  qpsmtpd's naughty does not
look at them; its plugins skip such clients before storing a refusal, and
we also keep a stray note from refusing them.  qpsmtpd's undocumented
``reject hook_queue_post`` (a hook that cannot refuse) is not accepted.

Config files: none.
"""
from qpgevent import DECLINED, DENY_DISCONNECT, DENYSOFT_DISCONNECT, LOGINFO, arguments

_HOOKS = ("connect", "mail", "rcpt", "data", "data_post")

ARGUMENTS = {
    "reject": arguments.choice(*_HOOKS, default="rcpt"),
    "reject_type": arguments.choice(*arguments.REJECT_TYPES, default="disconnect"),
}


def register(self, qp, *args):
    hook = self.options.reject
    self.reject = None  # the generic meaning of `reject` (0/1/naughty) does not apply to this plugin
    self.reject_type = self.options.reject_type
    self.register_hook(hook, "refuse")
    if hook != "data_post":
        self.register_hook("data_post", "refuse")


def refuse(self, transaction, *args, **params):
    naughty = self.qp.connection.notes.get("naughty")
    if not naughty:
        self.log(LOGINFO, "pass")
        return DECLINED
    if self.is_immune():
        return DECLINED
    code = self.get_reject_type(DENY_DISCONNECT, self.qp.connection.notes.get("naughty_reject_type"))
    self.log(LOGINFO, "disconnecting" if code in (DENY_DISCONNECT, DENYSOFT_DISCONNECT) else "refusing")
    return (code, *str(naughty).split("\r\n"))
