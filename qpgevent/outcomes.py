"""What the core answers for each hook's return code: the one table behind docs/hooks.md.

A row says which registry reply goes out, whether the plugin's messages
replace its text, and whether the transaction ends or the connection closes.
A hook's ``ELSE`` row answers every code it does not list; a code with no
row and no ``ELSE`` lets the command go on with the core's default.
``tests/test_return_codes.py`` holds every hook and code to it over a session.
"""
from typing import Dict, NamedTuple, Optional

from . import replies as R
from .constants import DECLINED, DENY, DENY_DISCONNECT, DENYSOFT, DENYSOFT_DISCONNECT, DONE, OK
from .replies import Reply


class Outcome(NamedTuple):
    """One answer to a hook's result; ``reply`` None sends nothing (the plugin has answered)."""

    reply: Optional[Reply]
    plugin_text: bool = True  # the plugin's messages, when it gave any, replace the default text
    end: bool = False  # the transaction ends
    close: bool = False  # the connection closes after the reply


ELSE = "else"
SILENT = Outcome(None)  # DONE: the plugin replied itself


def _refusals(deny: Reply, denysoft: Reply, deny_disconnect: Reply, denysoft_disconnect: Reply,
              end: bool = False) -> Dict[object, Outcome]:
    """The DENY family as most hooks answer it: two plain refusals, two that hang up."""
    return {DENY: Outcome(deny, end=end), DENYSOFT: Outcome(denysoft, end=end),
            DENY_DISCONNECT: Outcome(deny_disconnect, end=end, close=True),
            DENYSOFT_DISCONNECT: Outcome(denysoft_disconnect, end=end, close=True)}


def _hanging_up(deny: Reply, denysoft: Reply) -> Dict[object, Outcome]:
    return _refusals(deny, denysoft, deny, denysoft) | {DENY: Outcome(deny, close=True),
                                                        DENYSOFT: Outcome(denysoft, close=True)}


_HELO = {DONE: SILENT, **_refusals(R.HELO_DENY, R.HELO_DENYSOFT, R.HELO_DENY, R.HELO_DENYSOFT)}

OUTCOMES: Dict[str, Dict[object, Outcome]] = {
    # Before the greeting every refusal hangs up, with or without _DISCONNECT.
    "pre-connection": _hanging_up(R.PRECONNECT_DENY, R.PRECONNECT_DENYSOFT),
    "connect": {DONE: SILENT, **_hanging_up(R.CONNECT_DENY, R.CONNECT_DENYSOFT)},
    "helo": _HELO,
    "ehlo": _HELO,
    "mail": {DONE: SILENT, **_refusals(R.MAIL_DENY, R.MAIL_DENYSOFT, R.MAIL_DENY, R.MAIL_DENYSOFT_DISCONNECT)},
    "rcpt": {DONE: SILENT, OK: None,
             **_refusals(R.RCPT_DENY, R.RCPT_DENYSOFT, R.RCPT_DENY_DISCONNECT, R.RCPT_DENYSOFT_DISCONNECT),
             ELSE: Outcome(R.RCPT_UNDECIDED, plugin_text=False)},
    "data": {DONE: SILENT, **_refusals(R.DATA_DENY, R.DATA_DENYSOFT, R.DATA_DENY, R.DATA_DENYSOFT, end=True)},
    "data_headers_end": {DENY_DISCONNECT: Outcome(R.DATA_DENY, close=True),
                         DENYSOFT_DISCONNECT: Outcome(R.DATA_HEADERS_DENYSOFT, close=True)},
    # The end of DATA always ends the transaction (RFC 5321 4.1.1.4), DONE included.
    "data_post": {DONE: Outcome(None, end=True),
                  **_refusals(R.DATA_POST_DENY, R.DATA_POST_DENYSOFT, R.DATA_POST_DENY, R.DATA_POST_DENYSOFT,
                              end=True)},
    "queue_pre": {DONE: Outcome(None, end=True), OK: None, DECLINED: None, 0: None,
                  ELSE: Outcome(R.QUEUE_DECLINED, end=True)},
    "queue": {DONE: SILENT, OK: Outcome(R.QUEUE_OK), DENY: Outcome(R.QUEUE_DENY),
              DENYSOFT: Outcome(R.QUEUE_DENYSOFT), ELSE: Outcome(R.QUEUE_DECLINED)},
    "noop": {DONE: SILENT, DENY: Outcome(R.NOOP_DENY), DENY_DISCONNECT: Outcome(R.NOOP_DENY, close=True),
             ELSE: Outcome(R.NOOP_OK, plugin_text=False)},
    "vrfy": {DONE: SILENT, DENY: Outcome(R.VRFY_DENY, end=True), OK: Outcome(R.VRFY_OK),
             ELSE: Outcome(R.VRFY_UNKNOWN, plugin_text=False)},
    "help": {DONE: SILENT, DENY: Outcome(R.HELP_DENY), ELSE: Outcome(R.HELP)},
    "quit": {DONE: Outcome(None, close=True), ELSE: Outcome(R.QUIT, close=True)},
    "unrecognized_command": {DONE: SILENT, DENY: Outcome(R.UNRECOGNIZED),
                             DENY_DISCONNECT: Outcome(R.UNRECOGNIZED_DISCONNECT, close=True),
                             ELSE: Outcome(R.UNRECOGNIZED, plugin_text=False)},
}


def outcome(hook: str, rc: int) -> Optional[Outcome]:
    """The row for ``rc`` in ``hook``'s table; None: the command goes on."""
    rows = OUTCOMES[hook]
    return rows[rc] if rc in rows else rows.get(ELSE)
