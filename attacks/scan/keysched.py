"""The AES key-schedule scanner: expanded AES keys (round keys) in memory images.

A process that uses AES keeps the expanded key schedule (OpenSSL's AES_KEY, AES-NI round
keys) for as long as the cipher context lives, even when the raw key has been wiped or
shielded. This module finds such schedules, like aeskeyfind (Halderman et al., "Lest We
Remember", 2008) but vectorised with numpy and with the layouts OpenSSL 3 really stores.

Layouts searched (key sizes 128, 192, 256; each in two byte orders):

- `encrypt`: the FIPS-197 key expansion w[0..4(Nr+1)), round key 0 first. This is what
  aesni_set_encrypt_key and OpenSSL's x86_64 assembly AES_set_encrypt_key store (the
  `cryptography` package's encryptors, AES-GCM/CTR contexts, ...).
- `decrypt`: the "equivalent inverse cipher" schedule of aesni_set_decrypt_key and
  AES_set_decrypt_key: round keys in reverse order, InvMixColumns applied to all but the
  first and the last (OpenSSL 3 uses it for ECB and CBC decryption).
- byte order `bytes`: each word stored as its four bytes in FIPS order (AES-NI, OpenSSL's
  x86_64 assembly, most libraries); `be32`: each word a native little-endian u32 holding
  the big-endian word (OpenSSL's portable C aes_core.c, used by builds without assembly).

Not covered: bit-sliced (bsaes) and vector-permute (vpaes) schedules, which OpenSSL uses only
on CPUs without AES-NI (they store round keys in a transformed basis); schedules in forward
order with InvMixColumns applied (FIPS-197 5.3.5 as printed, not what OpenSSL stores).

Method, in stages, over every byte offset of a window (a chunk plus the last 239 bytes of the
chunk before it when the two are contiguous, so a schedule straddling chunks is found once:
in the window where it ends):

1. Pre-filter, at all offsets, vectorised over 32-bit blocks. Most words of an expansion
   obey a linear relation w[i] = w[i-Nk] ^ w[i-1] (no S-box). The decryption layout keeps
   them among its middle round keys, because InvMixColumns is linear and acts on each word
   alone. So each layout has lags (d1, d2) with B[k] ^ B[k-d1] ^ B[k-d2] = 0 over runs of
   stored words, at every byte alignment alike since the lags are whole words. The
   pre-filter sums the popcount of that residue over 4 blocks (128 bits) inside such runs
   and keeps the offset if the sum is at most the tolerance T. It is sound: a flipped image
   bit enters the residue at 3 byte positions (its own, +4 d1, +4 d2) and the 4 blocks are
   chosen so that no bit reaches two of them, so a schedule with <= T flipped bits always
   passes. Random data passes with probability P(Bin(128, 1/2) <= T): 2^-128 exact, ~1e-24
   at T = 10, ~1e-15 at T = 20. Zero pages, counters and pointer arrays come close to
   linear relations too, so the first block's word must not be zero (a schedule word is
   zero with probability 2^-32), and with T > 0 the 128 data bits under the blocks must
   hold at least 24 set bits (a schedule fails that with probability ~5e-14, more only if
   its flipped bits crowd into those 128 and all clear bits).
2. Every block (per passing offset): the same residue over all blocks of the
   layout (7 to 30), at most T times the most blocks one flipped bit can reach (1 or 3),
   and the words involved must hold at least a quarter of their bits (a schedule holds half;
   fewer than a quarter, allowing for 3T flips, has probability < 1e-50).
3. Linear check (survivors only): the popcount of every linear relation of the layout,
   summed, at most T times the most relations a word takes part in (3), and between a
   quarter and three quarters of the window's bits set.
4. Recovery (a handful of offsets): for each byte order the words are brought back to FIPS
   form (byte swap, MixColumns for the middle decryption round keys), a candidate key is
   derived from every run of Nk consecutive words (the expansion runs backwards from any Nk
   consecutive words), each is expanded into the layout, and the one nearest to the image
   in Hamming distance is kept if the distance is <= T: that distance is the reported
   `bit_errors`. This is exact whenever some Nk consecutive words are free of errors, which
   pigeonhole guarantees for T < 11 (AES-128), T < 8 (AES-192), T < 7 (AES-256). Otherwise
   one word at a time is recomputed from each relation it takes part in and the runs are
   tried again (a run with one bad word becomes whole), and last the words of the relations
   that hold are propagated through the relations. A schedule can still be missed when its
   errors are both dense and spread (every run of Nk words with two bad words).

What tolerance costs: the exact mode tests equality of one block everywhere and the other
three only where that holds; with T > 0 every block's popcount is summed everywhere, more
structured data reaches stages 2-4, recovery tries many runs, and the known-key search
splits each schedule into T + 1 pieces. Measured on one core (CPU time; `memlab bench` has
the wall-clock rows): random data ~460 MB/s exact, ~190 MB/s at T = 10 or 20; a 196 MiB
Python process image ~250 MB/s exact, ~110 MB/s at T = 10, ~40 MB/s at T = 20. Tolerance is
capped at MAX_TOLERANCE.

Known-key mode: for a given key, the exact schedules of every layout are computed and
searched with the multi-pattern engine: the whole schedule when T = 0, otherwise T + 1
disjoint pieces (one of them is intact when at most T bits flipped), each piece hit checked
by Hamming distance. `key_schedule_needles` gives the same schedules as needles for the
needle scanner's single pass.

Nothing here ever stores or prints a key: hits carry the address, region, layout, bit error
count and a short salted hash id of the recovered key (with a NeedleSet's salt, the id equals
the `raw` needle id of the same key).
"""

