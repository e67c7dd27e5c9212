"""The fleet's Redis side (crawler/fleet.py) against a real redis-server: the queue and its
in-flight leases, processes given up, the idle rule, politeness slots, bad frontiers."""

from __future__ import annotations

import time

import pytest

from core.errors import UserError
from core.net import free_port
from crawler.fleet import FULL, Fleet, connect, status
from pipeline.services import Redis


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    redis = Redis(tmp_path_factory.mktemp("redis")).start()
    yield redis
    redis.stop()


@pytest.fixture
def fleet(server, request):
    return lambda process: Fleet(connect(server.url), request.node.name, process)


def test_a_popped_request_stays_in_flight_until_committed_or_given_back(fleet):
    a, b = fleet("a"), fleet("b")
    assert a.push("fp1", 1, b"one") and a.push("fp0", 0, b"zero")
    assert not b.push("fp1", 1, b"one again")  # seen by the fleet: not queued twice
    assert a.pop("k1") == b"zero"  # lowest score first: breadth-first
    assert a.redis.hgetall(a.key("inflight:a")) == {b"k1": b"0 zero"}
    a.beat(lease=0.2, active=1, info={}, join=True)
    b.beat(lease=30, active=0, info={}, join=True)
    time.sleep(0.3)
    assert not b.idle(0, 0)  # a's lease ran out, but its requests are not given back yet
    assert b.requeue() == ["a"]  # a given up: its request is back in the queue
    assert not a.beat(lease=30, active=0, info={})  # and a learns it must stop
    assert len(b) == 2 and b.pop("k1") == b"zero"
    # A redirect or a retry replaces the request in the same step as it is queued.
    assert b.push("", 0, b"zero, retried", replaces="k1")
    assert b.redis.hlen(b.key("inflight:b")) == 0
    b.pop("k2"), b.pop("k3")
    b.commit(["k2"])  # done for good; k3 is handed back when b leaves
    b.leave({"state": "finished"})
    assert len(b) == 1 and b.pop("k4") in (b"one", b"zero, retried")


def test_the_fleet_is_idle_only_when_nothing_is_queued_held_or_recent(fleet):
    a, b = fleet("a"), fleet("b")
    a.beat(lease=30, active=0, info={}, join=True)
    b.beat(lease=30, active=0, info={}, join=True)
    a.push("fp", 0, b"r")
    assert not a.idle(0, 0)  # queued
    a.pop("k")
    a.beat(lease=30, active=1, info={})
    assert not b.idle(0, 0) and not a.idle(0, 1)  # held by a (as its last heartbeat says)
    a.beat(lease=30, active=0, info={})
    assert not a.idle(5, 0)  # a pop a moment ago
    assert a.idle(0, 0) and b.idle(0, 0)


def test_a_site_gets_one_slot_of_n_at_a_time_and_a_delay_between_requests(fleet):
    a = fleet("a")
    assert a.slot("site", 0.2, 2, "t1", 10) == 0
    assert 0 < a.slot("site", 0.2, 2, "t2", 10) <= 0.2  # the delay since t1
    time.sleep(0.21)
    assert a.slot("site", 0.2, 2, "t2", 10) == 0
    time.sleep(0.21)
    assert a.slot("site", 0.2, 2, "t3", 10) == FULL  # both slots taken
    a.free_slot("site", "t1")
    assert a.slot("site", 0.2, 2, "t3", 10) == 0
    assert a.slot("other", 0.2, 2, "t4", 10) == 0  # per site


def test_the_web_application_reads_processes_and_the_frontier(server, fleet):
    a = fleet("host-1-aa")
    a.beat(lease=30, active=1, info={"host": "h", "pages": 3, "docs": 2, "state": "running"},
           join=True)
    a.push("fp", 0, b"r")
    seen = status(server.url, a.crawl_id)
    assert seen["frontier"] == 1 and not seen["finished"]
    assert seen["processes"] == [{"host": "h", "pages": 3, "docs": 2, "state": "running",
                                  "process": "host-1-aa", "live": True, "in_flight": 0}]
    assert "cannot be read" in status(f"redis://127.0.0.1:{free_port(0)}/0", "x")["error"]


def test_a_call_while_redis_restarts_waits_for_it(tmp_path):
    """Redis away for two seconds (a restart): the frontier's calls wait and go through, with
    what the append-only file kept."""
    import threading

    server = Redis(tmp_path / "redis").start()
    try:
        first = Fleet(connect(server.url), "restart", "p1")
        assert first.push("fp", 0.0, b"request")
        server.stop()
        threading.Timer(2.0, server.start).start()
        began = time.monotonic()
        assert first.pop(first.key("inflight:p1")) == b"request"
        assert time.monotonic() - began > 1
    finally:
        time.sleep(0.5)  # the timer's start is over
        server.stop()


def test_a_frontier_that_cannot_be_used_is_one_line_naming_the_setting():
    with pytest.raises(UserError, match=r"\[crawl\] frontier .*Redis does not answer.*start Redis"):
        connect(f"redis://127.0.0.1:{free_port(0)}/0")
    with pytest.raises(UserError, match=r"\[crawl\] frontier 'localhost:6379' is not a Redis URL"):
        connect("localhost:6379")


def test_the_crawl_tab_shows_a_running_fleet(server, fleet, tmp_path):
    from app.data import crawls
    from crawler.jobs import choose_job
    from core.home import Home

    a = fleet("host-2-bb")
    job, _ = choose_job(Home(tmp_path), a.crawl_id, ["http://127.0.0.1:9/"], [])
    job.save("running")
    a.beat(lease=30, active=0, info={"host": "h", "pages": 1, "docs": 1, "state": "running"},
           join=True)
    [shown] = crawls(tmp_path, frontier=server.url)["fleets"]
    assert shown["crawl_id"] == a.crawl_id and shown["processes"][0]["process"] == "host-2-bb"
    assert crawls(tmp_path)["fleets"] == []  # no frontier configured: nothing to read
