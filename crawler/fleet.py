"""A crawl's shared state in Redis (`[crawl] frontier`): the keys of one crawl, the scripts
that change them atomically, and what the web application reads. Light on purpose (redis-py,
no Scrapy): the web server imports it; crawler/frontier.py and crawler/polite.py are the
Scrapy side.

Every key of crawl X is `cllm:{X}:...` (one hash tag, so a Redis Cluster keeps a crawl in
one slot):

    requests        zset   the queue: encoded requests, score -priority (breadth-first)
    seen            set    fingerprints of every request ever queued (the dupefilter)
    inflight:<P>    hash   what process P popped and has not committed: key -> "score data"
    processes       zset   live processes, score = lease end (ms, Redis clock)
    active          hash   P -> requests P is working on, as its last heartbeat said
    info            hash   P -> JSON (host, pid, pages, docs, state) for the web application
    activity        string Redis time (ms) of the last pop or push, by anyone
    finished        string set when the fleet ended by itself
    polite:<host>:* politeness: the next allowed request time, the slots in use
    robots:<netloc> robots.txt of a site, fetched once for the crawl

Requests are marshal (what JOBDIR's disk queue uses): nothing read back is unpickled.
`loads`/`dumps` below are the serializer scrapy-redis is given (SCHEDULER_SERIALIZER).
"""

from __future__ import annotations

import json
import marshal
import os
import secrets
import socket

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from core.errors import UserError

# Redis calls are retried for about this long (a Redis restart), then the crawl stops.
RETRY_SECONDS = 10.0
FULL = -1.0  # `Fleet.slot`: every slot of the site is in use
loads, dumps = marshal.loads, marshal.dumps

_NOW = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) "
# KEYS: seen, requests, inflight, activity; ARGV: fingerprint ("": dont_filter), score,
# data, the in-flight key of the request this one replaces (a redirect, a retry) or "".
# Queued and remembered as seen together, so no kill between the two loses a request.
_PUSH = _NOW + """
local added = 1
if ARGV[1] ~= '' then added = redis.call('SADD', KEYS[1], ARGV[1]) end
if added == 1 then redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3]) end
if ARGV[4] ~= '' then redis.call('HDEL', KEYS[3], ARGV[4]) end
redis.call('SET', KEYS[4], now)
return added
"""
# KEYS: requests, inflight, activity; ARGV: the in-flight key. The first request moves to
# this process's in-flight hash in the same step: popped is never unrecorded.
_POP = _NOW + """
local top = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #top == 0 then return false end
redis.call('ZREM', KEYS[1], top[1])
redis.call('HSET', KEYS[2], ARGV[1], top[2] .. ' ' .. top[1])
redis.call('SET', KEYS[3], now)
return top[1]
"""
# KEYS: processes, requests, activity, active; ARGV: key prefix, one process ("": every
# process whose lease ended). Their in-flight requests go back to the queue.
_REQUEUE = _NOW + """
local gone = {}
if ARGV[2] ~= '' then gone = {ARGV[2]} else
  gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now) end
for _, p in ipairs(gone) do
  local held = redis.call('HGETALL', ARGV[1] .. 'inflight:' .. p)
  for i = 2, #held, 2 do
    local cut = string.find(held[i], ' ', 1, true)
    redis.call('ZADD', KEYS[2], string.sub(held[i], 1, cut - 1), string.sub(held[i], cut + 1))
  end
  redis.call('DEL', ARGV[1] .. 'inflight:' .. p)
  redis.call('ZREM', KEYS[1], p)
  redis.call('HDEL', KEYS[4], p)
  if #held > 0 then redis.call('SET', KEYS[3], now) end
end
return gone
"""
# KEYS: processes, active; ARGV: process, lease ms, active count, "join" on the first beat.
# 0 when the process was given up by the others (its lease ran out): it must stop.
_BEAT = _NOW + """
if ARGV[4] ~= 'join' and not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
"""
# KEYS: next allowed time, slots in use (zset: token -> expiry); ARGV: delay ms, slots,
# token, slot lease ms. 0: go now (slot taken); -1: every slot in use; else milliseconds to
# wait before asking again.
_SLOT = _NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then return -1 end
local next = tonumber(redis.call('GET', KEYS[1]) or '0')
if next > now then return next - now end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[3])
redis.call('SET', KEYS[1], now + tonumber(ARGV[1]), 'PX', math.max(tonumber(ARGV[1]), 1000))
return 0
"""


def process_id() -> str:
    """Unique per process, readable: host, pid and a random part (pids repeat across hosts
    and restarts). It names the process's shards and in-flight requests."""
    host = "".join(c if c.isalnum() else "." for c in socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def connect(url: str) -> redis.Redis:
    """A client of the frontier that rides out a Redis restart (calls retried with back-off
    for about RETRY_SECONDS), checked now: one line naming the setting if it cannot be used."""
    fix = ("start Redis there, or fix [crawl] frontier (CLLM_CRAWL_FRONTIER; empty crawls "
           "in one process)")
    try:
        client = redis.Redis.from_url(
            url, socket_timeout=RETRY_SECONDS, socket_connect_timeout=2.0,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), int(RETRY_SECONDS / 0.5)),
            # OSError too: a refused connection (Redis restarting) is raised as the socket's
            # own error inside redis-py's retry, and would not be retried without it
            retry_on_error=[redis.ConnectionError, redis.TimeoutError, OSError])
    except ValueError as e:
        raise UserError(f"[crawl] frontier {url!r} is not a Redis URL ({e}): give one such as "
                        "redis://host:6379/0") from None
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=2.0).ping()
    except redis.RedisError as e:
        raise UserError(f"[crawl] frontier {url}: Redis does not answer ({e}): {fix}") from None
    return client


