"""RFC 5321 4.1.2 path parsing, formatting, equality and ordering (qpgevent/address.py)."""
import pytest

from qpgevent.address import Address, AddressError

# (path, user, host, formatted again)
VALID = [
    ("<>", None, None, "<>"),
    ("<postmaster>", "postmaster", None, "<postmaster>"),
    ("<PostMaster>", "PostMaster", None, "<PostMaster>"),
    ("<user@example.com>", "user", "example.com", "<user@example.com>"),
    ("<User.Name+tag@Sub.Example.COM>", "User.Name+tag", "Sub.Example.COM", "<User.Name+tag@Sub.Example.COM>"),
    ("<!#$%&'*+-/=?^_`{|}~@example.com>", "!#$%&'*+-/=?^_`{|}~", "example.com", "<!#$%&'*+-/=?^_`{|}~@example.com>"),
    ("<u@localhost>", "u", "localhost", "<u@localhost>"),
    ("<@relay.test:u@example.com>", "u", "example.com", "<u@example.com>"),
    ("<@a.test,@b.test:u@example.com>", "u", "example.com", "<u@example.com>"),
    ("<@relay.test:postmaster>", "postmaster", None, "<postmaster>"),
    ('<"john doe"@example.com>', "john doe", "example.com", '<"john doe"@example.com>'),
    ('<"a\\"b"@example.com>', 'a"b', "example.com", '<"a\\"b"@example.com>'),
    ('<"a@b"@example.com>', "a@b", "example.com", '<"a@b"@example.com>'),
    ('<"plain"@example.com>', "plain", "example.com", "<plain@example.com>"),
    ("<u@[192.0.2.1]>", "u", "[192.0.2.1]", "<u@[192.0.2.1]>"),
    ("<u@[255.255.255.255]>", "u", "[255.255.255.255]", "<u@[255.255.255.255]>"),
    ("<u@[IPv6:2001:db8::1]>", "u", "[IPv6:2001:db8::1]", "<u@[IPv6:2001:db8::1]>"),
    ("<u@[IPv6:::ffff:192.0.2.1]>", "u", "[IPv6:::ffff:192.0.2.1]", "<u@[IPv6:::ffff:192.0.2.1]>"),
]

INVALID = [
    ("user@example.com", "no angle brackets"),
    ("<user@example.com", "no closing bracket"),
    ("user@example.com>", "no opening bracket"),
    ("<>x", "text after the path"),
    ("<u v@example.com>", "space in an unquoted local part"),
    ("<.u@example.com>", "local part starting with a dot"),
    ("<u\\@example.com>", "backslash outside quotes"),
    ("<a@b@example.com>", "two @ outside quotes"),
    ('<""@example.com>', "empty quoted local part"),
    ("<@example.com>", "empty local part"),
    ("<a@>", "empty domain"),
    ("<user>", "no domain (only postmaster and abuse may go without)"),
    ("<u@-bad.example>", "label starting with a hyphen"),
    ("<u@bad-.example>", "label ending with a hyphen"),
    ("<u@b..example>", "empty label"),
    ("<u@under_score.example>", "underscore in a domain"),
    ("<u@%s.example>" % ("a" * 64), "label over 63 octets"),
    ("<%s@example.com>" % ("a" * 65), "local part over 64 octets"),
    ("<u@[192.0.2.256]>", "IPv4 literal octet over 255"),
    ("<u@[192.0.2]>", "IPv4 literal with three octets"),
    ("<u@192.0.2.1]>", "literal without opening bracket"),
    ("<u@[IPv6:zz::1]>", "IPv6 literal with non-hex digits"),
    ("<u@[IPv6:::::::]>", "IPv6 literal that is only colons"),
    ("<u@[IPv6:1:2:3:4:5:6:7:8:9]>", "IPv6 literal with nine groups"),
    ("<u@[2001:db8::1]>", "IPv6 literal without the IPv6: tag"),
    ("<ü@example.com>", "8-bit local part without SMTPUTF8"),
    ("<u@bücher.example>", "8-bit domain without SMTPUTF8"),
]


