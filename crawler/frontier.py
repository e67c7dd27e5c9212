"""The frontier of a fleet crawl (`[crawl] frontier`): scrapy-redis's Scheduler, priority
queue and dupefilter over the crawl's keys in Redis (crawler/fleet.py), so any number of
`cllm crawl --crawl-id ID` processes share one queue and one set of seen requests.

scrapy-redis pops a request destructively, so a process killed with requests in hand would
lose them. Here a pop moves the request into the process's in-flight hash in the same Redis
script, and it leaves that hash only when its page is for good: in a shard that was
committed, or handled without a document (dropped, an error, a sitemap), once the crawl
state commits at the next checkpoint of the shard writer. A redirect or a retry replaces it by the new request in
the same script that queues that one. Each process renews a lease (a heartbeat); a process
whose lease ran out is given up by the first survivor that notices: its in-flight requests
go back to the queue, its temp shards settle (crawler/pipelines.py: into place if its crawl
state committed them, else removed).

The fleet ends by itself: when the queue is empty, no live process has a request in hand
and nothing was popped or queued for `[crawl] idle_timeout` seconds, every process closes
with `finished`.
"""

from __future__ import annotations

import socket
from datetime import datetime, timezone

import redis
import structlog
from scrapy import signals
from scrapy.exceptions import DontCloseSpider
from scrapy_redis.dupefilter import RFPDupeFilter
from scrapy_redis.queue import PriorityQueue
from scrapy_redis.scheduler import Scheduler as RedisScheduler
from twisted.internet import task

from crawler import fleet as codec
from crawler.config import crawl_config
from crawler.dupefilter import count_loop
from crawler.fleet import Fleet, connect
from crawler.items import request_done
from crawler.pipelines import abandon, committed, given_up, lose, shard_failed

log = structlog.get_logger()
KEY = "cllm_frontier"  # request.meta: the in-flight key of a popped request


class Queue(PriorityQueue):
    """scrapy-redis's priority queue (score -priority: breadth-first with DEPTH_PRIORITY),
    pushed and popped through the fleet's scripts."""

    def __init__(self, fleet: Fleet, spider):
        super().__init__(fleet.redis, spider, fleet.key("requests"), serializer=codec)
        self.fleet = fleet

    def push(self, request, fingerprint: str = "", replaces: str = "") -> bool:
        return self.fleet.push(fingerprint, -request.priority, self._encode_request(request),
                               replaces)

    def pop(self, key: str):
        data = self.fleet.pop(key)
        return None if data is None else self._decode_request(data)


