"""`memlab broker`: the key-holder daemon. Keys never leave it; clients send work.

Keys live in an arena of memfd_secret pages where the kernel has them (else the locked,
no-dump arena), one key per client identity, created on first use or imported once. The
process is non-dumpable with RLIMIT_CORE 0. Peers are authenticated by the kernel
(SO_PEERCRED) against an allow-list of uids, optionally of executables. A blob names the
broker instance and the identity scope it was sealed under, so a restarted broker and a
wrong identity are told apart from tampering. Keys are not persisted: a restarted broker
has lost them, and says so (UNKNOWN_INSTANCE).
"""

from __future__ import annotations

import array
import ctypes
import hashlib
import logging
import mmap
import os
import signal
import socket
import stat
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .._arena import Arena, Slot
from .._platform import fill_random, native, set_dumpable
from .protocol import (
    HEADER,
    MAX_PAYLOAD,
    MAX_SHM,
    Code,
    Frame,
    Op,
    ProtocolError,
    Tag,
    encode_frame,
    parse_header,
    parse_payload,
)

log = logging.getLogger("memcryptor_lab.broker")

BLOB_MAGIC = b"MCB"
BLOB_VERSION = 1
BLOB_HEADER = struct.Struct("!3sB8s8s12s")  # magic, version, instance, scope, nonce
TAG_BYTES = 16
BLOB_OVERHEAD = BLOB_HEADER.size + TAG_BYTES
IDENTITY_MODES = ("uid", "uid+exe", "process")
SO_PEERCRED = getattr(socket, "SO_PEERCRED", 17)
F_GET_SEALS = 1034
F_SEAL_SHRINK = 0x0002
LISTEN_FDS_START = 3


class _Refusal(Exception):
    """A request the broker answers with an error code (the connection stays open)."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Peer:
    pid: int
    uid: int
    gid: int
    exe: str
    identity: str


@dataclass
class BrokerConfig:
    address: str  # a path, or '@name' for an abstract socket
    allow_uids: frozenset[int]
    allow_exes: frozenset[str] = frozenset()
    identity: str = "uid"
    backing: str = field(default="")


def default_socket_path() -> str:
    explicit = os.environ.get("MEMLAB_BROKER_SOCKET")
    if explicit:
        return explicit
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "memcryptor-lab", "broker.sock")
    if os.geteuid() == 0:
        return "/run/memcryptor-lab/broker.sock"
    return f"/tmp/memcryptor-lab-{os.geteuid()}/broker.sock"


def _private_dir(path: Path) -> None:
    """The socket's directory: created 0700, or refused if someone else could use it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) & 0o077:
        raise PermissionError(
            f"{path} must be owned by uid {os.geteuid()} and mode 0700 "
            f"(is uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):o})"
        )