@pytest.mark.parametrize("path, user, host, again", VALID, ids=[case[0] for case in VALID])
def test_valid_paths_parse(path, user, host, again):
    """Valid RFC 5321 paths give the unquoted user, the host as written, and format back to canonical form."""
    address = Address.parse(path)
    assert (address.user, address.host) == (user, host)
    assert address.format() == again == str(address)
    assert Address.parse(address.format()).user == user


@pytest.mark.parametrize("path, why", INVALID, ids=[case[1] for case in INVALID])
def test_invalid_paths_are_rejected(path, why):
    """Paths that break RFC 5321 4.1.2 syntax raise AddressError (a ValueError)."""
    with pytest.raises(AddressError):
        Address.parse(path)
    assert issubclass(AddressError, ValueError)


def test_null_path_is_null():
    """``<>`` is the null path: no user, no host, empty ``address``, ``is_null``."""
    null = Address.parse("<>")
    assert null.is_null and null.address == "" and null.format() == "<>"
    assert not Address.parse("<u@example.com>").is_null


@pytest.mark.parametrize("path, user, host", [
    ("<ü@example.com>", "ü", "example.com"),
    ("<u@bücher.example>", "u", "bücher.example"),
    ("<用户@例子.广告>", "用户", "例子.广告"),
])
def test_utf8_paths_need_smtputf8(path, user, host):
    """RFC 6531: 8-bit local parts and U-label domains parse only with ``utf8=True``."""
    address = Address.parse(path, utf8=True)
    assert (address.user, address.host) == (user, host)
    assert address.format() == path


def test_format_quotes_local_parts_that_need_it():
    """``format()`` quotes a local part outside dot-atom text and escapes ``"`` and ``\\``."""
    assert Address("foo bar", "example.com").format() == '<"foo bar"@example.com>'
    assert Address('say "hi"', "example.com").format() == '<"say \\"hi\\""@example.com>'
    assert Address("back\\slash", "example.com").format() == '<"back\\\\slash"@example.com>'
    assert Address("a,b", "example.com").format() == '<"a,b"@example.com>'
    assert Address("plain.user", "example.com").format() == "<plain.user@example.com>"
    assert Address().format() == "<>"


def test_address_property_has_no_brackets_or_quotes():
    """``address`` is ``user@host`` as the user wrote it, unquoted."""
    assert Address.parse('<"john doe"@example.com>').address == "john doe@example.com"
    assert Address.parse("<postmaster>").address == "postmaster"


def test_equality_with_strings_and_addresses():
    """An Address equals a string naming it (brackets optional); the domain is case-insensitive, the user is not."""
    address = Address.parse("<User@Example.COM>")
    assert address == "User@example.com"
    assert address == "<User@example.com>"
    assert address == Address("User", "EXAMPLE.com")
    assert address != "user@example.com"
    assert address != "User@example.org"
    assert Address.parse("<>") == ""
    assert hash(address) == hash(Address("User", "example.com"))
    assert address != 42


def test_sort_order_is_domain_then_user():
    """Addresses sort by domain (case-insensitively), then by user, like qpsmtpd's ``host=user`` key."""
    unsorted = [Address("b", "z.test"), Address("z", "A.test"), Address("a", "z.test"), Address("m", "b.test")]
    assert [a.format() for a in sorted(unsorted)] == ["<z@A.test>", "<m@b.test>", "<a@z.test>", "<b@z.test>"]


def test_from_string_splits_at_last_at_without_validation():
    """``from_string`` splits ``user@host`` at the last ``@``; no ``@`` means a bare user (or null when empty)."""
    assert (Address.from_string("a@b@c.test").user, Address.from_string("a@b@c.test").host) == ("a@b", "c.test")
    assert Address.from_string("<postmaster>").user == "postmaster"
    assert Address.from_string("").is_null
