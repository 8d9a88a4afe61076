"""The one plugin-argument parser (qpgevent/arguments.py): declared arguments, defaults, every fault at once."""
import textwrap

import pytest

from qpgevent import arguments
from qpgevent.errors import ConfigError
from qpgevent.testing import make_smtpd

DECLARED = {
    "wait": arguments.number(default=1, minimum=0),
    "max": arguments.integer(default=4, minimum=1, maximum=10),
    "policy": arguments.choice("lenient", "rfc", "strict", default="lenient"),
    "check-at": arguments.choice("CONNECT", "DATA", repeat=True),
    "strict": arguments.flag(),
    "require": arguments.words(default="From,Date"),
}


def test_defaults_when_the_line_says_nothing():
    options = arguments.parse([], DECLARED)
    assert (options.wait, options.max, options.policy, options.check_at, options.strict, options.require) == \
        (1, 4, "lenient", None, False, ["From", "Date"])
    assert (options.reject, options.reject_type, options.loglevel) == (None, None, None)


def test_values_are_converted_and_repeats_collected():
    options = arguments.parse(["wait", "0.5", "policy", "STRICT", "check-at", "connect", "check-at", "DATA",
                               "strict", "yes", "require", "From,Date,Subject", "reject", "naughty",
                               "reject_type", "temp"], DECLARED)
    assert (options.wait, options.policy, options.check_at, options.strict, options.require) == \
        (0.5, "strict", ["CONNECT", "DATA"], True, ["From", "Date", "Subject"])
    assert (options.reject, options.reject_type) == ("naughty", "temp")


def test_positional_words_fill_named_slots_before_the_pairs():
    assert arguments.parse(["7"], DECLARED, positional=["max"]).max == 7
    options = arguments.parse(["7", "policy", "rfc"], DECLARED, positional=["max"])
    assert (options.max, options.policy) == (7, "rfc")
    assert arguments.parse(["policy", "rfc"], DECLARED, positional=["max"]).max == 4


def test_a_positional_slot_may_also_be_given_as_a_pair():
    """``loop max_hops 50`` as well as ``loop 50``: the slot's own name starts the pairs, it is not its value."""
    assert arguments.parse(["max", "7"], DECLARED, positional=["max"]).max == 7
    assert arguments.parse(["loglevel", "+1"], DECLARED, positional=["loglevel"]).loglevel == "+1"


def test_every_fault_is_reported_at_once():
    with pytest.raises(ValueError) as caught:
        arguments.parse(["wiat", "2", "max", "11", "policy", "loose", "reject", "maybe", "wait", "1", "wait", "2",
                         "strict"], DECLARED)
    message = str(caught.value)
    for fault in ["unknown argument 'wiat' (did you mean 'wait'?)", "max takes a whole number at least 1 at most 10, not '11'",
                  "policy takes one of lenient, rfc, strict, not 'loose'", "reject takes one of 0, 1, naughty, not 'maybe'",
                  "wait is given twice", "'strict' has no value"]:
        assert fault in message


def test_a_plugin_may_declare_its_own_reject_values():
    options = arguments.parse(["reject", "6"], {"reject": arguments.integer(minimum=1, maximum=6)})
    assert options.reject == 6


def test_the_loader_stops_start_up_at_the_plugins_line(tmp_path):
    plugins = tmp_path / "myplugins"
    plugins.mkdir()
    (plugins / "declared.py").write_text(textwrap.dedent("""\
        from qpgevent import arguments

        ARGUMENTS = {"wait": arguments.number(default=1, minimum=0)}
        """))
    smtpd = make_smtpd(tmp_path, plugins=["declared wait 3"], config={"plugin_dirs": str(plugins)})
    assert smtpd.plugins[0].options.wait == 3
    with pytest.raises(ConfigError) as caught:
        make_smtpd(tmp_path, plugins=["relay", "declared wait -1 colour blue"], config={"plugin_dirs": str(plugins)})
    assert (caught.value.path, caught.value.line) == (str(tmp_path / "config" / "plugins"), 2)
    assert "wait takes a number at least 0, not '-1'" in str(caught.value)
    assert "unknown argument 'colour'" in str(caught.value)
