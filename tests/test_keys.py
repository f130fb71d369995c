"""dissectors.keys: Wireshark's ikev2_decryption_table / esp_sa, and our ikev2_sk_d.

Bad lines must give "path:line: reason" naming the field and never the key; the real key
files of ../shared/captures must load as written; tshark 4.0 must accept every row we build
from our tables (its UAT checks names and key lengths as ikev2_uat_data_update_cb does).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dissectors.crypto import ENCR_BY_NAME, ENCR_SPECS, ESP_AUTH_BY_NAME, ESP_ENCR_BY_NAME, INTEG_BY_NAME
from dissectors.iana import EncrId, IntegId, PrfId
from dissectors.keys import EspKeys, IkeKeys, KeyProblem, KeyStore, load_keys
from dissectors.records import Secret
from tests.conftest import SAMPLES, SHARED, needs_shared, needs_tshark

SPI_I, SPI_R = "0123456789abcdef", "fedcba9876543210"
EI, ER = "11" * 16, "22" * 16  # AES-CBC-128
AI, AR = "33" * 32, "44" * 32  # HMAC_SHA2_256_128
GOOD_IKE = f'{SPI_I},{SPI_R},{EI},{ER},"AES-CBC-128 [RFC3602]",{AI},{AR},"HMAC_SHA2_256_128 [RFC4868]"'
GCM_KEY = "55" * 36
GOOD_ESP = f'"IPv4","192.0.2.1","192.0.2.2","0x0000c001","AES-GCM with 16 octet ICV [RFC4106]","0x{GCM_KEY}","NULL",""'
SECRETS = (EI, ER, AI, AR, GCM_KEY, "66" * 16, "77" * 32, "8a" * 32)


def write(tmp_path: Path, name: str, *lines: str) -> Path:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return path


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text.lower()


# --------------------------------------------------------------------------------------
# The real key files


@needs_shared
def test_real_aes128cbc_key_files():
    base = SHARED / "sswan-aes128cbc-sha256-modp2048"
    store = load_keys([f"{base}.ikev2_decryption_table", f"{base}.esp_sa"])
    assert store.problems == []
    assert len(store.ike) == 2 and len(store.esp) == 14
    for keys in store.ike.values():
        assert keys.encr.transform_id == EncrId.AES_CBC and keys.encr.key_bits == 128
        assert keys.integ.transform_id == IntegId.AUTH_HMAC_SHA2_256_128
        assert len(keys.sk_ei) == len(keys.sk_er) == 16 and len(keys.sk_ai) == len(keys.sk_ar) == 32
    assert (bytes.fromhex("b6814a479ef5fcad"), bytes.fromhex("fdd1eed7ac3d61ac")) in store.ike
    for esp in store.esp.values():
        assert (esp.encr_name, esp.auth_name) == ("AES-CBC [RFC3602]", "HMAC-SHA-256-128 [RFC4868]")
        assert esp.encr.name == "AES-CBC-128 [RFC3602]" and esp.auth.icv_len == 16
        assert {esp.src, esp.dst} == {"192.0.2.1", "192.0.2.2"}


@needs_shared
def test_real_aes256gcm16_key_files():
    base = SHARED / "sswan-aes256gcm16"
    store = load_keys([f"{base}.ikev2_decryption_table", f"{base}.esp_sa"])
    assert store.problems == []
    assert len(store.ike) == 2 and len(store.esp) == 14
    for keys in store.ike.values():
        assert keys.encr.name == "AES-GCM-256 with 16 octet ICV [RFC5282]"
        assert keys.integ.name == "NONE [RFC4306]" and keys.sk_ai == b"" and keys.sk_ar == b""
        assert len(keys.sk_ei) == 36  # 32-octet key + 4-octet salt
    for esp in store.esp.values():
        assert esp.encr.name == "AES-GCM-256 with 16 octet ICV [RFC5282]" and esp.auth_name == "NULL"
    assert store.esp_keys("192.0.2.2", 0x706DF644).encr_name == "AES-GCM with 16 octet ICV [RFC4106]"


@needs_shared
def test_real_save_keys_directory():
    """strongSwan 6.0.6's save-keys wrote this directory; other files in it are skipped."""
    store = load_keys([str(SHARED / "strongswan6-percpu-2cpu")])
    assert store.problems == []
    assert len(store.ike) == 1 and len(store.esp) == 6
    assert [Path(s).name for s in store.sources] == ["esp_sa", "ikev2_decryption_table"]


