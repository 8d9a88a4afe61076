"""The configured daemon: config, plugins and settings shared by every session."""
import os
import sys
import tempfile
from contextvars import ContextVar
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Union

from . import dns
from .config import Config
from .constants import LOG_LEVELS, LOGNOTICE
from .errors import ConfigError, ConfigErrors, ConfigWarning
from .hooks import HookRegistry, PluginFailure
from .plugin import BUNDLED_PLUGIN_DIR, Plugin, load_plugin, parse_plugin_line, plugin_set_warnings
from .state import Store, open_store, store_url
from .version import VERSION

DSN_MAIL_PARAMETERS = {"ret", "envid"}
DSN_RCPT_PARAMETERS = {"notify", "orcpt"}
_in_logging: ContextVar = ContextVar("qpgevent_in_logging", default=False)


def _positive_int(config: Config, name: str, default: int, errors: List[ConfigError]) -> int:
    """The setting ``name`` as a whole number; a bad one is added to ``errors`` and ``default`` returned."""
    value = config.get(name)
    if value is None:
        return default
    try:
        number = int(value)
        if number < 0:
            raise ValueError
    except ValueError:
        entry = config.entries(name)[0]
        errors.append(ConfigError("%s must be a whole number of 0 or more, not %r" % (name, value), entry.path, entry.line))
        return default
    return number


def _seconds(config: Config, name: str, default: float, errors: List[ConfigError]) -> float:
    """The setting ``name`` as seconds; a bad one is added to ``errors`` and ``default`` returned."""
    value = config.get(name)
    if value is None:
        return default
    try:
        number = float(value)
        if not number >= 0:  # also refuses nan
            raise ValueError
    except ValueError:
        entry = config.entries(name)[0]
        errors.append(ConfigError("%s must be a number of seconds (0 for none), not %r" % (name, value), entry.path,
                                  entry.line))
        return default
    return number


