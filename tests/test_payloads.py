"""The IKEv2 codec: ``bytes(parse(b)) == b`` for every payload, and lying lengths become
``Malformed`` records with the right field and offset, never an exception."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.report.tree import render_message
from dissectors.iana import ExchangeType, NotifyType, PayloadType
from dissectors.ikev2.message import IKE_HEADER_LEN, IkeMessage, parse_message
from dissectors.ikev2.payloads import (
    AuthPayload,
    CertPayload,
    CertReqPayload,
    CfgAttribute,
    CpPayload,
    DeletePayload,
    EapPayload,
    IdPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    RawPayload,
    SaPayload,
    SkfPayload,
    SkPayload,
    Transform,
    TransformAttribute,
    TrafficSelector,
    TsPayload,
    VendorIdPayload,
)

SPI_I = bytes.fromhex("208ea4958b46bc8f")
SPI_R = bytes.fromhex("dc3b922637ba126c")


def esp_proposal(spi: bytes = b"\x39\x1f\x3a\x9d") -> Proposal:
    return Proposal(1, 3, spi, [
        Transform(1, 20, [TransformAttribute(14, 256)], last=3),
        Transform(5, 0),
    ])


def ike_proposal() -> Proposal:
    return Proposal(1, 1, b"", [
        Transform(1, 12, [TransformAttribute(14, 128)], last=3),
        Transform(2, 5, last=3),
        Transform(3, 12, last=3),
        Transform(4, 14, [TransformAttribute(17, b"tlv!")]),  # a TLV attribute too
    ], last=2)


def every_payload() -> list[Payload]:
    """One of each payload class (SK/SKF are tested on their own: they must be last)."""
    return [
        SaPayload(proposals=[ike_proposal(), Proposal(2, 3, b"\x01\x02\x03\x04", [Transform(1, 20)])]),
        KePayload(dh_group=31, data=bytes(range(32))),
        NoncePayload(data=b"\x8b" * 32),
        IdPayload(kind=2, data=b"a.example.test"),
        IdPayload(id_payload_type=PayloadType.IDr, kind=1, data=bytes([198, 51, 100, 7])),
        CertPayload(encoding=4, data=b"\x30\x82\x01\x00cert"),
        CertReqPayload(encoding=4, data=b"\xaa" * 20),
        AuthPayload(kind=2, data=b"\x2f" * 32),
        NotifyPayload(notify_type=NotifyType.SA_RESOURCE_INFO, data=b"\x00\x00\x00\x01"),
        NotifyPayload(notify_type=NotifyType.SA_RESOURCE_INFO),
        NotifyPayload(notify_type=NotifyType.TS_MAX_QUEUE),
        NotifyPayload(protocol_id=3, notify_type=NotifyType.REKEY_SA, spi=b"\x39\x1f\x3a\x9d"),
        DeletePayload(protocol_id=3, spi_size=4, spis=[b"\x39\x1f\x3a\x9d", b"\x70\x6d\xf6\x44"]),
        DeletePayload(protocol_id=1),
        VendorIdPayload(data=bytes.fromhex("882fe56d6fd20dbc2251613b2ebe5beb")),
        TsPayload(selectors=[TrafficSelector(7, 0, 0, 65535, "198.51.100.0", "198.51.100.255"),
                             TrafficSelector(8, 6, 443, 443, "2001:db8::", "2001:db8::ffff")]),
        TsPayload(ts_payload_type=PayloadType.TSr, selectors=[TrafficSelector(10, data=b"label")]),
        CpPayload(cfg_type=1, attributes=[CfgAttribute(1, b""), CfgAttribute(8, b"")]),
        CpPayload(cfg_type=2, attributes=[CfgAttribute(1, bytes([10, 1, 0, 1])), CfgAttribute(7, b"v6.0")]),
        EapPayload(code=1, identifier=7, eap_type=1, data=b"alice"),
        EapPayload(code=3, identifier=8),
        RawPayload(payload_type=200, data=b"opaque"),
        RawPayload(payload_type=PayloadType.GSPM, data=b""),
    ]


def message(payloads: list[Payload], exchange: int = ExchangeType.IKE_AUTH, **kw) -> IkeMessage:
    return IkeMessage(SPI_I, SPI_R, exchange, kw.pop("message_id", 1), flags=kw.pop("flags", 0x08),
                      payloads=payloads, **kw)


def roundtrip(msg: IkeMessage) -> tuple[bytes, IkeMessage]:
    wire = bytes(msg)
    parsed = parse_message(wire)
    return wire, parsed


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("payload", every_payload(), ids=lambda p: f"{type(p).__name__}-{p.type}")
def test_each_payload_round_trips(payload):
    wire, parsed = roundtrip(message([payload]))
    assert parsed.malformed is None
    [got] = parsed.payloads
    assert got.malformed is None
    assert type(got) is type(payload)
    assert got.type == payload.type
    assert bytes(parsed) == wire
    assert bytes(got) == bytes(payload)


def test_every_payload_in_one_chain_round_trips():
    payloads = every_payload()
    payloads[3].critical = True
    wire, parsed = roundtrip(message(payloads))
    assert parsed.malformed is None
    assert [type(p) for p in parsed.payloads] == [type(p) for p in payloads]
    assert parsed.payloads[3].critical
    assert bytes(parsed) == wire
    assert parsed.length == len(wire)
    assert parsed.next_payload == PayloadType.SA


@pytest.mark.parametrize("sk", [
    SkPayload(next_payload=PayloadType.IDi, data=b"\xab" * 48),
    SkfPayload(next_payload=PayloadType.IDi, fragment_number=1, total_fragments=3, data=b"\xcd" * 40),
    SkfPayload(fragment_number=3, total_fragments=3, data=b"\xef" * 24),
], ids=["SK", "SKF-1", "SKF-3"])
def test_encrypted_payloads_round_trip_after_clear_ones(sk):
    wire, parsed = roundtrip(message([NotifyPayload(notify_type=16430), sk]))
    assert parsed.malformed is None
    got = parsed.payloads[-1]
    assert type(got) is type(sk)
    assert got.next_payload == sk.next_payload
    assert bytes(parsed) == wire
    if isinstance(sk, SkfPayload):
        assert (got.fragment_number, got.total_fragments) == (sk.fragment_number, sk.total_fragments)


def test_reserved_bits_survive_a_round_trip():
    p = NoncePayload(data=b"n" * 16, reserved=0x15)
    t = Transform(1, 12, reserved=9, reserved2=7)
    sa = SaPayload(proposals=[Proposal(1, 1, b"", [t], reserved=5)])
    wire, parsed = roundtrip(message([p, sa]))
    assert parsed.malformed is None
    assert parsed.payloads[0].reserved == 0x15
    assert bytes(parsed) == wire


# --- lying lengths -------------------------------------------------------------------------


def patched(wire: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(wire)
    struct.pack_into(">" + fmt, out, offset, value)
    return bytes(out)


NONCE_AT = IKE_HEADER_LEN  # first payload's generic header
LENGTH_AT = NONCE_AT + 2


def test_payload_length_past_the_end():
    wire = bytes(message([NoncePayload(data=b"n" * 16)]))
    msg = parse_message(patched(wire, LENGTH_AT, "H", 21 + 4 + 1))
    assert msg.malformed is not None
    assert (msg.malformed.field, msg.malformed.offset) == ("NONCE.payload_length", LENGTH_AT)
    assert "exceeds" in msg.malformed.reason
    assert msg.payloads == []


@pytest.mark.parametrize("length", [0, 1, 3])
def test_zero_length_payload(length):
    wire = bytes(message([NoncePayload(data=b"n" * 16), KePayload(dh_group=14)]))
    msg = parse_message(patched(wire, LENGTH_AT, "H", length))
    assert (msg.malformed.field, msg.malformed.offset) == ("NONCE.payload_length", LENGTH_AT)
    assert "shorter than the 4-byte generic header" in msg.malformed.reason


def test_payload_length_short_leaves_bytes_that_are_not_a_payload():
    wire = bytes(message([NoncePayload(data=b"n" * 16)]))
    msg = parse_message(patched(wire, LENGTH_AT, "H", 4 + 8))
    assert len(msg.payloads) == 1 and msg.payloads[0].data == b"n" * 8
    assert (msg.malformed.field, msg.malformed.offset) == ("payload chain", NONCE_AT + 12)


def test_bytes_after_the_sk_payload_are_malformed():
    """SK's Payload Length bounds it (§3.14); what follows it inside the message is not dropped."""
    wire = bytes(message([SkPayload(next_payload=PayloadType.IDi, data=b"\xab" * 32)]))
    msg = parse_message(patched(wire, LENGTH_AT, "H", 4 + 30))
    assert isinstance(msg.payloads[0], SkPayload)
    assert (msg.malformed.field, msg.malformed.offset) == ("payload chain", NONCE_AT + 34)
    assert "2 bytes after the last payload" in msg.malformed.reason


