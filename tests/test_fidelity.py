"""qpsmtpd's own config files keep working: cdb maps, relay, rcpt_ok, earlytalker and the auth plugins.

Every config file here is written in qpsmtpd's format (several copied from
its ``config.sample``); the cdb files are built in the test from the
published format (https://cr.yp.to/cdb/cdb.txt), not with our reader's code.
"""
import base64
import shutil
import smtplib
import socket
import struct
import sys

import pytest

from qpgevent import config as config_module
from qpgevent.cdb import CdbFile
from qpgevent.errors import ConfigError
from qpgevent.testing import TestSession, make_smtpd, read_reply

DENIED = "550 5.7.1 Relaying denied (#5.7.1)"


# -- cdb files -------------------------------------------------------------------------------
def djb_hash(key):
    h = 5381
    for byte in key:
        h = ((h * 33) ^ byte) % 2 ** 32
    return h


def cdb_bytes(pairs):
    """A cdb holding ``pairs`` (str or bytes), laid out as cdb.txt describes: header, records, hash tables."""
    pairs = [(k.encode() if isinstance(k, str) else k, v.encode() if isinstance(v, str) else v) for k, v in pairs]
    records, slots_of = b"", {i: [] for i in range(256)}
    for key, value in pairs:
        slots_of[djb_hash(key) % 256].append((djb_hash(key), 2048 + len(records)))
        records += struct.pack("<LL", len(key), len(value)) + key + value
    header, tables = b"", b""
    for i in range(256):
        entries = slots_of[i]
        table = [(0, 0)] * (2 * len(entries))
        for h, position in entries:
            slot = (h >> 8) % len(table)
            while table[slot][1]:
                slot = (slot + 1) % len(table)
            table[slot] = (h, position)
        header += struct.pack("<LL", 2048 + len(records) + len(tables), len(table))
        tables += b"".join(struct.pack("<LL", *entry) for entry in table)
    return header + records + tables


def write_cdb(path, keys):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cdb_bytes([(key, "") for key in keys]))


def test_cdb_reader_finds_every_key_of_a_published_format_file(tmp_path):
    """Hundreds of keys (so hash tables share slots and wrap), a duplicate (the first record wins), a key
    that is absent, and listing all keys."""
    keys = ["host%d.example" % n for n in range(600)]
    path = tmp_path / "big.cdb"
    path.write_bytes(cdb_bytes([(key, "v" + key) for key in keys] + [("host7.example", "second")]))
    cdb = CdbFile(path)
    assert all(cdb[key] == "v" + key for key in keys)
    assert "host600.example" not in cdb and cdb.get("nothing") is None
    assert sorted(cdb) == sorted(keys) and len(cdb) == 600


def test_empty_cdb_has_no_keys(tmp_path):
    (tmp_path / "empty.cdb").write_bytes(cdb_bytes([]))
    assert dict(CdbFile(tmp_path / "empty.cdb")) == {}


@pytest.mark.parametrize("damage", [lambda data: data[:1000], lambda data: data[:-100]])
def test_damaged_cdb_stops_start_up_naming_the_file(tmp_path, damage):
    """A truncated morercpthosts.cdb is a start-up error that names the file and says how to replace it."""
    path = tmp_path / "config" / "morercpthosts.cdb"
    path.parent.mkdir()
    path.write_bytes(damage(cdb_bytes([("a.test", "")])))
    with pytest.raises(ConfigError, match="not a cdb file") as caught:
        make_smtpd(tmp_path, plugins=["rcpt_ok"])
    assert str(path) in str(caught.value) and "cdbdump" in str(caught.value)


def test_config_map_reads_cdb_else_plain_file_and_sees_a_replaced_cdb(tmp_path, monkeypatch):
    """qp.config_map(name): name.cdb when there is one; else 'key value' lines of name; a new cdb is seen."""
    monkeypatch.setattr(config_module, "RECHECK_SECONDS", 0)
    smtpd = make_smtpd(tmp_path, config={"things": ["# comment", "alpha one two", "beta"]})
    assert dict(smtpd.config_map("things")) == {"alpha": "one two", "beta": ""}
    write_cdb(tmp_path / "config" / "things.cdb", ["gamma"])
    assert dict(smtpd.config_map("things")) == {"gamma": ""}
    (tmp_path / "config" / "things.cdb").write_bytes(cdb_bytes([("delta", "4"), ("epsilon", "5")]))
    assert dict(smtpd.config_map("things")) == {"delta": "4", "epsilon": "5"}
    assert dict(smtpd.config_map("nothing")) == {}


# -- relay --------------------------------------------------------------------------------------
# qpsmtpd's config.sample/relayclients, verbatim.
QPSMTPD_RELAYCLIENTS = [
    "# used by plugins/relay", "# IPv4 format is IP, or IP part with trailing dot", '# e.g. "127.0.0.1", or "192.168."',
    "127.0.0.1 ", "# leading/trailing whitespace is ignored", " 192.0. ", "#",
    "# IPv6 formats can be compressed or expanded, may include a prefixlen,",
    "# and can end on any nibble boundary. Nibble boundaries must be expressed",
    "# in expanded format.  (RFC 3849 example)", "2001:0DB8", "2001:DB8::1", "2001:DB8::1/32",
    "2001:0DB8:0000:0000:0000:0000:0000:0001",
]


