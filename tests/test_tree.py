"""The tshark -V-like text tree of one IKE message (analyzer.report.tree)."""

from __future__ import annotations

import struct

from analyzer.report.tree import render_message
from dissectors.iana import ExchangeType, NotifyType, PayloadType
from dissectors.ikev2.message import parse_message
from dissectors.ikev2.payloads import (
    CfgAttribute,
    CpPayload,
    EapPayload,
    IdPayload,
    NoncePayload,
    NotifyPayload,
    Proposal,
    RawPayload,
    SaPayload,
    SkfPayload,
    SkPayload,
    Transform,
    TransformAttribute,
    TrafficSelector,
    TsPayload,
)
from dissectors.records import FrameRef
from tests.test_payloads import IKE_HEADER_LEN, esp_proposal, every_payload, message


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def rendered(payloads, **kw) -> tuple[str, list[str]]:
    msg = parse_message(bytes(message(payloads, **kw)))
    text = render_message(msg)
    return text, lines(text)


def test_header_and_frame_line():
    msg = parse_message(bytes(message([NoncePayload(data=b"n" * 32)], exchange=ExchangeType.CREATE_CHILD_SA,
                                      message_id=2)))
    msg.frame = FrameRef("c.pcap", 3, 1_700_000_000.123456)
    msg.src, msg.dst, msg.sport, msg.dport, msg.non_esp_marker = "192.0.2.1", "192.0.2.2", 4500, 4500, True
    text = render_message(msg)
    out = text.splitlines()
    assert out[0] == "Frame 3: 2023-11-14 22:13:20.123456 192.0.2.1:4500 -> 192.0.2.2:4500 (Non-ESP marker)"
    assert out[1:3] == ["Internet Protocol Version 4, Src: 192.0.2.1, Dst: 192.0.2.2",  # tshark's layer lines
                        "User Datagram Protocol, Src Port: 4500, Dst Port: 4500"]
    del out[1:3]
    assert out[1:10] == [
        "Internet Security Association and Key Management Protocol",
        "    Initiator SPI: 208ea4958b46bc8f",
        "    Responder SPI: dc3b922637ba126c",
        "    Next payload: Nonce (40)",
        "    Version: 2.0",
        "    Exchange type: CREATE_CHILD_SA (36)",
        "    Flags: 0x08 (Initiator, No higher version, Request)",
        "    Message ID: 0x00000002",
        f"    Length: {IKE_HEADER_LEN + 36}",
    ]
    assert out[10:14] == [
        "    Payload: Nonce (40)",
        "        Next payload: NONE / No Next Payload (0)",
        "        Critical Bit: Not critical",
        "        Payload length: 36",
    ]
    assert out[14] == "        Nonce DATA: " + "6e" * 32 + " (32 bytes)"


def test_frame_unknown_ipv6_and_response_flags():
    msg = parse_message(bytes(message([], flags=0x20)))
    assert render_message(msg).splitlines()[0] == "Frame ?"
    assert "Flags: 0x20 (Responder, No higher version, Response)" in lines(render_message(msg))
    msg.src, msg.dst, msg.sport, msg.dport = "2001:db8::1", "2001:db8::2", 500, 500
    assert render_message(msg).splitlines()[0] == "Frame ?: [2001:db8::1]:500 -> [2001:db8::2]:500"


