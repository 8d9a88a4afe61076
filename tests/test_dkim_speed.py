"""qpgevent/dkim_speed.py gives exactly what dkimpy's own helpers give (they are the model), faster."""
import importlib.util

import dkim
import dkim.canonicalization
import dkim.crypto
from hypothesis import given, settings, strategies as st

from qpgevent import dkim_speed

ORIGINAL_COMPRESS = dkim.canonicalization.compress_whitespace
ORIGINAL_STRIP = dkim.canonicalization.strip_trailing_whitespace
ORIGINAL_PARSE = dkim_speed._ORIGINAL_PARSE

def _dkimpy_crypto():
    """A fresh copy of dkim/crypto.py: its own int2str and str2int, whatever install() put in the module's place."""
    spec = importlib.util.spec_from_file_location("dkimpy_crypto_model", dkim.crypto.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MODEL = _dkimpy_crypto()

# Bytes rich in what the helpers look at: spaces, tabs, CR, LF, colons, "From ".
PIECES = st.sampled_from([b" ", b"  ", b"\t", b"\r", b"\n", b"\r\n", b"a", b"Subject:", b"From ", b":", b"x y",
                          b"\xff", b"\x00", b" \r\n", b"\t\r\n"])
CONTENT = st.lists(PIECES, max_size=60).map(b"".join)


@settings(max_examples=500)
@given(CONTENT)
def test_whitespace_helpers_match_dkimpy(content):
    assert dkim_speed.compress_whitespace(content) == ORIGINAL_COMPRESS(content)
    assert dkim_speed.strip_trailing_whitespace(content) == ORIGINAL_STRIP(content)


def outcome(parse, message):
    try:
        return parse(message)
    except Exception as exc:  # the same failure (MessageFormatError, or IndexError on a leading fold) counts
        return type(exc)


@settings(max_examples=1000)
@given(CONTENT)
def test_rfc822_parse_matches_dkimpy(message):
    assert outcome(dkim_speed.rfc822_parse, message) == outcome(ORIGINAL_PARSE, message)


@given(st.lists(st.sampled_from([b"From: a@b.test", b"Subject: hi", b"\tfolded", b" more", b"To: c@d.test"]),
                max_size=8), st.sampled_from([b"\n", b"\r\n"]), CONTENT)
def test_rfc822_parse_matches_dkimpy_on_well_formed_messages(fields, newline, body):
    message = newline.join(fields) + newline + newline + body
    assert outcome(dkim_speed.rfc822_parse, message) == outcome(ORIGINAL_PARSE, message)


def test_install_puts_them_in_dkimpys_place():
    dkim_speed.install()
    assert dkim.rfc822_parse is dkim_speed.rfc822_parse
    assert dkim.canonicalization.compress_whitespace is dkim_speed.compress_whitespace


@settings(max_examples=1000)
@given(st.integers(min_value=0, max_value=1 << 4100), st.integers(min_value=-1, max_value=520))
def test_integer_conversions_match_dkimpy(n, length):
    assert dkim_speed.int2str(n, length) == MODEL.int2str(n, length)
    octets = bytes(MODEL.int2str(n))
    assert dkim_speed.str2int(octets) == MODEL.str2int(octets) == n


def test_a_signed_message_verifies_and_a_changed_one_does_not_with_the_helpers_installed():
    """The RSA check end to end with the stand-ins and the kept key: dkimpy signs, dkimpy verifies."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    import base64

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    public = base64.b64encode(key.public_key().public_bytes(serialization.Encoding.DER,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo))
    record = b"v=DKIM1; k=rsa; p=" + public
    message = b"From: a@speed.test\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nHello.\r\n"
    signed = dkim.sign(message, b"sel", b"speed.test", pem) + message
    dkim_speed.install()
    dnsfunc = lambda name, timeout=5: record  # noqa: E731
    for _ in range(2):  # the second time from the kept key
        assert dkim.verify(signed, dnsfunc=dnsfunc)
    assert not dkim.verify(signed.replace(b"Hello.", b"Hullo."), dnsfunc=dnsfunc)


KEYS = {}


def _key(bits, index):
    """A few RSA keys made once per run (key generation is slow)."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    if (bits, index) not in KEYS:
        KEYS[bits, index] = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return KEYS[bits, index]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([(1024, 0), (2048, 0), (2048, 1), (3072, 0)]), st.sampled_from(["sha256", "sha1"]),
       st.binary(max_size=64), st.sampled_from(["valid", "other message", "flipped bit", "other key", "short",
                                                 "plus modulus", "garbage"]), st.integers(min_value=0))
def test_rsa_verify_matches_dkimpy(key_id, hash_name, data, change, where):
    """OpenSSL's verdict is dkimpy's own, for valid, altered, re-keyed, shortened and out-of-range signatures."""
    import hashlib

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, utils

    key = _key(*key_id)
    algorithm = {"sha256": hashes.SHA256(), "sha1": hashes.SHA1()}[hash_name]
    digest = hashlib.new(hash_name, data)
    signature = key.sign(digest.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm))
    numbers = key.public_key().public_numbers()
    public = {"modulus": numbers.n, "publicExponent": numbers.e}
    if change == "other message":
        digest = hashlib.new(hash_name, data + b"x")
    elif change == "flipped bit":
        i = where % len(signature)
        signature = signature[:i] + bytes([signature[i] ^ (1 << where % 8)]) + signature[i + 1:]
    elif change == "other key":
        other = _key(key_id[0], 1 - key_id[1] if key_id[0] == 2048 else 0).public_key().public_numbers()
        public = {"modulus": other.n, "publicExponent": other.e}
    elif change == "short":  # leading zero octets dropped, as some signers do
        signature = signature.lstrip(b"\0") or b"\0"
    elif change == "plus modulus":
        signature = (int.from_bytes(signature, "big") + numbers.n).to_bytes(len(signature) + 1, "big")
    elif change == "garbage":
        signature = data or b"\1"
    assert dkim_speed.rsa_verify(digest, signature, public) == MODEL.RSASSA_PKCS1_v1_5_verify(digest, signature,
                                                                                               public)