def inherited_listener() -> socket.socket | None:
    """The listening socket systemd (or a test acting like it) passed as fd 3."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = int(os.environ.get("LISTEN_FDS", "0"))
    if count < 1:
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # not for our children
    return socket.socket(fileno=LISTEN_FDS_START)


class Broker:
    def __init__(self, config: BrokerConfig, listener: socket.socket | None = None) -> None:
        if config.identity not in IDENTITY_MODES:
            raise ValueError(f"identity must be one of {IDENTITY_MODES}")
        self.config = config
        self.instance = os.urandom(8)
        backing = config.backing or ("secretmem" if _secretmem_works() else "anonymous")
        self.backing = backing
        self._arena = Arena(backing, guard_idle=False)
        self._keys: dict[str, Slot] = {}
        self._lock = threading.Lock()
        self._local = threading.local()  # per connection thread: the client's bulk mapping
        self._stop = threading.Event()
        self._owns_path: str | None = None
        self._listener = listener or self._listen(config.address)
        self.connections = 0
        self.refused = 0
        self.protocol_errors = 0

    def _listen(self, address: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if address.startswith("@"):
            sock.bind("\0" + address[1:])
        else:
            _private_dir(Path(address).parent)
            if os.path.exists(address):
                os.unlink(address)  # a stale socket from a dead broker
            sock.bind(address)
            os.chmod(address, 0o600)
            self._owns_path = address
        sock.listen(64)
        return sock

    # -- identity and keys ------------------------------------------------------------------
    def _peer(self, conn: socket.socket) -> Peer:
        pid, uid, gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, SO_PEERCRED, 12))
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            exe = ""
        mode = self.config.identity
        if mode == "uid":
            identity = f"uid:{uid}"
        elif mode == "uid+exe":
            identity = f"uid:{uid}|exe:{exe}"
        else:  # one process: pid plus its start time, so a reused pid is someone else
            identity = f"uid:{uid}|pid:{pid}|start:{_start_time(pid)}"
        return Peer(pid, uid, gid, exe, identity)

    def _allowed(self, peer: Peer) -> str | None:
        if peer.uid not in self.config.allow_uids:
            return f"uid {peer.uid} is not allowed"
        if self.config.allow_exes and peer.exe not in self.config.allow_exes:
            return f"executable {peer.exe or '?'} is not allowed"
        return None

    def _scope(self, identity: str) -> bytes:
        return hashlib.blake2b(identity.encode(), key=self.instance, digest_size=8).digest()

    def _key(self, identity: str, create: bool) -> Slot:
        with self._lock:
            slot = self._keys.get(identity)
            if slot is None:
                if not create:
                    raise _Refusal(Code.NO_KEY, "this identity has no key in this broker")
                slot = self._arena.alloc(32)
                with slot.view() as view:
                    fill_random(view)
                self._keys[identity] = slot
            return slot

    def _import_key(self, identity: str, key: memoryview) -> None:
        with self._lock:
            if identity in self._keys:
                raise _Refusal(Code.KEY_EXISTS, "this identity already has a key")
            slot = self._arena.alloc(32)
            with slot.view() as view:
                view[:] = key
            self._keys[identity] = slot

    @contextmanager
    def _cipher(self, identity: str, create: bool) -> Iterator[AESGCM]:
        slot = self._key(identity, create)
        with slot.view() as view:
            aead = AESGCM(view)
        try:
            yield aead
        finally:
            del aead  # the OpenSSL context (and its key schedule) is cleared on free

    # -- crypto -----------------------------------------------------------------------------
    def _seal(self, peer: Peer, src: memoryview, out: memoryview, aad: bytes) -> int:
        """Encrypt src into out (out may start where src starts minus the header)."""
        nonce = os.urandom(12)
        header = BLOB_HEADER.pack(
            BLOB_MAGIC, BLOB_VERSION, self.instance, self._scope(peer.identity), nonce
        )
        with self._cipher(peer.identity, create=True) as aead:
            aead.encrypt_into(
                nonce, src, header + aad, out[BLOB_HEADER.size : BLOB_HEADER.size + len(src) + 16]
            )
        out[: BLOB_HEADER.size] = header
        return BLOB_HEADER.size + len(src) + TAG_BYTES

    def _open(self, peer: Peer, blob: memoryview, out: memoryview, aad: bytes) -> int:
        if len(blob) < BLOB_OVERHEAD:
            raise _Refusal(Code.MALFORMED, f"blob of {len(blob)} bytes is too short")
        magic, version, instance, scope, nonce = BLOB_HEADER.unpack_from(blob)
        if magic != BLOB_MAGIC:
            raise _Refusal(Code.MALFORMED, "not a broker blob (bad magic)")
        if version != BLOB_VERSION:
            raise _Refusal(Code.MALFORMED, f"blob version {version} is not supported")
        if instance != self.instance:
            raise _Refusal(
                Code.UNKNOWN_INSTANCE,
                "sealed by another broker instance (restarted?): its keys were not persisted",
            )
        if scope != self._scope(peer.identity):
            raise _Refusal(Code.WRONG_SCOPE, "sealed under another identity's scope")
        header = bytes(blob[: BLOB_HEADER.size])
        body = blob[BLOB_HEADER.size :]
        try:
            with self._cipher(peer.identity, create=False) as aead:
                aead.decrypt_into(nonce, body, header + aad, out[: len(body) - TAG_BYTES])
        except InvalidTag:
            raise _Refusal(Code.TAMPERED, "authentication failed: blob or AAD modified") from None
        return len(body) - TAG_BYTES

    # -- requests ---------------------------------------------------------------------------
    def _handle(self, peer: Peer, frame: Frame, fds: list[int]) -> list[tuple[Tag, object]]:
        """Do one request; ProtocolError closes the connection, _Refusal answers it."""
        aad = bytes(frame.fields.get(Tag.AAD, b""))
        if Tag.SCOPE in frame.fields:  # a label within the kernel-given identity, never instead
            label = bytes(frame.fields[Tag.SCOPE]).hex()
            peer = Peer(peer.pid, peer.uid, peer.gid, peer.exe, f"{peer.identity}|scope:{label}")
        if frame.op in (Op.ENCRYPT_SHM, Op.DECRYPT_SHM):
            if len(fds) != 1:
                raise ProtocolError(f"{frame.op.name} needs exactly one memfd, got {len(fds)}")
            return [(Tag.LENGTH, self._shm(peer, frame, fds[0], aad).to_bytes(8, "big"))]
        if fds:
            raise ProtocolError(f"{frame.op.name} takes no file descriptors")
        if frame.op is Op.PING:
            info = (
                f"memcryptor-lab broker v1 backing={self.backing} identity={self.config.identity}"
            )
            return [(Tag.INFO, info.encode())]
        if frame.op is Op.IMPORT_KEY:
            self._import_key(peer.identity, frame.fields[Tag.KEY])
            return []
        if frame.op is Op.ENCRYPT:
            data = frame.fields[Tag.DATA]
            out = bytearray(len(data) + BLOB_OVERHEAD)
            with memoryview(out) as view:
                self._seal(peer, data, view, aad)
            return [(Tag.BLOB, out)]
        blob = frame.fields[Tag.BLOB]  # DECRYPT: plaintext goes into a locked arena slot
        if len(blob) < BLOB_OVERHEAD:
            raise _Refusal(Code.MALFORMED, f"blob of {len(blob)} bytes is too short")
        with self._lock:
            slot = self._arena.alloc(len(blob) - BLOB_OVERHEAD)
        try:
            with slot.view() as view:
                n = self._open(peer, blob, view, aad)
        except BaseException:
            with self._lock:
                self._arena.free(slot)
            raise
        return [(Tag.DATA, _SlotData(slot, n))]

    def _shm(self, peer: Peer, frame: Frame, fd: int, aad: bytes) -> int:
        length = frame.integer(Tag.LENGTH)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or not os.readlink(f"/proc/self/fd/{fd}").startswith(
            "/memfd:"
        ):
            raise _Refusal(Code.MALFORMED, "the descriptor is not a memfd")
        # A client could shrink an unsealed memfd under us: SIGBUS. Only sealed ones.
        if not _seals(fd) & F_SEAL_SHRINK:
            raise _Refusal(Code.MALFORMED, "the memfd must be sealed against shrinking")
        if frame.op is Op.ENCRYPT_SHM:
            needed = length + BLOB_OVERHEAD
        else:
            needed = length
            if length < BLOB_OVERHEAD:
                raise _Refusal(Code.MALFORMED, f"blob of {length} bytes is too short")
        if needed > MAX_SHM or needed > info.st_size:
            raise _Refusal(Code.TOO_LARGE, f"memfd of {info.st_size} bytes cannot hold {needed}")
        with memoryview(self._mapping(fd, info)) as view:
            try:
                if frame.op is Op.ENCRYPT_SHM:
                    # plaintext at [header, header+n) becomes the blob at [0, header+n+tag)
                    return self._seal(
                        peer, view[BLOB_HEADER.size : BLOB_HEADER.size + length], view, aad
                    )
                return self._open(peer, view[:length], view[BLOB_HEADER.size :], aad)
            finally:
                view.release()

    def _mapping(self, fd: int, info: os.stat_result) -> mmap.mmap:
        """This connection's mapping of the client's memfd, kept while the client reuses it
        (sealed against shrinking, so the mapping stays valid)."""
        local = self._local
        key = (info.st_dev, info.st_ino, info.st_size)
        if getattr(local, "key", None) != key:
            self._drop_mapping()
            local.map = mmap.mmap(fd, info.st_size)
            local.key = key
        return local.map  # type: ignore[no-any-return]

    def _drop_mapping(self) -> None:
        local = self._local
        if getattr(local, "map", None) is not None:
            local.map.close()
        local.map = local.key = None

    # -- connections ------------------------------------------------------------------------
    def serve_forever(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    break
                raise
            conn.settimeout(None)
            self.connections += 1
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        with conn:
            try:
                peer = self._peer(conn)
                reason = self._allowed(peer)
                if reason is not None:
                    self.refused += 1
                    log.warning("refused pid %d uid %d: %s", peer.pid, peer.uid, reason)
                    _send(
                        conn,
                        Op.ERROR,
                        0,
                        [(Tag.CODE, _code(Code.REFUSED)), (Tag.MESSAGE, reason.encode())],
                    )
                    return
                # one locked receive buffer per connection, zeroed after every request
                with self._lock:
                    receive = self._arena.alloc(MAX_PAYLOAD)
                try:
                    while not self._stop.is_set():
                        if not self._one_request(conn, peer, receive):
                            return
                finally:
                    with self._lock:
                        if not self._arena.closed:
                            self._arena.free(receive)
            except (ConnectionError, BrokenPipeError, TimeoutError):
                return  # the client vanished; everyone else is unaffected
            except Exception:  # one connection must never take the broker down
                log.exception("connection failed")
            finally:
                self._drop_mapping()

    def _one_request(self, conn: socket.socket, peer: Peer, receive: Slot) -> bool:
        header_buf = bytearray(HEADER.size)
        fds: list[int] = []
        if _recv_exact(conn, memoryview(header_buf), fds) == 0:
            return False
        slots: list[Slot] = []
        request_id = 0
        received = 0
        try:
            try:
                header = parse_header(header_buf)
                request_id = header.request_id
                # requests may carry plaintext: receive it into locked (secretmem) memory
                received = header.length
                payload = receive.view()[: header.length]
                if header.length and _recv_exact(conn, payload, fds) == 0:
                    return False
                frame = parse_payload(header, payload)
                fields = self._handle(peer, frame, fds)
            except ProtocolError as exc:
                self.protocol_errors += 1
                _send(
                    conn,
                    Op.ERROR,
                    request_id,
                    [(Tag.CODE, _code(Code.MALFORMED)), (Tag.MESSAGE, str(exc).encode())],
                )
                return False  # after a framing error the stream cannot be trusted
            except _Refusal as exc:
                _send(
                    conn,
                    Op.ERROR,
                    request_id,
                    [(Tag.CODE, _code(exc.code)), (Tag.MESSAGE, str(exc).encode())],
                )
                return True
            parts: list[tuple[Tag, bytes | bytearray | memoryview]] = []
            for tag, value in fields:
                if isinstance(value, _SlotData):
                    slots.append(value.slot)
                    parts.append((tag, value.slot.view()[: value.length]))
                else:
                    parts.append((tag, value))  # type: ignore[arg-type]
            _send(conn, Op.OK, request_id, parts)
            return True
        finally:
            for fd in fds:
                os.close(fd)
            ctypes.memset(receive.addr, 0, received)
            if slots:
                with self._lock:
                    for slot in slots:
                        self._arena.free(slot)  # zeroed

    # -- lifetime ---------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Wipe every key, stop listening, remove the socket."""
        self._stop.set()
        with self._lock:
            self._keys.clear()
            self._arena.close()
        self._listener.close()
        if self._owns_path and os.path.exists(self._owns_path):
            os.unlink(self._owns_path)