def test_every_payload_type_renders():
    text, out = rendered(every_payload())
    # SA, proposals and transforms
    for line in ["Payload: Security Association (33)", "Payload: Proposal (2) # 1", "Protocol ID: IKE (1)",
                 "Proposal transforms: 4", "Transform Type: ENCR (1)", "Transform ID (ENCR): AES_CBC (12)",
                 "Transform Attribute (t=14,l=2): Key Length: 128", "Transform ID (PRF): PRF_HMAC_SHA2_256 (5)",
                 "Transform ID (INTEG): AUTH_HMAC_SHA2_256_128 (12)", "Transform ID (DH): MODP_2048 (14)",
                 "Transform Attribute (t=17,l=4): UNKNOWN(17): 746c7621",
                 "Payload: Proposal (2) # 2", "Protocol ID: ESP (3)", "SPI Size: 4", "SPI: 01020304",
                 "Transform ID (ENCR): AES_GCM_16 (20)"]:
        assert line in out, line
    # KE, IDs, certificates, AUTH, nonce
    for line in ["Payload: Key Exchange (34)", "DH Group #: CURVE25519 (31)",
                 "Key Exchange Data: " + bytes(range(32)).hex() + " (32 bytes)",
                 "Payload: Identification - Initiator (35)", "ID type: ID_FQDN (2)",
                 "Identification Data: a.example.test",
                 "Payload: Identification - Responder (36)", "ID type: ID_IPV4_ADDR (1)",
                 "Identification Data: 198.51.100.7",
                 "Payload: Certificate (37)", "Certificate Encoding: X509_SIGNATURE (4)",
                 "Certificate Data: 3082010063657274 (8 bytes)",
                 "Payload: Certificate Request (38)", "Certificate Authority Data: " + "aa" * 20 + " (20 bytes)",
                 "Payload: Authentication (39)", "Authentication Method: SHARED_KEY_MIC (2)",
                 "Authentication Data: " + "2f" * 32 + " (32 bytes)",
                 "Nonce DATA: " + "8b" * 32 + " (32 bytes)"]:
        assert line in out, line
    # RFC 9611 notifies, REKEY_SA, Delete, Vendor ID
    for line in ["Payload: Notify (41) - SA_RESOURCE_INFO", "Protocol ID: NONE (0)", "SPI Size: 0",
                 "Notify Message Type: SA_RESOURCE_INFO (16444)", 'Resource Identifier: 00000001 ("....")',
                 "Resource Identifier: (empty: not bound to a resource)",
                 "Payload: Notify (41) - TS_MAX_QUEUE", "Notify Message Type: TS_MAX_QUEUE (48)",
                 "Payload: Notify (41) - REKEY_SA", "Notify Message Type: REKEY_SA (16393)", "SPI: 391f3a9d",
                 "Payload: Delete (42)", "Number of SPIs: 2", "Delete SPI: 391f3a9d", "Delete SPI: 706df644",
                 "Number of SPIs: 0",
                 "Payload: Vendor ID (43)", "Vendor ID: 882fe56d6fd20dbc2251613b2ebe5beb (strongSwan)"]:
        assert line in out, line
    # TS, CP, EAP, unknown
    for line in ["Payload: Traffic Selector - Initiator (44) # 2", "Number of Traffic Selectors: 2",
                 "Traffic Selector: TS_IPV4_ADDR_RANGE", "Traffic Selector Type: TS_IPV4_ADDR_RANGE (7)",
                 "Protocol ID: any (0)", "Start Port: 0", "End Port: 65535", "Starting Addr: 198.51.100.0",
                 "Ending Addr: 198.51.100.255", "Traffic Selector Type: TS_IPV6_ADDR_RANGE (8)",
                 "Protocol ID: TCP (6)", "Start Port: 443", "Starting Addr: 2001:db8::",
                 "Ending Addr: 2001:db8::ffff",
                 "Payload: Traffic Selector - Responder (45) # 1", "Traffic Selector Type: TS_SECLABEL (10)",
                 "Selector Data: 6c6162656c (5 bytes)",
                 "Payload: Configuration (47)", "CFG Type: CFG_REQUEST (1)",
                 "Attribute Type: (t=1,l=0) INTERNAL_IP4_ADDRESS: (empty)",
                 "Attribute Type: (t=8,l=0) INTERNAL_IP6_ADDRESS: (empty)", "CFG Type: CFG_REPLY (2)",
                 "Attribute Type: (t=1,l=4) INTERNAL_IP4_ADDRESS: 10.1.0.1",
                 "Attribute Type: (t=7,l=4) APPLICATION_VERSION: v6.0",
                 "Payload: Extensible Authentication (48)", "Code: REQUEST (1)", "Id: 7", "Type: Identity (1)",
                 "Identity: alice", "Code: SUCCESS (3)",
                 "Payload: UNKNOWN(200)", "Data: 6f7061717565 (6 bytes)",
                 "Payload: Generic Secure Password Method (49)", "Data: <MISSING>"]:
        assert line in out, line
    # TS_MAX_QUEUE shows just its type: no "Notification DATA" line follows it
    i = out.index("Notify Message Type: TS_MAX_QUEUE (48)")
    assert out[i + 1].startswith("Payload: ")
    assert "[Malformed" not in text