class Fleet:
    """One crawl's keys in one Redis, seen from process `process`."""

    def __init__(self, client: redis.Redis, crawl_id: str, process: str = ""):
        self.redis, self.crawl_id, self.process = client, crawl_id, process
        self.prefix = f"cllm:{{{crawl_id}}}:"
        self._push, self._pop, self._requeue, self._beat, self._slot = (
            client.register_script(s) for s in (_PUSH, _POP, _REQUEUE, _BEAT, _SLOT))

    def key(self, name: str) -> str:
        return self.prefix + name

    # --- the queue -----------------------------------------------------------------------
    def push(self, fingerprint: str, score: float, data: bytes, replaces: str = "") -> bool:
        """Queue a request unless its fingerprint was seen; True when it was queued."""
        return bool(self._push(keys=[self.key("seen"), self.key("requests"),
                                     self.key(f"inflight:{self.process}"), self.key("activity")],
                               args=[fingerprint, score, data, replaces]))

    def pop(self, inflight_key: str) -> bytes | None:
        return self._pop(keys=[self.key("requests"), self.key(f"inflight:{self.process}"),
                               self.key("activity")], args=[inflight_key])

    def commit(self, inflight_keys: list[str]) -> None:
        """These requests are done for good (their pages are in a shard, or had none)."""
        if inflight_keys:
            self.redis.hdel(self.key(f"inflight:{self.process}"), *inflight_keys)

    def requeue(self, process: str = "") -> list[str]:
        """Give the in-flight requests of `process` (default: every process whose lease
        ran out) back to the queue; the processes given up."""
        gone = self._requeue(keys=[self.key("processes"), self.key("requests"),
                                   self.key("activity"), self.key("active")],
                             args=[self.prefix, process])
        return [p.decode() for p in gone]

    def __len__(self) -> int:
        return self.redis.zcard(self.key("requests"))

    # --- processes -----------------------------------------------------------------------
    def beat(self, lease: float, active: int, info: dict, join: bool = False) -> bool:
        """Renew this process's lease; False when the others gave it up already."""
        self.redis.hset(self.key("info"), self.process, json.dumps(info))
        return bool(self._beat(keys=[self.key("processes"), self.key("active")],
                               args=[self.process, int(lease * 1000), active,
                                     "join" if join else ""]))

    def leave(self, info: dict) -> None:
        """A clean exit: what this process holds back to the queue, itself off the list."""
        self.requeue(self.process)
        self.redis.hset(self.key("info"), self.process, json.dumps(info))

    def idle(self, seconds: float, own_active: int) -> bool:
        """Whether the whole fleet has nothing left to do: an empty queue, no live process
        working on a request (this one counted as it is now, the others as their last
        heartbeat said), no process gone without its requests given back, and no pop or
        push for `seconds`."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(self.key("requests")).hgetall(self.key("active"))
        pipe.get(self.key("activity")).time()
        queued, active, activity, (sec, usec) = pipe.execute()
        active = {p.decode(): int(n) for p, n in active.items()} | {self.process: own_active}
        quiet = sec * 1000 + usec // 1000 - int(activity or 0)
        return not queued and not any(active.values()) and quiet >= seconds * 1000

    def finish(self) -> None:
        self.redis.set(self.key("finished"), "1")

    @property
    def finished(self) -> bool:
        return bool(self.redis.exists(self.key("finished")))

    # --- politeness ----------------------------------------------------------------------
    def slot(self, host: str, delay: float, slots: int, token: str, lease: float) -> float:
        """Take one of `slots` request slots of a site, at least `delay` after the last
        request any process sent it; 0 when taken, FULL when every slot is in use (when one
        is freed is not known), else seconds to wait before asking again."""
        wait = self._slot(keys=[self.key(f"polite:{host}:next"), self.key(f"polite:{host}:slots")],
                          args=[int(delay * 1000), slots, token, int(lease * 1000)])
        return FULL if wait < 0 else wait / 1000

    def free_slot(self, host: str, token: str) -> None:
        self.redis.zrem(self.key(f"polite:{host}:slots"), token)

    def robots(self, netloc: str) -> bytes | None:
        return self.redis.get(self.key(f"robots:{netloc}"))

    def claim_robots(self, netloc: str, seconds: float) -> bool:
        """Whether this process fetches a site's robots.txt for the crawl (others wait)."""
        return bool(self.redis.set(self.key(f"robots-claim:{netloc}"), self.process,
                                   nx=True, px=int(seconds * 1000)))

    def keep_robots(self, netloc: str, body: bytes) -> None:
        self.redis.set(self.key(f"robots:{netloc}"), body)


def status(url: str, crawl_id: str) -> dict:
    """What the web application shows of a fleet crawl: the frontier's length and each
    process (live or not, its pages and documents, what it holds in flight); an `error`
    line when Redis cannot be read."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)
        fleet = Fleet(client, crawl_id)
        pipe = client.pipeline(transaction=False)
        pipe.zcard(fleet.key("requests")).hgetall(fleet.key("info"))
        pipe.zrange(fleet.key("processes"), 0, -1, withscores=True).time()
        pipe.exists(fleet.key("finished"))
        queued, info, leases, (sec, usec), finished = pipe.execute()
        now = sec * 1000 + usec // 1000
        live = {p.decode() for p, end in leases if end > now}
        processes = []
        for process, data in sorted(info.items()):
            process = process.decode()
            processes.append(json.loads(data) | {
                "process": process, "live": process in live,
                "in_flight": client.hlen(fleet.key(f"inflight:{process}"))})
    except (redis.RedisError, ValueError) as e:
        return {"crawl_id": crawl_id, "error": f"the frontier cannot be read: {e}"}
    return {"crawl_id": crawl_id, "frontier": queued, "finished": bool(finished),
            "processes": processes}