def test_generic_header_cut_short():
    wire = bytes(message([NoncePayload(data=b"n" * 16)]))
    msg = parse_message(patched(wire[:-16 - 2], 24, "I", len(wire) - 18))
    assert (msg.malformed.field, msg.malformed.offset) == ("NONCE.header", NONCE_AT)


def test_ike_header_too_short_and_bad_version_and_bad_length():
    assert parse_message(b"\x00" * 27).malformed.field == "IKE header"
    wire = bytes(message([NoncePayload(data=b"n" * 16)]))
    bad_version = patched(wire, 17, "B", 0x30)  # 1.0 is IKEv1 (ISAKMP), decoded as such
    assert (parse_message(bad_version).malformed.field, parse_message(bad_version).malformed.offset) == \
        ("IKE header.version", 17)
    assert parse_message(patched(wire, 17, "B", 0x10)).major_version == 1
    too_long = patched(wire, 24, "I", len(wire) + 10)
    m = parse_message(too_long)
    assert (m.malformed.field, m.malformed.offset) == ("IKE header.length", 24)
    assert len(m.payloads) == 1  # what fits is still decoded
    assert parse_message(patched(wire, 24, "I", 12)).malformed.field == "IKE header.length"


SA_BODY = NONCE_AT + 4  # first proposal
TRANSFORM_AT = SA_BODY + 8  # first transform of a proposal without SPI