def test_bundled_sample_directory():
    store = load_keys([str(SAMPLES / "strongswan6-percpu")])
    assert store.problems == [] and len(store.ike) == 1 and len(store.esp) == 6


# --------------------------------------------------------------------------------------
# ikev2_decryption_table rows


def test_good_ike_row(tmp_path):
    path = write(tmp_path, "ikev2_decryption_table", "# comment", "", GOOD_IKE)
    store = load_keys([str(path)])
    assert store.problems == []
    keys = store.ike_keys(bytes.fromhex(SPI_I), bytes.fromhex(SPI_R))
    assert keys.encr is ENCR_BY_NAME["AES-CBC-128 [RFC3602]"]
    assert keys.integ is INTEG_BY_NAME["HMAC_SHA2_256_128 [RFC4868]"]
    assert keys.sk_ei == bytes.fromhex(EI) and keys.sk_ar == bytes.fromhex(AR)
    assert isinstance(keys.sk_ei, Secret)
    assert keys.source == f"{path}:3"
    assert store.ike_keys(bytes(8), bytes(8)) is None


BAD_IKE = [
    (f'{SPI_I},{SPI_R},{EI},{ER},"AES-CBC-128 [RFC3602]",{AI},{AR}',
     'expected 8 fields (SPIi,SPIr,SK_ei,SK_er,encryption algorithm,SK_ai,SK_ar,integrity algorithm), found 7'),
    (f'{SPI_I[:-2]},{SPI_R},{EI},{ER},"AES-CBC-128 [RFC3602]",{AI},{AR},"HMAC_SHA2_256_128 [RFC4868]"',
     "SPIi must be 8 octets (16 hex characters), found 7"),
    (f'{SPI_I},{SPI_R}00,{EI},{ER},"AES-CBC-128 [RFC3602]",{AI},{AR},"HMAC_SHA2_256_128 [RFC4868]"',
     "SPIr must be 8 octets (16 hex characters), found 9"),
    (f'{SPI_I},{SPI_R},{EI[:-1]}x,{ER},"AES-CBC-128 [RFC3602]",{AI},{AR},"HMAC_SHA2_256_128 [RFC4868]"',
     "SK_ei is not hexadecimal"),
    (f'{SPI_I},{SPI_R},{EI},{ER}1,"AES-CBC-128 [RFC3602]",{AI},{AR},"HMAC_SHA2_256_128 [RFC4868]"',
     "SK_er has an odd number of hex digits"),
    (f'{SPI_I},{SPI_R},{EI},{ER},"AES-CBC-256 [RFC3602]",{AI},{AR},"HMAC_SHA2_256_128 [RFC4868]"',
     "SK_ei is 16 octets; the encryption algorithm AES-CBC-256 [RFC3602] needs 32"),
    (f'{SPI_I},{SPI_R},{EI},{ER},"AES-CBC-128 [RFC3602]",{AI},{AR},"HMAC_SHA2_512_256 [RFC4868]"',
     "SK_ai is 32 octets; the integrity algorithm HMAC_SHA2_512_256 [RFC4868] needs 64"),
    (f'{SPI_I},{SPI_R},{EI},{ER},"AES-CBC-128 [RFC3602]",{AI},{AR[:-2]},"HMAC_SHA2_256_128 [RFC4868]"',
     "SK_ar is 31 octets; the integrity algorithm HMAC_SHA2_256_128 [RFC4868] needs 32"),
    (f'{SPI_I},{SPI_R},{EI},{ER},"AES-CBC-128",{AI},{AR},"HMAC_SHA2_256_128 [RFC4868]"',
     'unknown encryption algorithm "AES-CBC-128" (did you mean "AES-CBC-128 [RFC3602]"?)'),
    (f'{SPI_I},{SPI_R},{EI},{ER},"AES-CBC-128 [RFC3602]",{AI},{AR},"HMAC-SHA-256-128 [RFC4868]"',
     'unknown integrity algorithm "HMAC-SHA-256-128 [RFC4868]" (did you mean "HMAC_SHA2_256_128 [RFC4868]"?)'),
    # GCM keys include the 4-octet salt: a bare 32-octet key is wrong
    (f'{SPI_I},{SPI_R},{"77" * 32},{"77" * 32},"AES-GCM-256 with 16 octet ICV [RFC5282]",,,"NONE [RFC4306]"',
     "SK_ei is 32 octets; the encryption algorithm AES-GCM-256 with 16 octet ICV [RFC5282] needs 36"),
    (f'{SPI_I},{SPI_R},{GCM_KEY},{GCM_KEY},"AES-GCM-256 with 16 octet ICV [RFC5282]",{AI},{AR},'
     '"HMAC_SHA2_256_128 [RFC4868]"',
     'encryption algorithm "AES-GCM-256 with 16 octet ICV [RFC5282]" requires integrity algorithm "NONE [RFC4306]"'),
    (f'{SPI_I},{SPI_R},{EI},{ER},"AES-CBC-128 [RFC3602]",{AI},{AR},"ANY 96-bits of Authentication [No Checking]"',
     "SK_ai is 32 octets; the integrity algorithm ANY 96-bits of Authentication [No Checking] needs 0"),
    # the key pasted where the algorithm name belongs: never echoed
    (f'{SPI_I},{SPI_R},{EI},{ER},{EI},{AI},{AR},"HMAC_SHA2_256_128 [RFC4868]"',
     f'unknown encryption algorithm "{EI[:4]}…" (32 characters, the rest withheld: it could be a key)'),
]


