"""The plugin names qpsmtpd knows, as written in its ``config/plugins``: data for the loader's error messages.

Taken from qpsmtpd's ``plugins/`` tree (git HEAD, the 78 plugins of section 7
of the behaviour spec; ``karma_tool`` and ``tls_cert`` there are scripts, not
plugins) and from its history (``Changes``, ``UPGRADING.md``, renames in git).
Which of them qpgevent ships is not recorded here: the loader compares these
names with the plugin directories, so a plugin ported later needs no edit here.
"""
from typing import Optional

PLUGINS = frozenset((
    "auth/auth_checkpassword", "auth/auth_cvm_unix_local", "auth/auth_flat_file", "auth/auth_imap",
    "auth/auth_ldap_bind", "auth/auth_vpopmail", "auth/auth_vpopmail_sql", "auth/auth_vpopmaild",
    "auth/authdeny", "badmailfrom", "badmailfromto", "badrcptto", "bogus_bounce", "connection_time",
    "content_log", "count_unrecognized_commands", "dkim", "dmarc", "dns_whitelist_soft", "dnsbl",
    "domainkeys", "dont_require_anglebrackets", "dspam", "earlytalker", "fcrdns", "greylisting",
    "headers", "helo", "help", "hosts_allow", "http_config", "ident/geoip", "ident/p0f", "karma",
    "loadcheck", "logging/adaptive", "logging/apache", "logging/connection_id", "logging/devnull",
    "logging/file", "logging/syslog", "logging/transaction_id", "logging/warn", "loop", "milter",
    "naughty", "noop_counter", "parse_addr_withhelo", "qmail_deliverable", "queue/exim-bsmtp",
    "queue/maildir", "queue/postfix-queue", "queue/qmail-queue", "queue/smtp-forward", "quit_fortune",
    "random_error", "rcpt_map", "rcpt_ok", "rcpt_regexp", "relay", "resolvable_fromhost", "rhsbl",
    "sender_permitted_from", "spamassassin", "stunnel", "tls", "uribl", "user_config",
    "virus/aveclient", "virus/bitdefender", "virus/clamav", "virus/clamdscan", "virus/hbedv",
    "virus/kavscanner", "virus/klez_filter", "virus/sophie", "virus/uvscan", "whitelist",
))

# Names older qpsmtpd releases used for what is now the plugin on the right.
FORMER_NAMES = {
    "check_relay": "relay", "check_norelay": "relay", "relay_only": "relay",  # UPGRADING.md, v0.84
    "check_earlytalker": "earlytalker",
    "check_badmailfrom": "badmailfrom", "check_badmailfrom_patterns": "badmailfrom",
    "check_badrcptto": "badrcptto", "check_badrcptto_patterns": "badrcptto",
    "check_badmailfromto": "badmailfromto",
    "check_basicheaders": "headers",
    "check_bogus_bounce": "bogus_bounce",
    "check_loop": "loop",
    "check_spamhelo": "helo",
    "require_resolvable_fromhost": "resolvable_fromhost",
    "authdeny": "auth/authdeny",
    "authsql": "auth/auth_vpopmail_sql",
    "clamav": "virus/clamav",
    "klez_filter": "virus/klez_filter",
}

# qpsmtpd-async (up to 0.94; "removed async everything" in Changes) had its own copies of these.
ASYNC = frozenset((
    "async/dnsbl", "async/rhsbl", "async/uribl", "async/dns_whitelist_soft", "async/queue/smtp-forward",
    "async/earlytalker", "async/check_earlytalker", "async/resolvable_fromhost", "async/require_resolvable_fromhost",
))


# Old names qpsmtpd or Debian's package still load: Debian's check_* wrappers (isa_plugin of the
# plugin on the right, same arguments) and the async/* copies of 0.94. The loader loads the plugin on
# the right under the old name and warns. The other FORMER_NAMES changed meaning when renamed
# (check_norelay, relay_only, the *_patterns files), so they stay errors that say what to write.
KEPT = {
    "check_badmailfrom": "badmailfrom", "check_badrcptto": "badrcptto", "check_earlytalker": "earlytalker",
    "check_loop": "loop", "check_relay": "relay", "check_spamhelo": "helo",
    "require_resolvable_fromhost": "resolvable_fromhost",
}


# The seed talk writes these queue plugins with an underscore. They are other spellings of the same
# plugins, not old names: the loader loads the plugin on the right without a warning.
SPELLINGS = {
    "queue/qmail_queue": "queue/qmail-queue", "queue/postfix_queue": "queue/postfix-queue",
    "queue/smtp_forward": "queue/smtp-forward", "queue/exim_bsmtp": "queue/exim-bsmtp",
}


def kept_name(name: str) -> Optional[str]:
    """The plugin an old name (``check_relay``, ``async/dnsbl``) or another spelling still loads, or None."""
    if name in ASYNC:
        name = name[len("async/"):]
        return KEPT.get(name, name)
    return KEPT.get(name) or SPELLINGS.get(name)


def current_name(name: str) -> Optional[str]:
    """The qpsmtpd plugin ``name`` (a ``config/plugins`` name, no ``:N``) stands for today, or None if none."""
    if name in ASYNC:
        name = name[len("async/"):]
    name = FORMER_NAMES.get(name) or SPELLINGS.get(name, name)
    return name if name in PLUGINS else None