def test_nested_indentation_of_a_proposal():
    text, _ = rendered([SaPayload(proposals=[esp_proposal()])])
    block = text.splitlines()[10:]
    assert block[:14] == [
        "    Payload: Security Association (33)",
        "        Next payload: NONE / No Next Payload (0)",
        "        Critical Bit: Not critical",
        "        Payload length: 36",
        "        Payload: Proposal (2) # 1",
        "            Proposal number: 1",
        "            Protocol ID: ESP (3)",
        "            SPI Size: 4",
        "            Proposal transforms: 2",
        "            SPI: 391f3a9d",
        "            Payload: Transform (3)",
        "                Transform Type: ENCR (1)",
        "                Transform ID (ENCR): AES_GCM_16 (20)",
        "                Transform Attribute (t=14,l=2): Key Length: 256",
    ]
    assert block[15:17] == ["                Transform Type: ESN (5)",
                            "                Transform ID (ESN): NO_ESN (0)"]


def test_critical_bit_and_unknown_values():
    nonce = NoncePayload(data=b"n", critical=True)
    notify = NotifyPayload(protocol_id=9, notify_type=40000, data=b"\x01\x02")
    sa = SaPayload(proposals=[Proposal(1, 1, b"", [Transform(99, 7, [TransformAttribute(14, 128)]),
                                                  Transform(1, 250)])])
    ts = TsPayload(selectors=[TrafficSelector(7, 200, 1, 2, "10.0.0.1", "10.0.0.2")])
    eap = EapPayload(code=9, identifier=1, eap_type=77, data=b"zz")
    cp = CpPayload(cfg_type=42, attributes=[CfgAttribute(999, b"\xde\xad")])
    _, out = rendered([nonce, notify, sa, ts, eap, cp, IdPayload(kind=77, data=b"\x00\x01")], exchange=99)
    for line in ["Exchange type: UNKNOWN(99)", "Critical Bit: Critical", "Payload: Notify (41) - UNKNOWN(40000)",
                 "Protocol ID: UNKNOWN(9)", "Notify Message Type: UNKNOWN(40000)", "Notification DATA: 0102",
                 "Transform Type: UNKNOWN(99)", "Transform ID (UNKNOWN(99)): UNKNOWN(7)",
                 "Transform ID (ENCR): UNKNOWN(250)", "Protocol ID: 200", "Start Port: 1", "End Port: 2",
                 "Code: UNKNOWN(9)", "Type: UNKNOWN(77)", "Type-Data: 7a7a (2 bytes)", "CFG Type: UNKNOWN(42)",
                 "Attribute Type: (t=999,l=2) UNKNOWN(999): dead (2 bytes)", "ID type: UNKNOWN(77)",
                 "Identification Data: 0001 (2 bytes)"]:
        assert line in out, line


def test_raw_payload_of_unknown_type():
    _, out = rendered([RawPayload(payload_type=200, data=b"\x01\x02\x03")])
    assert "Next payload: UNKNOWN(200)" in out
    assert "Payload: UNKNOWN(200)" in out
    assert "Payload length: 7" in out