def test_bad_ike_lines_report_file_line_field_and_keep_the_good_ones(tmp_path):
    path = write(tmp_path, "ikev2_decryption_table", GOOD_IKE, *(line for line, _ in BAD_IKE))
    store = load_keys([str(path)])
    assert len(store.ike) == 1
    assert [str(p) for p in store.problems] == [f"{path}:{n}: {reason}" for n, (_, reason) in enumerate(BAD_IKE, 2)]
    for problem in store.problems:
        assert_no_secret(str(problem))
        assert_no_secret(repr(problem))


def test_every_ike_name_and_key_length_pair_loads(tmp_path):
    lines = []
    for n, encr in enumerate(ENCR_SPECS):
        integ = INTEG_BY_NAME["NONE [RFC4306]" if encr.aead else "HMAC_SHA1_96 [RFC2404]"]
        lines.append(f'{n:016x},{SPI_R},{"ab" * encr.key_len},{"cd" * encr.key_len},"{encr.name}",'
                     f'{"ef" * integ.key_len},{"01" * integ.key_len},"{integ.name}"')
    for n, integ in enumerate(INTEG_BY_NAME.values(), 100):
        lines.append(f'{n:016x},{SPI_R},{EI},{ER},"AES-CBC-128 [RFC3602]",'
                     f'{"ef" * integ.key_len},{"01" * integ.key_len},"{integ.name}"')
    store = load_keys([str(write(tmp_path, "x.ikev2_decryption_table", *lines))])
    assert store.problems == [] and len(store.ike) == len(lines)


def test_conflicting_rows_are_reported_and_the_last_wins(tmp_path):
    other = GOOD_IKE.replace(EI, "66" * 16)
    path = write(tmp_path, "ikev2_decryption_table", GOOD_IKE, GOOD_IKE, other)
    store = load_keys([str(path)])
    assert [str(p) for p in store.problems] == [
        f"{path}:3: SPIs {SPI_I}/{SPI_R} already loaded from {path}:2 with different keys; "
        "this line replaces them"]
    assert store.ike_keys(bytes.fromhex(SPI_I), bytes.fromhex(SPI_R)).sk_ei == bytes.fromhex("66" * 16)


# --------------------------------------------------------------------------------------
# esp_sa rows