def relay_session(smtpd, ip):
    ts = TestSession(smtpd, remote_ip=ip)
    ts.command("EHLO client.test")
    ts.command("MAIL FROM:<a@sender.test>")
    return ts


@pytest.mark.parametrize("ip, may_relay", [
    ("127.0.0.1", True),
    ("192.0.7.1", True),             # " 192.0. " with white space around it
    ("192.1.0.1", False),
    ("2001:db8:ffff::9", True),      # "2001:0DB8": a prefix without the trailing colon, in upper case
    ("2001:db9::1", False),
])
def test_qpsmtpd_sample_relayclients(smtpd_factory, ip, may_relay):
    """qpsmtpd's sample relayclients, IPv6 prefixes ending on a hex digit included, lets the same clients relay."""
    smtpd = smtpd_factory(["relay", "rcpt_ok"], {"relayclients": QPSMTPD_RELAYCLIENTS})
    replies = [str(r) for r in relay_session(smtpd, ip).command("RCPT TO:<u@elsewhere.test>")]
    assert replies[0].startswith("250 ") if may_relay else replies == [DENIED]


@pytest.mark.parametrize("ip, may_relay", [
    ("2001:db8:a::1", True),         # "2001:0DB8:000A": whole groups, no trailing colon (a /48)
    ("2001:db8:b5::1", True),        # "2001:0db8:00b": ends inside a group (a /44: 00b0 to 00bf)
    ("2001:db8:c::1", False),
    ("2001:db8:bb0::1", False),
])
def test_ipv6_prefixes_without_trailing_colon(smtpd_factory, ip, may_relay):
    """relayclients entries that end on any hex digit of the expanded address, as qpsmtpd matches them."""
    smtpd = smtpd_factory(["relay", "rcpt_ok"], {"relayclients": ["2001:0DB8:000A", "2001:0db8:00b"]})
    replies = [str(r) for r in relay_session(smtpd, ip).command("RCPT TO:<u@elsewhere.test>")]
    assert replies[0].startswith("250 ") if may_relay else replies == [DENIED]


@pytest.mark.parametrize("ip, may_relay", [
    ("198.51.100.7", True),          # key "198.51.100.7"
    ("203.0.113.9", True),           # key "203.0." (qpsmtpd strips an IPv4 address octet by octet)
    ("203.1.113.9", False),
    ("2001:db8:1::5", True),         # key "2001:0db8:0001" (a nibble prefix of the expanded address)
    ("2001:db8:2::5", False),
    ("::ffff:198.51.100.7", True),   # an IPv4-mapped client is its IPv4 address
])
def test_morerelayclients_cdb(smtpd_factory, tmp_path, ip, may_relay):
    """morerelayclients.cdb is looked up with qpsmtpd's keys for the client address."""
    write_cdb(tmp_path / "config" / "morerelayclients.cdb", ["198.51.100.7", "203.0.", "2001:0db8:0001"])
    smtpd = smtpd_factory(["relay", "rcpt_ok"], {"rcpthosts": ["example.com"]})
    replies = [str(r) for r in relay_session(smtpd, ip).command("RCPT TO:<u@elsewhere.test>")]
    assert replies[0].startswith("250 ") if may_relay else replies == [DENIED]


def test_norelayclients_beats_morerelayclients(smtpd_factory, tmp_path):
    write_cdb(tmp_path / "config" / "morerelayclients.cdb", ["203.0."])
    smtpd = smtpd_factory(["relay", "rcpt_ok"], {"norelayclients": ["203.0.113.9"]})
    assert [str(r) for r in relay_session(smtpd, "203.0.113.9").command("RCPT TO:<u@elsewhere.test>")] == [DENIED]


def smtp_rcpt(server, *recipients):
    """RCPT replies (code, text) from a real client after EHLO and MAIL."""
    with smtplib.SMTP(*server.address, timeout=10) as smtp:
        smtp.ehlo("client.test")
        smtp.mail("a@sender.test")
        return [smtp.rcpt(recipient) for recipient in recipients]


def test_relay_only_answers_as_qpsmtpd(live_server, tmp_path):
    """relay only 1: an outsider's every RCPT gets qpsmtpd's '550 relaying denied'; a relay client (here from
    morerelayclients.cdb) has its recipients accepted by relay itself, before a later plugin that refuses all."""
    files = {"refuse_all.py": "from qpgevent import DENY\n\n\ndef hook_rcpt(self, transaction, recipient, **p):\n"
                              "    return DENY, 'refuse_all says no'\n"}
    plugins = ["relay only 1", "refuse_all", "rcpt_ok", "queue/maildir %s" % (tmp_path / "Maildir")]
    outsider = live_server(plugins=plugins, plugin_files=files)
    assert smtp_rcpt(outsider, "u@example.com") == [(550, b"5.7.1 relaying denied")]
    outsider.stop()
    write_cdb(tmp_path / "config" / "morerelayclients.cdb", ["127.0.0."])
    insider = live_server(plugins=plugins, plugin_files=files)
    assert smtp_rcpt(insider, "u@elsewhere.test") == [(250, b"2.1.5 <u@elsewhere.test>, recipient ok")]


