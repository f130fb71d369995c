"""The XFRM fuzz targets, a few hundred seeded inputs each (the runner, tests/fuzz/run.py,
drives them for the long runs): every input goes through and no check fails."""

from __future__ import annotations

import random

import pytest

from tests.fuzz import targets_xfrm
from tests.fuzz.common import FuzzProblem

TARGETS = sorted(n for n in dir(targets_xfrm) if n.startswith("fuzz_"))
N = 300


def test_there_is_a_target_per_xfrm_surface():
    assert TARGETS == ["fuzz_xfrm_json", "fuzz_xfrm_netlink", "fuzz_xfrm_text"]


@pytest.mark.parametrize("name", TARGETS)
def test_target_finds_nothing(name):
    target = getattr(targets_xfrm, name)
    problems, inputs = [], 0
    for seed in range(N):
        try:
            target(random.Random(seed))
        except FuzzProblem as p:
            problems.append(f"seed {seed}: {p}")
        inputs += 1
    assert inputs == N
    assert problems == []


def test_targets_are_reproducible():
    """The same seed builds the same input: the damaged netlink message, byte for byte."""
    from tests.fuzz.targets_xfrm import _damage, _newsa

    a = _damage(random.Random(7), _newsa(random.Random(3))[0])
    b = _damage(random.Random(7), _newsa(random.Random(3))[0])
    assert a == b
