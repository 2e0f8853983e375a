"""A result as small as it can be (no mask without defect pixels, 1-bit PNG, timings to the
microsecond) with the same mask read back; the INFO memory sampler behind GrdlineRedisMemoryHigh."""

from __future__ import annotations

import asyncio
import math

import cv2
import numpy as np
import pytest

from inference import redis_memory as rm
from inference.contracts import Result, Timings, decode_mask, encode_mask, mask_to_png, png_to_mask

from .test_contracts import make_result


def test_no_mask_is_stored_without_a_defect_pixel():
    assert encode_mask(np.zeros((128, 128), bool)) == b""
    assert decode_mask(b"") is None
    assert make_result(mask_png=b"").mask() is None


def test_masks_are_1_bit_pngs_that_decode_to_the_same_mask():
    rng = np.random.default_rng(0)
    mask = np.zeros((128, 128), bool)
    mask[40:60, 30:35] = True
    mask[rng.integers(0, 128, 50), rng.integers(0, 128, 50)] = True
    data = encode_mask(mask)
    assert data.startswith(b"\x89PNG") and data[24] == 1, "bit depth 1 (IHDR)"
    assert np.array_equal(decode_mask(data), mask)
    # smaller than the 8-bit level-1 PNG stored before
    ok, old = cv2.imencode(".png", mask.astype(np.uint8) * 255, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert ok and len(data) < len(old.tobytes())
    # masks stored before (8-bit PNG) still decode
    assert np.array_equal(decode_mask(old.tobytes()), mask)
    assert np.array_equal(png_to_mask(mask_to_png(mask)), mask)


def test_result_round_trip_keeps_the_mask_and_timings_to_the_microsecond():
    mask = np.zeros((16, 20), bool)
    mask[2:5, 3:7] = True
    r = make_result(mask_png=encode_mask(mask),
                    timings_ms=Timings(produce=0.123456789, model=12.3456789, total=30.000049))
    flat = r.to_redis()
    assert flat["timings_ms"] == ('{"produce":0.123,"kafka":0.0,"poll":0.0,"decode":0.0,"group":0.0,'
                                  '"wait":0.0,"model":12.346,"post":0.0,"reply":0.0,"total":30.0}')
    back = Result.from_redis({k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in flat.items()})
    assert np.array_equal(back.mask(), mask)
    assert back.timings_ms.model == pytest.approx(12.346)


class _Info:
    def __init__(self, answers):
        self.answers = list(answers)

    def info(self, section):
        assert section == "memory"
        a = self.answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a


def test_read_memory_and_fill():
    mem = rm.read_memory(_Info([{"used_memory": 900, "maxmemory": 1000, "other": 1}]))
    assert mem == rm.RedisMemory(900, 1000) and mem.fill == 0.9
    assert rm.RedisMemory(5, 0).fill == math.inf  # no maxmemory: the alert fires too


def test_sampler_records_retries_with_a_fresh_client_and_stops_when_cancelled():
    clients = [_Info([{"used_memory": 1, "maxmemory": 10}, ConnectionError("down")]),
               _Info([{"used_memory": 2, "maxmemory": 10}] * 50)]
    made, seen = [], []

    def factory():
        made.append(1)
        return clients[len(made) - 1]

    async def run():
        task = asyncio.create_task(rm.sample_memory(factory, seen.append, 0.001))
        while len(seen) < 3:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert len(made) == 2, "a failed read drops the client; the next sample makes a new one"
    assert [m.used for m in seen[:2]] == [1, 2]