@dataclass(slots=True)
class _SlotData:
    """A reply value that lives in a locked arena slot (freed, so zeroed, once sent)."""

    slot: Slot
    length: int


def _send(
    conn: socket.socket,
    op: Op,
    request_id: int,
    fields: list[tuple[Tag, bytes | bytearray | memoryview]],
) -> None:
    parts = encode_frame(op, request_id, fields)
    total = sum(len(p) for p in parts)
    sent = conn.sendmsg(parts)
    if sent < total:  # rare: finish with sendall over the rest
        flat = memoryview(b"".join(bytes(p) for p in parts))
        conn.sendall(flat[sent:])


def _recv_exact(conn: socket.socket, view: memoryview, fds: list[int]) -> int:
    """Fill view; collect any SCM_RIGHTS fds. Returns 0 on a clean EOF before any byte."""
    got = 0
    while got < len(view):
        n, ancdata, _flags, _addr = conn.recvmsg_into([view[got:]], socket.CMSG_SPACE(4 * 4))
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                received = array.array("i")
                received.frombytes(data[: len(data) - len(data) % 4])
                fds.extend(received)
        if n == 0:
            if got == 0:
                return 0
            raise ConnectionError("peer closed mid-frame")
        got += n
    return got


def _code(code: Code) -> bytes:
    return int(code).to_bytes(2, "big")


def _seals(fd: int) -> int:
    import fcntl

    try:
        return fcntl.fcntl(fd, F_GET_SEALS)
    except OSError:
        return 0


def _start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def _secretmem_works() -> bool:
    try:
        os.close(native.memfd_secret())
    except OSError:
        return False
    return True


def run(config: BrokerConfig, *, harden: bool = True) -> int:
    """The daemon's main: harden, listen (or take systemd's socket), serve until signalled."""
    logging.basicConfig(level=logging.INFO, format="memlab-broker: %(message)s")
    if harden:
        set_dumpable(False)
        native.disable_core_dumps()
    broker = Broker(config, inherited_listener())

    def stop(signum: int, frame: object) -> None:
        broker.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "serving %s (keys in %s arena, identity=%s, uids %s)",
        config.address,
        broker.backing,
        config.identity,
        sorted(config.allow_uids),
    )
    print(f"ready {os.getpid()}", flush=True)
    try:
        broker.serve_forever()
    finally:
        broker.close()
        log.info(
            "stopped after %d connections (%d refused, %d protocol errors); keys wiped "
            "(they are not persisted)",
            broker.connections,
            broker.refused,
            broker.protocol_errors,
        )
    return 0
