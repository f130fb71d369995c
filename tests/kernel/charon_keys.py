"""charon's keys as Wireshark's ``ikev2_decryption_table`` and ``esp_sa`` (save-keys format).

Debian's strongSwan (5.9.8 and sid's 6.1.0) builds no save-keys plugin, so the interop harness
runs charon with ``ike = 4``, ``chd = 4`` and ``ike_name = yes`` and turns the key dumps of its
log into the two files save-keys would write:

- IKE: ``Sk_ei``/``Sk_er`` (and ``Sk_ai``/``Sk_ar`` unless AEAD) of IKE SA ``<conn|N>``; the
  SPIs of ``#N`` come from ``swanctl --list-sas`` (the log never prints them).
- Child: the ``encryption/integrity initiator/responder key`` dumps of one job (one thread),
  then that job's ``CHILD_SA name{N} established with SPIs X_i Y_o``. Whether charon was the
  exchange's initiator is the job's last ``parsed ... request|response`` line: as initiator
  its outbound SA (Y) uses the initiator keys, as responder the responder keys (RFC 7296 §2.17).

Only for test runs: the files hold secrets and stay in the run's directory.
"""

from __future__ import annotations

import re
from pathlib import Path

LINE = re.compile(r"^\S+ (\d+)\[(\w+)\] <(?:([^|>]+)\|)?(\d+)> (.*)$")  # <conn|N>, or <N> before the conn is known
DUMP = re.compile(r"^(.*?) => (\d+) bytes @ 0x[0-9a-f]+$")
HEX = re.compile(r"^\s*\d+: ((?:[0-9A-F]{2} ?)+)")
SA_LINE = re.compile(r"^\s*\S+: #(\d+), \w+, IKEv2, ([0-9a-f]{16})_i\*? ([0-9a-f]{16})_r")

# strongSwan proposal tokens -> Wireshark's UAT names (IKE table, esp_sa), and octets of key
IKE_ENCR = {"AES_GCM_16_128": "AES-GCM-128 with 16 octet ICV [RFC5282]",
            "AES_GCM_16_256": "AES-GCM-256 with 16 octet ICV [RFC5282]",
            "AES_CBC_128": "AES-CBC-128 [RFC3602]", "AES_CBC_256": "AES-CBC-256 [RFC3602]"}
IKE_INTEG = {None: "NONE [RFC4306]", "HMAC_SHA2_256_128": "HMAC_SHA2_256_128 [RFC4868]",
             "HMAC_SHA1_96": "HMAC_SHA1_96 [RFC2404]"}
ESP_ENCR = {"AES_GCM_16": "AES-GCM with 16 octet ICV [RFC4106]", "AES_CBC": "AES-CBC [RFC3602]"}
ESP_INTEG = {None: "NULL", "HMAC_SHA2_256_128": "HMAC-SHA-256-128 [RFC4868]",
             "HMAC_SHA1_96": "HMAC-SHA-1-96 [RFC2404]"}


def _proposal(text: str) -> tuple[str, str | None]:
    """``IKE:AES_GCM_16_256/PRF_...`` -> (encryption token, integrity token or None)."""
    parts = text.split(":", 1)[1].split("/")
    encr = parts[0]
    integ = next((p for p in parts[1:] if p.startswith(("HMAC_", "AES_XCBC", "AES_CMAC"))), None)
    return encr, integ


