"""Multi-pattern engines behind the needle scanner.

`hyperscan` is the one we use: one streaming pass for every pattern, >1 GB/s here.
`python` is a slow, obviously-correct reference (bytes.find per pattern) that the tests
compare against, and the engine used only when asked for or when Hyperscan cannot be
imported on this platform; the engine in use is recorded with every result.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Protocol

# Held back while Hyperscan runs: a Python signal handler raising inside the match
# callback would abort the scan as "ScanTerminated" and lose the KeyboardInterrupt.
_DEFERRED_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class Stream(Protocol):
    def feed(self, data: memoryview) -> None: ...

    def close(self) -> None: ...


class Engine(Protocol):
    name: str

    def stream(self, base_address: int, sink: list[tuple[int, int]]) -> Stream:
        """A stream over contiguous memory starting at `base_address`; matches are appended
        to `sink` as (pattern index, start address)."""
        ...


def make_engine(patterns: list[bytes], name: str = "auto") -> Engine:
    if name in ("auto", "hyperscan"):
        try:
            return HyperscanEngine(patterns)
        except ImportError:
            if name == "hyperscan":
                raise
    if name in ("auto", "python"):
        return PythonEngine(patterns)
    raise ValueError(f"unknown scan engine {name!r}; choose auto, hyperscan or python")


class HyperscanEngine:
    name = "hyperscan"

    def __init__(self, patterns: list[bytes]) -> None:
        import hyperscan

        self._hs = hyperscan
        self._lengths = [len(p) for p in patterns]
        self._db = hyperscan.Database(mode=hyperscan.HS_MODE_STREAM)
        if patterns:
            # Every byte escaped: the binding's pure-literal mode cannot take NUL bytes.
            expressions = [b"".join(b"\\x%02x" % c for c in p) for p in patterns]
            self._db.compile(
                expressions=expressions,
                ids=list(range(len(patterns))),
                elements=len(patterns),
                flags=0,
            )
        self._empty = not patterns

    def stream(self, base_address: int, sink: list[tuple[int, int]]) -> Stream:
        return _HyperscanStream(self, base_address, sink)


class _HyperscanStream:
    def __init__(self, engine: HyperscanEngine, base: int, sink: list[tuple[int, int]]):
        self._engine = engine
        self._base = base
        self._sink = sink
        # Keep the callback alive ourselves: the binding does not hold a reference to it,
        # and a bound method made inline is freed at once (seen here: crashes).
        self._callback = self._on_match
        self._ctx = None if engine._empty else engine._db.stream(match_event_handler=self._callback)
        self._stream = None if self._ctx is None else self._ctx.__enter__()

    def _on_match(self, pattern: int, _from: int, to: int, _flags: int, _ctx: object) -> int:
        self._sink.append((pattern, self._base + to - self._engine._lengths[pattern]))
        return 0  # anything else stops the scan

    def feed(self, data: memoryview) -> None:
        if self._stream is not None and len(data):
            _signals_deferred(self._stream.scan, data)

    def close(self) -> None:
        if self._ctx is not None:
            ctx, self._ctx, self._stream = self._ctx, None, None
            _signals_deferred(ctx.__exit__, None, None, None)  # flushes end-of-stream matches


def _signals_deferred(call: Callable[..., object], *args: object) -> None:
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED_SIGNALS)
    try:
        call(*args)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # pending signals land here


class PythonEngine:
    name = "python"

    def __init__(self, patterns: list[bytes]) -> None:
        self.patterns = patterns
        self.overlap = max((len(p) for p in patterns), default=1) - 1

    def stream(self, base_address: int, sink: list[tuple[int, int]]) -> Stream:
        return _PythonStream(self, base_address, sink)


class _PythonStream:
    def __init__(self, engine: PythonEngine, base: int, sink: list[tuple[int, int]]):
        self._engine = engine
        self._tail = b""
        self._tail_address = base
        self._sink = sink

    def feed(self, data: memoryview) -> None:
        window = self._tail + bytes(data)
        origin = self._tail_address
        for index, pattern in enumerate(self._engine.patterns):
            pos = window.find(pattern)
            while pos != -1:
                # matches wholly inside the carried tail were reported by the previous feed
                if pos + len(pattern) > len(self._tail):
                    self._sink.append((index, origin + pos))
                pos = window.find(pattern, pos + 1)
        keep = min(self._engine.overlap, len(window))
        self._tail = window[len(window) - keep :] if keep else b""
        self._tail_address = origin + len(window) - keep

    def close(self) -> None:
        self._tail = b""
