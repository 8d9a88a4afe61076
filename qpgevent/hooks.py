"""The hook catalogue and the engine that runs plugins in ``config/plugins`` order."""
import inspect
import re
import traceback
from contextvars import ContextVar
from time import perf_counter
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import gevent

from . import metrics
from .constants import DECLINED, DENY_CODES, LOGCRIT
from .results import NO_PLUGIN, HookResult, PluginFailure, normalise  # noqa: F401 (plugins import them from here)
from .transaction import PendingTransaction

# Registration names in the order plugins' hook_* functions are registered.
HOOKS: Tuple[str, ...] = (
    "logging", "config", "user_config", "post-fork", "pre-connection", "connect",
    "helo_parse", "ehlo_parse", "helo", "ehlo", "auth_parse", "auth-plain", "auth-login",
    "auth-cram-md5", "auth", "mail_parse", "rcpt_parse", "mail_pre", "rcpt_pre", "mail", "rcpt",
    "data", "data_headers_end", "data_post_headers", "received_line", "data_post", "queue_pre",
    "queue", "queue_post", "reset_transaction", "vrfy", "noop", "help", "unrecognized_command",
    "quit", "disconnect", "post-connection", "deny", "ok",
)


def method_name(hook: str) -> str:
    """``pre-connection`` -> ``hook_pre_connection``."""
    return "hook_" + re.sub(r"\W", "_", hook)


HOOK_BY_METHOD: Dict[str, str] = {method_name(hook): hook for hook in HOOKS}

current_session: ContextVar = ContextVar("qpgevent_session", default=None)
current_hook: ContextVar = ContextVar("qpgevent_hook", default=None)


class Callback(NamedTuple):
    plugin: Any
    function: Callable
    takes_params: bool

    @classmethod
    def make(cls, plugin: Any, function: Callable) -> "Callback":
        try:
            parameters = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):
            parameters = ()
        takes = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
        return cls(plugin, function, takes)


class HookRegistry:
    """Which plugin callbacks run for each hook, in order."""

    def __init__(self, plugin_timeout: float = 30.0) -> None:
        self.callbacks: Dict[str, List[Callback]] = {}
        self.plugin_timeout = plugin_timeout  # a plugin's set_hook_timeout (qpgevent/plugin.py) overrides it

    def register(self, hook: str, plugin: Any, function: Callable, prepend: bool = False) -> None:
        if hook not in HOOKS:
            raise ValueError("unknown hook %r" % hook)
        callbacks = self.callbacks.setdefault(hook, [])
        callbacks.insert(0 if prepend else len(callbacks), Callback.make(plugin, function))

    def has(self, hook: str) -> bool:
        return hook in self.callbacks

    def plugins_for(self, hook: str) -> List[str]:
        return [cb.plugin.name for cb in self.callbacks.get(hook, ())]

    def run(self, session: Any, hook: str, args: Tuple = (), params: Optional[dict] = None) -> HookResult:
        """Call each plugin of ``hook`` until one answers other than DECLINED.

        Returns rc 0 when no plugin is registered, like qpsmtpd.  Raises
        PluginFailure when a plugin misbehaves, after logging its traceback.
        """
        callbacks = self.callbacks.get(hook)
        if not callbacks:
            return NO_PLUGIN
        session_token = current_session.set(session)
        hook_token = current_hook.set(hook)
        try:
            result = NO_PLUGIN
            transaction = getattr(session, "hook_transaction", None)
            for callback in callbacks:
                result = self._call(session, hook, transaction, callback, args, params)
                if hook not in ("deny", "ok", "logging") and (self.callbacks.get("deny") or self.callbacks.get("ok")):
                    self._notify(session, callback.plugin.name, result)
                if result.rc != DECLINED:
                    break
            if metrics.on:
                metrics.hook_answered(session, hook, result)
            return result
        finally:
            current_hook.reset(hook_token)
            current_session.reset(session_token)

    def _notify(self, session: Any, plugin: str, result: HookResult) -> None:
        """Tell the ``deny``/``ok`` plugins what a plugin answered; their failures change nothing."""
        first = result.messages[0] if result.messages else ""
        try:
            self.run(session, "deny" if result.rc in DENY_CODES else "ok", (plugin, result.rc, first))
        except PluginFailure:
            pass  # already logged; the answer being reported stands

    def _call(self, session: Any, hook: str, transaction: Any, callback: Callback, args: Tuple,
              params: Optional[dict]) -> HookResult:
        name = callback.plugin.name
        limit = callback.plugin.hook_timeouts.get(hook, self.plugin_timeout)
        timer = gevent.Timeout(limit) if limit else None
        started = perf_counter() if metrics.on else None
        if timer is not None:
            timer.start()
        try:
            if params and callback.takes_params:
                value = callback.function(callback.plugin, transaction, *args, **params)
            else:
                value = callback.function(callback.plugin, transaction, *args)
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            what = "its hook timeout" if hook in callback.plugin.hook_timeouts else "plugin_timeout"
            self._fail(session, hook, name, "ran longer than %s (%ss)" % (what, limit))
        except Exception:
            self._fail(session, hook, name, "raised an exception:\n" + traceback.format_exc().rstrip())
        finally:
            if timer is not None:
                timer.close()
            if started is not None:
                metrics.plugin_called(hook, name, started)
        normalised = normalise(value)
        if normalised is None:
            self._fail(session, hook, name, "returned %r, which is not a return code" % (value,))
        rc, messages = normalised
        if transaction.__class__ is PendingTransaction:
            transaction = transaction.made
        if transaction is not None and isinstance(transaction.notes.get(name), dict):
            transaction.notes[name].setdefault(method_name(hook), {})["return"] = rc
        return HookResult(rc, messages, name)

    def _fail(self, session: Any, hook: str, plugin: str, reason: str) -> None:
        if metrics.on:
            metrics.plugin_failed(session, hook, plugin)
        if hook != "logging":
            session.log(LOGCRIT, "FATAL PLUGIN ERROR [%s] in hook %s: %s" % (plugin, hook, reason), hook=hook, plugin=plugin)
        raise PluginFailure(hook, plugin, reason)
