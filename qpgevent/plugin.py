"""Plugins: the object a plugin file's functions receive as ``self``, and the loader."""
import contextvars
import difflib
import importlib.util
import math
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import gevent

from .config import bundled_dir
from .constants import DECLINED, DENY, DENY_DISCONNECT, DENYSOFT, DENYSOFT_DISCONNECT, LOGINFO, parse_log_level
from . import arguments, qpsmtpd_plugins, replies as R
from .errors import ConfigError, ConfigWarning
from .hooks import HOOK_BY_METHOD, HOOKS, HookRegistry, current_hook, current_session

BUNDLED_PLUGIN_DIR = bundled_dir("plugins")

_REJECT_TYPES = {
    "temp": DENYSOFT, "soft": DENYSOFT, "perm": DENY, "hard": DENY,
    "disconnect": DENY_DISCONNECT, "temp_disconnect": DENYSOFT_DISCONNECT,
}


# Hooks that run before any transaction: what a plugin finds there holds for the whole connection.
_CONNECTION_HOOKS = frozenset(("pre-connection", "connect", "helo", "ehlo", "post-connection", "disconnect"))


class Plugin:
    """One loaded plugin instance (``relay``, ``relay:1``, ``queue/maildir``).

    Every ``hook_*`` function of the plugin file gets this object as ``self``.
    It is shared by all sessions: per-session state belongs in
    ``self.qp.connection.notes`` or ``transaction.notes``, never on ``self``.
    """

    def __init__(self, name: str, module: ModuleType, args: Sequence[str], smtpd: Any, path: str) -> None:
        self.name = name
        self.module = module
        self.args = list(args)
        self.path = path
        self.smtpd = smtpd
        self.loglevel_adjust: Optional[tuple] = None  # (relative?, number)
        self.reject: Optional[str] = None
        self.reject_type: Optional[str] = None
        self.capabilities: List[str] = []  # EHLO keywords from the file's CAPABILITIES
        self.options: Any = None  # what the line says, when the file declares ARGUMENTS (qpgevent/arguments.py)
        self.old_name_of: Optional[str] = None  # the plugin an old qpsmtpd name (check_relay) loaded
        self.hook_timeouts: Dict[str, float] = {}  # hook -> seconds it may run instead of plugin_timeout

    def __repr__(self) -> str:
        return "<plugin %s>" % self.name

    # -- context --------------------------------------------------------------
    @property
    def qp(self) -> Any:
        """The session the calling greenlet serves (the daemon in ``init``, ``register`` and ``post-fork``).

        A greenlet the plugin started itself has no session: reading ``qp``
        there is a RuntimeError, never silently the daemon.  ``self.spawn``
        starts one that keeps the session.
        """
        session = current_session.get()
        if session is None:
            raise RuntimeError("plugin %s used self.qp (or self.transaction, self.connection) outside a session, "
                               "in a greenlet it started itself; start it with self.spawn(function, ...) to keep "
                               "the session, or pass the values it needs as arguments" % self.name)
        return session

    @property
    def transaction(self) -> Any:
        return getattr(self.qp, "transaction", None)

    @property
    def connection(self) -> Any:
        return getattr(self.qp, "connection", None)

    def spawn(self, function: Callable, *args: Any, **kwargs: Any) -> gevent.Greenlet:
        """Run ``function(*args, **kwargs)`` in a new greenlet that sees the calling session as ``self.qp``.

        The greenlet belongs to the session: one still running when the
        session ends (after its ``post-connection`` hooks) is killed.
        Started outside a session (``register``, ``post-fork``) it sees the
        daemon and lives as long as the process.
        """
        greenlet = gevent.spawn(contextvars.copy_context().run, function, *args, **kwargs)
        keep = getattr(current_session.get(), "keep_greenlet", None)
        if keep is not None:
            keep(greenlet)
        return greenlet

    @property
    def hook_name(self) -> Optional[str]:
        return current_hook.get()

    @property
    def plugin_name(self) -> str:
        return self.name

    # -- services -------------------------------------------------------------
    def log(self, level: int, *message: Any, hook: Optional[str] = None) -> None:
        """Log through the logging plugins, adjusted by this plugin's ``loglevel`` argument.

        The line is labelled with the running hook, or ``hook`` when given (``starttls``).
        """
        adjust = self.loglevel_adjust
        if adjust is not None:
            relative, value = adjust
            level = max(0, min(7, level + value if relative else value))
        # Logging works everywhere, in a plain greenlet too: there the line has no session.
        logger = current_session.get() or self.smtpd
        logger.log(level, " ".join(str(m) for m in message), hook=hook or current_hook.get(), plugin=self.name)

    def register_hook(self, hook: str, method: Union[str, Callable], prepend: bool = False) -> None:
        """Run ``method`` (a function or the name of one in the plugin file) for ``hook``."""
        function = getattr(self.module, method) if isinstance(method, str) else method
        self.smtpd.registry.register(hook, self, function, prepend=prepend)

    def set_hook_timeout(self, hook: str, seconds: float) -> None:
        """Bound this plugin's ``hook`` by ``seconds`` instead of ``plugin_timeout``: for a wait that has a longer
        timeout of its own (a next hop's reply, a scan); the hook stays bounded, and a hook past it fails as usual."""
        if hook not in HOOKS:
            raise ValueError("set_hook_timeout: unknown hook %r (see docs/hooks.md)" % hook)
        if not 0 < seconds < math.inf:
            raise ValueError("set_hook_timeout: %r is not a number of seconds above 0" % (seconds,))
        self.hook_timeouts[hook] = float(seconds)

    def config_ini(self, name: Optional[str] = None, spec: Union[str, Sequence[str], None] = None):
        """``config/<name>.ini`` (default: this plugin's base name) as a validated configobj."""
        return self.smtpd.config.ini(name or self.name.split(":")[0].replace("/", "_"), spec)

    def spool_dir(self) -> str:
        return self.smtpd.spool_dir

    @property
    def state(self) -> Any:
        """The state store every plugin shares (``config/storage``; see qpgevent/state.py)."""
        return self.smtpd.state

    def temp_file(self) -> str:
        return self.transaction.temp_file()

    def temp_dir(self) -> str:
        return self.transaction.temp_dir()

    # -- policy helpers (qpsmtpd's generic ``reject`` and ``reject_type`` arguments) --
    def get_reject_type(self, default: int = DENY, override: Optional[str] = None) -> int:
        return _REJECT_TYPES.get(override or self.reject_type or "", default)

    def get_reject(self, smtp_msg: str = "unspecified error", log_msg: str = "") -> tuple:
        """DECLINED when ``reject 0``; a deferred rejection when ``reject naughty``; else the rejection."""
        if self.reject is not None and self.reject in ("0", ""):
            self.log(LOGINFO, "fail, tolerated" + (", " + log_msg if log_msg else ""))
            return (DECLINED,)
        if self.reject == "naughty":
            self.log(LOGINFO, "fail, naughty" + (", " + log_msg if log_msg else ""))
            self.store_deferred_reject(smtp_msg)
            return (DECLINED,)
        self.log(LOGINFO, "fail" + (", " + log_msg if log_msg else ""))
        return (self.get_reject_type(), smtp_msg)

    def get_temp_reject(self, smtp_msg: str = "temporary failure", log_msg: str = "") -> tuple:
        """The refusal for an outcome that may change (a DNS timeout): like ``get_reject``, but never a 5xx.

        ``reject 0`` declines (and logs).  Otherwise (``1`` or ``naughty``) the
        refusal comes now: a deferred one would be permanent when the naughty
        plugin gives it.  ``reject_type disconnect`` or ``temp_disconnect``
        hangs up too.
        """
        if self.reject is not None and self.reject in ("0", ""):
            self.log(LOGINFO, "fail, tolerated" + (", " + log_msg if log_msg else ""))
            return (DECLINED,)
        self.log(LOGINFO, "fail, temporary" + (", " + log_msg if log_msg else ""))
        hang_up = self.get_reject_type() in (DENY_DISCONNECT, DENYSOFT_DISCONNECT)
        return (DENYSOFT_DISCONNECT if hang_up else DENYSOFT, smtp_msg)

    def store_deferred_reject(self, message: str) -> None:
        notes = self.connection.notes
        text = "(%s) %s" % (self.name, message)
        notes["naughty"] = notes["naughty"] + "\r\n" + text if notes.get("naughty") else text
        notes.setdefault("naughty_reject_type", self.reject_type)

    def is_immune(self) -> bool:
        """True (and logged) for relay clients and whitelisted hosts or senders."""
        connection, transaction = self.connection, self.transaction
        reason = None
        if connection.relay_client:
            reason = "relay client"
        elif connection.notes.get("whitelisthost"):
            reason = "whitelisted host"
        elif transaction is not None and transaction.notes.get("whitelistsender"):
            reason = "whitelisted sender"
        if reason:
            self.log(LOGINFO, "skip, %s" % reason)
        return reason is not None

    def isa_plugin(self, parent: str) -> ModuleType:
        """Make this plugin a variant of plugin ``parent`` (qpsmtpd's isa_plugin) and return the parent's module.

        The parent's ``hook_*`` functions that this plugin's file does not define are
        registered for it; a hook of its own calls the parent's as
        ``parent.hook_rcpt(self, transaction, recipient)`` (qpsmtpd's ``SUPER::``).
        Without ``ARGUMENTS`` of its own, the plugin takes the parent's.  Call it from ``init``.
        """
        path = find_plugin(parent, self.smtpd.plugin_dirs())
        if path is None:
            raise ValueError("isa_plugin: no plugin %r in %s" % (parent, ", ".join(map(str, self.smtpd.plugin_dirs()))))
        module = _load_module("%s/_isa_%s" % (self.name, parent), path)
        for hook in HOOKS:
            method = "hook_" + re.sub(r"\W", "_", hook)
            function = getattr(module, method, None)
            if callable(function) and not callable(getattr(self.module, method, None)):
                self.smtpd.registry.register(hook, self, function)
        if not hasattr(self.module, "ARGUMENTS") and hasattr(module, "ARGUMENTS"):
            self.options = arguments.parse(self.args, module.ARGUMENTS, getattr(module, "POSITIONAL", ()))
        return module

    def is_naughty(self, value: Any = None) -> Any:
        """The connection's deferred rejection (note ``naughty``); with ``value``, set it (and ``rejected``)."""
        notes = self.connection.notes
        if value is None:
            return notes.get("naughty")
        notes["naughty"] = notes["rejected"] = value
        if value:
            self.log(LOGINFO, "skip, naughty")
        return bool(value)

    def adjust_karma(self, value: int) -> int:
        notes = self.connection.notes
        notes["karma"] = notes.get("karma", 0) + value
        return value

    def store_auth_results(self, result: str) -> None:
        """Add ``method=result ...`` to the Authentication-Results the core writes once per message.

        Results found before MAIL (iprev at connect, a HELO check) hold for the whole
        connection; those found in a transaction (SPF, DKIM, DMARC) for that message only.
        """
        hook = self.hook_name or ""
        scope = self.connection if hook in _CONNECTION_HOOKS or hook.startswith("auth") else self.transaction
        notes = scope.notes
        notes["authentication_results"] = "; ".join(filter(None, [notes.get("authentication_results"), result]))