# -- rcpt_ok ------------------------------------------------------------------------------------
def test_morercpthosts_cdb_over_a_socket(live_server, tmp_path):
    """morercpthosts.cdb (as qmail-newmrh makes it: lower-case keys) adds domains; '.parent' keys add
    subdomains as in qmail; anything else is still refused."""
    write_cdb(tmp_path / "config" / "morercpthosts.cdb", ["more.test", ".sub.test"])
    server = live_server()
    assert [code for code, _ in smtp_rcpt(server, "u@more.test", "u@MORE.test", "u@a.sub.test", "u@example.com",
                                          "u@sub.test", "u@x.more.test", "u@other.test")] == \
        [250, 250, 250, 250, 550, 550, 550]


def test_plain_morercpthosts_without_cdb(session_factory):
    ts = session_factory(["rcpt_ok"], {"morercpthosts": ["plain.test"]})
    ts.command("EHLO client.test")
    ts.command("MAIL FROM:<a@sender.test>")
    assert ts.command("RCPT TO:<u@plain.test>")[0].code == 250
    assert [str(r) for r in ts.command("RCPT TO:<u@other.test>")] == [DENIED]


def test_bare_postmaster_and_abuse_are_ours(live_server):
    """RFC 5321 4.1.1.3: <postmaster> without a domain is ours; so is <abuse>, as qpsmtpd's rcpt_ok maps it to
    `me`.  Any other local part without a domain is still no address (501)."""
    server = live_server()
    replies = smtp_rcpt(server, "<postmaster>", "<Postmaster>", "<abuse>", "<Abuse>", "<webmaster>")
    assert [code for code, _ in replies] == [250, 250, 250, 250, 501]


# -- earlytalker -------------------------------------------------------------------------------
def early_talk(server):
    """What a client that sends EHLO before the greeting is answered first."""
    with socket.create_connection(server.address, timeout=10) as client:
        client.sendall(b"EHLO early.test\r\n")
        return read_reply(client)


@pytest.mark.parametrize("action, code", [("deny", 554), ("denysoft", 450), ("log", 220)])
def test_earlytalker_legacy_action_argument(live_server, action, code):
    """qpsmtpd's older 'action deny|denysoft|log' starts the server and means reject 1 / temporary / reject 0."""
    server = live_server(plugins=["earlytalker wait 0.5 action %s" % action, "rcpt_ok"])
    assert early_talk(server).code == code


# -- auth plugins ----------------------------------------------------------------------------------
CHECKPASSWORD = '''#!%s
import os, sys
fields = os.read(3, 512).split(b"\\0")
if fields[:2] != [b"carol@example.org", b"carols secret"]:
    sys.exit(1)
os.execv(sys.argv[1], sys.argv[1:])
'''


def test_flat_file_declines_an_unknown_user_so_checkpassword_is_asked(live_server, tmp_path):
    """auth_flat_file does not know carol (DECLINED, as in qpsmtpd); auth_checkpassword, set up by qpsmtpd's
    config/smtpauth-checkpassword line, does: smtplib's login succeeds.  A wrong password still gets 535."""
    checker = tmp_path / "checkpassword"
    checker.write_text(CHECKPASSWORD % sys.executable)
    checker.chmod(0o755)
    server = live_server(plugins=["auth/auth_flat_file", "auth/auth_checkpassword", "rcpt_ok"],
                         config={"flat_auth_pw": ["good@example.com:good_pass"], "tls_before_auth": "0",
                                 "auth_failure_delay": "0",
                                 "smtpauth-checkpassword": "%s %s" % (checker, shutil.which("true"))})
    for user, password, code in [("carol@example.org", "carols secret", 235), ("good@example.com", "good_pass", 235),
                                 ("carol@example.org", "wrong", 535)]:
        with smtplib.SMTP(*server.address, timeout=10) as smtp:
            smtp.ehlo("client.test")
            token = base64.b64encode(("\0%s\0%s" % (user, password)).encode()).decode()
            assert smtp.docmd("AUTH", "PLAIN " + token)[0] == code, user


def test_bad_smtpauth_checkpassword_line_stops_start_up(smtpd_factory, tmp_path):
    with pytest.raises(ConfigError, match=r"smtpauth-checkpassword:2: write the two programs on one line"):
        smtpd_factory(["auth/auth_checkpassword"], {"smtpauth-checkpassword": ["# vpopmail", "/bin/true"]})
