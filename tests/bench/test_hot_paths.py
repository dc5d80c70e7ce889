"""Micro-benchmarks of hot paths (pytest-benchmark). Off by default: `make bench-micro`."""

from __future__ import annotations

import os

import pytest

import memcryptor_lab as mc
from attacks.scan import NeedleSet, Scanner, Secret
from attacks.sources import Chunk, Region

pytest.importorskip("pytest_benchmark")


@pytest.mark.parametrize("name", list(mc.DESIGNS))
@pytest.mark.parametrize("size", [32, 64 * 1024, 1 << 20])
def test_encrypt(benchmark, name: str, size: int) -> None:
    payload = os.urandom(size)
    with mc.open_design(name, harden_process=False) as protector:
        benchmark(protector.encrypt, payload)


@pytest.mark.parametrize("name", list(mc.DESIGNS))
def test_reveal_32_bytes(benchmark, name: str) -> None:
    with mc.open_design(name, harden_process=False) as protector:
        sealed = protector.seal_buffer(bytearray(os.urandom(32)))

        def reveal() -> None:
            with sealed.reveal():
                pass

        benchmark(reveal)


def test_needle_scan_16_mib(benchmark) -> None:
    scanner = Scanner(
        NeedleSet(
            [
                Secret("plaintext", "pässwörd-ψ-0123456789".encode(), True),
                Secret("key", os.urandom(32)),
            ]
        )
    )
    image = memoryview(bytearray(os.urandom(16 << 20)))
    region = Region(0, len(image))
    benchmark(lambda: scanner.scan_chunks([Chunk(region, 0, image)], [region]))