# -- loading ------------------------------------------------------------------
_CONFIG_LINE = re.compile(r"[ -~]+\Z")


def module_name(name: str) -> str:
    """A unique importable module name for plugin instance ``name``."""
    return "qpgevent_plugins." + re.sub(r"[^A-Za-z0-9_]", lambda m: "_%02x" % ord(m.group()), name)


def find_plugin(name: str, dirs: Sequence[Path]) -> Optional[Path]:
    base = name.split(":", 1)[0]
    for directory in dirs:
        candidate = directory / (base + ".py")
        if candidate.is_file():
            return candidate
    return None


def known_plugins(dirs: Sequence[Path]) -> List[str]:
    names = set()
    for directory in dirs:
        if directory.is_dir():
            names.update(str(p.relative_to(directory))[:-3] for p in directory.rglob("*.py")
                         if not p.name.startswith("_"))
    return sorted(names)


def _load_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name(name), path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _check_hook_names(module: ModuleType, path: Path) -> None:
    for attribute, value in vars(module).items():
        if attribute.startswith("hook_") and callable(value) and attribute not in HOOK_BY_METHOD:
            line = getattr(getattr(value, "__code__", None), "co_firstlineno", None)
            guess = difflib.get_close_matches(attribute, HOOK_BY_METHOD, n=1)
            fix = "rename it to %s" % guess[0] if guess else "see docs/hooks.md for the hook names"
            raise ConfigError("%s is not a hook; %s" % (attribute, fix), str(path), line)


