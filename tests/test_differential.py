"""multisa's IKEv2 engine against tshark's, field by field, on every real capture.

For each IKE message of each capture in ../shared/captures and samples/, the fields both
engines decode (exchange, message id, flags, SPIs, payload types in order incl. decrypted inner
ones, notify types, proposal SPIs and transforms, TS ranges, Delete SPIs) must be equal.
"""

from __future__ import annotations

import json

import pytest

from analyzer.cli import main
from dissectors.capture import iter_datagrams
from dissectors.ikev2 import ike_messages
from dissectors.ikev2.export import message_to_dict
from dissectors.keys import load_keys
from tests.conftest import all_captures, capture_id, needs_tshark

CAPTURES = all_captures()


def ours(capture, keys) -> list[dict]:
    store = load_keys([str(k) for k in keys])
    assert store.problems == []
    return [message_to_dict(m) for m in ike_messages(iter_datagrams(str(capture)), store)]


@needs_tshark
@pytest.mark.parametrize("item", CAPTURES, ids=[capture_id(c) for c in CAPTURES])
def test_engines_agree(item):
    from dissectors.diff import compare_messages
    from dissectors.tshark import tshark_messages

    capture, keys = item
    mine = ours(capture, keys)
    theirs = tshark_messages(str(capture), [str(k) for k in keys])
    assert len(mine) > 0
    assert compare_messages(mine, theirs) == []
    # every encrypted payload was decrypted by both
    sks = [p for m in mine for p in m["payloads"] if p["type"] in (46, 53)]
    assert sks and all(p["decrypted"] for p in sks)


@needs_tshark
def test_cli_engines_print_the_same_contract(capsys):
    capture, keys = CAPTURES[0]
    args = ["show", str(capture), "--json"] + [a for k in keys for a in ("--keys", str(k))]
    assert main(args) == 0
    mine = json.loads(capsys.readouterr().out)["messages"]
    assert main(args + ["--engine", "tshark"]) == 0
    theirs = json.loads(capsys.readouterr().out)["messages"]
    from dissectors.diff import compare_messages

    assert len(mine) == len(theirs) == 28
    assert compare_messages(mine, theirs) == []