def test_malformed_payload_and_message_lines():
    wire = bytearray(bytes(message([SaPayload(proposals=[esp_proposal()]), NoncePayload(data=b"n" * 8)])))
    struct.pack_into(">H", wire, IKE_HEADER_LEN + 4 + 8 + 4 + 2, 4)  # first transform: length 4
    nonce_at = IKE_HEADER_LEN + 36
    struct.pack_into(">H", wire, nonce_at + 2, 99)  # nonce: length past the end
    text = render_message(parse_message(bytes(wire)))
    out = lines(text)
    assert "Payload: Security Association (33)" in out
    assert f"[Malformed: Transform.length at offset {IKE_HEADER_LEN + 18}: 4 is shorter than 8]" in out
    assert out[-1] == f"[Malformed: NONCE.payload_length at offset {nonce_at + 2}: 99 exceeds the 12 bytes left]"
    assert text.splitlines()[-1].startswith("    [Malformed: ")


def test_truncated_message_still_renders():
    out = lines(render_message(parse_message(b"\x01" * 10)))
    assert out[0] == "Frame ?"
    assert out[-1] == "[Malformed: IKE header at offset 0: needs 28 bytes, got 10]"


def sk_message(sk):
    msg = parse_message(bytes(message([sk])))
    return msg, msg.payloads[0]


def test_decrypted_sk_shows_inner_payloads_indented():
    msg, sk = sk_message(SkPayload(next_payload=PayloadType.NOTIFY, data=b"\xab" * 60))
    sk.decrypted = True
    sk.inner = parse_message(bytes(message([
        NotifyPayload(notify_type=NotifyType.SA_RESOURCE_INFO, data=b"cpu1"),
        NotifyPayload(notify_type=NotifyType.TS_MAX_QUEUE)]))).payloads
    text = render_message(msg)
    out = text.splitlines()
    i = out.index("    Payload: Encrypted and Authenticated (46)")
    assert out[i + 1:i + 7] == [
        "        Next payload: Notify (41)",
        "        Critical Bit: Not critical",
        "        Payload length: 64",
        "        Encrypted Data (60 bytes)",
        "        Decrypted Data (20 bytes)",
        "            Payload: Notify (41) - SA_RESOURCE_INFO",
    ]
    assert "                Resource Identifier: 63707531 (\"cpu1\")" in out
    assert "                Notify Message Type: TS_MAX_QUEUE (48)" in out
    assert "[Expert" not in text


def test_sk_not_decrypted_shows_the_error():
    msg, sk = sk_message(SkPayload(next_payload=PayloadType.IDi, data=b"\xab" * 40))
    sk.error = "integrity check failed for SPIs 208ea4958b46bc8f/dc3b922637ba126c — wrong keys?"
    out = lines(render_message(msg))
    assert "Encrypted Data (40 bytes)" in out
    assert f"[Expert: {sk.error}]" in out
    assert not any(line.startswith("Decrypted Data") for line in out)


def test_skf_fragments():
    msg, skf = sk_message(SkfPayload(next_payload=PayloadType.IDi, fragment_number=1, total_fragments=2,
                                     data=b"\x01" * 30))
    out = lines(render_message(msg))
    assert "Payload: Encrypted and Authenticated Fragment (53)" in out
    assert "Fragment Number: 1" in out and "Total Fragments: 2" in out
    assert "[Expert: not decrypted]" in out
    skf.decrypted = True
    assert "[Fragment 1 of 2: decrypted, awaiting reassembly]" in lines(render_message(msg))

    msg, last = sk_message(SkfPayload(fragment_number=2, total_fragments=2, data=b"\x02" * 30))
    last.decrypted, last.reassembled_from = True, [5, 6]
    last.inner = [IdPayload(kind=2, data=b"a.example.test", next_payload=0)]
    out = lines(render_message(msg))
    assert "Reassembled from frames 5, 6" in out
    assert "Payload: Identification - Initiator (35)" in out
    assert "Identification Data: a.example.test" in out


def test_printable_rendering_of_a_resource_identifier():
    _, out = rendered([NotifyPayload(notify_type=NotifyType.SA_RESOURCE_INFO, data=b"q\x00\x7f\xffA")])
    assert 'Resource Identifier: 71007fff41 ("q...A")' in out


def test_long_data_is_cut_but_its_length_shown():
    _, out = rendered([NoncePayload(data=b"\x11" * 200)])
    assert "Nonce DATA: " + "11" * 64 + "... (200 bytes)" in out
