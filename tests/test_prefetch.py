"""Reading ahead on a thread (video files): same frames, same order, errors in place, clean stop."""

from __future__ import annotations

import threading

import pytest

from edge_runtime.pipeline import prefetched


def test_every_item_arrives_in_order():
    assert list(prefetched(iter(range(50)), depth=2)) == list(range(50))


def test_a_source_error_is_raised_after_the_items_before_it():
    def source():
        yield 1
        yield 2
        raise RuntimeError("stream lost")

    got = []
    with pytest.raises(RuntimeError, match="stream lost"):
        for item in prefetched(source()):
            got.append(item)
    assert got == [1, 2]


def test_closing_early_stops_the_reader_and_closes_the_source():
    closed = threading.Event()

    def endless():
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.set()

    frames = prefetched(endless(), depth=2)
    assert [next(frames) for _ in range(3)] == [0, 1, 2]
    frames.close()
    assert closed.wait(2.0)
    assert not any(t.name == "frame-prefetch" and t.is_alive() for t in threading.enumerate())