def parse(log_text: str) -> tuple[dict, list[dict]]:
    """(IKE keys by unique id, Child SAs) from a charon log with ike/chd level 4."""
    ikes: dict[int, dict] = {}
    children: list[dict] = []
    dumps: dict[tuple, list] = {}  # (thread) -> [name, octets wanted, bytes]
    job: dict[str, dict] = {}  # thread -> what this job saw
    addrs: dict[int, tuple[str, str]] = {}
    for raw in log_text.splitlines():
        m = LINE.match(raw)
        if not m:
            continue
        thread, _grp, _conn, uid, msg = m.group(1), m.group(2), m.group(3), int(m.group(4)), m.group(5)
        cur = dumps.get(thread)
        h = HEX.match(msg)
        if cur is not None and h:
            cur[2] += bytes.fromhex(h.group(1).replace(" ", ""))
            if len(cur[2]) >= cur[1]:
                name, _n, data = dumps.pop(thread)
                st = job.setdefault(thread, {})
                if name.startswith("Sk_"):
                    ikes.setdefault(uid, {})[name[3:5]] = data
                else:
                    st.setdefault("keys", {})[name] = data
            continue
        d = DUMP.match(msg)
        if d:
            dumps[thread] = [d.group(1).replace(" secret", ""), int(d.group(2)), b""]
            continue
        st = job.setdefault(thread, {})
        if msg.startswith("parsed ") and (" request " in msg or " response " in msg):
            st["initiator"] = " response " in msg
            st["keys"] = {}
        elif msg.startswith("selected proposal: IKE:"):
            ikes.setdefault(uid, {})["proposal"] = _proposal(msg.split(": ", 1)[1])
        elif msg.startswith("selected proposal: ESP:"):
            st["proposal"] = _proposal(msg.split(": ", 1)[1])
        elif " established between " in msg and msg.startswith("IKE_SA "):
            mm = re.search(r"between ([0-9a-f.:]+)\[.*?\]\.\.\.([0-9a-f.:]+)\[", msg)
            if mm:
                addrs[uid] = (mm.group(1), mm.group(2))
        elif msg.startswith("CHILD_SA ") and " established with SPIs " in msg:
            mm = re.search(r"SPIs ([0-9a-f]{8})_i ([0-9a-f]{8})_o", msg)
            keys = st.get("keys", {})
            if mm and "encryption initiator key" in keys:
                children.append({"uid": uid, "spi_in": mm.group(1), "spi_out": mm.group(2),
                                 "initiator": st.get("initiator", False), "keys": dict(keys),
                                 "proposal": st.get("proposal", ("AES_GCM_16_256", None))})
            st["keys"] = {}
    for c in children:
        c["local"], c["remote"] = addrs.get(c["uid"], ("", ""))
    return ikes, children


def ike_spis(list_sas: str) -> dict[int, tuple[str, str]]:
    return {int(m.group(1)): (m.group(2), m.group(3)) for m in map(SA_LINE.match, list_sas.splitlines()) if m}


def write_key_files(log: Path, out: Path, list_sas: str) -> tuple[int, int]:
    """Writes ``out/ikev2_decryption_table`` and ``out/esp_sa``; returns (IKE SAs, Child SA halves)."""
    ikes, children = parse(log.read_text(errors="replace"))
    spis = ike_spis(list_sas)
    ike_lines = []
    for uid, k in sorted(ikes.items()):
        if uid not in spis or "ei" not in k or "proposal" not in k:
            continue
        encr, integ = k["proposal"]
        ike_lines.append(f'{spis[uid][0]},{spis[uid][1]},{k["ei"].hex()},{k["er"].hex()},"{IKE_ENCR[encr]}",'
                         f'{k.get("ai", b"").hex()},{k.get("ar", b"").hex()},"{IKE_INTEG[integ]}"')
    esp_lines = []
    for c in children:
        keys, (encr, integ) = c["keys"], c["proposal"]
        encr_family = encr.rsplit("_", 1)[0] if encr.startswith("AES_") and encr[-3:].isdigit() else encr
        fam = "IPv6" if ":" in c["local"] else "IPv4"
        out_role, in_role = ("initiator", "responder") if c["initiator"] else ("responder", "initiator")
        for spi, src, dst, role in ((c["spi_out"], c["local"], c["remote"], out_role),
                                    (c["spi_in"], c["remote"], c["local"], in_role)):
            akey = keys.get(f"integrity {role} key")
            esp_lines.append(f'"{fam}","{src}","{dst}","0x{spi}","{ESP_ENCR[encr_family]}",'
                             f'"0x{keys[f"encryption {role} key"].hex()}","{ESP_INTEG[integ]}",'
                             + (f'"0x{akey.hex()}"' if akey else '""'))
    (out / "ikev2_decryption_table").write_text("".join(line + "\n" for line in ike_lines))
    (out / "esp_sa").write_text("".join(line + "\n" for line in esp_lines))
    return len(ike_lines), len(esp_lines)
