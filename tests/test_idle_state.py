"""What an idle session holds: no Transaction before MAIL, exactly one from MAIL on; O(1) address counts."""
import pytest

import qpgevent.transaction
from qpgevent import DECLINED
from qpgevent.limits import ConnectionLimits
from qpgevent.testing import TestSession, make_smtpd

SHIPPED_PLUGINS = ["hosts_allow", "count_unrecognized_commands 4", "relay", "rcpt_ok"]  # config/plugins, less the queue


@pytest.fixture
def made(monkeypatch):
    """A list that grows by one for every Transaction built."""
    built = []
    original = qpgevent.transaction.Transaction.__init__

    def counting_init(self, *args, **kwargs):
        built.append(self)
        original(self, *args, **kwargs)
    monkeypatch.setattr(qpgevent.transaction.Transaction, "__init__", counting_init)
    return built


def shipped_session(tmp_path):
    smtpd = make_smtpd(tmp_path, plugins=SHIPPED_PLUGINS + ["queue/maildir %s" % (tmp_path / "Maildir")],
                       config={"me": "mx.test", "rcpthosts": "example.com"})
    return TestSession(smtpd, greet=False)


def test_greeting_ehlo_and_noop_build_no_transaction(tmp_path, made):
    """With the shipped plugins, connect, EHLO, HELP-less chatter and NOOP leave the session without a Transaction."""
    session = shipped_session(tmp_path)
    session.start(max_conn_ip=0, child_addrs=["127.0.0.1"])
    assert session.greeting[0].code == 220
    assert session.command("EHLO client.test")[0].code == 250
    assert session.command("NOOP")[0].code == 250
    assert session.command("RSET")[0].code == 250
    assert made == []


def test_mail_builds_exactly_one_transaction(tmp_path, made):
    """MAIL builds one Transaction, which RCPT and DATA use; the next MAIL one more."""
    session = shipped_session(tmp_path)
    session.start()
    session.command("EHLO client.test")
    assert session.command("MAIL FROM:<a@example.org>")[0].code == 250
    assert len(made) == 1
    assert session.command("RCPT TO:<b@example.com>")[0].code == 250
    assert session.data("Subject: x\n\nbody\n")[-1].code == 250
    assert len(made) == 1
    assert session.command("MAIL FROM:<c@example.org>")[0].code == 250
    assert len(made) == 2


def test_a_hook_that_uses_the_transaction_before_mail_gets_a_real_one(tmp_path, made):
    """A qpsmtpd-style plugin may write transaction notes in its ehlo hook and read them in a later hook."""
    session = shipped_session(tmp_path)
    seen = []
    session.mock_hook("ehlo", lambda plugin, transaction, host, *rest: transaction.notes.update(ehlo=host) or DECLINED)
    session.mock_hook("noop", lambda plugin, transaction: seen.append(transaction.notes.get("ehlo")) or DECLINED)
    session.start()
    assert session.command("EHLO client.test")[0].code == 250
    assert len(made) == 1
    assert session.command("NOOP")[0].code == 250
    assert seen == ["client.test"]
    assert len(made) == 1


def test_child_addrs_counts_sessions_per_address_without_a_list():
    """The pre-connection hook's child_addrs: count(ip) is the open sessions from ip, kept up to date per
    accept and close; iterating it lists each address once per session, as qpsmtpd's list did."""
    limits = ConnectionLimits(0, 0)
    for ip in ["192.0.2.1", "192.0.2.2", "192.0.2.1"]:
        limits.enter(ip)
    addresses = limits.addresses
    assert (addresses.count("192.0.2.1"), addresses.count("192.0.2.2"), addresses.count("192.0.2.9")) == (2, 1, 0)
    assert sorted(addresses) == ["192.0.2.1", "192.0.2.1", "192.0.2.2"]
    limits.leave("192.0.2.1")
    limits.leave("192.0.2.2")
    assert (addresses.count("192.0.2.1"), addresses.count("192.0.2.2"), "192.0.2.2" in addresses) == (1, 0, False)
