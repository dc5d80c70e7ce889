"""The AES key-schedule scanner: FIPS-197 vectors, independent derivations, synthetic images
with bit errors and chunk boundaries, random data, and a real process holding AES contexts.

Keys never appear in assertion messages: results are compared through labels, offsets and
salted ids, and byte strings through a named boolean.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import memlab, needs_root
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from attacks.scan import (
    BE32,
    BYTE_ORDERS,
    BYTES,
    DECRYPT,
    DIRECTIONS,
    ENCRYPT,
    FULL,
    KEY_BITS,
    KeyScheduleError,
    KeyScheduleScanner,
    NeedleSet,
    Scanner,
    Secret,
    decryption_schedule,
    expand_key,
    key_schedule_needles,
    schedule_bytes,
)
from attacks.scan.keysched import _layout
from attacks.sources import Chunk, ProcMemSource, Region

LAYOUTS = [(b, d, o) for b in KEY_BITS for d in DIRECTIONS for o in BYTE_ORDERS]
SALT = b"test-salt-16byte"

# FIPS-197 Appendix A: the cipher key, then the expanded key w[Nk..] as printed
FIPS_A = {
    128: (
        "2b7e1516 28aed2a6 abf71588 09cf4f3c",
        """a0fafe17 88542cb1 23a33939 2a6c7605 f2c295f2 7a96b943 5935807a 7359f67f
        3d80477d 4716fe3e 1e237e44 6d7a883b ef44a541 a8525b7f b671253b db0bad00
        d4d1c6f8 7c839d87 caf2b8bc 11f915bc 6d88a37a 110b3efd dbf98641 ca0093fd
        4e54f70e 5f5fc9f3 84a64fb2 4ea6dc4f ead27321 b58dbad2 312bf560 7f8d292f
        ac7766f3 19fadc21 28d12941 575c006e d014f9a8 c9ee2589 e13f0cc8 b6630ca6""",
    ),
    192: (
        "8e73b0f7 da0e6452 c810f32b 809079e5 62f8ead2 522c6b7b",
        """fe0c91f7 2402f5a5 ec12068e 6c827f6b 0e7a95b9 5c56fec2 4db7b4bd 69b54118
        85a74796 e92538fd e75fad44 bb095386 485af057 21efb14f a448f6d9 4d6dce24
        aa326360 113b30e6 a25e7ed5 83b1cf9a 27f93943 6a94f767 c0a69407 d19da4e1
        ec1786eb 6fa64971 485f7032 22cb8755 e26d1352 33f0b7b3 40beeb28 2f18a259
        6747d26b 458c553e a7e1466c 9411f1df 821f750a ad07d753 ca400538 8fcc5006
        282d166a bc3ce7b5 e98ba06f 448c773c 8ecc7204 01002202""",
    ),
    256: (
        "603deb10 15ca71be 2b73aef0 857d7781 1f352c07 3b6108d7 2d9810a3 0914dff4",
        """9ba35411 8e6925af a51a8b5f 2067fcde a8b09c1a 93d194cd be49846e b75d5b9a
        d59aecb8 5bf3c917 fee94248 de8ebe96 b5a9328a 2678a647 98312229 2f6c79b3
        812c81ad dadf48ba 24360af2 fab8b464 98c5bfc9 bebd198e 268c3ba7 09e04214
        68007bac b2df3316 96e939e4 6c518d80 c814e204 76a9fb8a 5025c02d 59c58239
        de136967 6ccc5a71 fa256395 9674ee15 5886ca5d 2e2f31d7 7e0af1fa 27cf73c3
        749c47ab 18501dda e2757e4f 7401905a cafaaae3 e4d59b34 9adf6ace bd10190d
        fe4890d1 e6188d0b 046df344 706c631e""",
    ),
}
# FIPS-197 Appendix C.1 (AES-128, key 000102..0f), equivalent inverse cipher: round[r].ik_sch
# in the order the cipher uses them, which is the order OpenSSL stores them
FIPS_C1_IK_SCH = """13111d7fe3944a17f307a78b4d2b30c5 13aa29be9c8faff6f770f58000f7bf03
    1362a4638f2586486bff5a76f7874a83 8d82fc749c47222be4dadc3e9c7810f5
    72e3098d11c5de5f789dfe1578a2cccb 2ec410276326d7d26958204a003f32de
    a8a2f5044de2c7f50a7ef79869671294 c7c6e391e54032f1479c306d6319e50c
    a0db02992286d160a2dc029c2485d561 8c56dff0825dd3f9805ad3fc8659d7fd
    000102030405060708090a0b0c0d0e0f"""


def _hex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


def _region(image: bytes | bytearray) -> Region:
    return Region(0, len(image), path="image")


def _scan(scanner: KeyScheduleScanner, image: bytes | bytearray, chunk: int = 1 << 20) -> list:
    region = _region(image)
    view = memoryview(image)
    chunks = (Chunk(region, i, view[i : i + chunk]) for i in range(0, len(image), chunk))
    return scanner.scan_chunks(chunks, [region])


def _inject(
    image: bytearray, rng: random.Random, layouts: list, spacing: int = 4096
) -> list[tuple[int, int, str, str, bytes]]:
    """One schedule of each layout at a random unaligned offset: (offset, bits, dir, order, key)."""
    placed = []
    for n, (bits, direction, order) in enumerate(layouts):
        key = rng.randbytes(bits // 8)
        data = schedule_bytes(key, direction, order)
        offset = n * spacing + rng.randrange(1, spacing - len(data))
        image[offset : offset + len(data)] = data
        placed.append((offset, bits, direction, order, key))
    return placed


# -- the expansions themselves -----------------------------------------------------------


@pytest.mark.parametrize("bits", KEY_BITS)
def test_fips197_appendix_a_key_expansion(bits: int) -> None:
    key, rest = (_hex(t) for t in FIPS_A[bits])
    schedule = expand_key(key)
    equal = schedule == key + rest
    assert equal, f"AES-{bits} expansion differs from FIPS-197 A"
    assert len(schedule) == 16 * (bits // 32 + 7)


def test_fips197_appendix_c1_equivalent_inverse_cipher_round_keys() -> None:
    equal = decryption_schedule(bytes(range(16))) == _hex(FIPS_C1_IK_SCH)
    assert equal, "decryption schedule differs from FIPS-197 C.1 ik_sch"


def test_be32_layout_stores_each_word_byte_swapped() -> None:
    key = os.urandom(32)
    for direction in DIRECTIONS:
        fips = schedule_bytes(key, direction, BYTES)
        swapped = b"".join(fips[i : i + 4][::-1] for i in range(0, len(fips), 4))
        equal = schedule_bytes(key, direction, BE32) == swapped
        assert equal, direction


def _libcrypto() -> ctypes.CDLL:
    try:
        return ctypes.CDLL("libcrypto.so.3")
    except OSError:
        pytest.skip("OpenSSL 3's libcrypto.so.3 is not installed: apt-get install libssl3")


class _AesKey(ctypes.Structure):  # OpenSSL's AES_KEY
    _fields_ = [("rd_key", ctypes.c_uint32 * 60), ("rounds", ctypes.c_int)]


@pytest.mark.parametrize("bits", KEY_BITS)
def test_schedules_match_openssl(bits: int) -> None:
    """OpenSSL's AES_set_encrypt_key / AES_set_decrypt_key (x86_64: its assembly, which
    stores FIPS byte order) against ours."""
    lib = _libcrypto()
    for _ in range(5):
        key = os.urandom(bits // 8)
        for direction, setter in (
            (ENCRYPT, lib.AES_set_encrypt_key),
            (DECRYPT, lib.AES_set_decrypt_key),
        ):
            ctx = _AesKey()
            assert setter(key, bits, ctypes.byref(ctx)) == 0
            ours = schedule_bytes(key, direction, BYTES)
            equal = bytes(ctx)[: len(ours)] == ours
            assert equal, f"AES-{bits} {direction} schedule differs from libcrypto's"


def _gf_mul(a: int, b: int) -> int:
    out = 0
    for _ in range(8):
        if b & 1:
            out ^= a
        a = ((a << 1) ^ 0x11B) if a & 0x80 else a << 1
        b >>= 1
    return out


def _inv_sbox() -> list[int]:
    box = [0] * 256
    for x in range(256):
        inv = next((y for y in range(256) if _gf_mul(x, y) == 1), 0)
        s = inv
        for k in range(1, 5):
            s ^= ((inv << k) | (inv >> (8 - k))) & 0xFF
        box[s ^ 0x63] = x
    return box


def _equivalent_inverse_cipher(block: bytes, schedule: bytes) -> bytes:
    """FIPS-197 5.3.5 written out byte by byte, round keys taken in stored order."""
    inv = _inv_sbox()
    rounds = len(schedule) // 16 - 1
    state = [b ^ k for b, k in zip(block, schedule[:16], strict=True)]
    for r in range(1, rounds + 1):
        # InvShiftRows: row i moves right by i; bytes are column-major
        state = [state[4 * ((c - row) % 4) + row] for c in range(4) for row in range(4)]
        state = [inv[b] for b in state]
        if r < rounds:
            mixed = []
            for c in range(4):
                col = state[4 * c : 4 * c + 4]
                for row in range(4):
                    coeffs = (0x0E, 0x0B, 0x0D, 0x09)
                    v = 0
                    for j in range(4):
                        v ^= _gf_mul(col[j], coeffs[(j - row) % 4])
                    mixed.append(v)
            state = mixed
        state = [b ^ k for b, k in zip(state, schedule[16 * r : 16 * r + 16], strict=True)]
    return bytes(state)


@pytest.mark.parametrize("bits", KEY_BITS)
def test_decryption_schedule_decrypts_what_openssl_encrypted(bits: int) -> None:
    key = os.urandom(bits // 8)
    plain = os.urandom(16)
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    cipher = encryptor.update(plain) + encryptor.finalize()
    equal = _equivalent_inverse_cipher(cipher, decryption_schedule(key)) == plain
    assert equal, f"AES-{bits} decryption schedule does not decrypt"


# -- synthetic images ----------------------------------------------------------------------


def test_every_layout_is_found_blind_at_unaligned_offsets() -> None:
    rng = random.Random(1)
    image = bytearray(os.urandom(len(LAYOUTS) * 4096 + 5000))
    placed = _inject(image, rng, LAYOUTS)
    for tolerance in (0, 10):
        scanner = KeyScheduleScanner(tolerance=tolerance, salt=SALT)
        hits = _scan(scanner, image, chunk=3000)
        got = {
            (h.address, h.key_bits, h.direction, h.byte_order, h.key_id, h.bit_errors) for h in hits
        }
        want = {(o, b, d, bo, scanner.short_id(k), 0) for o, b, d, bo, k in placed}
        assert got == want
        assert all(h.known == "" and h.found_by == "blind" for h in hits)
        assert all(h.region is not None and h.region.path == "image" for h in hits)


def test_known_keys_are_found_and_blind_hits_marked() -> None:
    rng = random.Random(2)
    image = bytearray(os.urandom(len(LAYOUTS) * 4096))
    placed = _inject(image, rng, LAYOUTS)
    known = {f"k{n}": key for n, (*_, key) in enumerate(placed) if n % 2 == 0}
    label_of = {key: label for label, key in known.items()}
    only_known = KeyScheduleScanner(blind=False, known_keys=known, tolerance=3, salt=SALT)
    hits = _scan(only_known, image)
    assert {(h.address, h.known, h.found_by) for h in hits} == {
        (o, label_of[k], "known") for o, *_, k in placed if k in label_of
    }
    both = KeyScheduleScanner(known_keys=known, tolerance=3, salt=SALT)
    hits = _scan(both, image)
    assert {(h.address, h.known, h.found_by) for h in hits} == {
        (o, label_of.get(k, ""), "blind+known" if k in label_of else "blind") for o, *_, k in placed
    }


def _flip(data: bytearray, bits: list[int]) -> None:
    for bit in bits:
        data[bit // 8] ^= 1 << (bit % 8)


@pytest.mark.parametrize("bits,direction,order", LAYOUTS)
def test_bit_errors_are_tolerated_and_counted(bits: int, direction: str, order: str) -> None:
    """10 flipped bits placed three ways: at random; all in the words the pre-filter looks
    at; one in every Nk-th word, so that no run of Nk words is clean (found by repair)."""
    rng = random.Random(bits * 7 + len(direction) + len(order))
    layout = _layout(bits, direction)
    tolerance = 10
    for placement in ("random", "pre-filter", "spread"):
        key = rng.randbytes(bits // 8)
        data = bytearray(schedule_bytes(key, direction, order))
        if placement == "random":
            flips = rng.sample(range(8 * len(data)), tolerance)
        elif placement == "pre-filter":
            # every flip in the words under the pre-filter's blocks (at alignment 0)
            words = {layout.anchor + int(p) - j for p in layout.pre for j in (0, 1)}
            flips = rng.sample([32 * w + b for w in sorted(words) for b in range(32)], tolerance)
        else:
            words = range(layout.nk - 1, len(data) // 4, layout.nk)
            flips = [32 * w + rng.randrange(32) for w in words][:tolerance]
        _flip(data, flips)
        image = bytearray(os.urandom(6000))
        offset = rng.randrange(1, 6000 - len(data))
        image[offset : offset + len(data)] = data
        scanner = KeyScheduleScanner(tolerance=tolerance, known_keys={"k": key}, salt=SALT)
        hits = _scan(scanner, image, chunk=1000)
        got = [(h.address, h.bit_errors, h.known, h.found_by) for h in hits]
        assert got == [(offset, len(flips), "k", "blind+known")], placement
        assert hits[0].key_id == scanner.short_id(key)
        # one error more than allowed: not reported, blind or known
        strict = KeyScheduleScanner(tolerance=len(flips) - 1, known_keys={"k": key})
        assert _scan(strict, image) == [], placement


def test_random_data_gives_no_hits() -> None:
    image = os.urandom(32 << 20)
    for tolerance in (0, 10):
        assert _scan(KeyScheduleScanner(tolerance=tolerance), image, chunk=16 << 20) == []


def test_low_entropy_data_gives_no_hits() -> None:
    """Zero pages, memset patterns, integer and pointer arrays satisfy XOR relations; none
    of them is a schedule."""
    import numpy as np

    parts = [
        bytes(1 << 20),
        b"\xff" * (1 << 18),
        b"\x01" * (1 << 18),
        np.arange(1 << 16, dtype=np.uint32).tobytes(),
        np.arange(1 << 16, dtype=np.uint64).tobytes(),
        np.full(1 << 16, 0x12345678, dtype=np.uint64).tobytes(),
        (0x7F3A_1200_0000 + 16 * np.arange(1 << 16, dtype=np.uint64)).tobytes(),
        np.repeat(np.frombuffer(os.urandom(4096), dtype=np.uint32), 4).tobytes(),
    ]
    image = b"".join(parts)
    assert _scan(KeyScheduleScanner(tolerance=10), image) == []


def test_schedules_straddling_chunks_are_found_once() -> None:
    rng = random.Random(3)
    chunk = 4096 + 7
    image = bytearray(os.urandom(chunk * len(LAYOUTS) + 1000))
    placed = []
    for n, (bits, direction, order) in enumerate(LAYOUTS):
        key = rng.randbytes(bits // 8)
        data = schedule_bytes(key, direction, order)
        offset = chunk * (n + 1) - rng.randrange(1, len(data))  # crosses a chunk boundary
        image[offset : offset + len(data)] = data
        placed.append(offset)
    scanner = KeyScheduleScanner(tolerance=2)
    for size in (chunk, 61):  # chunks shorter than a schedule carry the tail on
        hits = _scan(scanner, image, chunk=size)
        assert sorted(h.address for h in hits) == sorted(placed), size


def test_a_schedule_split_by_a_gap_is_not_joined() -> None:
    data = schedule_bytes(os.urandom(16))
    region = Region(0, 1 << 20)
    first = memoryview(os.urandom(1000) + data[:100])
    second = memoryview(data[100:] + os.urandom(1000))
    chunks = [Chunk(region, 0, first), Chunk(region, 5000, second)]  # not contiguous
    assert KeyScheduleScanner(tolerance=0).scan_chunks(chunks, [region]) == []


def test_hits_are_attributed_to_their_region() -> None:
    heap, stack = (
        Region(0x1000, 0x3000, "rw-p", path="[heap]"),
        Region(0x3000, 0x5000, "rw-p", path="[stack]"),
    )
    image = bytearray(os.urandom(0x4000))
    data = schedule_bytes(os.urandom(24), DECRYPT)
    image[0x1F80 : 0x1F80 + len(data)] = data  # starts in [heap], ends in [stack]
    chunks = [
        Chunk(heap, 0x1000, memoryview(image)[:0x2000]),
        Chunk(stack, 0x3000, memoryview(image)[0x2000:]),
    ]
    (hit,) = KeyScheduleScanner(tolerance=0).scan_chunks(chunks, [heap, stack])
    assert (hit.address, hit.region, hit.key_bits, hit.direction) == (0x2F80, heap, 192, DECRYPT)


def test_schedule_needles_go_through_the_needle_scanner() -> None:
    key = os.urandom(32)
    needles = key_schedule_needles(key)
    assert {(k, e) for k, e, _ in needles} == {
        ("key-schedule", e) for e in ("aes-enc", "aes-dec", "aes-enc-be32", "aes-dec-be32")
    }
    raw_free = all(key[:16] not in pattern for _, _, pattern in needles)
    assert raw_free, "a schedule needle holds raw key bytes"
    image = (
        os.urandom(3000)
        + schedule_bytes(key, ENCRYPT, BYTES)
        + os.urandom(3000)
        + schedule_bytes(key, DECRYPT, BE32)
        + os.urandom(3000)
    )
    scanner = Scanner(NeedleSet([Secret("key", key)], extra=needles))
    found = {
        (f.kind, f.encoding, f.form): f.copies for f in scanner.summarize(_hits(scanner, image))
    }
    assert found[("key-schedule", "aes-enc", FULL)] == 1
    assert found[("key-schedule", "aes-dec-be32", FULL)] == 1
    assert found[("key-schedule", "aes-dec", FULL)] == 0
    assert found[("key", "raw", FULL)] == 1  # the encryption schedule starts with the key


def _hits(scanner: Scanner, image: bytes) -> list:
    region = _region(image)
    return scanner.scan_chunks([Chunk(region, 0, memoryview(image))], [region])


def test_bad_input_is_a_named_error() -> None:
    with pytest.raises(KeyScheduleError, match="16, 24 or 32"):
        schedule_bytes(b"short")
    with pytest.raises(KeyScheduleError, match="tolerance"):
        KeyScheduleScanner(tolerance=99)
    with pytest.raises(KeyScheduleError, match="nothing to search"):
        KeyScheduleScanner(blind=False)
    with pytest.raises(KeyScheduleError, match="not among the key sizes"):
        KeyScheduleScanner(known_keys={"k": os.urandom(32)}, key_bits=(128,))


def test_cli_reports_schedules_without_key_bytes(tmp_path: Path) -> None:
    key, other = os.urandom(32), os.urandom(16)
    image = tmp_path / "dump.bin"
    damaged = bytearray(schedule_bytes(other))
    _flip(damaged, [100, 900])
    image.write_bytes(
        os.urandom(5001) + schedule_bytes(key, DECRYPT) + os.urandom(777) + damaged + os.urandom(99)
    )
    key_file = tmp_path / "key.bin"
    key_file.write_bytes(key)
    out = memlab(
        "scan", str(image), "--key-schedules", "--key-file", str(key_file), "--json"
    ).stdout
    report = json.loads(out)
    rows = [
        (h["address"], h["key_bits"], h["direction"], h["bit_errors"], h["known"])
        for h in report["key_schedules"]
    ]
    assert rows == [(5001, 256, DECRYPT, 0, "key"), (5001 + 240 + 777, 128, ENCRYPT, 2, "")]
    raw_id = next(
        f["needle_id"] for f in report["findings"] if (f["kind"], f["encoding"]) == ("key", "raw")
    )
    assert report["key_schedules"][0]["key_id"] == raw_id  # same salt, same id
    leaked = any(k.hex() in out or k.hex().upper() in out for k in (key, other))
    assert not leaked, "a key's hex is in the output"
    table = memlab("scan", str(image), "--key-schedules", "--tolerance", "0").stdout
    assert "1 found" in table  # exact: the damaged schedule is not reported
    leaked = any(k.hex() in table for k in (key, other))
    assert not leaked, "a key's hex is in the output"


# -- a real process ----------------------------------------------------------------------

# Reads its keys from a pipe (none in argv or source) and keeps AES contexts alive: an ECB
# encryptor and decryptor per key from `cryptography` (OpenSSL 3, AES-NI here), and
# OpenSSL's own AES_set_encrypt_key / AES_set_decrypt_key through ctypes for the last key.
_HOLDER = textwrap.dedent(
    """
    import ctypes, os, sys
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    fd = int(sys.argv[1]); sizes = [int(n) for n in sys.argv[2].split(",")]
    keys = []
    for n in sizes:
        key = bytearray(n)
        os.readv(fd, [key])
        keys.append(key)
    held = []
    for key in keys[:-1]:
        cipher = Cipher(algorithms.AES(bytes(key)), modes.ECB())
        held.append((cipher.encryptor(), cipher.decryptor()))
    class AesKey(ctypes.Structure):
        _fields_ = [("rd_key", ctypes.c_uint32 * 60), ("rounds", ctypes.c_int)]
    lib = ctypes.CDLL("libcrypto.so.3")
    raw = (ctypes.c_char * len(keys[-1])).from_buffer(keys[-1])
    contexts = [AesKey(), AesKey()]
    assert lib.AES_set_encrypt_key(raw, 8 * len(keys[-1]), ctypes.byref(contexts[0])) == 0
    assert lib.AES_set_decrypt_key(raw, 8 * len(keys[-1]), ctypes.byref(contexts[1])) == 0
    for key in keys:
        key[:] = bytes(len(key))  # only the schedules remain
    print("ready", flush=True)
    sys.stdin.read()
    """
)


@pytest.fixture
def aes_holder() -> Iterator[tuple[int, dict[str, bytes]]]:
    _libcrypto()
    keys = {
        "aes128": os.urandom(16),
        "aes192": os.urandom(24),
        "aes256": os.urandom(32),
        "openssl": os.urandom(32),
    }
    r, w = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(r), ",".join(str(len(k)) for k in keys.values())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        pass_fds=(r,),
    )
    os.close(r)
    for key in keys.values():
        os.write(w, key)
    os.close(w)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc.pid, keys
    finally:
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


@needs_root()
def test_a_live_process_holding_aes_contexts(aes_holder: tuple[int, dict[str, bytes]]) -> None:
    pid, keys = aes_holder
    want = {(label, d) for label in keys for d in DIRECTIONS}
    known = KeyScheduleScanner(blind=False, known_keys=keys, tolerance=0, salt=SALT)
    hits = known.scan(ProcMemSource(pid))
    assert {(h.known, h.direction) for h in hits} == want
    assert all(h.bit_errors == 0 and h.byte_order == BYTES for h in hits)
    assert all(h.region is not None and h.region.perms.startswith("rw") for h in hits)
    blind = KeyScheduleScanner(known_keys=keys, salt=SALT)  # default tolerance
    blind_hits = blind.scan(ProcMemSource(pid))
    marked = {(h.address, h.known, h.direction) for h in blind_hits if h.known}
    assert marked == {(h.address, h.known, h.direction) for h in hits}
    assert all(h.found_by == "blind+known" for h in blind_hits if h.known)
    ids = {h.known: h.key_id for h in blind_hits if h.known}
    assert ids == {label: blind.short_id(key) for label, key in keys.items()}