def test_good_esp_rows(tmp_path):
    path = write(tmp_path, "esp_sa", GOOD_ESP,
                 f'"IPv6","2001:db8:0::1","*","0xc002","AES-CBC [RFC3602]","0x{"66" * 16}",'
                 f'"HMAC-SHA-256-128 [RFC4868]","0x{"77" * 32}"',
                 '"IPv4","192.0.2.2","192.0.2.1","0xc003","TripleDes-CBC [RFC2451]",'  # strongSwan's spelling
                 f'"0x{"8a" * 24}","HMAC-SHA-1-96 [RFC2404]","0x{"8a" * 20}"',
                 f'"IPv4","192.0.2.2","192.0.2.1","0xc004","AES-GCM [RFC4106]","0x{"8a" * 20}",'
                 '"ANY 64 bit authentication [no checking]","0x"')
    store = load_keys([str(path)])
    assert store.problems == []
    gcm = store.esp_keys("192.0.2.2", 0xC001)
    assert gcm.encr.name == "AES-GCM-256 with 16 octet ICV [RFC5282]" and gcm.encr_key == bytes.fromhex(GCM_KEY)
    assert gcm.auth.name == "NULL" and gcm.auth_key == b""
    v6 = store.esp_keys("2001:db8::5", 0xC002)  # the "*" destination matches any address
    assert (v6.src, v6.dst, v6.encr.name) == ("2001:db8::1", "*", "AES-CBC-128 [RFC3602]")
    assert store.esp_keys("192.0.2.1", 0xC003).encr_name == "TripleDES-CBC [RFC2451]"
    assert store.esp_keys("192.0.2.1", 0xC004).encr.transform_id == EncrId.AES_GCM_8
    assert store.esp_keys("192.0.2.1", 0xC001) is None


BAD_ESP = [
    ('"IPv4","192.0.2.1","192.0.2.2","0xc001","AES-CBC [RFC3602]"',
     "expected 8 fields (protocol,src,dst,SPI,encryption algorithm,encryption key,"
     "authentication algorithm,authentication key), found 5"),
    (GOOD_ESP.replace('"IPv4"', '"IPX"'), 'protocol must be "IPv4" or "IPv6"'),
    (GOOD_ESP.replace('"192.0.2.1"', '"192.0.2.300"'), "src is not an IPv4 address or *"),
    (GOOD_ESP.replace('"192.0.2.2"', '"2001:db8::2"'), "dst is not an IPv4 address"),
    (GOOD_ESP.replace('"0x0000c001"', '"0xc0*"'),  # a wildcard SPI has 8 characters after 0x
     'SPI must be "*", a number (0x hex, decimal, 0 octal as strtoul reads it) or "0x" and 8 characters '
     'with * for any hex digit (e.g. 0xc0ffee**)'),
    (GOOD_ESP.replace('"0x0000c001"', '"0x1ffffffff"'), "SPI does not fit in 32 bits"),
    (GOOD_ESP.replace(GCM_KEY, GCM_KEY[:-2] + "zz"), "encryption key is not hexadecimal after 0x"),
    (GOOD_ESP.replace(GCM_KEY, GCM_KEY + "5"), "encryption key has an odd number of hex digits"),
    (GOOD_ESP.replace(GCM_KEY, GCM_KEY[:-8]),
     'encryption key is 32 octets; the encryption algorithm "AES-GCM with 16 octet ICV [RFC4106]" needs 20, 28, 36'),
    (GOOD_ESP.replace("AES-GCM with 16 octet ICV [RFC4106]", "SERPENT-CBC"),
     'unknown encryption algorithm "SERP…" (11 characters, the rest withheld: it could be a key); esp_sa accepts ' + ", ".join(f'"{n}"' for n in ESP_ENCR_BY_NAME)),
    (GOOD_ESP.replace('"NULL"', '"HMAC-SHA-256-96"'),
     'unknown authentication algorithm "HMAC-SHA-256-96" (did you mean "HMAC-SHA-256-96 '
     '[draft-ietf-ipsec-ciph-sha-256-00]"?); esp_sa accepts ' + ", ".join(f'"{n}"' for n in ESP_AUTH_BY_NAME)),
    (GOOD_ESP.replace('"NULL",""', f'"HMAC-SHA-256-128 [RFC4868]","0x{"77" * 32}"'),
     'encryption algorithm "AES-GCM with 16 octet ICV [RFC4106]" is AEAD: authentication must be '
     '"NULL" or "ANY n bit authentication [no checking]"'),
    (f'"IPv4","192.0.2.1","192.0.2.2","0x1","AES-CBC [RFC3602]","0x{"66" * 16}","HMAC-SHA-256-128 [RFC4868]",'
     f'"0x{"77" * 20}"',
     'authentication key is 20 octets; the authentication algorithm "HMAC-SHA-256-128 [RFC4868]" needs 32'),
    (f'"IPv4","192.0.2.1","192.0.2.2","0x1","AES-GCM [RFC4106]","0x{"66" * 16}","NULL",""',
     'encryption algorithm "AES-GCM [RFC4106]" takes its ICV length from an '
     '"ANY 64/96/128 bit authentication [no checking]" algorithm'),
]


