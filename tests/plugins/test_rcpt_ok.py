"""rcpt_ok: recipients in me/rcpthosts are accepted, others only from relay clients."""
import pytest

CONFIG = {"me": "mx.test", "rcpthosts": ["example.com", ".example.net"]}
DENIED = "550 5.7.1 Relaying denied (#5.7.1)"


def rcpt(ts, address):
    return [str(r) for r in ts.command("RCPT TO:<%s>" % address)]


@pytest.fixture
def ts(session_factory):
    """A session with rcpt_ok alone, past MAIL FROM."""
    session = session_factory(["rcpt_ok"], CONFIG)
    session.command("EHLO client.test")
    session.command("MAIL FROM:<a@sender.test>")
    return session


@pytest.mark.parametrize("address", [
    "u@example.com",
    "U@EXAMPLE.COM",            # domains compare without case
    "u@example.com.",           # a trailing root dot is the same domain
    "u@mx.test",                # me
    "u@a.example.net",          # .example.net: any subdomain
    "u@b.a.example.net",
])
def test_our_domains_are_accepted(ts, address):
    """Recipients in me or rcpthosts (leading dot = subdomains) get 250 2.1.5."""
    assert rcpt(ts, address) == ["250 2.1.5 <%s>, recipient ok" % address]


@pytest.mark.parametrize("address", [
    "u@elsewhere.test",
    "u@sub.example.com",        # no leading dot: only the domain itself
    "u@example.net",            # leading dot: subdomains only, not the domain
    "u@badexample.net",
    "u@example.com.evil.test",
])
def test_other_domains_are_refused(ts, address):
    """Anything else gets 550 5.7.1 Relaying denied, and is not added."""
    assert rcpt(ts, address) == [DENIED]
    assert ts.transaction.recipients == []


@pytest.mark.parametrize("address", ["postmaster", "Postmaster", "POSTMASTER"])
def test_postmaster_without_domain(ts, address):
    """<postmaster> with no domain (RFC 5321 4.5.1) is always accepted."""
    assert rcpt(ts, address)[0].startswith("250 2.1.5 ")


def test_relay_client_may_send_anywhere(session_factory):
    """A relay client (here through relay and relayclients) gets 250 for a foreign domain."""
    ts = session_factory(["relay", "rcpt_ok"], dict(CONFIG, relayclients=["127.0.0.1"]))
    ts.command("EHLO client.test")
    ts.command("MAIL FROM:<a@sender.test>")
    assert rcpt(ts, "someone@elsewhere.test") == ["250 2.1.5 <someone@elsewhere.test>, recipient ok"]
    assert [r.address for r in ts.transaction.recipients] == ["someone@elsewhere.test"]


def test_rcpthosts_changes_apply_without_restart(ts):
    """rcpthosts is read through config at each RCPT (here answered by the config hook)."""
    assert rcpt(ts, "u@new.test") == [DENIED]
    ts.mock_config(rcpthosts=["new.test"])
    assert rcpt(ts, "u@new.test")[0].startswith("250 ")


@pytest.mark.parametrize("rcpthosts, address", [
    ("bücher.example", "u@xn--bcher-kva.example"),       # U-label listed, A-label sent (no SMTPUTF8 needed)
    ("xn--bcher-kva.example", "u@bücher.example"),       # A-label listed, U-label sent with SMTPUTF8
    ("XN--BCHER-KVA.example", "u@Bücher.Example"),       # case in either form
    (".bücher.example", "u@mail.xn--bcher-kva.example"),  # a leading dot covers subdomains in both forms
])
def test_internationalised_domains_match_in_either_form(session_factory, rcpthosts, address):
    """A domain in rcpthosts matches its other IDNA form (RFC 6531 clients send U-labels, others A-labels)."""
    ts = session_factory(["rcpt_ok"], {"me": "mx.test", "rcpthosts": [rcpthosts]})
    ts.command("EHLO client.test")
    utf8 = not address.isascii()
    assert ts.command("MAIL FROM:<a@sender.test>%s" % (" SMTPUTF8" if utf8 else ""))[0].code == 250
    assert rcpt(ts, address) == ["250 2.1.5 <%s>, recipient ok" % address]


def test_a_different_internationalised_domain_is_still_refused(session_factory):
    """Matching by IDNA form does not widen rcpthosts: bücher is not bucher."""
    ts = session_factory(["rcpt_ok"], {"me": "mx.test", "rcpthosts": ["bücher.example"]})
    ts.command("EHLO client.test")
    ts.command("MAIL FROM:<a@sender.test>")
    assert rcpt(ts, "u@bucher.example") == [DENIED]
    assert rcpt(ts, "u@xn--bcher-kva.example.evil.test") == [DENIED]