def sa_wire() -> bytes:
    return bytes(message([SaPayload(proposals=[ike_proposal()])]))


@pytest.mark.parametrize("length, field, offset", [
    (4, "Transform.length", TRANSFORM_AT + 2),  # shorter than its own header
    (200, "Transform.attributes", TRANSFORM_AT + 8),  # past the end of the proposal
    (9, "Transform.attribute", TRANSFORM_AT + 8),  # one byte of attribute: needs 4
])
def test_transform_with_a_bogus_length(length, field, offset):
    msg = parse_message(patched(sa_wire(), TRANSFORM_AT + 2, "H", length))
    assert msg.malformed is None  # the chain itself is fine: the SA payload is not
    [raw] = msg.payloads
    # partial decoding: the SA payload keeps its proposal, marked malformed where it broke
    assert isinstance(raw, SaPayload) and raw.type == PayloadType.SA and len(raw.proposals) == 1
    assert (raw.malformed.field, raw.malformed.offset) == (field, offset)
    assert bytes(msg) == patched(sa_wire(), TRANSFORM_AT + 2, "H", length)  # kept byte for byte


def test_proposal_with_too_many_transforms_or_too_short():
    wire = sa_wire()
    raw = parse_message(patched(wire, SA_BODY + 7, "B", 9)).payloads[0]
    assert raw.malformed.field.startswith("Transform")
    raw = parse_message(patched(wire, SA_BODY + 7, "B", 1)).payloads[0]
    assert raw.malformed.field == "Proposal.num_transforms"
    raw = parse_message(patched(wire, SA_BODY + 2, "H", 6)).payloads[0]
    assert (raw.malformed.field, raw.malformed.offset) == ("Proposal.length", SA_BODY + 2)


SELECTOR_AT = NONCE_AT + 8


@pytest.mark.parametrize("length", [12, 20])
def test_traffic_selector_with_a_wrong_length(length):
    ts = TsPayload(selectors=[TrafficSelector(7, 0, 0, 65535, "10.0.0.0", "10.0.0.255")])
    wire = bytes(message([ts]))
    if length > 16:  # make room so that only the type/length disagreement is wrong
        wire = patched(wire + b"\0" * (length - 16), 24, "I", len(wire) + length - 16)
        wire = patched(wire, LENGTH_AT, "H", 8 + length)
    msg = parse_message(patched(wire, SELECTOR_AT + 2, "H", length))
    [raw] = msg.payloads
    assert isinstance(raw, TsPayload) and raw.type == PayloadType.TSi and raw.selectors == []
    assert (raw.malformed.field, raw.malformed.offset) == ("TrafficSelector.length", SELECTOR_AT + 2)


def test_traffic_selector_count_lies():
    ts = TsPayload(selectors=[TrafficSelector(7, 0, 0, 65535, "10.0.0.0", "10.0.0.255")])
    wire = bytes(message([ts]))
    raw = parse_message(patched(wire, NONCE_AT + 4, "B", 2)).payloads[0]
    assert raw.malformed.field == "TrafficSelector.ts_type"
    raw = parse_message(patched(wire, NONCE_AT + 4, "B", 0)).payloads[0]
    assert (raw.malformed.field, raw.malformed.offset) == ("TS.num_ts", SELECTOR_AT)