def test_bad_esp_lines(tmp_path):
    path = write(tmp_path, "esp_sa", *(line for line, _ in BAD_ESP), GOOD_ESP)
    store = load_keys([str(path)])
    assert len(store.esp) == 1
    assert [str(p) for p in store.problems] == [f"{path}:{n}: {reason}" for n, (_, reason) in enumerate(BAD_ESP, 1)]
    for problem in store.problems:
        assert_no_secret(str(problem))


# --------------------------------------------------------------------------------------
# ikev2_sk_d (multisa's own)


def test_sk_d_file(tmp_path):
    path = write(tmp_path, "ikev2_sk_d", f"{SPI_I},{SPI_R},{'8a' * 32},PRF_HMAC_SHA2_256",
                 f"{SPI_R},{SPI_I},{'8a' * 20}",
                 f"{SPI_R},{SPI_R},{'8a' * 20},PRF_HMAC_SHA2_256",
                 f"{SPI_I},{SPI_I},{'8a' * 20},PRF_HMAC_TIGER",
                 f"{SPI_I},{SPI_I},{'8a' * 20},PRF_NOPE",
                 f"{SPI_I},{SPI_I},,2",
                 f"{SPI_I},{SPI_I}")
    store = load_keys([str(path)])
    key = (bytes.fromhex(SPI_I), bytes.fromhex(SPI_R))
    assert store.sk_d[key] == bytes.fromhex("8a" * 32) and isinstance(store.sk_d[key], Secret)
    assert store.sk_d_prf == {key: PrfId.PRF_HMAC_SHA2_256}
    assert (bytes.fromhex(SPI_R), bytes.fromhex(SPI_I)) in store.sk_d
    assert [str(p) for p in store.problems] == [
        f"{path}:3: SK_d is 20 octets; PRF_HMAC_SHA2_256 needs 32",
        f'{path}:4: unsupported PRF "PRF_HMAC_TIGER"',
        f'{path}:5: unknown PRF "PRF_…" (8 characters, the rest withheld: it could be a key)',
        f"{path}:6: SK_d is empty",
        f"{path}:7: expected 3 or 4 fields (SPIi,SPIr,SK_d,PRF), found 2",
    ]
    assert_no_secret(" ".join(map(str, store.problems)))


# --------------------------------------------------------------------------------------
# Files, directories, repeated paths


def test_directory_picks_key_files_by_name(tmp_path):
    write(tmp_path, "sswan-a.ikev2_decryption_table", GOOD_IKE)
    write(tmp_path, "esp_sa", GOOD_ESP)
    write(tmp_path, "ikev2_sk_d", f"{SPI_I},{SPI_R},{'8a' * 32}")
    write(tmp_path, "capture.pcap", "not keys")
    write(tmp_path, "notes.txt", "not keys either")
    store = load_keys([str(tmp_path)])
    assert store.problems == []
    assert (len(store.ike), len(store.esp), len(store.sk_d)) == (1, 1, 1)
    assert sorted(Path(s).name for s in store.sources) == ["esp_sa", "ikev2_sk_d", "sswan-a.ikev2_decryption_table"]


