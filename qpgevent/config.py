"""qpsmtpd-compatible configuration files: one value per line, ``#`` comments, ``$include``."""
import os
import sysconfig
import time
from pathlib import Path
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

from .cdb import CdbFile
from .errors import ConfigError


def bundled_dir(name: str) -> Path:
    """The bundled ``plugins`` or ``config`` directory.

    In a checkout (or an editable install) it sits beside the package; a
    wheel installs it as data under ``<prefix>/share/qpgevent/`` (setup.py),
    ``<prefix>`` being the environment's, or the user's for ``pip install --user``.
    """
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "setup.py").is_file() and (checkout / name).is_dir():
        return checkout / name
    for scheme in (sysconfig.get_default_scheme(), "%s_user" % os.name):
        installed = Path(sysconfig.get_path("data", scheme)) / "share" / "qpgevent" / name
        if installed.is_dir():
            return installed
    return checkout / name  # found nowhere: errors name the checkout's path


DEFAULT_CONFIG_DIR = bundled_dir("config")
QMAIL_CONTROL = Path(os.environ.get("QMAIL", "/var/qmail")) / "control"

RECHECK_SECONDS = 1.0

# Values a file may leave out; everything else defaults to nothing.
BUILTIN_DEFAULTS = {
    "me": lambda: os.uname().nodename,
    "timeout": lambda: "300",
}


class Entry(NamedTuple):
    """One value with the file and line it came from, for error messages."""

    value: str
    path: str
    line: int


def config_dirs(config_dir: Union[str, Path, None] = None) -> List[Path]:
    """Directories searched per file, highest priority first (``--config-dir`` > ``$QPSMTPD_CONFIG`` > bundled)."""
    first = config_dir or os.environ.get("QPSMTPD_CONFIG") or DEFAULT_CONFIG_DIR
    dirs = [Path(first).resolve()]
    if QMAIL_CONTROL not in dirs:
        dirs.append(QMAIL_CONTROL)
    return dirs


def _stamp(path: Path) -> tuple:
    """What changes when a file is edited (mtime, size) or a directory gains or loses a file (its names)."""
    if path.is_dir():
        return tuple(sorted(p.name for p in path.iterdir()))
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


def _unchanged(depends: Sequence[tuple]) -> bool:
    """True if every included file and directory still has the stamp it had when read."""
    try:
        return all(_stamp(path) == stamp for path, stamp in depends)
    except OSError:
        return False


