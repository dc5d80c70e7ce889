"""The needle scanner on synthetic images, against the reference engine."""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attacks.scan import FRAGMENT, FULL, NeedleSet, Scanner, Secret, encode_forms, summarize
from attacks.sources import Chunk, FileSource, Region

TEXT = "Grüße-ψ-Пароль-0123456789abc"


def _findings(scanner: Scanner, image: bytes, chunk: int = 1 << 20) -> dict:
    region = Region(0, len(image), path="image")
    chunks = (
        Chunk(region, i, memoryview(image)[i : i + chunk]) for i in range(0, len(image), chunk)
    )
    hits = scanner.scan_chunks(chunks, [region])
    return {(f.kind, f.encoding, f.form): f for f in scanner.summarize(hits)}


def test_encode_forms_text_and_binary() -> None:
    forms = encode_forms(Secret("plaintext", TEXT.encode(), text=True))
    assert forms["utf-16le"] == TEXT.encode("utf-16-le")
    assert forms["utf-32le"] == TEXT.encode("utf-32-le")
    assert forms["HEX"] == TEXT.encode().hex().upper().encode()
    assert forms["base64"] == base64.b64encode(TEXT.encode()).rstrip(b"=")
    binary = encode_forms(Secret("key", os.urandom(32)))
    assert binary["utf-16le"] is None and binary["raw"] is not None


def test_secret_detect() -> None:
    assert Secret.detect("p", TEXT.encode()).text
    assert not Secret.detect("p", b"\xff\xfe\x00binary").text


@pytest.mark.parametrize("engine", ["hyperscan", "python"])
def test_every_encoding_is_found_and_counted(engine: str) -> None:
    secret = Secret("plaintext", TEXT.encode(), text=True)
    decoy = Secret("decoy", "another-secret-ψ-never-seen".encode(), text=True)
    key = Secret("key", os.urandom(32))
    scanner = Scanner(NeedleSet([secret, decoy, key]), engine=engine)
    forms = encode_forms(secret)
    noise = bytearray(os.urandom(3 << 20))
    image = bytearray()
    for encoding in ("raw", "utf-16le", "utf-32le", "hex", "HEX", "base64"):
        image += noise[:5000] + forms[encoding] + noise[5000:9000] + forms[encoding]
    image += noise[:1000] + bytes(key.value) + noise[1000:2000]
    image += forms["raw"][3:25]  # a partial copy: 22 bytes, no full copy
    image += noise
    found = _findings(scanner, bytes(image), chunk=4096 + 7)  # needles straddle chunks
    for encoding in ("raw", "utf-16le", "utf-32le", "hex", "HEX", "base64"):
        assert found[("plaintext", encoding, FULL)].copies == 2, encoding
    assert found[("plaintext", "raw", FRAGMENT)].copies == 1
    assert found[("plaintext", "raw", FRAGMENT)].hits == 22 - 16 + 1
    assert found[("plaintext", "utf-16le", FRAGMENT)].copies == 0  # windows of full copies
    assert found[("plaintext", "utf-8", FULL)].status == "alias"
    assert found[("key", "raw", FULL)].copies == 1
    assert found[("key", "utf-16le", FULL)].status == "n/a"
    assert all(f.copies == 0 for k, f in found.items() if k[0] == "decoy")
    assert found[("plaintext", "raw", FULL)].regions == ["image ----"]


def test_a_needle_split_across_a_gap_is_not_a_copy() -> None:
    secret = Secret("plaintext", os.urandom(32))
    scanner = Scanner(NeedleSet([secret]))
    region = Region(0, 1 << 16)
    raw = bytes(secret.value)
    chunks = [
        Chunk(region, 0, memoryview(b"\0" * 100 + raw[:20])),
        Chunk(region, 4096, memoryview(raw[20:] + b"\0" * 100)),
    ]  # not contiguous
    hits = scanner.scan_chunks(chunks, [region])
    assert not [h for h in hits if h.form == FULL]


@settings(max_examples=40, deadline=None)
@given(
    positions=st.lists(st.integers(0, 20_000), min_size=0, max_size=6),
    chunk=st.integers(17, 9000),
    seed=st.binary(min_size=32, max_size=32),
)
def test_hyperscan_agrees_with_the_reference_engine(
    positions: list[int], chunk: int, seed: bytes
) -> None:
    secret = Secret("plaintext", seed)
    needles = NeedleSet([secret], salt=b"fixed")
    image = bytearray(os.urandom(21_000))
    forms = encode_forms(secret)
    for i, pos in enumerate(positions):
        form = forms[("raw", "hex", "base64")[i % 3]]
        image[pos : pos + len(form)] = form
    image = bytes(image)
    results = []
    for engine in ("hyperscan", "python"):
        region = Region(0, len(image))
        chunks = (
            Chunk(region, i, memoryview(image)[i : i + chunk]) for i in range(0, len(image), chunk)
        )
        hits = Scanner(needles, engine=engine).scan_chunks(chunks, [region])
        results.append(sorted((h.kind, h.encoding, h.form, h.address) for h in hits))
    assert results[0] == results[1]


def test_needle_ids_are_salted_short_hashes() -> None:
    secret = Secret("plaintext", TEXT.encode(), text=True)
    a, b = NeedleSet([secret]), NeedleSet([secret])
    assert a.needles[0].needle_id != b.needles[0].needle_id
    assert len(a.needles[0].needle_id) == 10
    assert TEXT.encode().hex()[:10] not in {n.needle_id for n in a.needles}
    assert "pattern" not in repr(a.needles[0])


def test_summarize_without_hits_lists_every_form() -> None:
    needles = NeedleSet([Secret("plaintext", TEXT.encode(), text=True)])
    rows = summarize(needles, [])
    assert {(f.encoding, f.form) for f in rows} >= {("raw", FULL), ("base64", FRAGMENT)}
    assert all(f.copies == 0 for f in rows)


def test_file_source_scans_a_file(tmp_path) -> None:
    secret = Secret("plaintext", os.urandom(32))
    path = tmp_path / "image.bin"
    path.write_bytes(os.urandom(100_000) + bytes(secret.value) + os.urandom(50))
    scanner = Scanner(NeedleSet([secret]))
    source = FileSource(path, chunk_bytes=4096)
    hits = [h for h in scanner.scan(source) if h.form == FULL]
    assert [h.address for h in hits if h.encoding == "raw"] == [100_000]
    assert source.stats.bytes_read == 100_082


def test_wide_encodings_need_sixteen_characters_not_sixteen_bytes() -> None:
    # CPython keeps argv and the environment as wchar_t (UTF-32LE): four characters of a
    # secret there are 16 bytes, but not a partial copy of it.
    secret = Secret("decoy", "Zq7ψRt2mXw9LpK4vNb8HjC3yTe6".encode(), text=True)
    scanner = Scanner(NeedleSet([secret]))
    text = bytes(secret.value).decode()
    noise = os.urandom(4096)
    short = text[5:9].encode("utf-32-le")  # 4 characters: 16 bytes
    long = text[2:18].encode("utf-32-le")  # 16 characters: 64 bytes
    found = _findings(scanner, noise + short + noise)
    assert found[("decoy", "utf-32le", FRAGMENT)].copies == 0
    found = _findings(scanner, noise + long + noise)
    assert found[("decoy", "utf-32le", FRAGMENT)].copies == 1