def parse_loglevel(text: str) -> tuple:
    """``6``, ``LOGINFO``/``INFO`` (absolute) or ``+1``/``-2`` (relative) as (relative?, number)."""
    if text[:1] in "+-" and text[1:].isdigit():
        return True, int(text)
    return False, parse_log_level(text)


def _apply_generic_args(plugin: Plugin) -> None:
    """qpsmtpd's generic plugin arguments ``loglevel``, ``reject`` and ``reject_type``."""
    args = plugin.args
    for i in range(len(args) - 1):
        if args[i] == "loglevel":
            plugin.loglevel_adjust = parse_loglevel(args[i + 1])
        elif args[i] == "reject":
            plugin.reject = args[i + 1]
        elif args[i] == "reject_type":
            plugin.reject_type = args[i + 1]


def load_plugin(smtpd: Any, name: str, args: Sequence[str], dirs: Sequence[Path],
                where: Optional[tuple] = None) -> Plugin:
    """Load one plugin instance and register its hooks; ConfigError names ``where`` on failure."""
    path_hint, line = where or (None, None)
    path, kept = find_plugin(name, dirs), None
    if path is None:
        kept = qpsmtpd_plugins.kept_name(name.split(":", 1)[0])
        path = find_plugin(kept, dirs) if kept else None
    if path is None:
        raise ConfigError(_not_found(name, dirs), path_hint, line)
    try:
        module = _load_module(name, path)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError("plugin %r (%s) failed to load: %s: %s" % (name, path, type(exc).__name__, exc),
                          path_hint, line) from exc
    _check_hook_names(module, path)
    plugin = Plugin(name, module, args, smtpd, str(path))
    plugin.old_name_of = None if name.split(":", 1)[0] in qpsmtpd_plugins.SPELLINGS else kept
    loading = current_session.set(smtpd)  # self.qp is the daemon while the plugin starts
    try:
        _apply_generic_args(plugin)
        if hasattr(module, "ARGUMENTS"):
            plugin.options = arguments.parse(args, module.ARGUMENTS, getattr(module, "POSITIONAL", ()))
        if hasattr(module, "init"):
            module.init(plugin, smtpd, *args)
        for hook in HOOKS:
            function = getattr(module, "hook_" + re.sub(r"\W", "_", hook), None)
            if callable(function):
                smtpd.registry.register(hook, plugin, function)
        if hasattr(module, "register"):
            module.register(plugin, smtpd, *args)
        plugin.capabilities = declared_capabilities(plugin)
    except ConfigError as exc:
        raise ConfigError("plugin %s: %s" % (name, exc), path_hint, line) from exc
    except Exception as exc:
        raise ConfigError("plugin %s (arguments %r) refused to start: %s" % (name, " ".join(args), exc),
                          path_hint, line) from exc
    finally:
        current_session.reset(loading)
    return plugin


