"""The public protector API, for every design."""

from __future__ import annotations

import functools
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import memcryptor_lab as mc
from memcryptor_lab.broker import WrongScopeError

# The pytest process must not harden itself: its children (victims, holders) would inherit
# a hard RLIMIT_CORE 0 that nothing here can lift, and crash-core would find no core.
open_design = functools.partial(mc.open_design, harden_process=False)

PINNED_API = {
    "DESIGNS",
    "KEY_BYTES",
    "CanaryError",
    "MemlockError",
    "ProtectionError",
    "DesignUnsupportedError",
    "InputError",
    "MalformedBlobError",
    "MemcryptorError",
    "Protector",
    "Sealed",
    "SecretDestroyedError",
    "TamperedError",
    "__version__",
    "open_design",
    "wipe",
}
DESIGN_NAMES = list(mc.DESIGNS)
SECRET = "pässwörd-ψ-0123456789".encode()


def test_public_api_is_pinned() -> None:
    assert set(mc.__all__) == PINNED_API


def test_registry_names_match_and_designs_run_here() -> None:
    assert DESIGN_NAMES == ["plain", "inproc-aead", "hardened", "secretmem", "keyring", "broker"]
    for name, cls in mc.DESIGNS.items():
        assert cls.name == name
        assert cls.supported() is None


def test_unknown_design_is_a_named_error() -> None:
    with pytest.raises(mc.DesignUnsupportedError, match="known designs"):
        mc.open_design("nope")


def _pipe_with(data: bytes) -> int:
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    return r


@pytest.mark.parametrize("name", DESIGN_NAMES)
def test_seal_fd_reveal_destroy(name: str) -> None:
    with open_design(name) as protector:
        fd = _pipe_with(SECRET)
        sealed = protector.seal_fd(fd, len(SECRET))
        os.close(fd)
        assert len(sealed) == len(SECRET)
        with sealed.reveal() as view:
            assert view.readonly
            assert bytes(view) == SECRET
        with pytest.raises(ValueError):
            view.tobytes()  # released on exit
        sealed.destroy()
        sealed.destroy()  # idempotent
        with pytest.raises(mc.SecretDestroyedError), sealed.reveal():
            pass


@pytest.mark.parametrize("name", DESIGN_NAMES)
def test_seal_buffer_wipes_the_callers_buffer(name: str) -> None:
    with open_design(name) as protector:
        buffer = bytearray(SECRET)
        sealed = protector.seal_buffer(buffer)
        assert buffer == bytearray(len(SECRET))
        with sealed.reveal() as view:
            assert bytes(view) == SECRET
        with pytest.raises(mc.InputError):
            protector.seal_buffer(memoryview(b"read-only"))


def test_inproc_aead_wipes_the_revealed_plaintext() -> None:
    with mc.open_design("inproc-aead") as protector:
        sealed = protector.seal_buffer(bytearray(SECRET))
        with sealed.reveal() as view:
            backing = view.obj
            assert bytes(backing) == SECRET
        assert backing == bytearray(len(SECRET))


def test_plain_is_the_naive_baseline() -> None:
    # plain holds an immutable str and reveals a fresh bytes: nothing can be wiped.
    with mc.open_design("plain") as protector:
        sealed = protector.seal_buffer(bytearray(SECRET))
        with sealed.reveal() as view:
            backing = view.obj
        assert isinstance(backing, bytes) and backing == SECRET


@pytest.mark.parametrize("name", DESIGN_NAMES)
def test_short_secret_read_is_a_named_error(name: str) -> None:
    with open_design(name) as protector:
        fd = _pipe_with(SECRET[:5])
        with pytest.raises(mc.InputError, match="closed after 5"):
            protector.seal_fd(fd, len(SECRET))
        os.close(fd)


@pytest.mark.parametrize("name", DESIGN_NAMES)
@pytest.mark.parametrize("size", [0, 1, 32, 4096, 1 << 20])
def test_encrypt_decrypt_round_trip(name: str, size: int) -> None:
    data = os.urandom(size)
    with open_design(name) as protector:
        blob = protector.encrypt(data, aad=b"ctx")
        # header (magic, version, nonce; the broker's also names instance and scope) + tag
        assert len(blob) == size + (48 if name == "broker" else 32)
        assert protector.decrypt(blob, aad=b"ctx") == data


@pytest.mark.parametrize("name", DESIGN_NAMES)
def test_blob_is_standard_aes_256_gcm_under_the_given_key(name: str) -> None:
    if mc.DESIGNS[name].out_of_process:
        pytest.skip("the broker's blob names its instance and scope: its own format")
    key = os.urandom(32)
    fd = _pipe_with(key)
    with open_design(name, key_fd=fd) as protector:
        blob = bytes(protector.encrypt(b"payload", aad=b"a"))
    os.close(fd)
    header, body = blob[:16], blob[16:]
    assert AESGCM(key).decrypt(header[4:16], body, header + b"a") == b"payload"
    with open_design(name, key_buffer=bytearray(key)) as other:
        assert other.decrypt(blob, aad=b"a") == b"payload"


@pytest.mark.parametrize("name", DESIGN_NAMES)
def test_tampering_wrong_key_and_wrong_aad_raise_tampered(name: str) -> None:
    with open_design(name) as protector, open_design(name) as stranger:
        blob = protector.encrypt(b"x" * 100, aad=b"a")
        # the nonce, the ciphertext, the tag (the broker's header is 32 bytes, not 16)
        nonce_at = 25 if name == "broker" else 10
        for position in (nonce_at, 40, 60, len(blob) - 1):
            bad = bytearray(blob)
            bad[position] ^= 0x01
            with pytest.raises(mc.TamperedError):
                protector.decrypt(bad, aad=b"a")
        with pytest.raises(mc.TamperedError):
            protector.decrypt(blob, aad=b"b")
        # another key: TamperedError; the broker tells a foreign scope apart
        with pytest.raises((mc.TamperedError, WrongScopeError)):
            stranger.decrypt(blob, aad=b"a")


@pytest.mark.parametrize("name", DESIGN_NAMES)
def test_malformed_blobs_raise_malformed(name: str) -> None:
    with open_design(name) as protector:
        blob = protector.encrypt(b"data")
        with pytest.raises(mc.MalformedBlobError, match="shorter"):
            protector.decrypt(blob[:20])
        with pytest.raises(mc.MalformedBlobError, match="magic"):
            protector.decrypt(b"XYZ" + bytes(blob[3:]))
        with pytest.raises(mc.MalformedBlobError, match="version"):
            protector.decrypt(bytes(blob[:3]) + b"\x07" + bytes(blob[4:]))


@pytest.mark.parametrize("name", DESIGN_NAMES)
def test_wrong_key_length_and_closed_protector(name: str) -> None:
    with pytest.raises(mc.InputError, match="32 bytes"):
        open_design(name, key_buffer=bytearray(16))
    protector = open_design(name)
    sealed = protector.seal_buffer(bytearray(SECRET))
    protector.close()
    assert sealed.destroyed
    with pytest.raises(mc.SecretDestroyedError):
        protector.encrypt(b"x")


def test_key_buffer_is_wiped_after_use() -> None:
    key = bytearray(os.urandom(32))
    with mc.open_design("inproc-aead", key_buffer=key):
        assert key == bytearray(32)


def test_wipe_zeroes_in_place() -> None:
    buffer = bytearray(b"secret bytes")
    mc.wipe(buffer)
    assert buffer == bytearray(12)
    with pytest.raises(TypeError):
        mc.wipe(memoryview(b"immutable"))