def test_delete_with_num_spis_too_large():
    wire = bytes(message([DeletePayload(protocol_id=3, spi_size=4, spis=[b"\x39\x1f\x3a\x9d"])]))
    msg = parse_message(patched(wire, NONCE_AT + 6, "H", 3))
    [raw] = msg.payloads
    assert isinstance(raw, DeletePayload) and raw.type == PayloadType.DELETE and raw.spis == [b"\x39\x1f\x3a\x9d"]
    assert (raw.malformed.field, raw.malformed.offset) == ("Delete.spis", NONCE_AT + 12)
    raw = parse_message(patched(wire, NONCE_AT + 6, "H", 0)).payloads[0]
    assert (raw.malformed.field, raw.malformed.offset) == ("Delete.num_spis", NONCE_AT + 8)


@pytest.mark.parametrize("payload, at, fmt, value, field", [
    (NotifyPayload(notify_type=16388, data=b"d" * 4), NONCE_AT + 5, "B", 9, "Notify.spi_size"),
    (CpPayload(cfg_type=1, attributes=[CfgAttribute(1, b"\0" * 4)]), NONCE_AT + 10, "H", 5,
     "CP.attribute.length"),
    (EapPayload(code=1, identifier=1, eap_type=1, data=b"x"), NONCE_AT + 6, "H", 9, "EAP.length"),
    (KePayload(dh_group=31, data=b""), LENGTH_AT, "H", 6, "KE.dh_group"),
    (AuthPayload(kind=2, data=b""), LENGTH_AT, "H", 5, "AuthPayload.type"),
])
def test_inner_fields_that_lie(payload, at, fmt, value, field):
    wire = patched(bytes(message([payload])), at, fmt, value)
    if fmt == "H" and at == LENGTH_AT:  # the payload shrank: so does the message
        wire = patched(wire[:NONCE_AT + value], 24, "I", NONCE_AT + value)
    msg = parse_message(wire)
    [raw] = msg.payloads
    assert raw.type == payload.type and raw.malformed is not None
    assert raw.malformed.field == field
    render_message(msg)


def test_unknown_payload_type_becomes_raw():
    wire, parsed = roundtrip(message([RawPayload(payload_type=200, data=b"abc"), NoncePayload(data=b"n" * 8)]))
    assert isinstance(parsed.payloads[0], RawPayload) and parsed.payloads[0].malformed is None
    assert isinstance(parsed.payloads[1], NoncePayload)
    assert bytes(parsed) == wire


def test_a_long_chain_is_bounded():
    wire = bytes(message([NoncePayload() for _ in range(600)]))
    msg = parse_message(wire)
    assert len(msg.payloads) == 512 and msg.malformed.field == "payload chain"


# --- fuzzing -------------------------------------------------------------------------------

VALID = [bytes(message(every_payload())),
         bytes(message([NotifyPayload(notify_type=16444, data=b"\0\0\0\1"),
                        SkPayload(next_payload=PayloadType.SA, data=b"\xab" * 40)])),
         bytes(message([SaPayload(proposals=[esp_proposal()]), NoncePayload(data=b"n" * 32),
                        SkfPayload(next_payload=35, fragment_number=1, total_fragments=2, data=b"e" * 30)]))]


def check(data: bytes) -> None:
    msg = parse_message(data)
    assert isinstance(render_message(msg), str)
    clean = msg.malformed is None and not any(p.malformed for p in msg.payloads)
    if clean and msg.length == len(data):
        assert bytes(msg) == data
    # decoded payloads must also render when they sit inside a decrypted SK
    sk = SkPayload(decrypted=True, inner=list(msg.payloads))
    render_message(message([sk]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(data):
    check(data)
    check(VALID[0][:28] + data)  # a valid header in front gets past the first check


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255),
                                                  st.sampled_from(["set", "insert", "delete"])),
                                        min_size=1, max_size=6))
def test_fuzz_mutated_messages(base, edits):
    data = bytearray(base)
    for pos, value, op in edits:
        pos %= len(data) or 1
        if op == "set" and data:
            data[pos] = value
        elif op == "insert":
            data.insert(pos, value)
        elif data:
            del data[pos]
    check(bytes(data))
    # with the IKE length fixed up, the mutation reaches the payloads instead of the header
    if len(data) >= IKE_HEADER_LEN:
        struct.pack_into(">I", data, 24, len(data))
        check(bytes(data))
