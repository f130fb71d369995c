"""dissectors.dh: both sides agree, KE data has the RFC encodings, bad peer values are refused."""

from __future__ import annotations

import pytest

from dissectors.dh import GROUPS, MODP_2048_G, MODP_2048_P, PUBLIC_LEN, DhError, key_exchange


@pytest.mark.parametrize("group", GROUPS)
def test_both_sides_compute_the_same_secret(group):
    a, b = key_exchange(group), key_exchange(group)
    assert len(a.public) == len(b.public) == PUBLIC_LEN[group]
    assert a.shared(b.public) == b.shared(a.public)
    assert "secret" in repr(a.shared(b.public))  # Secret never prints key bytes


def test_modp_2048_is_rfc3526_group_14():
    # independent copy of the prime: scapy's TLS group table (from RFC 3526)
    groups = pytest.importorskip("scapy.layers.tls.crypto.groups")
    nums = groups.modp2048.pg if hasattr(groups.modp2048, "pg") else None
    p = getattr(groups.modp2048, "m", None)
    if p is None:
        p = nums.p if nums else groups._ffdh_groups["modp2048"][0].parameter_numbers().p
    assert MODP_2048_P == p and MODP_2048_G == 2


def test_modp_shared_secret_is_padded_to_the_prime_length():
    a, b = key_exchange(14), key_exchange(14)
    assert len(a.shared(b.public)) == 256
    # g^x mod p as a big-endian 256-octet number
    assert 1 < int.from_bytes(a.public, "big") < MODP_2048_P


@pytest.mark.parametrize("group, bad", [(14, b"\0" * 256), (14, b"\1" * 10), (19, b"\1" * 64),
                                        (31, b"\0" * 32)])
def test_bad_peer_values_raise_dh_error(group, bad):
    with pytest.raises(DhError):
        key_exchange(group).shared(bad)


def test_unsupported_group():
    with pytest.raises(DhError, match="not supported"):
        key_exchange(2)
