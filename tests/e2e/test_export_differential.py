"""The exported filters and the service decide alike, request by request (docs/export.md).

A small fixed set of seeds of tests/support/export_diff.py: each generates a policy set over the
exportable subset and 150 requests (SPIFFE client certificates over real mTLS, good, bad and
missing tokens with claims, written in every spelling a token header can take, methods, hosts
with dots and ports, path spellings the normalization must fold, repeated headers), sent
through a real Envoy with ext_authz to the service and a real Envoy with the exported filters.
The larger run: `python -m tests.support.export_diff --seeds 0-99`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.export_diff import World, make_world, run_seed
from tests.support.scale import scaled

pytestmark = pytest.mark.e2e

# Chosen to cover allows, rule denies, 400s and rejected tokens: 0 lists the provider's
# algorithms, 1 reads a prefix-less token header, 9 and 10 fetch the keys over HTTPS
# (remote_jwks), 9 with trust-domain aliases; 31 does all of these at once; all have header
# conditions (each seed's mix is printed by the command); any seed must pass. Each seed is a
# service and two Envoys (about 7 s): the everyday run takes 31, LONG_TESTS=1 all five.
SEEDS = scaled((31,), (0, 1, 9, 10, 31))
HYBRID_SEED = 8  # about two fifths of its requests are for hosts the service decides


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("export-diff"))


@pytest.mark.parametrize("seed", SEEDS)
def test_exported_filters_decide_as_the_service(world: World, seed: int, tmp_path: Path) -> None:
    scenario, disagreements = run_seed(world, seed, tmp_path)
    allowed = sum(n for (a, _), n in scenario.statuses.items() if a == 200)
    assert allowed and allowed < len(scenario.cases), scenario.statuses
    assert not disagreements, "\n".join(map(str, disagreements))


def test_hybrid_export_decides_as_the_service(world: World, tmp_path: Path) -> None:
    """`--hybrid`: hosts whose files Envoy cannot enforce alone go to the service through
    ext_authz, the others never do; every request still gets the service's allow or deny."""
    scenario, disagreements = run_seed(world, HYBRID_SEED, tmp_path, hybrid=True)
    assert 0 < scenario.hybrid_checks < len(scenario.cases), scenario.hybrid_checks
    assert not disagreements, "\n".join(map(str, disagreements))