def test_repeated_paths_load_once(tmp_path):
    ike = write(tmp_path, "ikev2_decryption_table", GOOD_IKE, "garbage")
    store = load_keys([str(ike), str(tmp_path), str(ike), f"{tmp_path}/./ikev2_decryption_table"])
    assert len(store.ike) == 1 and len(store.sources) == 1
    assert [str(p) for p in store.problems] == [
        f"{ike}:2: expected 8 fields (SPIi,SPIr,SK_ei,SK_er,encryption algorithm,SK_ai,SK_ar,"
        "integrity algorithm), found 1"]


def test_several_paths_accumulate(tmp_path):
    a = write(tmp_path, "a.ikev2_decryption_table", GOOD_IKE)
    b = write(tmp_path, "b.esp_sa", GOOD_ESP)
    store = load_keys([a, b])  # PathLike accepted too
    assert (len(store.ike), len(store.esp), store.problems) == (1, 1, [])


def test_file_with_another_name_is_recognised_by_content(tmp_path):
    store = load_keys([str(write(tmp_path, "keys.txt", GOOD_ESP)),
                       str(write(tmp_path, "ike.csv", GOOD_IKE)),
                       str(write(tmp_path, "skd.csv", f"{SPI_I},{SPI_R},{'8a' * 32}"))])
    assert store.problems == []
    assert (len(store.ike), len(store.esp), len(store.sk_d)) == (1, 1, 1)


