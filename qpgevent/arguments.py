"""The one parser of plugin arguments: a plugin declares what its line may say, the loader checks it at start-up.

A plugin file declares::

    ARGUMENTS = {
        "wait": arguments.number(default=1, minimum=0),
        "policy": arguments.choice("lenient", "rfc", "strict", default="lenient"),
        "require": arguments.words(default="From,Date"),
    }
    POSITIONAL = ["max"]        # optional: leading bare words fill these, in order

and reads ``self.options.wait`` (a dash in a name becomes ``_``).  qpsmtpd's
arguments come as ``key value`` pairs after the plugin name; the generic
``loglevel``, ``reject`` and ``reject_type`` are always understood (a plugin
may declare its own ``reject`` to take other values, as sender_permitted_from's
levels 1-6).  Every fault on the line is reported at once, naming the argument
and what it takes, so start-up stops with the whole fix.
"""
import difflib
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

REJECT_TYPES = ("perm", "hard", "temp", "soft", "disconnect", "temp_disconnect")
_TRUE = ("1", "yes", "true", "on")
_FALSE = ("0", "no", "false", "off")


class Argument:
    """One named argument: how to read its text, its default, and whether it may be given more than once."""

    def __init__(self, convert: Callable[[str], Any], takes: str, default: Any = None, repeat: bool = False) -> None:
        self.convert = convert
        self.takes = takes  # what the error message says it takes
        self.default = default
        self.repeat = repeat

    def read(self, text: str) -> Any:
        """The value of ``text``; ValueError when it is not one this argument takes."""
        return self.convert(text)


def number(default: Optional[float] = None, minimum: Optional[float] = None,
           maximum: Optional[float] = None) -> Argument:
    """A number (fractions allowed) within ``minimum``..``maximum``."""
    return _bounded(float, "a number", default, minimum, maximum)


def integer(default: Optional[int] = None, minimum: Optional[int] = None, maximum: Optional[int] = None) -> Argument:
    """A whole number within ``minimum``..``maximum``."""
    return _bounded(int, "a whole number", default, minimum, maximum)


def _bounded(kind: Callable[[str], Any], name: str, default: Any, minimum: Any, maximum: Any) -> Argument:
    bounds = [("at least %s" % minimum) if minimum is not None else "", ("at most %s" % maximum) if maximum is not None else ""]
    takes = " ".join([name] + [b for b in bounds if b])

    def convert(text: str) -> Any:
        value = kind(text)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise ValueError(text)
        return value

    return Argument(convert, takes, default)


def flag(default: bool = False) -> Argument:
    """On or off: 1/0, yes/no, true/false, on/off."""
    def convert(text: str) -> bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(text)

    return Argument(convert, "1 or 0", default)


def choice(*values: str, default: Optional[str] = None, repeat: bool = False) -> Argument:
    """One of ``values`` (matched regardless of case; the value as declared is kept)."""
    by_lower = {value.lower(): value for value in values}

    def convert(text: str) -> str:
        return by_lower[text.lower()]

    return Argument(convert, "one of " + ", ".join(values), default, repeat)


def text(default: Optional[str] = None, repeat: bool = False) -> Argument:
    """Any word, as given."""
    return Argument(str, "a word", default, repeat)


def words(default: Optional[str] = None, separator: str = ",") -> Argument:
    """A ``separator``-joined list of words (``From,Date``), as a list."""
    def convert(value: str) -> List[str]:
        return [word for word in value.split(separator) if word]

    return Argument(convert, "words joined by %r" % separator, convert(default) if default is not None else None)


GENERIC: Dict[str, Argument] = {
    "loglevel": text(),  # checked by plugin.parse_loglevel, which knows the level names
    "reject": choice("0", "1", "naughty"),
    "reject_type": choice(*REJECT_TYPES),
}


def parse(args: Sequence[str], declared: Mapping[str, Argument], positional: Sequence[str] = ()) -> SimpleNamespace:
    """The options ``args`` give, by ``declared`` (plus GENERIC); ValueError lists every fault at once."""
    known = {**GENERIC, **declared}
    faults: List[str] = []
    values: Dict[str, Any] = {}
    words_left = list(args)
    for name in positional:
        if not words_left or words_left[0] in known:
            break  # a known key starts the pairs, even the slot's own name (``loop max_hops 50``)
        _take(name, known[name], words_left.pop(0), values, faults)
    if len(words_left) % 2:
        faults.append("arguments after the plugin name come in pairs (key value); %r has no value" % words_left[-1])
        words_left = words_left[:-1]
    for key, value in zip(words_left[::2], words_left[1::2]):
        if key not in known:
            guess = difflib.get_close_matches(key, known, n=1)
            faults.append("unknown argument %r%s; known ones are %s"
                          % (key, " (did you mean %r?)" % guess[0] if guess else "", ", ".join(sorted(known))))
            continue
        _take(key, known[key], value, values, faults)
    if faults:
        raise ValueError("; ".join(faults))
    options = {name: argument.default for name, argument in known.items()}
    options.update(values)
    return SimpleNamespace(**{name.replace("-", "_"): value for name, value in options.items()})


def _take(name: str, argument: Argument, text: str, values: Dict[str, Any], faults: List[str]) -> None:
    try:
        value = argument.read(text)
    except (ValueError, KeyError):
        faults.append("%s takes %s, not %r" % (name, argument.takes, text))
        return
    if argument.repeat:
        values.setdefault(name, []).append(value)
    elif name in values:
        faults.append("%s is given twice" % name)
    else:
        values[name] = value