class Smtpd:
    """Everything a session needs that is the same for all sessions.

    Created once at start-up (and again on reload); a ConfigErrors from the
    constructor lists everything broken in the configuration (every bad
    setting and plugin line, in one pass), and the server must not start.
    ``warnings`` lists what loads but looks wrong (no queue plugin, ...).
    """

    def __init__(self, config_dir: Union[str, Path, None] = None, plugins: Optional[Sequence[str]] = None,
                 load: bool = True) -> None:
        self.config = Config(config_dir)
        self.version = VERSION
        self.warnings: List[ConfigWarning] = []
        errors: List[ConfigError] = []
        self.plugin_timeout = _seconds(self.config, "plugin_timeout", 30.0, errors)
        self.registry = HookRegistry(self.plugin_timeout)
        # The process's one DNS resolver (config dns_servers, dns_timeout): plugins use self.smtpd.dns.
        self.dns = dns.from_config(self.config, errors, self.plugin_timeout)
        self.plugins: List[Plugin] = []
        self.spool_dir = spool_dir(self.config)
        try:
            check_spool_dir(self.spool_dir, self.config)
        except ConfigError as exc:
            errors.append(exc)
        self.state: Optional[Store] = None  # the state store plugins share (qpgevent/state.py); connects on first use
        url, path, line = store_url(self.config, self.spool_dir)
        try:
            self.state = open_store(url)
        except ValueError as exc:
            errors.append(ConfigError(str(exc), path, line))
        # Messages up to this size stay in memory; larger ones are spooled to disk.
        self.size_threshold = _positive_int(self.config, "size_threshold", 262144, errors)
        self.max_rcpt = _positive_int(self.config, "max_rcpt", 100, errors)
        # 0: DATA and BDAT lines of any length (stored in pieces); N: the strict RFC 5321 limit, e.g. 1000.
        self.max_line_length = _positive_int(self.config, "max_line_length", 0, errors)
        self.bare_newline = self.config.get("bare_newline", "reject")
        if self.bare_newline not in ("reject", "normalize"):
            entry = self.config.entries("bare_newline")[0]
            errors.append(ConfigError("bare_newline must be 'reject' or 'normalize', not %r" % self.bare_newline,
                                      entry.path, entry.line))
        self.loglevel = _positive_int(self.config, "loglevel", LOGNOTICE, errors)
        # MAIL/RCPT parameters the core accepts (lower case); a plugin may add its own.
        # The DSN ones are added once a queue plugin declares DSN (see load_plugins).
        self.mail_parameters = {"size", "body", "smtputf8", "auth"}
        self.rcpt_parameters: set = set()
        self.capabilities: List[str] = []
        self.log_threshold = self.loglevel
        if load:
            errors += self.load_plugins(plugins)
        if errors:
            raise ConfigErrors(errors, self.warnings)

    # -- plugins ------------------------------------------------------------------
    def plugin_dirs(self) -> List[Path]:
        """``plugin_dirs`` entries (relative to the config dir's parent), then the bundled plugins."""
        base = self.config.directory.parent
        dirs = [Path(d) if os.path.isabs(d) else base / d for d in self.config.lines("plugin_dirs")]
        return [*dirs, BUNDLED_PLUGIN_DIR]

    def load_plugins(self, names: Optional[Sequence[str]] = None) -> List[ConfigError]:
        """Load ``logging`` then ``plugins`` (or the given plugin lines) in order; return the lines' errors.

        A line that does not load is skipped and the next one tried, so that
        one run finds every error; ``warnings`` is set from what did load.
        """
        dirs = self.plugin_dirs()
        if names is not None:
            entries = [(line, "<plugins>", n) for n, line in enumerate(names, 1)]
            plugins_file = "<plugins>"
        elif self.config.path("plugins"):
            entries = [(e.value, e.path, e.line) for e in self.config.entries("logging") + self.config.entries("plugins")]
            plugins_file = str(self.config.path("plugins"))
        else:
            return [ConfigError("no plugins file; create %s/plugins listing at least a rcpt and a queue plugin"
                                % self.config.directory)]
        errors: List[ConfigError] = []
        loaded = []
        for text, path, line in entries:
            try:
                name, args = parse_plugin_line(text, path, line)
                plugin = load_plugin(self, name, args, dirs, (path, line))
            except ConfigError as exc:
                errors.append(exc)
                continue
            self.plugins.append(plugin)
            self.capabilities.extend(k for k in plugin.capabilities if k not in self.capabilities)
            loaded.append((plugin, path, line))
        if "DSN" in self.capabilities:  # RFC 3461: advertised only where the parameters are passed on
            self.mail_parameters |= DSN_MAIL_PARAMETERS
            self.rcpt_parameters |= DSN_RCPT_PARAMETERS
        self.warnings = plugin_set_warnings(self.registry, loaded, plugins_file, dirs)
        loggers = [callback.plugin for callback in self.registry.callbacks.get("logging", ())]
        if loggers:
            self.log_threshold = max(getattr(p, "log_threshold", 7) for p in loggers)
        return errors

    # -- the API plugins see at load time (``qp`` in register) -------------------
    def config_list(self, name: str) -> List[str]:
        return self.config.lines(name)

    def config_map(self, name: str) -> Mapping[str, str]:
        return self.config.mapping(name)

    @property
    def me(self) -> str:
        return self.config.get("me") or os.uname().nodename

    def start_serving(self) -> None:
        """Run ``post-fork``: this process (a worker, or the only one) serves with these plugins from now on.

        The place for what a plugin must own per process (a connection to a
        database or a daemon), made after the fork.  A failure is logged with
        its traceback and the process serves on.
        """
        if self.registry.has("post-fork"):
            try:
                self.registry.run(self, "post-fork")
            except PluginFailure:
                pass  # the registry has logged it

    def log(self, level: int, message: str, hook: Optional[str] = None, plugin: Optional[str] = None,
            session: Any = None) -> None:
        """Route a log line to the logging plugins, or to stderr when there are none."""
        if level > self.log_threshold:
            return
        if self.registry.has("logging"):
            if _in_logging.get():
                return  # a logging plugin logging from inside its own hook
            token = _in_logging.set(True)
            try:
                # Outside a session (start-up, a plugin's own greenlet) the logging plugins see the daemon.
                self.registry.run(session if session is not None else self, "logging",
                                  (level, hook or "", plugin or "", message))
                return
            except PluginFailure as failure:
                message = "%s (and the logging plugin failed: %s)" % (message, failure)
            finally:
                _in_logging.reset(token)
        if level <= self.loglevel:
            sys.stderr.write(format_log_line(level, message, hook, plugin, session))
            sys.stderr.flush()


def spool_dir(config: Config) -> str:
    """Config ``spool_dir``, else a private directory under the system's temporary directory."""
    return config.get("spool_dir") or os.path.join(tempfile.gettempdir(), "qpgevent-spool-%d" % os.getuid())


def check_spool_dir(path: str, config: Config) -> None:
    """Create the spool dir (0700) or make sure the one there is ours and private.

    Messages wait there before they are queued: a directory another local
    user made or can read would hand them the mail.
    """
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        status = os.stat(path)
    except OSError as exc:
        raise ConfigError("spool_dir %s: %s; create it or name another" % (path, exc.strerror),
                          config.path("spool_dir") and str(config.path("spool_dir"))) from None
    if status.st_uid != os.getuid() or status.st_mode & 0o077:
        raise ConfigError("spool_dir %s must belong to uid %d with mode 0700 (it is uid %d, mode %o); "
                          "fix it with chown/chmod or name another directory"
                          % (path, os.getuid(), status.st_uid, status.st_mode & 0o777),
                          config.path("spool_dir") and str(config.path("spool_dir")))


def notice(text: str) -> None:
    """A line for the operator on stderr, when logging itself is in trouble; never raises."""
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def format_log_line(level: int, message: str, hook: Optional[str], plugin: Optional[str], session: Any) -> str:
    """``<pid> <connection id> (<hook>) <plugin>: <message>`` with the level name, one line."""
    connection = getattr(session, "connection", None)
    parts = [str(os.getpid())]
    if connection is not None:
        parts.append(connection.id)
    parts.append(LOG_LEVELS.get(level, str(level)))
    if hook:
        parts.append("(%s)" % hook)
    if plugin:
        parts.append(plugin + ":")
    return "%s %s\n" % (" ".join(parts), message.replace("\n", "\n    "))