def _not_found(name: str, dirs: Sequence[Path]) -> str:
    """Why plugin ``name`` is not in ``dirs``, and what to do, for an admin coming from qpsmtpd."""
    port = "comment the line out, or port it to Python (see docs/writing-plugins.md)"
    if "::" in name:
        return "`%s` names a Perl module, and Perl plugins do not run here; %s" % (name, port)
    name = name.split(":", 1)[0]
    available = known_plugins(dirs)
    current = qpsmtpd_plugins.current_name(name)
    if current is not None and current != name:
        if current in available:
            return "`%s` is an old qpsmtpd name of the `%s` plugin; write `%s`" % (name, current, current)
        return "qpsmtpd plugin `%s` (now called `%s`) is not available in this version of qpgevent; %s" % (
            name, current, port)
    if current is not None:
        return "qpsmtpd plugin `%s` is not available in this version of qpgevent; %s" % (name, port)
    # A high cutoff: a far-fetched guess misleads more than no guess.
    guess = difflib.get_close_matches(name, available, n=1, cutoff=0.75)
    fix = "did you mean %r?" % guess[0] if guess else "check the spelling or add its directory to plugin_dirs"
    return "plugin %r not found in %s; %s" % (name, ", ".join(map(str, dirs)), fix)


def plugin_set_warnings(registry: HookRegistry, loaded: Sequence[tuple], plugins_file: str,
                        dirs: Sequence[Path]) -> List[ConfigWarning]:
    """What the loaded ``(plugin, path, line)`` list lacks that would turn mail away, or make an argument moot."""
    names = {plugin.name for plugin, _, _ in loaded}
    warnings = []
    if not names.intersection(registry.plugins_for("queue")):
        reply = R.QUEUE_DECLINED
        warnings.append(ConfigWarning(
            "no queue plugin is loaded, so every message would be refused after DATA with %d %s; add one, "
            "e.g. `queue/maildir ./Maildir`" % (reply.code, reply.status), plugins_file))
    if not names.intersection(registry.plugins_for("rcpt")):
        reply = R.RCPT_UNDECIDED
        warnings.append(ConfigWarning(
            "no plugin has a rcpt hook, so none can accept a recipient: every RCPT TO would get %d %s; "
            "add `rcpt_ok` after your other rcpt plugins" % (reply.code, reply.status), plugins_file))
    for plugin, path, line in loaded:
        if plugin.old_name_of:
            warnings.append(ConfigWarning(
                "`%s` is an old qpsmtpd name of the `%s` plugin, which is loaded with the same arguments; "
                "write `%s` to silence this" % (plugin.name.split(":", 1)[0], plugin.old_name_of, plugin.old_name_of),
                path, line))
    deferring = [(plugin, path, line) for plugin, path, line in loaded if plugin.reject == "naughty"]
    if deferring and not any(plugin.name.split(":", 1)[0] == "naughty" for plugin, _, _ in loaded):
        # Plugin.get_reject stores a 'reject naughty' rejection in a note that only a naughty plugin reads.
        why = "is not loaded; add a `naughty` line after it" if "naughty" in known_plugins(dirs) else \
            "is not available in this version of qpgevent"
        for plugin, path, line in deferring:
            warnings.append(ConfigWarning(
                "plugin %s: `reject naughty` leaves its rejections to the `naughty` plugin, which %s: "
                "they are logged and never applied (as with `reject 0`); write `reject 1` to refuse at once"
                % (plugin.name, why), path, line))
    return warnings