class Config:
    """Reads config files by name, caching each until it or a file it includes changes."""

    def __init__(self, config_dir: Union[str, Path, None] = None) -> None:
        self.dirs = config_dirs(config_dir)
        # path -> ([(path, stamp) of the file and of everything it includes], values)
        self._cache: Dict[Path, Tuple[List[tuple], List[Entry]]] = {}
        self._resolved: Dict[str, Tuple[float, Optional[Path], List[Entry]]] = {}
        self._maps: Dict[str, Tuple[float, Mapping[str, str]]] = {}
        self._cdbs: Dict[Path, Tuple[tuple, CdbFile]] = {}

    @property
    def directory(self) -> Path:
        return self.dirs[0]

    def path(self, name: str) -> Optional[Path]:
        """The file that holds ``name``: the first directory that has it."""
        for directory in self.dirs:
            candidate = directory / name
            if candidate.is_file():
                return candidate
        return None

    def lines(self, name: str) -> List[str]:
        """All values of ``name`` (an empty list when no file has it).

        A name is looked up on disk at most once a second, so a changed file
        is seen within a second without a stat() per SMTP command.
        """
        now = time.monotonic()
        known = self._resolved.get(name)
        if known is not None and now - known[0] < RECHECK_SECONDS:
            return known[2]
        path = self.path(name)
        if path is None:
            default = BUILTIN_DEFAULTS.get(name)
            values = [default()] if default else []
        else:
            values = [entry.value for entry in self._read(path, ())]
        self._resolved[name] = (now, path, values)
        return values

    def entries(self, name: str) -> List[Entry]:
        """The values of ``name`` with the file and line of each."""
        path = self.path(name)
        return self._read(path, ()) if path else []

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The first value of ``name``, or ``default``."""
        values = self.lines(name)
        return values[0] if values else default

    __call__ = get  # ``qp.config("me")`` at load time, as in qpsmtpd

    def mapping(self, name: str) -> Mapping[str, str]:
        """qpsmtpd's ``config(name, 'map')``: ``<name>.cdb`` if a directory has it, else the file ``name``.

        qpsmtpd reads only the cdb; a plain file (one ``key [value]`` a line,
        as qmail's ``morercpthosts`` before qmail-newmrh) is read when there
        is no cdb, so an admin without cdb tools can list entries too.  Like
        ``lines``, a name is looked up on disk at most once a second.
        """
        now = time.monotonic()
        known = self._maps.get(name)
        if known is not None and now - known[0] < RECHECK_SECONDS:
            return known[1]
        path = self.path(name + ".cdb")
        if path is None:
            result: Mapping[str, str] = {}
            for line in self.lines(name):
                key, *value = line.split(None, 1)
                result.setdefault(key, value[0] if value else "")
        else:
            result = self._cdb(path)
        self._maps[name] = (now, result)
        return result

    def _cdb(self, path: Path) -> CdbFile:
        """The cdb at ``path``, opened again once it has been replaced or changed."""
        try:
            stamp = _stamp(path)
        except OSError as exc:
            raise ConfigError("cannot read: %s" % exc.strerror, str(path)) from None
        cached = self._cdbs.get(path)
        if cached is None or cached[0] != stamp:
            try:
                cached = (stamp, CdbFile(path))
            except OSError as exc:
                raise ConfigError("cannot read: %s" % exc.strerror, str(path)) from None
            self._cdbs[path] = cached
        return cached[1]

    def reload(self) -> None:
        self._cache.clear()
        self._resolved.clear()
        self._maps.clear()
        self._cdbs.clear()

    def _read(self, path: Path, seen: Sequence[Path]) -> List[Entry]:
        if path in seen:
            raise ConfigError("circular $include of %s" % path, str(seen[-1]))
        try:
            stamp = _stamp(path)
            cached = self._cache.get(path)
            if cached and cached[0][0] == (path, stamp) and _unchanged(cached[0][1:]):
                return cached[1]
            raw = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise ConfigError("cannot read: %s" % exc.strerror, str(path)) from None
        values: List[Entry] = []
        depends = [(path, stamp)]
        for number, line in enumerate(raw.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("$include"):
                target = line[len("$include"):].strip()
                values.extend(self._include(path, number, target, [*seen, path], depends))
            else:
                values.append(Entry(line, str(path), number))
        self._cache[path] = (depends, values)
        return values

    def _include(self, path: Path, number: int, target: str, seen: List[Path], depends: list) -> List[Entry]:
        """The values of an included file or directory; what they came from is added to ``depends``."""
        included = Path(target) if os.path.isabs(target) else (self.path(target) or path.parent / target)
        if included.is_dir():
            depends.append((included, _stamp(included)))
            files = sorted(p for p in included.iterdir() if p.is_file() and not p.name.startswith("."))
        elif included.is_file():
            files = [included]
        else:
            raise ConfigError("$include %s: no such file; fix the path or remove the line" % target, str(path), number)
        values = []
        for file in files:
            values.extend(self._read(file, seen))
            depends.extend(self._cache[file][0])
        return values

    def ini(self, name: str, spec: Union[str, Sequence[str], None] = None):
        """``<name>.ini`` as a configobj, validated against ``spec`` (configobj configspec lines)."""
        from configobj import ConfigObj, ConfigObjError, flatten_errors
        from validate import Validator

        filename = name if name.endswith(".ini") else name + ".ini"
        path = self.path(filename)
        configspec = spec.splitlines() if isinstance(spec, str) else spec
        try:
            parsed = ConfigObj(str(path) if path else None, configspec=configspec, file_error=False, encoding="utf-8")
        except ConfigObjError as exc:
            line = getattr(exc, "line_number", None)
            raise ConfigError("%s; fix the syntax" % exc, str(path), line) from None
        if configspec is not None:
            result = parsed.validate(Validator(), preserve_errors=True)
            if result is not True:
                problems = []
                for sections, key, error in flatten_errors(parsed, result):
                    where = ".".join([*sections, key or "(section)"])
                    problems.append("%s: %s" % (where, error or "missing"))
                raise ConfigError("invalid settings: %s" % "; ".join(problems), str(path or self.directory / filename))
        return parsed
