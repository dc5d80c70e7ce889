"""The needle scanner: a secret in every encoding a program may hold it in, in one pass.

For each secret (plaintext, key, decoy, ...) the scanner searches its full forms (raw,
UTF-8, UTF-16LE, UTF-32LE, hex in both cases, base64) and, to catch partial copies, every
window of each form that carries 16 bytes' worth of the secret: 16 bytes raw, 32 in UTF-16,
64 in UTF-32, 32 hex digits, 22 base64 characters, at character boundaries. (A 16-byte
window of UTF-32 is only 4 characters, or 3 and padding: CPython's wchar_t copies of argv
and the environment matched such a window of the decoy in CI, a false positive the decoy
control caught.) All patterns go into one multi-pattern
automaton (Hyperscan, streaming, so a copy that straddles two chunks is still found).

Nothing here ever prints or stores a pattern: findings carry kind, encoding, form,
counts, addresses and regions, and a short salted hash id of the needle.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ..sources import Chunk, MemorySource, Region, RegionIndex
from ._engines import Engine, make_engine

FRAGMENT_BYTES = 16  # of the secret; each encoding's window is wider by its expansion
# encoding -> (window length in encoded bytes, step between windows)
FRAGMENT_WINDOW = {
    "raw": (16, 1),
    "utf-8": (16, 1),
    "utf-16le": (32, 2),
    "utf-32le": (64, 4),
    "hex": (32, 1),
    "HEX": (32, 1),
    "base64": (22, 1),
}
TEXT_ENCODINGS = ("raw", "utf-8", "utf-16le", "utf-32le", "hex", "HEX", "base64")
BINARY_ENCODINGS = ("raw", "hex", "HEX", "base64")
FULL, FRAGMENT = "full", f"fragment{FRAGMENT_BYTES}"


@dataclass(frozen=True, slots=True)
class Secret:
    """Ground truth handed to the scanner. `text` secrets are also searched as UTF-16/32."""

    kind: str
    value: bytes = field(repr=False)
    text: bool = False

    @classmethod
    def detect(cls, kind: str, value: bytes) -> Secret:
        """Text if it decodes as UTF-8 to printable characters."""
        try:
            decoded = value.decode("utf-8")
        except UnicodeDecodeError:
            return cls(kind, value, False)
        return cls(kind, value, decoded.isprintable())


@dataclass(frozen=True, slots=True)
class Needle:
    kind: str
    encoding: str
    form: str
    needle_id: str
    length: int
    pattern: bytes = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Hit:
    kind: str
    encoding: str
    form: str
    needle_id: str
    address: int
    length: int
    region: Region | None


@dataclass(slots=True)
class Finding:
    """One (secret kind, encoding, form): how often and where it was found."""

    kind: str
    encoding: str
    form: str
    needle_id: str
    needle_len: int
    hits: int = 0
    copies: int = 0
    regions: list[str] = field(default_factory=list)
    status: str = "ok"
    reason: str = ""


def encode_forms(secret: Secret) -> dict[str, bytes | None]:
    """Every encoding of the secret; None where the encoding does not apply (binary secret)."""
    raw = bytes(secret.value)
    forms: dict[str, bytes | None] = {
        "raw": raw,
        "hex": raw.hex().encode(),
        "HEX": raw.hex().upper().encode(),
        "base64": base64.b64encode(raw).rstrip(b"="),  # padding only exists at the very end
    }
    if secret.text:
        text = raw.decode("utf-8")
        forms["utf-8"] = text.encode("utf-8")
        forms["utf-16le"] = text.encode("utf-16-le")
        forms["utf-32le"] = text.encode("utf-32-le")
    else:
        forms.update({"utf-8": None, "utf-16le": None, "utf-32le": None})
    return {enc: forms[enc] for enc in TEXT_ENCODINGS}


class NeedleSet:
    """All needles of a set of secrets, with a per-run salt for their public ids.

    `extra` adds exact needles of other kinds, searched whole (form `full`) in the same
    pass: (kind, encoding, bytes), e.g. keysched.key_schedule_needles(key) for the AES
    round keys a process derived from a key.
    """

    def __init__(
        self,
        secrets: Iterable[Secret],
        salt: bytes | None = None,
        extra: Iterable[tuple[str, str, bytes]] = (),
    ) -> None:
        self.salt = salt if salt is not None else os.urandom(16)
        self.secrets = list(secrets)
        self.needles: list[Needle] = []
        self.skipped: list[Finding] = []
        # pattern bytes -> indices of needles (a window can belong to several forms)
        self._owners: dict[bytes, list[int]] = defaultdict(list)
        for secret in self.secrets:
            self._add_secret(secret)
        for kind, encoding, pattern in extra:
            if not pattern:
                raise ValueError(f"extra needle {kind}/{encoding} is empty")
            pattern = bytes(pattern)
            self._add(Needle(kind, encoding, FULL, self.short_id(pattern), len(pattern), pattern))
        self.patterns: list[bytes] = list(self._owners)
        self.pattern_owners: list[list[int]] = [self._owners[p] for p in self.patterns]

    def short_id(self, data: bytes) -> str:
        return hashlib.blake2b(data, key=self.salt, digest_size=5).hexdigest()

    def _add_secret(self, secret: Secret) -> None:
        seen: dict[bytes, str] = {}
        for encoding, form_bytes in encode_forms(secret).items():
            if form_bytes is None:
                self._not_searched(
                    secret.kind, encoding, "", 0, "n/a", "secret is binary, not text"
                )
                continue
            needle_id = self.short_id(form_bytes)
            alias = seen.get(form_bytes)
            if alias is not None:
                self._not_searched(
                    secret.kind,
                    encoding,
                    needle_id,
                    len(form_bytes),
                    "alias",
                    f"same bytes as {alias}",
                )
                continue
            seen[form_bytes] = encoding
            self._add(Needle(secret.kind, encoding, FULL, needle_id, len(form_bytes), form_bytes))
            width, step = FRAGMENT_WINDOW[encoding]
            if len(form_bytes) > width:
                for start in range(0, len(form_bytes) - width + 1, step):
                    window = form_bytes[start : start + width]
                    self._add(Needle(secret.kind, encoding, FRAGMENT, needle_id, width, window))
            else:
                self.skipped.append(
                    Finding(
                        secret.kind,
                        encoding,
                        FRAGMENT,
                        needle_id,
                        len(form_bytes),
                        status="n/a",
                        reason=f"form is not longer than a {width}-byte window",
                    )
                )

    def _not_searched(
        self, kind: str, encoding: str, needle_id: str, length: int, status: str, reason: str
    ) -> None:
        for form in (FULL, FRAGMENT):
            self.skipped.append(
                Finding(kind, encoding, form, needle_id, length, status=status, reason=reason)
            )

    def _add(self, needle: Needle) -> None:
        self.needles.append(needle)
        self._owners[needle.pattern].append(len(self.needles) - 1)

    @property
    def max_length(self) -> int:
        return max((len(p) for p in self.patterns), default=0)


class Scanner:
    """Scans memory sources for a NeedleSet. Compile once, scan many sources."""

    def __init__(self, needles: NeedleSet, engine: str = "auto") -> None:
        self.needles = needles
        self.engine: Engine = make_engine(needles.patterns, engine)

    @property
    def engine_name(self) -> str:
        return self.engine.name

    def scan_chunks(
        self, chunks: Iterable[Chunk], regions: list[Region] | None = None
    ) -> list[Hit]:
        """Scan contiguous runs of chunks as streams; return every hit with its region."""
        raw_hits: list[tuple[int, int]] = []  # (pattern index, start address)
        stream = None
        expected = -1
        seen_regions: dict[int, Region] = {}
        for chunk in chunks:
            seen_regions.setdefault(chunk.region.start, chunk.region)
            if stream is None or chunk.address != expected:
                if stream is not None:
                    stream.close()
                stream = self.engine.stream(chunk.address, raw_hits)
            stream.feed(chunk.data)
            expected = chunk.address + len(chunk.data)
        if stream is not None:
            stream.close()
        region_list = sorted(regions or seen_regions.values(), key=lambda r: r.start)
        return list(self._resolve(raw_hits, region_list))

    def scan(self, source: MemorySource) -> list[Hit]:
        return self.scan_chunks(source.chunks(), source.regions())

    def _resolve(self, raw_hits: list[tuple[int, int]], regions: list[Region]) -> Iterator[Hit]:
        index = RegionIndex(regions)
        for pattern_index, address in sorted(set(raw_hits)):
            region = index.find(address)
            for owner in self.needles.pattern_owners[pattern_index]:
                n = self.needles.needles[owner]
                yield Hit(n.kind, n.encoding, n.form, n.needle_id, address, n.length, region)

    def summarize(self, hits: list[Hit]) -> list[Finding]:
        return summarize(self.needles, hits)


def summarize(needles: NeedleSet, hits: list[Hit]) -> list[Finding]:
    """One Finding per (kind, encoding, form), in needle order, skipped ones included.

    Full copies are counted once each. Fragment hits inside a full copy of the same
    (kind, encoding) are not counted again; the remaining windows are merged into runs,
    and each run is one partial copy.
    """
    findings: dict[tuple[str, str, str], Finding] = {}
    for n in needles.needles:
        key = (n.kind, n.encoding, n.form)
        if key not in findings:
            findings[key] = Finding(
                n.kind,
                n.encoding,
                n.form,
                n.needle_id,
                n.length,
            )
    full_hits, loose = _split(hits)
    for h in full_hits:
        f = findings[(h.kind, h.encoding, FULL)]
        f.hits += 1
        f.copies += 1
        _add_region(f, h.region)
    fragments: dict[tuple[str, str], list[Hit]] = defaultdict(list)
    for h in loose:
        fragments[(h.kind, h.encoding)].append(h)
    for (kind, encoding), frag_hits in fragments.items():
        f = findings[(kind, encoding, FRAGMENT)]
        f.hits = len(frag_hits)
        run_end = -1
        for h in sorted(frag_hits, key=lambda h: h.address):
            if h.address > run_end:
                f.copies += 1
            run_end = max(run_end, h.address + h.length)
            _add_region(f, h.region)
    ordered = list(findings.values()) + needles.skipped
    order = {enc: i for i, enc in enumerate(TEXT_ENCODINGS)}
    kinds = {s.kind: i for i, s in enumerate(needles.secrets)}
    # extra needles (kinds and encodings of their own) keep their given order, at the end
    ordered.sort(key=lambda f: (kinds.get(f.kind, 99), order.get(f.encoding, 99), f.form != FULL))
    return ordered


def _split(hits: list[Hit]) -> tuple[list[Hit], list[Hit]]:
    """Full hits, and the fragment hits that do not lie inside a full copy of their form."""
    full = [h for h in hits if h.form == FULL]
    spans: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    for h in full:
        spans[(h.kind, h.encoding)].append((h.address, h.address + h.length))
    for span_list in spans.values():
        span_list.sort()
    starts = {k: [s for s, _ in v] for k, v in spans.items()}

    def inside_full_copy(h: Hit) -> bool:
        key = (h.kind, h.encoding)
        # copies of one form have one length, so the closest start on the left decides
        i = bisect.bisect_right(starts.get(key, []), h.address) - 1
        return i >= 0 and h.address + h.length <= spans[key][i][1]

    return full, [h for h in hits if h.form != FULL and not inside_full_copy(h)]


def reportable_hits(hits: list[Hit]) -> list[Hit]:
    """The hits a report lists: full copies and partial copies, not windows of full copies."""
    full, loose = _split(hits)
    return full + loose


def _add_region(finding: Finding, region: Region | None) -> None:
    label = region.describe() if region is not None else "(outside any region)"
    if label not in finding.regions:
        finding.regions.append(label)


def secrets_from_files(
    plaintext: Iterable[str], keys: Iterable[str] = (), strip_newline: bool = True
) -> list[Secret]:
    """Needles from files: each file's whole content is one secret (a trailing newline of a
    text file is dropped, as `echo` adds one)."""
    secrets: list[Secret] = []
    for kind, paths in (("plaintext", plaintext), ("key", keys)):
        for path in paths:
            with open(path, "rb") as handle:
                value = handle.read()
            if strip_newline and value.endswith(b"\n"):
                value = value[:-1]
            if not value:
                raise ValueError(f"needle file {path} is empty")
            secrets.append(
                Secret.detect(kind, value) if kind != "key" else Secret(kind, value, False)
            )
    return secrets
