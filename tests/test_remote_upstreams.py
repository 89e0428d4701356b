"""inferd/remote/upstreams.py: which upstream to ask next."""

from __future__ import annotations

import pytest

from inferd.remote.upstreams import UpstreamPool


def _urls(pool: UpstreamPool) -> list[str]:
    return [upstream.url for upstream in pool.order()]


def test_equal_upstreams_take_turns():
    pool = UpstreamPool(["a", "b", "c"])
    firsts = [_urls(pool)[0] for _ in range(6)]
    assert firsts == ["a", "b", "c", "a", "b", "c"]


def test_the_least_busy_upstream_goes_first():
    pool = UpstreamPool(["a", "b", "c"])
    pool.upstreams[0].in_flight = 3
    pool.upstreams[1].in_flight = 1
    assert all(_urls(pool)[0] == "c" for _ in range(3))


def test_a_down_upstream_goes_last_until_it_is_up_again():
    pool = UpstreamPool(["a", "b"])
    pool.mark_down(pool.upstreams[0], "cannot be reached")
    assert all(_urls(pool) == ["b", "a"] for _ in range(3))  # still tried, last
    assert [u.url for u in pool.healthy] == ["b"]
    assert pool.upstreams[0].error == "cannot be reached"
    pool.mark_up(pool.upstreams[0])
    assert pool.upstreams[0].error is None
    assert {_urls(pool)[0] for _ in range(2)} == {"a", "b"}


def test_a_pool_needs_an_upstream():
    with pytest.raises(ValueError, match="at least one upstream"):
        UpstreamPool([])
