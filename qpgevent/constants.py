"""Hook return codes and log levels, with the numeric values qpsmtpd uses."""

OK = 900
DENY = 901
DENYSOFT = 902
DENY_DISCONNECT = 903
DENYSOFT_DISCONNECT = 904
DECLINED = 909
DONE = 910

DENYHARD = DENY_DISCONNECT  # qpsmtpd alias

RETURN_CODES = {
    OK: "OK",
    DENY: "DENY",
    DENYSOFT: "DENYSOFT",
    DENY_DISCONNECT: "DENY_DISCONNECT",
    DENYSOFT_DISCONNECT: "DENYSOFT_DISCONNECT",
    DECLINED: "DECLINED",
    DONE: "DONE",
}

DENY_CODES = frozenset({DENY, DENYSOFT, DENY_DISCONNECT, DENYSOFT_DISCONNECT})

LOGDEBUG = 7
LOGINFO = 6
LOGNOTICE = 5
LOGWARN = 4
LOGERROR = 3
LOGCRIT = 2
LOGALERT = 1
LOGEMERG = 0
LOGRADAR = 0

LOG_LEVELS = {
    LOGDEBUG: "LOGDEBUG",
    LOGINFO: "LOGINFO",
    LOGNOTICE: "LOGNOTICE",
    LOGWARN: "LOGWARN",
    LOGERROR: "LOGERROR",
    LOGCRIT: "LOGCRIT",
    LOGALERT: "LOGALERT",
    LOGEMERG: "LOGEMERG",
}
_LEVEL_BY_NAME = {name: level for level, name in LOG_LEVELS.items()}
_LEVEL_BY_NAME["LOGRADAR"] = LOGRADAR
_CODE_BY_NAME = {name: code for code, name in RETURN_CODES.items()}
_CODE_BY_NAME["DENYHARD"] = DENY_DISCONNECT


def return_code(value: "int | str") -> "str | int | None":
    """Name for a return code number, or number for a name (exact match only)."""
    if isinstance(value, int):
        return RETURN_CODES.get(value)
    return _CODE_BY_NAME.get(str(value).upper())


def parse_log_level(text: str) -> int:
    """A level given in config as ``0``-``7`` or a name (``LOGINFO``, ``INFO``); ValueError otherwise."""
    level = int(text) if text.isdigit() else log_level(text)
    if level is None or not 0 <= level <= 7:
        raise ValueError("%r is not a log level; use 0-7 or a name such as LOGINFO or LOGDEBUG" % text)
    return level


def log_level(value: "int | str") -> "str | int | None":
    """Name for a log level number, or number for a name (exact match only)."""
    if isinstance(value, int):
        return LOG_LEVELS.get(value)
    name = str(value).upper()
    if not name.startswith("LOG"):
        name = "LOG" + name
    return _LEVEL_BY_NAME.get(name)