from __future__ import annotations

import bisect
import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache

import numpy as np

from ..sources import Chunk, MemorySource, Region
from ._engines import Engine, make_engine

DEFAULT_TOLERANCE = 10  # aeskeyfind's default threshold
MAX_TOLERANCE = 20  # known-key pieces of >= 8 bytes; random data passes stage 1 at ~1e-15
KEY_BITS = (128, 192, 256)
ENCRYPT, DECRYPT = "encrypt", "decrypt"
DIRECTIONS = (ENCRYPT, DECRYPT)
BYTES, BE32 = "bytes", "be32"
BYTE_ORDERS = (BYTES, BE32)
SCHEDULE_KIND = "key-schedule"
MAX_SCHEDULE_BYTES = 240
PREFILTER_BLOCKS = 4  # 32-bit residue blocks checked at every offset
MIN_PREFILTER_ONES = 24  # of the 128 data bits under them, with tolerance (docstring)
_SLICE_WORDS = 1 << 18  # 1 MiB of a window per pre-filter pass: stays in cache
_BATCH = 1 << 13  # candidates gathered at once in the linear check
_WORD_DTYPE = {BYTES: np.dtype(">u4"), BE32: np.dtype("<u4")}


class KeyScheduleError(ValueError):
    """A key or a parameter the key-schedule scanner cannot use."""


# -- AES arithmetic ------------------------------------------------------------------------


def _gf_mul(a: int, b: int) -> int:
    product = 0
    while b:
        if b & 1:
            product ^= a
        a = ((a << 1) ^ 0x11B) if a & 0x80 else a << 1
        b >>= 1
    return product


def _make_sbox() -> list[int]:
    """The AES S-box from its definition: inverse in GF(2^8) (through powers of the
    generator 3), then the affine map."""
    power, log = [0] * 255, [0] * 256
    x = 1
    for i in range(255):
        power[i], log[x] = x, i
        x = _gf_mul(x, 3)
    box = []
    for x in range(256):
        inverse = power[(255 - log[x]) % 255] if x else 0
        s = inverse
        for shift in range(1, 5):
            s ^= ((inverse << shift) | (inverse >> (8 - shift))) & 0xFF
        box.append(s ^ 0x63)
    return box


_SBOX_LIST = _make_sbox()
_INV_SBOX_LIST = [0] * 256
for _i, _s in enumerate(_SBOX_LIST):
    _INV_SBOX_LIST[_s] = _i
_SBOX = np.array(_SBOX_LIST, dtype=np.uint32)
_RCON = [1]
while len(_RCON) < 10:
    _RCON.append(_gf_mul(_RCON[-1], 2))
_RCON_WORDS = np.array([r << 24 for r in _RCON], dtype=np.uint32)


def _rot(x: np.ndarray, bytes_: int = 1) -> np.ndarray:
    """Rotate each word so that byte i takes byte i + bytes_ (RotWord for 1)."""
    bits = 8 * bytes_
    return (x << bits) | (x >> (32 - bits))


def _sub_word(x: np.ndarray) -> np.ndarray:
    s = _SBOX
    return (
        (s[x >> 24] << 24) | (s[(x >> 16) & 0xFF] << 16) | (s[(x >> 8) & 0xFF] << 8) | s[x & 0xFF]
    )


def _xtime(x: np.ndarray) -> np.ndarray:
    """Multiply each byte of each word by 2 in GF(2^8)."""
    return ((x & 0x7F7F7F7F) << 1) ^ (((x >> 7) & 0x01010101) * 0x1B)


def _mix_columns(x: np.ndarray) -> np.ndarray:
    """MixColumns of each word taken as a column: out_i = 2a_i ^ 3a_i+1 ^ a_i+2 ^ a_i+3."""
    r1 = _rot(x)
    return _xtime(x ^ r1) ^ r1 ^ _rot(x, 2) ^ _rot(x, 3)


