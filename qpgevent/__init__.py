"""qpgevent: the qpsmtpd plugin model, in Python, on gevent.

Plugins import their return codes and log levels from here::

    from qpgevent import OK, DENY, DECLINED, LOGINFO
"""
from .constants import (DECLINED, DENY, DENY_DISCONNECT, DENYHARD, DENYSOFT, DENYSOFT_DISCONNECT, DONE, LOGALERT,
                        LOGCRIT, LOGDEBUG, LOGEMERG, LOGERROR, LOGINFO, LOGNOTICE, LOGRADAR, LOGWARN, OK, log_level,
                        parse_log_level, return_code)
from .version import VERSION

__version__ = VERSION

__all__ = [
    "OK", "DENY", "DENYSOFT", "DENY_DISCONNECT", "DENYHARD", "DENYSOFT_DISCONNECT", "DECLINED", "DONE",
    "LOGDEBUG", "LOGINFO", "LOGNOTICE", "LOGWARN", "LOGERROR", "LOGCRIT", "LOGALERT", "LOGEMERG", "LOGRADAR",
    "return_code", "log_level", "parse_log_level", "Address", "ConfigError", "VERSION",
]


def __getattr__(name: str):
    # Kept lazy so that importing the constants does not import socket-using
    # modules before gevent has patched them (see qpgevent.cli).
    if name == "Address":
        from .address import Address
        return Address
    if name == "ConfigError":
        from .errors import ConfigError
        return ConfigError
    raise AttributeError(name)