class Scheduler(RedisScheduler):
    def __init__(self, fleet: Fleet, crawler):
        super().__init__(fleet.redis, persist=True, queue_key=fleet.key("requests"),
                         dupefilter=RFPDupeFilter(fleet.redis, fleet.key("seen")),
                         serializer=codec)
        self.fleet, self.crawler, self.stats = fleet, crawler, crawler.stats
        config = crawl_config(crawler.settings)
        self.lease, self.idle_timeout = config.frontier_lease, config.idle_timeout
        self.popped = 0
        # In hand: popped, not handled. Handled: waiting for the next checkpoint.
        self.active: set[str] = set()
        self.owed: dict[str, int] = {}  # items of a request still in the pipelines
        self.ended: set[str] = set()  # requests whose callback is over
        self.handled: list[str] = []
        self.failed = False  # a shard was lost: nothing is committed any more
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.timer = task.LoopingCall(self.heartbeat)
        connect_all = [(self.settle_item, signals.item_scraped),
                       (self.settle_item, signals.item_dropped),
                       (self.settle_item, signals.item_error),
                       (self.spider_error, signals.spider_error),
                       (self.request_done, request_done), (self.committed, committed),
                       (self.shard_failed, shard_failed), (self.spider_idle, signals.spider_idle)]
        for receiver, signal in connect_all:
            crawler.signals.connect(receiver, signal=signal)

    @classmethod
    def from_crawler(cls, crawler):
        settings = crawler.settings
        return cls(Fleet(connect(settings["CLLM_FRONTIER"]), settings["CLLM_CRAWL_ID"],
                         settings["CLLM_PROCESS"]), crawler)

    def open(self, spider):
        self.spider = spider
        self.queue = Queue(self.fleet, spider)
        self.guarded(self.fleet.beat, self.lease, 0, self.info("running"), join=True)
        # Beats well inside the lease and the idle time, so neither is misread.
        self.timer.start(min(self.lease, self.idle_timeout) / 3, now=False)

    def close(self, reason):
        if self.timer.running:
            self.timer.stop()
        # The pipelines closed first: what they committed is off the in-flight hash, the
        # rest goes back to the queue for the others (or the next run).
        self.guarded(self.fleet.leave, self.info(reason))

    def info(self, state: str) -> dict:
        stats = self.stats
        return {"host": socket.gethostname(), "started": self.started, "state": state,
                "pages": stats.get_value("cllm/pages_fetched", 0),
                "docs": stats.get_value("cllm/docs_written", 0)}

    def guarded(self, call, *args, **kwargs):
        """A Redis call; when Redis stays away past the retries, the crawl stops with a line
        (what this process holds is given back by the others once its lease runs out)."""
        try:
            return call(*args, **kwargs)
        except redis.RedisError as e:
            lose(self.crawler, f"the frontier ([crawl] frontier) did not answer: {e}")
            return None

    # --- the queue -----------------------------------------------------------------------
    def enqueue_request(self, request) -> bool:
        replaces = request.meta.pop(KEY, "")
        fingerprint = "" if request.dont_filter else self.df.request_fingerprint(request)
        queued = self.guarded(self.queue.push, request, fingerprint, replaces)
        if replaces:  # a redirect or a retry: the request it replaces is over
            self.active.discard(replaces)
        if queued:
            self.stats.inc_value("scheduler/enqueued/redis")
        elif queued is not None:
            self.df.log(request, self.spider)
            count_loop(self.stats, request)
        return bool(queued)

    def next_request(self):
        self.popped += 1
        key = str(self.popped)
        request = self.guarded(self.queue.pop, key)
        if request is not None:
            request.meta[KEY] = key
            self.active.add(key)
            self.stats.inc_value("scheduler/dequeued/redis")
        return request

    def has_pending_requests(self) -> bool:
        return bool(self.guarded(len, self.queue))

    # --- when a request is done ----------------------------------------------------------
    def settle(self, request, items: int, ended: bool = False) -> None:
        """A request is handled once its callback is over and its items left the pipelines."""
        key = request.meta.get(KEY) if request is not None else None
        if key not in self.active:
            return
        owed = self.owed.pop(key, 0) + items
        if ended:
            self.ended.add(key)
        if key in self.ended and owed <= 0:
            self.active.discard(key)
            self.ended.discard(key)
            self.handled.append(key)
        else:
            self.owed[key] = owed

    def request_done(self, request, items: int) -> None:
        self.settle(request, items, ended=True)

    def settle_item(self, item, response, spider, **kwargs) -> None:
        self.settle(getattr(response, "request", None), -1)

    def spider_error(self, failure, response, spider) -> None:
        self.settle(response.request, 0, ended=True)

    def committed(self) -> None:
        if not self.failed:
            handled, self.handled = self.handled, []
            self.guarded(self.fleet.commit, handled)

    def shard_failed(self) -> None:
        self.failed = True

    # --- the fleet -----------------------------------------------------------------------
    def heartbeat(self) -> None:
        alive = self.guarded(self.fleet.beat, self.lease, len(self.active), self.info("running"))
        if alive is None:
            return
        if not alive:
            # Stalled past the lease: the others took this process's requests. Its pending
            # shard is dropped so nothing is written twice.
            self.crawler.signals.send_catch_log(signal=abandon)
            lose(self.crawler, f"this process was given up by the fleet (no heartbeat for "
                 f"{self.lease:g} s, [crawl] frontier_lease); its requests went to the others")
            return
        for gone in self.guarded(self.fleet.requeue) or []:
            log.warning("fleet_process_given_up", process=gone)
            self.crawler.signals.send_catch_log(signal=given_up, process=gone)
        engine = self.crawler.engine
        if engine is not None and getattr(engine, "_slot", None) and self.guarded(len, self.queue):
            # Requests queued by others: Scrapy would look again only on its own 5 s beat.
            engine._slot.nextcall.schedule()

    def spider_idle(self, spider) -> None:
        if self.crawler.stats.get_value("cllm/lost"):
            return
        idle = self.guarded(self.fleet.idle, self.idle_timeout, len(self.active))
        if idle is False:
            raise DontCloseSpider
        if idle:
            self.guarded(self.fleet.finish)