def _inv_mix_columns(x: np.ndarray) -> np.ndarray:
    """InvMixColumns = MixColumns after a_i ^= 4(a_i ^ a_i+2) (the factorisation used by
    compact AES implementations)."""
    return _mix_columns(x ^ _xtime(_xtime(x ^ _rot(x, 2))))


def _temp(x: np.ndarray, i: int, nk: int) -> np.ndarray:
    """The term XORed onto w[i-Nk] to give w[i] (FIPS-197 5.2), from x = w[i-1]."""
    if i % nk == 0:
        return _sub_word(_rot(x)) ^ _RCON_WORDS[i // nk - 1]
    if nk > 6 and i % nk == 4:
        return _sub_word(x)
    return x


def _temp_at(x: np.ndarray, index: np.ndarray, nk: int) -> np.ndarray:
    """_temp with a different word index per element."""
    out = x.copy()
    phase = index % nk
    core = phase == 0
    if core.any():
        out[core] = _sub_word(_rot(x[core])) ^ _RCON_WORDS[index[core] // nk - 1]
    if nk > 6:
        sub = phase == 4
        if sub.any():
            out[sub] = _sub_word(x[sub])
    return out


def _expand_words(keys: np.ndarray) -> np.ndarray:
    """(K, Nk) key words -> (K, 4(Nr+1)) round-key words."""
    count, nk = keys.shape
    nw = 4 * (nk + 7)
    w = np.empty((count, nw), dtype=np.uint32)
    w[:, :nk] = keys
    for i in range(nk, nw):
        w[:, i] = w[:, i - nk] ^ _temp(w[:, i - 1], i, nk)
    return w


def _stored_words(w: np.ndarray, direction: str) -> np.ndarray:
    """Round-key words (..., nw) in the order and form the layout stores them."""
    if direction == ENCRYPT:
        return w
    nr = w.shape[-1] // 4 - 1
    rounds = w.reshape(*w.shape[:-1], nr + 1, 4)[..., ::-1, :].copy()
    rounds[..., 1:nr, :] = _inv_mix_columns(rounds[..., 1:nr, :])
    return rounds.reshape(w.shape)


def _expansion_words(m: np.ndarray, direction: str) -> np.ndarray:
    """Inverse of _stored_words: stored words back to the FIPS expansion w[]."""
    if direction == ENCRYPT:
        return m
    nr = m.shape[-1] // 4 - 1
    rounds = m.reshape(*m.shape[:-1], nr + 1, 4).copy()
    rounds[..., 1:nr, :] = _mix_columns(rounds[..., 1:nr, :])
    return np.ascontiguousarray(rounds[..., ::-1, :]).reshape(m.shape)


def _to_bytes(words: np.ndarray, byte_order: str) -> np.ndarray:
    """(..., nw) words -> (..., 4 nw) uint8 as stored in memory."""
    stored = words.astype(_WORD_DTYPE[byte_order])
    return stored.view(np.uint8).reshape(*words.shape[:-1], 4 * words.shape[-1])


def _from_bytes(data: np.ndarray, byte_order: str) -> np.ndarray:
    return np.ascontiguousarray(data).view(_WORD_DTYPE[byte_order]).astype(np.uint32)


def _check_key(key: bytes | bytearray | memoryview) -> bytes:
    key = bytes(key)
    if len(key) not in (16, 24, 32):
        raise KeyScheduleError(
            f"an AES key is 16, 24 or 32 bytes, this one is {len(key)}: "
            "pass the raw key, not a passphrase or a wrapped key"
        )
    return key


def _key_words(key: bytes) -> np.ndarray:
    return np.frombuffer(key, dtype=">u4").astype(np.uint32)[None, :]


def schedule_bytes(
    key: bytes | bytearray | memoryview, direction: str = ENCRYPT, byte_order: str = BYTES
) -> bytes:
    """The schedule of `key` exactly as a layout stores it (176, 208 or 240 bytes)."""
    if direction not in DIRECTIONS or byte_order not in BYTE_ORDERS:
        raise KeyScheduleError(
            f"direction must be one of {DIRECTIONS} and byte order one of {BYTE_ORDERS}"
        )
    words = _stored_words(_expand_words(_key_words(_check_key(key))), direction)
    return _to_bytes(words, byte_order)[0].tobytes()


def expand_key(key: bytes | bytearray | memoryview) -> bytes:
    """The FIPS-197 key expansion (round key 0 = the key first), bytes in FIPS order."""
    return schedule_bytes(key, ENCRYPT, BYTES)


def decryption_schedule(key: bytes | bytearray | memoryview, byte_order: str = BYTES) -> bytes:
    """What AES_set_decrypt_key / aesni_set_decrypt_key store: the round keys in reverse
    order, InvMixColumns applied to all but the first and the last."""
    return schedule_bytes(key, DECRYPT, byte_order)


def key_schedule_needles(
    key: bytes | bytearray | memoryview, kind: str = SCHEDULE_KIND
) -> list[tuple[str, str, bytes]]:
    """(kind, encoding, bytes) needles for the needle scanner: each layout's schedule
    without the raw key's bytes (encrypt: the round keys after the key; decrypt: all but the
    last round key, which is the key's first 16 bytes), so a hit means a schedule was
    computed, not that the key was copied. Feed them to NeedleSet(..., extra=...)."""
    key = _check_key(key)
    needles = []
    for direction in DIRECTIONS:
        for byte_order in BYTE_ORDERS:
            full = schedule_bytes(key, direction, byte_order)
            body = full[len(key) :] if direction == ENCRYPT else full[:-16]
            encoding = f"aes-{direction[:3]}" + ("" if byte_order == BYTES else f"-{byte_order}")
            needles.append((kind, encoding, body))
    return needles


# -- layouts -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Layout:
    key_bits: int
    direction: str
    nk: int
    nw: int
    length: int
    # linear relations among stored words that hold in every schedule of this layout
    rel: tuple[np.ndarray, np.ndarray, np.ndarray]
    per_word: int  # most relations one stored word takes part in
    lags: tuple[int, int]  # pre-filter residue B[k] ^ B[k-d1] ^ B[k-d2]
    anchor: int  # stored word whose block (at byte alignment 0) is the first pre-filter block
    pre: np.ndarray  # pre-filter blocks (offsets from the anchor): no flipped bit reaches two
    blocks: np.ndarray  # every block (offset from the anchor) inside relation words
    reach: int  # most residue bytes of `blocks` one flipped image byte can reach


def _reach(blocks: Iterable[int], lags: tuple[int, int]) -> int:
    """Most residue bytes in these blocks that one image byte takes part in: a byte at x
    enters the residue at x, x + 4 d1 and x + 4 d2."""
    covered = {4 * b + j for b in blocks for j in range(4)}
    shifts = (0, 4 * lags[0], 4 * lags[1])
    return max(sum(x + d in covered for d in shifts) for x in range(-4 * lags[1], max(covered) + 1))


@cache
def _layout(key_bits: int, direction: str) -> _Layout:
    nk = key_bits // 32
    nr = nk + 6
    nw = 4 * (nr + 1)

    def stored(i: int) -> int:
        r, c = divmod(i, 4)
        return i if direction == ENCRYPT else 4 * (nr - r) + c

    def plain(i: int) -> bool:  # stored without InvMixColumns
        return direction == ENCRYPT or i // 4 in (0, nr)

    triples = []
    for i in range(nk, nw):
        if i % nk == 0 or (nk > 6 and i % nk == 4):
            continue  # S-box relation
        words = (i, i - nk, i - 1)
        if len({plain(w) for w in words}) > 1:
            continue  # mixes transformed and untransformed words: not linear in memory
        triples.append(tuple(sorted((stored(w) for w in words), reverse=True)))
    counts = np.bincount(np.array(triples).ravel(), minlength=nw)
    by_lags: dict[tuple[int, int], set[int]] = {}
    for top, mid, low in triples:
        by_lags.setdefault((top - mid, top - low), set()).add(top)
    lags, anchors = max(by_lags.items(), key=lambda kv: len(kv[1]))
    # A block at word c, seen from a schedule that starts t bytes past a word boundary,
    # covers the end of word c-1 and the start of word c: both must be relation words.
    usable = sorted(c for c in anchors if c - 1 in anchors)
    anchor = usable[0]
    blocks = [c - anchor for c in usable]
    pre = [0]
    for b in blocks[1:]:
        if len(pre) < PREFILTER_BLOCKS and _reach((*pre, b), lags) == 1:
            pre.append(b)
    if len(pre) < PREFILTER_BLOCKS or not (lags[0] == 1 or lags[1] == lags[0] + 1):
        raise AssertionError(f"no pre-filter for AES-{key_bits} {direction}")  # by design
    rel = tuple(np.array(col, dtype=np.intp) for col in zip(*triples, strict=True))
    return _Layout(
        key_bits,
        direction,
        nk,
        nw,
        4 * nw,
        rel,  # type: ignore[arg-type]
        int(counts.max()),
        lags,
        anchor,
        np.array(pre, dtype=np.intp),
        np.array(blocks, dtype=np.intp),
        _reach(blocks, lags),
    )


# -- key recovery --------------------------------------------------------------------------


def _window_keys(w: np.ndarray, nk: int) -> np.ndarray:
    """The keys that the runs of Nk consecutive words of each expansion in w (V, nw) imply:
    the expansion run backwards from each run to w[0..Nk). Unique rows (K, Nk)."""
    count, nw = w.shape
    runs = nw - nk + 1
    e = np.zeros((count, runs, nw), dtype=np.uint32)
    for j in range(runs):
        e[:, j, j : j + nk] = w[:, j : j + nk]
    for step in range(1, runs):
        rows = np.arange(step, runs)
        target = rows - step
        index = np.broadcast_to(target + nk, (count, len(rows)))
        e[:, rows, target] = e[:, rows, target + nk] ^ _temp_at(
            e[:, rows, target + nk - 1], index, nk
        )
    return np.unique(e[:, :, :nk].reshape(-1, nk), axis=0)


def _repairs(w: np.ndarray, nk: int) -> np.ndarray:
    """Copies of the expansion w (nw,), each with one word recomputed from one of the
    relations it takes part in: with one bad word in a run of Nk, the run is whole again."""
    nw = len(w)
    words = [int(x) for x in w]
    variants = []
    for x in range(nw):
        values = set()
        if x >= nk:  # x = w[i]
            values.add(words[x - nk] ^ _temp_int(words[x - 1], x, nk))
        if x + nk < nw:  # x = w[i-Nk]
            values.add(words[x + nk] ^ _temp_int(words[x + nk - 1], x + nk, nk))
        if nk <= x + 1 < nw:  # x = w[i-1]
            values.add(_untemp_int(words[x + 1] ^ words[x + 1 - nk], x + 1, nk))
        for value in values - {words[x]}:
            variant = w.copy()
            variant[x] = value
            variants.append(variant)
    return np.array(variants, dtype=np.uint32).reshape(-1, nw)


def _temp_int(x: int, i: int, nk: int) -> int:
    return int(_temp(np.array([x], dtype=np.uint32), i, nk)[0])


def _untemp_int(y: int, i: int, nk: int) -> int:
    """x such that _temp(x, i) == y."""
    if i % nk == 0:
        y ^= _RCON[i // nk - 1] << 24
    elif not (nk > 6 and i % nk == 4):
        return y
    x = 0
    for shift in (24, 16, 8, 0):
        x |= _INV_SBOX_LIST[(y >> shift) & 0xFF] << shift
    return ((x >> 8) | (x << 24)) & 0xFFFFFFFF if i % nk == 0 else x


def _propagate(w: list[int], nk: int) -> np.ndarray | None:
    """Key words from the words that take part in a relation that holds, propagated
    through the relations (for errors spread too evenly for an error-free run of Nk)."""
    nw = len(w)
    relations = [(i, i - nk, i - 1) for i in range(nk, nw)]
    known: dict[int, int] = {}
    for i, a, b in relations:
        if w[i] == w[a] ^ _temp_int(w[b], i, nk):
            known.update({i: w[i], a: w[a], b: w[b]})
    changed = True
    while changed and not all(j in known for j in range(nk)):
        changed = False
        for i, a, b in relations:
            missing = [j for j in (i, a, b) if j not in known]
            if len(missing) != 1:
                continue
            if missing[0] == i:
                known[i] = known[a] ^ _temp_int(known[b], i, nk)
            elif missing[0] == a:
                known[a] = known[i] ^ _temp_int(known[b], i, nk)
            else:
                known[b] = _untemp_int(known[i] ^ known[a], i, nk)
            changed = True
    if not all(j in known for j in range(nk)):
        return None
    return np.array([[known[j] for j in range(nk)]], dtype=np.uint32)


def _nearest(
    row: np.ndarray, layout: _Layout, byte_order: str, tolerance: int
) -> tuple[np.ndarray, int] | None:
    """The key whose schedule in this layout is nearest to `row`, and the distance, if the
    distance is within the tolerance."""
    w = _expansion_words(_from_bytes(row, byte_order)[None, :], layout.direction)[0]

    def best(keys: np.ndarray) -> tuple[np.ndarray, int] | None:
        expected = _to_bytes(_stored_words(_expand_words(keys), layout.direction), byte_order)
        distance = np.bitwise_count(expected ^ row).sum(axis=1)
        i = int(np.argmin(distance))
        return (keys[i], int(distance[i])) if distance[i] <= tolerance else None

    if tolerance == 0:
        return best(w[None, : layout.nk])
    found = best(_window_keys(w[None, :], layout.nk))
    if found is None:  # every run of Nk words has a bad word: repair one, then propagate
        found = best(_window_keys(_repairs(w, layout.nk), layout.nk))
    if found is None:
        keys = _propagate([int(x) for x in w], layout.nk)
        found = None if keys is None else best(keys)
    return found


# -- the scanner ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScheduleHit:
    """One key schedule found. Never carries key bytes: `key_id` is a salted short hash."""

    address: int
    length: int
    key_bits: int
    direction: str
    byte_order: str
    bit_errors: int
    key_id: str
    known: str  # label of the known key it belongs to; '' when no known key matches
    found_by: str  # 'blind', 'known' or 'blind+known'
    region: Region | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "address": self.address,
            "length": self.length,
            "key_bits": self.key_bits,
            "direction": self.direction,
            "byte_order": self.byte_order,
            "bit_errors": self.bit_errors,
            "key_id": self.key_id,
            "known": self.known,
            "found_by": self.found_by,
            "region": self.region.describe() if self.region is not None else "",
        }


@dataclass(frozen=True, slots=True)
class _Piece:
    known: int
    direction: str
    byte_order: str
    offset: int


class KeyScheduleScanner:
    """Finds AES key schedules in memory sources.

    blind: every schedule in the image; known_keys ({label: key}): the schedules of those
    keys (and blind hits of them are marked with the label). tolerance: bit errors allowed
    per schedule (aeskeyfind's default, 10; 0 is the fast exact mode).
    """

    def __init__(
        self,
        *,
        blind: bool = True,
        known_keys: Mapping[str, bytes | bytearray] | None = None,
        tolerance: int = DEFAULT_TOLERANCE,
        key_bits: Iterable[int] = KEY_BITS,
        directions: Iterable[str] = DIRECTIONS,
        salt: bytes | None = None,
        engine: str = "auto",
    ) -> None:
        if not 0 <= tolerance <= MAX_TOLERANCE:
            raise KeyScheduleError(
                f"tolerance must be 0..{MAX_TOLERANCE} bit errors, got {tolerance}: "
                "above that the pre-filter passes too much random data to be useful"
            )
        self.tolerance = tolerance
        self.blind = blind
        self.salt = salt if salt is not None else os.urandom(16)
        self.key_bits = tuple(sorted(set(key_bits)))
        self.directions = tuple(d for d in DIRECTIONS if d in set(directions))
        if not set(self.key_bits) <= set(KEY_BITS) or not self.directions:
            raise KeyScheduleError(f"key bits must be among {KEY_BITS}, directions {DIRECTIONS}")
        self._known = [(label, _check_key(key)) for label, key in (known_keys or {}).items()]
        if not blind and not self._known:
            raise KeyScheduleError("nothing to search: give known_keys, or blind=True")
        self.layouts = [_layout(b, d) for b in self.key_bits for d in self.directions]
        self._known_by_key = {key: label for label, key in self._known}
        self._expected: dict[tuple[int, str, str], np.ndarray] = {}
        self._pieces: list[list[_Piece]] = []
        self._engine: Engine | None = None
        if self._known:
            self._engine = self._compile_known(engine)

    @property
    def engine_name(self) -> str:
        return self._engine.name if self._engine is not None else "numpy"

    def short_id(self, key: bytes) -> str:
        """Same construction as NeedleSet.short_id: equal salts give equal ids."""
        return hashlib.blake2b(bytes(key), key=self.salt, digest_size=5).hexdigest()

    def _compile_known(self, engine: str) -> Engine:
        owners: dict[bytes, list[_Piece]] = {}
        for index, (label, key) in enumerate(self._known):
            if len(key) * 8 not in self.key_bits:
                raise KeyScheduleError(
                    f"known key {label!r} is AES-{len(key) * 8}, not among the key sizes "
                    f"searched {self.key_bits}"
                )
            for direction in self.directions:
                for byte_order in BYTE_ORDERS:
                    full = schedule_bytes(key, direction, byte_order)
                    self._expected[(index, direction, byte_order)] = np.frombuffer(
                        full, dtype=np.uint8
                    )
                    width = len(full) // (self.tolerance + 1)
                    for start in range(0, width * (self.tolerance + 1), width):
                        piece = full[start : start + width]
                        owners.setdefault(piece, []).append(
                            _Piece(index, direction, byte_order, start)
                        )
        self._pieces = list(owners.values())
        return make_engine(list(owners), engine)

    # -- streaming over chunks --------------------------------------------------------
    def session(self) -> ScheduleScan:
        """An incremental scan: feed() chunks in order, then finish()."""
        return ScheduleScan(self)

    def scan_chunks(
        self, chunks: Iterable[Chunk], regions: list[Region] | None = None
    ) -> list[ScheduleHit]:
        scan = self.session()
        for chunk in chunks:
            scan.feed(chunk)
        return scan.finish(regions)

    def scan(self, source: MemorySource) -> list[ScheduleHit]:
        return self.scan_chunks(source.chunks(), source.regions())

    def scan_bytes(
        self, data: bytes | bytearray | memoryview, address: int = 0
    ) -> list[ScheduleHit]:
        region = Region(address, address + len(data), path="(bytes)")
        return self.scan_chunks([Chunk(region, address, memoryview(data))], [region])

    # -- one window ---------------------------------------------------------------------
    def _scan_window(
        self, window: np.ndarray, base: int, report_from: int
    ) -> list[tuple[int, _Layout, str, int, bytes, str]]:
        """(offset, layout, byte order, bit errors, key, found by) of every schedule that lies
        in the window and ends after `report_from` (earlier ones went with the last window)."""
        found: dict[tuple[int, int, str, str], tuple[int, _Layout, str, int, bytes, str]] = {}
        if self.blind:
            for layout, starts in self._candidates(window, report_from).items():
                for s in self._linear_check(window, layout, starts):
                    row = window[s : s + layout.length]
                    for byte_order in BYTE_ORDERS:
                        result = _nearest(row, layout, byte_order, self.tolerance)
                        if result is not None:
                            words, errors = result
                            key = words.astype(">u4").tobytes()
                            found[(int(s), layout.key_bits, layout.direction, byte_order)] = (
                                int(s),
                                layout,
                                byte_order,
                                errors,
                                key,
                                "blind",
                            )
        if self._engine is not None:
            self._known_search(window, report_from, found)
        return list(found.values())

    def _known_search(
        self,
        window: np.ndarray,
        report_from: int,
        found: dict[tuple[int, int, str, str], tuple[int, _Layout, str, int, bytes, str]],
    ) -> None:
        assert self._engine is not None
        sink: list[tuple[int, int]] = []
        stream = self._engine.stream(0, sink)
        stream.feed(memoryview(window))
        stream.close()
        for pattern, start in set(sink):
            for piece in self._pieces[pattern]:
                key = self._known[piece.known][1]
                layout = _layout(len(key) * 8, piece.direction)
                s = start - piece.offset
                if s < 0 or s + layout.length > len(window) or s + layout.length <= report_from:
                    continue
                slot = (s, layout.key_bits, piece.direction, piece.byte_order)
                if slot in found and found[slot][4] == key:
                    entry = found[slot]
                    if entry[5] == "blind":  # other pieces of it may come later: once only
                        found[slot] = (*entry[:5], "blind+known")
                    continue
                expected = self._expected[(piece.known, piece.direction, piece.byte_order)]
                errors = int(np.bitwise_count(window[s : s + layout.length] ^ expected).sum())
                if errors <= self.tolerance and slot not in found:
                    found[slot] = (s, layout, piece.byte_order, errors, key, "known")

    def _candidates(self, window: np.ndarray, report_from: int) -> dict[_Layout, np.ndarray]:
        """Stages 1 and 2: schedule start offsets that pass, per layout."""
        n = len(window)
        words = window[: n - n % 4].view(np.uint32)
        nb = len(words)
        margin = max(max(lay.lags) for lay in self.layouts) + 1
        tail = max(int(lay.pre[-1]) for lay in self.layouts)
        hits: dict[_Layout, list[np.ndarray]] = {lay: [] for lay in self.layouts}
        for k_lo in range(0, nb, _SLICE_WORDS):
            k_hi = min(k_lo + _SLICE_WORDS, nb)
            lo = max(k_lo - margin, 0)
            sub = words[lo : min(k_hi + tail, nb)]
            if len(sub) < 2:
                continue
            y1 = sub[1:] ^ sub[:-1]  # y1[j] = B[lo+j+1] ^ B[lo+j]
            nonzero = sub != 0
            weight = None if self.tolerance == 0 else np.bitwise_count(sub)
            for lay in self.layouts:
                # block k; schedule start s = 4 (k - anchor) + t, t in 0..3, must fit
                span = int(lay.pre[-1])
                ka = max(k_lo, lay.anchor, report_from // 4 - lay.length // 4 + lay.anchor - 1)
                kb = min(k_hi, nb - span, lay.anchor + (n - lay.length) // 4 + 1)
                if kb <= ka:
                    continue
                d1, d2 = lay.lags
                if d1 == 1:  # B[k] ^ B[k-1] ^ B[k-d2]
                    z = y1[ka - lo - 1 : kb + span - lo - 1] ^ words[ka - d2 : kb + span - d2]
                else:  # B[k] ^ (B[k-d1] ^ B[k-d1-1])
                    z = (
                        sub[ka - lo : kb + span - lo]
                        ^ y1[ka - d1 - 1 - lo : kb + span - d1 - 1 - lo]
                    )
                count = kb - ka
                if self.tolerance == 0:
                    # equality on the first block everywhere, the others on survivors only
                    ks = _true_indices((z[:count] == 0) & nonzero[ka - lo : kb - lo])
                    if len(ks):
                        ks = ks[(z[ks[:, None] + lay.pre[1:]] == 0).all(axis=1)]
                else:
                    bits = np.bitwise_count(z)
                    total = bits[:count].copy()
                    for p in lay.pre[1:]:
                        total += bits[p : p + count]
                    mask = total <= self.tolerance
                    # structured data (counters, pointers) gets near the relations too:
                    # the words under the blocks must hold a fifth of their bits
                    assert weight is not None
                    ones = weight[ka - lo : kb - lo].copy()
                    for p in lay.pre[1:]:
                        ones += weight[ka - lo + p : kb - lo + p]
                    mask &= ones >= MIN_PREFILTER_ONES
                    ks = _true_indices(mask)
                if len(ks):
                    hits[lay].append(self._every_block(words, lay, ks + ka))
        out: dict[_Layout, np.ndarray] = {}
        for lay, parts in hits.items():
            if not parts:
                continue
            ks = np.concatenate(parts)
            # ks rise strictly (slices in order), so the starts are distinct
            starts = ((4 * (ks - lay.anchor))[:, None] + np.arange(4)).ravel()
            keep = (starts >= 0) & (starts + lay.length <= n) & (starts + lay.length > report_from)
            if keep.any():
                out[lay] = starts[keep]
        return out

    def _every_block(self, words: np.ndarray, lay: _Layout, ks: np.ndarray) -> np.ndarray:
        """Stage 2, per passing block: the residue over every block of the layout, and the
        bit balance of the words it is made of (see the module docstring)."""
        idx = ks[:, None] + lay.blocks
        d1, d2 = lay.lags
        top, mid, low = words[idx], words[idx - d1], words[idx - d2]
        residue = np.bitwise_count(top ^ mid ^ low).sum(axis=1)
        ones = (np.bitwise_count(top) + np.bitwise_count(mid) + np.bitwise_count(low)).sum(axis=1)
        ok = (residue <= self.tolerance * lay.reach) & (
            ones + 3 * self.tolerance >= 24 * lay.blocks.size
        )
        return ks[ok]

    def _linear_check(self, window: np.ndarray, layout: _Layout, starts: np.ndarray) -> list[int]:
        """Stage 3: every linear relation and the bit balance, on candidates only."""
        a, b, c = layout.rel
        span = np.arange(layout.length)
        bound = self.tolerance * layout.per_word
        kept: list[int] = []
        for i in range(0, len(starts), _BATCH):
            batch = starts[i : i + _BATCH]
            rows = window[batch[:, None] + span]
            w = rows.view(np.uint32)
            residue = np.bitwise_count(w[:, a] ^ w[:, b] ^ w[:, c]).sum(axis=1)
            ones = np.bitwise_count(rows).sum(axis=1)
            ok = (residue <= bound) & (ones >= 2 * layout.length) & (ones <= 6 * layout.length)
            kept.extend(int(s) for s in batch[ok])
        return kept


def _true_indices(mask: np.ndarray) -> np.ndarray:
    """np.flatnonzero for masks that are nearly all False: whole 8-byte words first."""
    whole = len(mask) - len(mask) % 8
    hot = np.flatnonzero(mask[:whole].view(np.uint64))
    index = (8 * hot[:, None] + np.arange(8)).ravel()
    index = index[mask[index]]
    return np.concatenate((index, whole + np.flatnonzero(mask[whole:])))


class ScheduleScan:
    """One incremental scan. Chunks that continue the previous one (address == previous
    end) are scanned with the previous chunk's last bytes, so straddling schedules are found."""

    def __init__(self, scanner: KeyScheduleScanner) -> None:
        self._scanner = scanner
        self._tail = np.empty(0, dtype=np.uint8)
        self._expected = -1
        self._raw: list[tuple[int, _Layout, str, int, str, str, str]] = []
        self._regions: dict[int, Region] = {}
        self.bytes_scanned = 0

    def feed(self, chunk: Chunk) -> None:
        data = np.frombuffer(chunk.data, dtype=np.uint8)
        if not len(data):
            return
        self._regions.setdefault(chunk.region.start, chunk.region)
        tail = self._tail if chunk.address == self._expected else self._tail[:0]
        window = np.concatenate((tail, data)) if len(tail) else data
        base = chunk.address - len(tail)
        scanner = self._scanner
        for s, layout, byte_order, errors, key, how in scanner._scan_window(
            window, base, len(tail)
        ):
            label = scanner._known_by_key.get(key, "")
            self._raw.append(
                (base + s, layout, byte_order, errors, scanner.short_id(key), label, how)
            )
        keep = min(len(window), MAX_SCHEDULE_BYTES - 1)
        self._tail = window[len(window) - keep :].copy()  # the source reuses its buffer
        self._expected = chunk.address + len(data)
        self.bytes_scanned += len(data)

    def finish(self, regions: list[Region] | None = None) -> list[ScheduleHit]:
        self._tail = self._tail[:0]
        region_list = sorted(regions or self._regions.values(), key=lambda r: r.start)
        starts = [r.start for r in region_list]
        hits = []
        for address, layout, byte_order, errors, key_id, label, how in sorted(
            self._raw, key=lambda h: (h[0], h[1].key_bits, h[1].direction, h[2])
        ):
            i = bisect.bisect_right(starts, address) - 1
            region = region_list[i] if i >= 0 and address < region_list[i].end else None
            hits.append(
                ScheduleHit(
                    address,
                    layout.length,
                    layout.key_bits,
                    layout.direction,
                    byte_order,
                    errors,
                    key_id,
                    label,
                    how,
                    region,
                )
            )
        return hits
