"""What a hook run gives back: the answer, or the failure of a plugin.

Kept apart from the engine (``hooks.py``, which bounds plugins with gevent)
so that the session's modules import no gevent.
"""
from typing import Any, List, NamedTuple, Optional, Tuple

from .constants import DECLINED, RETURN_CODES


class PluginFailure(Exception):
    """A plugin raised, returned something that is not a return code, or ran out of time.

    The session answers it with a temporary failure; it never counts as a pass.
    """

    def __init__(self, hook: str, plugin: str, reason: str) -> None:
        self.hook = hook
        self.plugin = plugin
        super().__init__("plugin %s failed in hook %s: %s" % (plugin, hook, reason))


class HookResult(NamedTuple):
    rc: int
    messages: List[Any]
    plugin: Optional[str] = None


NO_PLUGIN = HookResult(0, [])


def normalise(value: Any) -> Optional[Tuple[int, List[Any]]]:
    """``rc``, ``(rc, msg, ...)`` or None (= DECLINED) as ``(rc, messages)``; None if it is garbage."""
    if value is None:
        return DECLINED, []
    if isinstance(value, (tuple, list)) and value:
        rc, messages = value[0], list(value[1:])
    else:
        rc, messages = value, []
    if type(rc) is not int or rc not in RETURN_CODES:
        return None
    return rc, messages
