"""The plugin loader (spec 4.5, 2.3): plugins file syntax, search path, registration order, start-up errors."""
import textwrap

import gevent
import pytest

from qpgevent.errors import ConfigError
from qpgevent.testing import TestSession, make_smtpd


@pytest.fixture
def plugin_dir(tmp_path):
    directory = tmp_path / "myplugins"
    directory.mkdir()
    return directory


@pytest.fixture
def write_plugin(plugin_dir):
    """``write_plugin("name", source)`` -> the path of ``<plugin_dir>/name.py`` holding the dedented source."""
    def write(name, source):
        path = plugin_dir / (name + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        return path
    return write


@pytest.fixture
def load(tmp_path, plugin_dir):
    """``load(plugins_lines, config)`` -> an Smtpd whose ``plugin_dirs`` is ``plugin_dir``."""
    def factory(plugins, config=None):
        values = {"plugin_dirs": str(plugin_dir)}
        values.update(config or {})
        return make_smtpd(tmp_path, plugins=plugins, config=values)
    return factory


RECORDER = """\
    from qpgevent import OK

    def register(self, qp, *args):
        self.module.CALLS.append(("register", self.name, args))

    CALLS = []
    """


def test_plugins_file_comments_args_and_subdirectories(load, write_plugin, tmp_path):
    """``# comments`` and blank lines are skipped; words after the name are args; ``dir/name`` is a sub-directory file."""
    write_plugin("first", RECORDER)
    write_plugin("sub/second", RECORDER)
    smtpd = load(["# a comment", "", "first one two  three", "   # indented comment", "sub/second"])
    assert [(p.name, p.args) for p in smtpd.plugins] == [("first", ["one", "two", "three"]), ("sub/second", [])]
    first, second = smtpd.plugins
    assert first.module.CALLS == [("register", "first", ("one", "two", "three"))]
    assert second.path == str(tmp_path / "myplugins" / "sub" / "second.py")


def test_numbered_instances_keep_separate_module_globals(load, write_plugin):
    """``name:0`` and ``name:1`` load the same file twice, each with its own module globals."""
    write_plugin("counter", """\
        COUNT = 0

        def register(self, qp, start):
            global COUNT
            COUNT = int(start)
        """)
    smtpd = load(["counter:0 5", "counter:1 7"])
    zero, one = smtpd.plugins
    assert (zero.name, one.name) == ("counter:0", "counter:1")
    assert zero.module is not one.module
    assert (zero.module.COUNT, one.module.COUNT) == (5, 7)


def test_plugin_dirs_are_searched_before_bundled_plugins(load, write_plugin):
    """A plugin in ``plugin_dirs`` shadows the bundled one of the same name; others still come from ``plugins/``."""
    write_plugin("rcpt_ok", """\
        from qpgevent import DENY

        def hook_rcpt(self, transaction, recipient, **params):
            return DENY, "the local rcpt_ok"
        """)
    smtpd = load(["rcpt_ok", "relay"])
    local, bundled = smtpd.plugins
    assert "myplugins" in local.path
    assert bundled.path.endswith("plugins/relay.py") and "myplugins" not in bundled.path
    session = TestSession(smtpd)
    session.command("HELO client.test")
    session.command("MAIL FROM:<a@b.test>")
    assert session.command("RCPT TO:<c@d.test>")[0].text == "5.7.1 the local rcpt_ok"


def test_relative_plugin_dirs_are_relative_to_the_config_dirs_parent(tmp_path, write_plugin):
    """A relative ``plugin_dirs`` entry is resolved against the parent of the config directory."""
    write_plugin("relative_one", RECORDER)
    smtpd = make_smtpd(tmp_path, plugins=["relative_one"], config={"plugin_dirs": "myplugins"})
    assert smtpd.plugins[0].path == str(tmp_path / "myplugins" / "relative_one.py")


def test_auto_registration_follows_the_hook_catalogue(load, write_plugin):
    """``hook_*`` functions register in catalogue order (connect before helo before rcpt), whatever the file order."""
    write_plugin("many", """\
        def hook_rcpt(self, transaction, recipient, **params):
            return None

        def hook_connect(self, transaction):
            return None

        def hook_pre_connection(self, transaction, **params):
            return None

        def hook_helo(self, transaction, host, *extra):
            return None

        def not_a_hook(self):
            return None
        """)
    smtpd = load(["many"])
    registered = [hook for hook, callbacks in smtpd.registry.callbacks.items() if callbacks]
    assert registered == ["pre-connection", "connect", "helo", "rcpt"]


def test_init_then_hooks_then_register(load, write_plugin):
    """init() runs first, then the ``hook_*`` functions register, then register(); ``register_hook`` appends or prepends."""
    write_plugin("ordered", """\
        from qpgevent import DECLINED

        ORDER = []

        def init(self, qp, *args):
            ORDER.append("init")
            self.register_hook("rcpt", "from_init")

        def from_init(self, transaction, recipient, **params):
            return DECLINED

        def hook_rcpt(self, transaction, recipient, **params):
            return DECLINED

        def register(self, qp, *args):
            ORDER.append("register")
            self.register_hook("rcpt", "from_register")
            self.register_hook("rcpt", first_of_all, prepend=True)

        def from_register(self, transaction, recipient, **params):
            return DECLINED

        def first_of_all(self, transaction, recipient, **params):
            return DECLINED
        """)
    smtpd = load(["ordered"])
    plugin = smtpd.plugins[0]
    assert plugin.module.ORDER == ["init", "register"]
    names = [callback.function.__name__ for callback in smtpd.registry.callbacks["rcpt"]]
    assert names == ["first_of_all", "from_init", "hook_rcpt", "from_register"]


def test_plugins_run_in_file_order(load, write_plugin):
    """Two rcpt plugins run in the order of the plugins file; the first that decides wins."""
    write_plugin("says_no", """\
        from qpgevent import DENY

        def hook_rcpt(self, transaction, recipient, **params):
            return DENY, "no from %s" % self.name
        """)
    write_plugin("says_yes", """\
        from qpgevent import OK

        def hook_rcpt(self, transaction, recipient, **params):
            return OK
        """)
    for order, code in ((["says_no", "says_yes"], 550), (["says_yes", "says_no"], 250)):
        session = TestSession(load(order))
        session.command("HELO client.test")
        session.command("MAIL FROM:<a@b.test>")
        assert session.command("RCPT TO:<c@d.test>")[0].code == code


# -- start-up errors ----------------------------------------------------------------------------------

def test_misspelled_hook_names_file_line_and_fix(load, write_plugin):
    """``hook_rcpy``: ConfigError at load naming the plugin file and the function's line, suggesting ``hook_rcpt``."""
    path = write_plugin("typo", """\
        from qpgevent import OK


        def hook_rcpy(self, transaction, recipient, **params):
            return OK
        """)
    with pytest.raises(ConfigError) as caught:
        load(["typo"])
    assert (caught.value.path, caught.value.line) == (str(path), 4)
    assert "hook_rcpy" in str(caught.value) and "hook_rcpt" in str(caught.value)


def test_missing_plugin_names_plugins_file_line_and_a_close_name(load, tmp_path):
    """An unknown plugin: ConfigError naming ``config/plugins`` and its line, suggesting the closest plugin name."""
    with pytest.raises(ConfigError) as caught:
        load(["# first line is a comment", "rcpt_okk"])
    assert (caught.value.path, caught.value.line) == (str(tmp_path / "config" / "plugins"), 2)
    assert "'rcpt_okk' not found" in str(caught.value) and "did you mean 'rcpt_ok'" in str(caught.value)


@pytest.mark.parametrize("source, error", [
    ("def hook_rcpt(self, transaction\n", "SyntaxError"),
    ("import no_such_module_for_qpgevent_tests\n", "ModuleNotFoundError"),
    ("raise RuntimeError('broken at import')\n", "RuntimeError: broken at import"),
], ids=["syntax", "import", "raises"])
def test_plugin_that_fails_to_import_names_plugins_file_line(load, write_plugin, tmp_path, source, error):
    """A plugin file that does not import: ConfigError with ``config/plugins`` file:line, the plugin path and the error."""
    path = write_plugin("broken", source)
    with pytest.raises(ConfigError) as caught:
        load(["relay", "broken"])
    assert (caught.value.path, caught.value.line) == (str(tmp_path / "config" / "plugins"), 2)
    message = str(caught.value)
    assert message.startswith("%s:2: " % (tmp_path / "config" / "plugins"))
    assert str(path) in message and error in message


def test_register_raising_value_error_names_config_line_and_message(load, write_plugin, tmp_path):
    """``register`` raising ValueError stops start-up: ConfigError with the plugins file:line and the plugin's message."""
    write_plugin("picky", """\
        def register(self, qp, *args):
            if args != ("good",):
                raise ValueError("picky wants 'good', not %r; fix config/plugins" % " ".join(args))
        """)
    assert load(["picky good"]).plugins[0].args == ["good"]
    with pytest.raises(ConfigError) as caught:
        load(["relay", "", "picky bad"])
    assert (caught.value.path, caught.value.line) == (str(tmp_path / "config" / "plugins"), 3)
    assert "picky wants 'good', not 'bad'; fix config/plugins" in str(caught.value)


def test_non_ascii_plugin_line_is_refused(load, tmp_path):
    """A plugins line with non-ASCII (or control) characters: ConfigError naming the file and line."""
    for line in ["relay ärger", "relay\x01"]:
        with pytest.raises(ConfigError) as caught:
            load([line])
        assert (caught.value.path, caught.value.line) == (str(tmp_path / "config" / "plugins"), 1)
        assert "ASCII" in str(caught.value)


def test_no_plugins_file_is_an_error(tmp_path):
    """A config dir without a ``plugins`` file refuses to start and says which file to create."""
    from qpgevent.smtpd import Smtpd
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no plugins file"):
        Smtpd(tmp_path / "empty")


# -- per-session context ----------------------------------------------------------------------------------

def test_concurrent_sessions_never_see_each_others_qp(load, write_plugin):
    """Two sessions in two greenlets on one daemon: a plugin that yields mid-hook still sees its own ``self.qp``."""
    write_plugin("slow_rcpt", """\
        import gevent
        from qpgevent import OK

        SEEN = []

        def hook_rcpt(self, transaction, recipient, **params):
            before = self.qp.connection.remote_ip
            gevent.sleep(0.01)
            SEEN.append((recipient.user, before, self.qp.connection.remote_ip, self.transaction is transaction))
            return OK
        """)
    smtpd = load(["slow_rcpt"])
    plugin = smtpd.plugins[0]

    def client(ip):
        session = TestSession(smtpd, remote_ip=ip)
        session.command("HELO client.test")
        session.command("MAIL FROM:<a@b.test>")
        codes = [session.command("RCPT TO:<%s@d.test>" % ip.replace(".", "-"))[0].code for _ in range(3)]
        return codes

    first = gevent.spawn(client, "192.0.2.1")
    second = gevent.spawn(client, "198.51.100.2")
    gevent.joinall([first, second], timeout=10, raise_error=True)
    assert first.value == second.value == [250, 250, 250]
    seen = plugin.module.SEEN
    assert len(seen) == 6
    for user, before, after, same_transaction in seen:
        assert user.replace("-", ".") == before == after
        assert same_transaction
    # The greenlets really interleaved: both had started before either finished.
    assert {entry[1] for entry in seen[:2]} == {"192.0.2.1", "198.51.100.2"}
