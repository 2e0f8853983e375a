"""In-memory stand-ins for redis-py and KafkaProducer, just enough for the sinks' unit tests."""

from __future__ import annotations

from typing import Any


class FakeRedis:
    def __init__(self, store: dict | None = None):
        self.store: dict[str, Any] = {} if store is None else store
        self.ttl: dict[str, int] = {}
        self.streams: dict[str, list[dict]] = {}
        self.fail_next_execute = False

    def pipeline(self, transaction: bool = False) -> FakePipeline:
        return FakePipeline(self)

    def get(self, key: str) -> bytes | None:
        v = self.store.get(key)
        return v.encode() if isinstance(v, str) else v

    def set(self, key, value, nx=False, ex=None, xx=False):
        if nx and key in self.store:
            return None
        if xx and key not in self.store:
            return None
        self.store[key] = value
        if ex is not None:
            self.ttl[key] = ex
        return True

    def hset(self, key, mapping):
        self.store.setdefault(key, {}).update(mapping)
        return len(mapping)

    def expire(self, key, ttl):
        self.ttl[key] = ttl
        return True

    def xadd(self, key, fields, maxlen=None, approximate=True):
        s = self.streams.setdefault(key, [])
        s.append(dict(fields))
        if maxlen is not None:
            del s[:-maxlen]
        return f"{len(s)}-0"

    def eval(self, script, numkeys, key, expected, *args):
        if self.store.get(key) != expected:
            return 0
        if "'del'" in script:
            del self.store[key]
        else:  # compare-and-set: new value, ttl
            self.store[key] = args[0]
            self.ttl[key] = int(args[1])
        return 1

    def close(self):
        pass


class FakePipeline:
    def __init__(self, r: FakeRedis):
        self._r = r
        self._ops: list = []

    def __getattr__(self, name):
        def op(*a, **kw):
            self._ops.append((name, a, kw))
            return self

        return op

    def execute(self):
        if self._r.fail_next_execute:
            self._r.fail_next_execute = False
            raise ConnectionError("redis down")
        out = [getattr(self._r, n)(*a, **kw) for n, a, kw in self._ops]
        self._ops.clear()
        return out


class FakeFuture:
    def __init__(self, exc: BaseException | None = None):
        self._exc = exc

    def get(self, timeout=None):
        if self._exc is not None:
            raise self._exc
        return "metadata"


class FakeProducer:
    def __init__(self):
        self.sent: list[dict] = []
        self.fail_keys: set[bytes] = set()

    def send(self, topic, key=None, value=None, headers=None):
        if key in self.fail_keys:
            return FakeFuture(TimeoutError(f"no ack for {key!r}"))
        self.sent.append({"topic": topic, "key": key, "value": value, "headers": headers})
        return FakeFuture()
