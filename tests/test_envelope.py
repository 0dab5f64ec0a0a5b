"""The .hdhenc envelope against the specification, byte by byte."""

from __future__ import annotations

import base64
import io
import json
import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hdh_deliver.envelope import MAGIC, decrypt_stream, encrypt_stream
from hdh_deliver.errors import DeliveryRejected, Reason
from hdh_deliver.keys import key_id

SEGMENT = 65536


@pytest.fixture(scope="module")
def hub_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


def encrypt(data: bytes, key: rsa.RSAPrivateKey, segment: int = SEGMENT) -> bytes:
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(data), out, key.public_key(), segment_size=segment)
    return out.getvalue()


def decrypt(blob: bytes, key: rsa.RSAPrivateKey) -> bytes:
    out = io.BytesIO()
    result = decrypt_stream(io.BytesIO(blob), out, {key_id(key.public_key()): key}.get)
    assert result.ciphertext_bytes == len(blob)
    return out.getvalue()


def split(blob: bytes) -> tuple[bytes, dict, bytes]:
    header_len = int.from_bytes(blob[8:12], "big")
    prefix = blob[: 12 + header_len]
    return prefix, json.loads(prefix[12:]), blob[12 + header_len :]


def seal(key: rsa.RSAPrivateKey, segments: list[tuple[bytes, bool]]) -> bytes:
    """Build a file by hand from the specification, to forge what a buggy provider could send."""
    data_key, prefix = os.urandom(32), os.urandom(7)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    header = json.dumps(
        {
            "key_id": key_id(key.public_key()),
            "wrapped_key": base64.b64encode(key.public_key().encrypt(data_key, oaep)).decode(),
            "segment_size": SEGMENT,
            "nonce_prefix": base64.b64encode(prefix).decode(),
        }
    ).encode()
    aad = MAGIC + len(header).to_bytes(4, "big") + header
    aead = AESGCM(data_key)
    body = b"".join(
        aead.encrypt(prefix + i.to_bytes(4, "big") + (b"\x01" if last else b"\x00"), chunk, aad)
        for i, (chunk, last) in enumerate(segments)
    )
    return aad + body


@pytest.mark.parametrize("size", [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT, 3 * SEGMENT + 17])
def test_round_trip_and_layout(hub_key, size):
    data = os.urandom(size)
    blob = encrypt(data, hub_key)
    _, header, body = split(blob)
    assert blob.startswith(b"HDHENC\x00\x01")
    assert set(header) == {"key_id", "wrapped_key", "segment_size", "nonce_prefix"}
    assert header["key_id"] == key_id(hub_key.public_key())
    assert len(base64.b64decode(header["nonce_prefix"])) == 7
    # Full segments, then one final segment holding 0..segment_size bytes.
    segments = max(1, -(-size // SEGMENT))
    assert len(body) == size + 16 * segments
    assert decrypt(blob, hub_key) == data


def test_exact_multiple_carries_final_flag_on_its_last_data_segment(hub_key):
    data = os.urandom(2 * SEGMENT)
    blob = seal(hub_key, [(data[:SEGMENT], False), (data[SEGMENT:], True)])
    assert decrypt(blob, hub_key) == data
    # The same content followed by an empty final segment is not what the spec allows.
    bad = seal(hub_key, [(data[:SEGMENT], False), (data[SEGMENT:], False), (b"", True)])
    with pytest.raises(DeliveryRejected) as caught:
        decrypt(bad, hub_key)
    assert caught.value.reason == Reason.TRAILING_DATA


def test_empty_file_is_one_empty_final_segment(hub_key):
    blob = encrypt(b"", hub_key)
    assert len(split(blob)[2]) == 16


@pytest.mark.parametrize(
    ("segments", "reason"),
    [
        ([(b"a" * SEGMENT, False), (b"b" * SEGMENT, False)], Reason.TRUNCATED),  # missing final flag
        ([(b"a" * SEGMENT, True), (b"b", True)], Reason.TRAILING_DATA),  # a segment after the final one
        ([(b"a" * SEGMENT, True), (b"b", False)], Reason.TRAILING_DATA),
        ([], Reason.TRUNCATED),  # no segment at all
    ],
)
def test_misplaced_final_flag(hub_key, segments, reason):
    with pytest.raises(DeliveryRejected) as caught:
        decrypt(seal(hub_key, segments), hub_key)
    assert caught.value.reason == reason


def test_truncation_at_segment_boundary(hub_key):
    blob = encrypt(os.urandom(3 * SEGMENT), hub_key)
    prefix, _, body = split(blob)
    with pytest.raises(DeliveryRejected) as caught:
        decrypt(prefix + body[: 2 * (SEGMENT + 16)], hub_key)
    assert caught.value.reason == Reason.TRUNCATED


@pytest.mark.parametrize("where", ["first", "middle", "tag", "header"])
def test_flipped_byte(hub_key, where):
    blob = bytearray(encrypt(os.urandom(3 * SEGMENT + 5), hub_key))
    prefix_len = len(split(bytes(blob))[0])
    index = {
        "first": prefix_len,
        "middle": prefix_len + SEGMENT + 100,
        "tag": len(blob) - 1,
        "header": prefix_len - 3,
    }[where]
    blob[index] ^= 0x01
    with pytest.raises(DeliveryRejected) as caught:
        decrypt(bytes(blob), hub_key)
    # A flipped header byte breaks the JSON or the associated data; either way it is refused.
    assert caught.value.reason in (
        {Reason.AUTH_FAILED}
        if where != "header"
        else {Reason.AUTH_FAILED, Reason.BAD_HEADER, Reason.UNKNOWN_KEY}
    )


def test_unknown_key(hub_key):
    other = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    with pytest.raises(DeliveryRejected) as caught:
        decrypt(encrypt(b"x", other), hub_key)
    assert caught.value.reason == Reason.UNKNOWN_KEY


@pytest.mark.parametrize(
    "mutate",
    [
        lambda h: h | {"segment_size": 1000},
        lambda h: h | {"segment_size": 1 << 27},
        lambda h: h | {"nonce_prefix": base64.b64encode(b"123456").decode()},
        lambda h: h | {"extra": 1},
        lambda h: {k: v for k, v in h.items() if k != "key_id"},
    ],
)
def test_bad_header(hub_key, mutate):
    blob = encrypt(b"hello", hub_key)
    _, header, body = split(blob)
    raw = json.dumps(mutate(header)).encode()
    forged = MAGIC + len(raw).to_bytes(4, "big") + raw + body
    with pytest.raises(DeliveryRejected) as caught:
        decrypt(forged, hub_key)
    assert caught.value.reason == Reason.BAD_HEADER


def test_bad_magic(hub_key):
    blob = encrypt(b"hello", hub_key)
    with pytest.raises(DeliveryRejected) as caught:
        decrypt(b"HDHENC\x00\x02" + blob[8:], hub_key)
    assert caught.value.reason == Reason.BAD_HEADER
