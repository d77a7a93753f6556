"""Genesis: round trip, hash, field checks."""

from __future__ import annotations

import pytest
from ledger_factories import Net

from dfl_ray.ledger import Genesis


def test_genesis_round_trip_and_hash(net: Net) -> None:
    g = net.genesis
    assert Genesis.decode(g.encode()) == g
    assert len(g.hash) == 32
    assert net.make_genesis(ttl=11).hash != g.hash
    assert net.make_genesis().hash == g.hash


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("network_id", "", ValueError),
        ("model_spec_id", b"\0" * 31, ValueError),
        ("block_size", 0, ValueError),
        ("expiry_s", float("inf"), ValueError),
        ("ttl", 1.5, TypeError),
    ],
)
def test_invalid_genesis_field(field: str, value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=field):
        Net.make_genesis(**{field: value})
