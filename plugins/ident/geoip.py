"""ident/geoip: where the client is, from MaxMind-format (GeoIP2/GeoLite2 .mmdb) databases.

Arguments (qpsmtpd's, as pairs)::

    ident/geoip [db_dir DIR] [distance OUR_IP] [too_far KM] [add_headers true|false]

``db_dir``
    Where the databases are (default ``/usr/local/share/GeoIP``, qpsmtpd's):
    ``GeoIP2-City.mmdb`` or ``GeoLite2-City.mmdb`` (or, without a city
    database, ``GeoIP2-Country.mmdb``/``GeoLite2-Country.mmdb``), and
    optionally ``GeoLite2-ASN.mmdb`` for the network number.  Start-up stops,
    naming the directory, when it holds neither a city nor a country database.
``distance OUR_IP``
    Our public address: with a city database the distance from it to the
    client, great-circle on a sphere of 6378 km, goes in ``geoip_distance``.
``too_far KM``
    A client further than this loses a point of karma.
``add_headers`` (default true)
    Add ``X-GeoIP-Country``, ``X-GeoIP-Continent``, ``X-GeoIP-City`` and
    ``X-GeoIP-ASN`` to each message (replacing any the client sent).

At connect the connection notes ``geoip_country`` (ISO code),
``geoip_country_name``, ``geoip_continent`` (code), ``geoip_city``,
``geoip_asn`` and ``geoip_distance`` are set from what the databases know;
an address they do not know sets nothing.  The plugin never refuses: other
plugins read the notes.

Needs the Python package ``geoip2`` (``pip install geoip2``, or the
``geoip`` extra of qpgevent); without it start-up stops saying so.

Differences from qpsmtpd: only the GeoIP2 (.mmdb) format, not the retired
GeoIP1 ``.dat`` files; the ASN comes from the GeoLite2-ASN database
(qpsmtpd's GeoIP2 code had none); loopback addresses are looked up like any
other (real databases hold none; the tests' database does).

Config files: none.
"""
import math
import os

from qpgevent import DECLINED, LOGINFO, arguments

ARGUMENTS = {
    "db_dir": arguments.text(default="/usr/local/share/GeoIP"),
    "distance": arguments.text(),
    "too_far": arguments.number(minimum=0),
    "add_headers": arguments.flag(default=True),
}
_CITY = ("GeoIP2-City.mmdb", "GeoLite2-City.mmdb")
_COUNTRY = ("GeoIP2-Country.mmdb", "GeoLite2-Country.mmdb")
_ASN = ("GeoLite2-ASN.mmdb", "GeoIP2-ISP.mmdb")
_EARTH_RADIUS_KM = 6378  # qpsmtpd's sphere
_HEADERS = ("Country", "Continent", "City", "ASN")


def register(self, qp, *args):
    try:
        import geoip2.database
        import geoip2.errors
    except ImportError as exc:
        raise ValueError("needs the Python package geoip2 (pip install geoip2, or qpgevent[geoip]): %s" % exc)
    self.not_found = geoip2.errors.AddressNotFoundError
    db_dir = self.options.db_dir
    self.city = open_first(geoip2.database.Reader, db_dir, _CITY)
    self.country = None if self.city else open_first(geoip2.database.Reader, db_dir, _COUNTRY)
    self.asn = open_first(geoip2.database.Reader, db_dir, _ASN)
    if self.city is None and self.country is None:
        raise ValueError("no GeoIP database in db_dir %s: put %s or %s there, or point db_dir at them"
                         % (db_dir, " or ".join(_CITY), " or ".join(_COUNTRY)))
    self.here = None
    if self.options.distance:
        record = lookup(self, self.city, "city", self.options.distance) if self.city else None
        if record is None or record.location.latitude is None:
            raise ValueError("distance %s: the city database has no location for that address; give our public IP"
                             % self.options.distance)
        self.here = (record.location.latitude, record.location.longitude)
    if self.options.add_headers:
        self.register_hook("data_post", "add_headers")


def open_first(reader, directory, names):
    """A reader of the first of ``names`` present in ``directory``, or None."""
    for name in names:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return reader(path)
    return None


def lookup(self, reader, method, ip):
    """The record ``reader.<method>(ip)``, or None for an address the database does not hold."""
    try:
        return getattr(reader, method)(ip)
    except (self.not_found, ValueError):
        return None


def hook_connect(self, transaction):
    ip = self.qp.connection.remote_ip
    notes = self.qp.connection.notes
    record = lookup(self, self.city, "city", ip) if self.city else lookup(self, self.country, "country", ip)
    if record is None:
        self.log(LOGINFO, "skip, no results for %s" % ip)
        return DECLINED
    found = {"geoip_country": record.country.iso_code, "geoip_country_name": record.country.name,
             "geoip_continent": record.continent.code}
    if self.city:
        found["geoip_city"] = record.city.name
        if self.here and record.location.latitude is not None:
            found["geoip_distance"] = round(distance_km(self.here, (record.location.latitude,
                                                                   record.location.longitude)))
    asn = lookup(self, self.asn, "asn", ip) if self.asn else None
    if asn is not None:
        found["geoip_asn"] = asn.autonomous_system_number
    notes.update({name: value for name, value in found.items() if value is not None})
    far = notes.get("geoip_distance")
    if far is not None and self.options.too_far is not None and far > self.options.too_far:
        self.adjust_karma(-1)
    self.log(LOGINFO, ", ".join(str(notes[name]) for name in ("geoip_continent", "geoip_country", "geoip_city")
                                if notes.get(name)) + ("\t%d km" % far if far is not None else ""))
    return DECLINED


def distance_km(here, there):
    """Great-circle distance between two (latitude, longitude) points, haversine on qpsmtpd's sphere."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*here, *there))
    a = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * _EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def add_headers(self, transaction):
    notes = self.qp.connection.notes
    for name in _HEADERS:
        value = notes.get("geoip_" + name.lower())
        if value is None:
            continue
        transaction.header.delete("X-GeoIP-" + name)
        transaction.header.add("X-GeoIP-" + name, str(value), 0)
    return DECLINED

