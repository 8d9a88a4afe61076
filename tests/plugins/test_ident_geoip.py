"""ident/geoip: notes and headers from MaxMind-format databases the test writes (mmdb-writer), read by geoip2."""
import smtplib

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from qpgevent.testing import TestSession, make_smtpd

BERLIN = {"country": {"iso_code": "DE", "names": {"en": "Germany"}}, "continent": {"code": "EU", "names": {"en": "Europe"}},
          "city": {"names": {"en": "Berlin"}}, "location": {"latitude": 52.52, "longitude": 13.405}}
PARIS = {"country": {"iso_code": "FR", "names": {"en": "France"}}, "continent": {"code": "EU", "names": {"en": "Europe"}},
         "city": {"names": {"en": "Paris"}}, "location": {"latitude": 48.8566, "longitude": 2.3522}}
TOKYO = {"country": {"iso_code": "JP", "names": {"en": "Japan"}}, "continent": {"code": "AS", "names": {"en": "Asia"}},
         "city": {"names": {"en": "Tokyo"}}, "location": {"latitude": 35.6762, "longitude": 139.6503}}


def write_db(path, kind, networks):
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type=kind, languages=["en"],
                        description="qpgevent test data")
    for network, record in networks.items():
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))


@pytest.fixture(scope="module")
def db_dir(tmp_path_factory):
    """127.0.0.10: Berlin (AS 64500), 127.0.0.11: Paris, 127.0.0.12: Tokyo; 127.0.0.20 unknown."""
    directory = tmp_path_factory.mktemp("geoip")
    write_db(directory / "GeoLite2-City.mmdb", "GeoLite2-City",
             {"127.0.0.10/32": BERLIN, "127.0.0.11/32": PARIS, "127.0.0.12/32": TOKYO})
    write_db(directory / "GeoLite2-ASN.mmdb", "GeoLite2-ASN",
             {"127.0.0.10/32": {"autonomous_system_number": 64500, "autonomous_system_organization": "Test net"}})
    return directory


def session(tmp_path, line, ip):
    smtpd = make_smtpd(tmp_path, plugins=[line, "rcpt_ok", "queue/maildir %s" % (tmp_path / "Maildir")],
                       config={"rcpthosts": ["example.com"]})
    return TestSession(smtpd, remote_ip=ip)


def test_notes_for_a_known_client(tmp_path, db_dir):
    notes = session(tmp_path, "ident/geoip db_dir %s" % db_dir, "127.0.0.10").connection.notes
    assert {k: v for k, v in notes.items() if k.startswith("geoip_")} == {
        "geoip_country": "DE", "geoip_country_name": "Germany", "geoip_continent": "EU", "geoip_city": "Berlin",
        "geoip_asn": 64500}


def test_unknown_client_gets_no_notes(tmp_path, db_dir):
    notes = session(tmp_path, "ident/geoip db_dir %s" % db_dir, "127.0.0.20").connection.notes
    assert not [k for k in notes if k.startswith("geoip_")]


def test_distance_and_too_far_karma(tmp_path, db_dir):
    line = "ident/geoip db_dir %s distance 127.0.0.10 too_far 2000" % db_dir
    paris = session(tmp_path / "p", line, "127.0.0.11").connection.notes
    tokyo = session(tmp_path / "t", line, "127.0.0.12").connection.notes
    assert 870 < paris["geoip_distance"] < 890  # Berlin-Paris is about 878 km
    assert 8900 < tokyo["geoip_distance"] < 9000  # Berlin-Tokyo about 8920 km
    assert paris.get("karma", 0) == 0 and tokyo["karma"] == -1


def test_headers_over_a_real_socket(live_server, tmp_path, db_dir):
    """A client bound to 127.0.0.10 gets X-GeoIP headers in its stored message; forged ones are replaced."""
    server = live_server(plugins=["ident/geoip db_dir %s" % db_dir, "rcpt_ok",
                                  "queue/maildir %s" % (tmp_path / "Maildir")])
    with smtplib.SMTP(timeout=10, source_address=("127.0.0.10", 0)) as client:
        client.connect(*server.address)
        client.sendmail("a@sender.test", ["u@example.com"], "X-GeoIP-Country: US\r\nSubject: hi\r\n\r\nbody\r\n")
    [path] = (tmp_path / "Maildir" / "new").iterdir()
    head = path.read_text().split("\n\n")[0]
    for line in ("X-GeoIP-Country: DE", "X-GeoIP-Continent: EU", "X-GeoIP-City: Berlin", "X-GeoIP-ASN: 64500"):
        assert line in head.splitlines()
    assert "X-GeoIP-Country: US" not in head


def test_add_headers_false(tmp_path, db_dir):
    test_session = session(tmp_path, "ident/geoip db_dir %s add_headers false" % db_dir, "127.0.0.10")
    assert test_session.send_message("a@sender.test", ["u@example.com"], "Subject: hi\n\nb\n")[-1].code == 250
    [path] = (tmp_path / "Maildir" / "new").iterdir()
    assert "X-GeoIP" not in path.read_text()


def test_missing_database_stops_start_up(tmp_path):
    with pytest.raises(Exception) as error:
        make_smtpd(tmp_path, plugins=["ident/geoip db_dir %s" % tmp_path])
    assert "no GeoIP database in db_dir %s" % tmp_path in str(error.value)


def test_missing_package_is_named(tmp_path, db_dir, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "geoip2", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "geoip2.database", None)
    with pytest.raises(Exception) as error:
        make_smtpd(tmp_path, plugins=["ident/geoip db_dir %s" % db_dir])
    assert "needs the Python package geoip2" in str(error.value)