def declared_capabilities(plugin: Plugin) -> List[str]:
    """The EHLO keywords a plugin file declares in ``CAPABILITIES``; ConfigError when they do not make sense.

    ``DSN`` promises that the DSN parameters reach the next hop (RFC 3461 4):
    only a plugin with a ``queue`` hook can keep that promise.
    """
    declared = getattr(plugin.module, "CAPABILITIES", ())
    if isinstance(declared, str) or not all(isinstance(k, str) and _CONFIG_LINE.match(k) for k in declared):
        raise ConfigError("%s: CAPABILITIES must be a list of EHLO keywords such as [\"DSN\"], not %r"
                          % (plugin.path, declared))
    keywords = [k.upper() for k in declared]
    if "DSN" in keywords and plugin not in (cb.plugin for cb in plugin.smtpd.registry.callbacks.get("queue", ())):
        raise ConfigError("%s declares DSN but has no queue hook: only a queue plugin can pass DSN requests on; "
                          "remove DSN from CAPABILITIES" % plugin.path)
    return keywords


def parse_plugin_line(text: str, path: str, line: int) -> tuple:
    """``name arg ...`` from a ``plugins`` line; only printable ASCII is allowed."""
    if not _CONFIG_LINE.match(text):
        raise ConfigError("plugin lines must be printable ASCII; remove the other characters", path, line)
    name, *args = text.split()
    return name, args