def test_missing_path_and_empty_directory(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    store = load_keys([str(tmp_path / "nope"), str(empty)])
    assert [str(p) for p in store.problems] == [
        f"{tmp_path / 'nope'}: no such file or directory",
        f"{empty}: no key files (*ikev2_decryption_table, *esp_sa, *ikev2_sk_d) in this directory",
    ]


def test_crlf_bom_and_spaces(tmp_path):
    path = tmp_path / "ikev2_decryption_table"
    path.write_bytes(("\ufeff" + GOOD_IKE.replace(",", ", ") + "\r\n").encode())
    store = load_keys([str(path)])
    assert store.problems == [] and len(store.ike) == 1


# --------------------------------------------------------------------------------------
# Keys never show


def test_keys_never_in_repr_or_str(tmp_path):
    store = load_keys([str(write(tmp_path, "ikev2_decryption_table", GOOD_IKE)),
                       str(write(tmp_path, "esp_sa", GOOD_ESP))])
    ike = next(iter(store.ike.values()))
    esp = next(iter(store.esp.values()))
    texts = [repr(store), str(store), repr(ike), str(ike), repr(esp), str(esp), f"{ike.sk_ei}",
             repr(ike.sk_ai), str(esp.encr_key), repr(store.ike), repr(store.esp), repr([ike, esp])]
    for text in texts:
        assert_no_secret(text)
    assert SPI_I in repr(ike) and "AES-CBC-128 [RFC3602]" in repr(ike)
    assert repr(ike.sk_ei) == "<secret 16 bytes>"
    assert str(KeyProblem("f", 3, "r")) == "f:3: r" and str(KeyProblem("f", 0, "r")) == "f: r"


def test_records_are_frozen(tmp_path):
    store = load_keys([str(write(tmp_path, "ikev2_decryption_table", GOOD_IKE))])
    ike = next(iter(store.ike.values()))
    with pytest.raises(AttributeError):
        ike.sk_ei = b""  # type: ignore[misc]
    assert isinstance(ike, IkeKeys) and isinstance(store, KeyStore)
    assert EspKeys.__dataclass_params__.frozen


# --------------------------------------------------------------------------------------
# tshark 4.0 agrees on names and key lengths


def _tshark(*uat_rows: str) -> subprocess.CompletedProcess:
    capture = next(SAMPLES.rglob("*.pcap"))
    args = ["tshark", "-n", "-r", str(capture), "-c", "1"]
    for row in uat_rows:
        args += ["-o", row]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


@needs_tshark
def test_tshark_accepts_every_row_we_accept():
    rows, n = [], 0
    for encr in ENCR_SPECS:
        if encr.transform_id == EncrId.CHACHA20_POLY1305:  # not in Wireshark 4.0
            continue
        for integ in INTEG_BY_NAME.values():
            if encr.aead and integ.name != "NONE [RFC4306]":
                continue
            n += 1
            rows.append(f'uat:ikev2_decryption_table:{n:016x},{SPI_R},{"11" * encr.key_len},'
                        f'{"22" * encr.key_len},"{encr.name}",{"33" * integ.key_len},'
                        f'{"44" * integ.key_len},"{integ.name}"')
    for name, entry in ESP_ENCR_BY_NAME.items():
        if "ChaCha" in name:
            continue
        for auth in ESP_AUTH_BY_NAME.values():
            for key_len in entry.key_lens():
                n += 1
                rows.append(f'uat:esp_sa:"IPv4","192.0.2.1","192.0.2.2","0x{n:08x}","{name}",'
                            f'"0x{"11" * key_len}","{auth.name}","0x{"22" * auth.key_len}"')
    result = _tshark(*rows)
    assert result.returncode == 0, result.stderr[-500:]


@needs_tshark
@pytest.mark.parametrize("row", BAD_IKE[1:3] + BAD_IKE[5:9] + BAD_IKE[10:13], ids=lambda r: r[1][:40])
def test_tshark_rejects_ike_rows_we_reject(row):
    line, _ = row
    result = _tshark(f"uat:ikev2_decryption_table:{line}")
    assert result.returncode != 0 and "Invalid -o flag" in result.stderr


@needs_tshark
def test_tshark_rejects_strongswan_tripledes_spelling():
    """Wireshark's UAT compares names case-sensitively; we accept strongSwan's spelling."""
    row = (f'uat:esp_sa:"IPv4","192.0.2.1","192.0.2.2","0x1","TripleDes-CBC [RFC2451]",'
           f'"0x{"8a" * 24}","NULL",""')
    result = _tshark(row)
    assert result.returncode != 0 and "invalid value: TripleDes-CBC" in result.stderr


# Regressions found by the fuzzer (issue 16; tests/fuzz/targets_keys.py).

def test_an_ascii_esp_key_in_a_name_field_is_never_echoed(tmp_path):
    """The columns shifted: the ASCII encryption key (Wireshark reads a key without 0x as
    its own octets) sits where the algorithm name belongs. Only 4 characters are shown."""
    key = "Tr0ub4dor&3horse"
    line = f'"IPv4","192.0.2.1","192.0.2.2","0x1","{key}","{key}","NULL",""'
    store = load_keys([str(write(tmp_path, "esp_sa", line))])
    [problem] = store.problems
    assert str(problem).endswith('esp_sa:1: unknown encryption algorithm "Tr0u…" (16 characters, the rest '
                                 'withheld: it could be a key); esp_sa accepts ' +
                                 ", ".join(f'"{n}"' for n in ESP_ENCR_BY_NAME))
    assert key[:8] not in str(problem) and key.encode().hex()[:16] not in str(problem)


@pytest.mark.parametrize("prf", ["\u00b2", "1\u00b2", "\u0665"])
def test_a_non_ascii_digit_prf_is_a_bad_line_not_a_crash(tmp_path, prf):
    """"²".isdigit() is True but int("²") raises: the PRF field takes ASCII digits only."""
    path = write(tmp_path, "ikev2_sk_d", f"{SPI_I},{SPI_R},{'ab' * 32},{prf}", f"{SPI_R},{SPI_I},{'ab' * 32},5")
    store = load_keys([str(path)])
    assert [str(p) for p in store.problems] == [f'{path}:1: unknown PRF "{prf}"']
    assert len(store.sk_d) == 1


def test_a_name_glued_to_an_ascii_key_is_withheld_but_still_named(tmp_path):
    key = "x=dX oq-+IAF2&y^1KAF06Ny@b;saU=}"
    line = f'"IPv4","192.0.2.1","192.0.2.2","0x1","AES-CBC [RFC3602]","0x{"66" * 16}","HMAC-SHA-1-96 [RFC2404]{key}","{key}"'
    [problem] = load_keys([str(write(tmp_path, "esp_sa", line))]).problems
    assert 'unknown authentication algorithm "HMAC…" (55 characters, the rest withheld: it could be a key) ' \
           '(did you mean "HMAC-SHA-1-96 [RFC2404]"?)' in str(problem)
    assert key[:8] not in str(problem) and key[-8:] not in str(problem)
