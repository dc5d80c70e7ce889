"""The broker's wire protocol, version 1: length-prefixed frames of tagged fields.

    frame   = header payload
    header  = version:u8 op:u8 flags:u16 request_id:u32 length:u32     (network order)
    payload = field*                                                     (length bytes)
    field   = tag:u8 size:u32 value[size]

A key belongs to an identity the kernel vouches for (SO_PEERCRED: uid, or uid and
executable, or one process) plus an optional SCOPE label the client picks within it.

Parsing is strict: unknown version, op, flag, tag; a field an op does not take; a missing or
repeated field; a size over its bound; trailing bytes: each is a ProtocolError, never a
guess. Bulk data does not travel in frames: it sits in a memfd passed with SCM_RIGHTS.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

from .._errors import MemcryptorError

VERSION = 1
HEADER = struct.Struct("!BBHII")
FIELD = struct.Struct("!BI")
MAX_INLINE = 64 * 1024  # secrets and small payloads; larger data goes through shared memory
MAX_PAYLOAD = MAX_INLINE + 4096
MAX_SHM = 1 << 31


class ProtocolError(MemcryptorError):
    """A frame broke the protocol (the broker closes the connection after saying why)."""


class Op(IntEnum):
    IMPORT_KEY = 1  # KEY: install this identity's key (only if it has none yet)
    ENCRYPT = 2  # DATA [AAD] -> BLOB
    DECRYPT = 3  # BLOB [AAD] -> DATA
    ENCRYPT_SHM = 4  # LENGTH [AAD] + memfd -> LENGTH (blob written in place)
    DECRYPT_SHM = 5  # LENGTH [AAD] + memfd -> LENGTH (plaintext written in place)
    PING = 6  # -> INFO
    OK = 0x80
    ERROR = 0xFF


class Tag(IntEnum):
    DATA = 1
    BLOB = 2
    AAD = 3
    KEY = 4
    LENGTH = 5
    CODE = 6
    MESSAGE = 7
    INFO = 8
    SCOPE = 9  # a label within the caller's kernel-given identity (like DPAPI's entropy)


class Code(IntEnum):
    MALFORMED = 1
    REFUSED = 2
    TAMPERED = 3
    WRONG_SCOPE = 4
    UNKNOWN_INSTANCE = 5
    NO_KEY = 6
    TOO_LARGE = 7
    INTERNAL = 8
    KEY_EXISTS = 9


# op -> (required tags, optional tags)
REQUEST_FIELDS: dict[Op, tuple[frozenset[Tag], frozenset[Tag]]] = {
    Op.IMPORT_KEY: (frozenset({Tag.KEY}), frozenset({Tag.SCOPE})),
    Op.ENCRYPT: (frozenset({Tag.DATA}), frozenset({Tag.AAD, Tag.SCOPE})),
    Op.DECRYPT: (frozenset({Tag.BLOB}), frozenset({Tag.AAD, Tag.SCOPE})),
    Op.ENCRYPT_SHM: (frozenset({Tag.LENGTH}), frozenset({Tag.AAD, Tag.SCOPE})),
    Op.DECRYPT_SHM: (frozenset({Tag.LENGTH}), frozenset({Tag.AAD, Tag.SCOPE})),
    Op.PING: (frozenset(), frozenset()),
}
REPLY_FIELDS: frozenset[Tag] = frozenset(
    {Tag.DATA, Tag.BLOB, Tag.LENGTH, Tag.INFO, Tag.CODE, Tag.MESSAGE}
)
MAX_FIELD = {
    Tag.DATA: MAX_INLINE,
    Tag.BLOB: MAX_INLINE + 64,
    Tag.AAD: 1024,
    Tag.KEY: 32,
    Tag.LENGTH: 8,
    Tag.CODE: 2,
    Tag.MESSAGE: 1024,
    Tag.INFO: 1024,
    Tag.SCOPE: 64,
}
EXACT_FIELD = {Tag.KEY: 32, Tag.LENGTH: 8, Tag.CODE: 2}


@dataclass(slots=True)
class Header:
    version: int
    op: int
    flags: int
    request_id: int
    length: int


@dataclass(slots=True)
class Frame:
    op: Op
    request_id: int
    fields: dict[Tag, memoryview] = field(default_factory=dict)

    def integer(self, tag: Tag) -> int:
        return int.from_bytes(self.fields[tag], "big")


def parse_header(data: bytes | bytearray | memoryview) -> Header:
    if len(data) != HEADER.size:
        raise ProtocolError(f"header must be {HEADER.size} bytes, got {len(data)}")
    header = Header(*HEADER.unpack(data))
    if header.version != VERSION:
        raise ProtocolError(f"protocol version {header.version} not supported (expected 1)")
    if header.flags:
        raise ProtocolError(f"unknown flags {header.flags:#x}")
    if header.length > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {header.length} bytes exceeds {MAX_PAYLOAD}")
    try:
        Op(header.op)
    except ValueError:
        raise ProtocolError(f"unknown op {header.op}") from None
    return header


def parse_payload(header: Header, payload: memoryview, *, reply: bool = False) -> Frame:
    """Split a payload into fields without copying; check them against the op's schema."""
    op = Op(header.op)
    if reply:
        if op not in (Op.OK, Op.ERROR):
            raise ProtocolError(f"op {op.name} is not a reply")
        required, optional = frozenset(), REPLY_FIELDS
    else:
        if op not in REQUEST_FIELDS:
            raise ProtocolError(f"op {op.name} is not a request")
        required, optional = REQUEST_FIELDS[op]
    fields: dict[Tag, memoryview] = {}
    offset = 0
    while offset < len(payload):
        if len(payload) - offset < FIELD.size:
            raise ProtocolError("truncated field header")
        raw_tag, size = FIELD.unpack_from(payload, offset)
        offset += FIELD.size
        try:
            tag = Tag(raw_tag)
        except ValueError:
            raise ProtocolError(f"unknown field tag {raw_tag}") from None
        if tag not in required and tag not in optional:
            raise ProtocolError(f"field {tag.name} not allowed in {op.name}")
        if tag in fields:
            raise ProtocolError(f"field {tag.name} repeated")
        if size > MAX_FIELD[tag] or (tag in EXACT_FIELD and size != EXACT_FIELD[tag]):
            raise ProtocolError(f"field {tag.name} has a bad size ({size})")
        if size > len(payload) - offset:
            raise ProtocolError(f"field {tag.name} runs past the payload")
        fields[tag] = payload[offset : offset + size]
        offset += size
    missing = required - fields.keys()
    if missing:
        raise ProtocolError(f"{op.name} needs {', '.join(sorted(t.name for t in missing))}")
    return Frame(op, header.request_id, fields)


def parse_frame(data: bytes | bytearray | memoryview, *, reply: bool = False) -> Frame:
    """Parse one whole frame (for tests and fuzzing; the peers read header then payload)."""
    view = memoryview(data).cast("B")
    if len(view) < HEADER.size:
        raise ProtocolError("frame shorter than its header")
    header = parse_header(view[: HEADER.size])
    if len(view) - HEADER.size != header.length:
        raise ProtocolError(
            f"payload is {len(view) - HEADER.size} bytes, header says {header.length}"
        )
    return parse_payload(header, view[HEADER.size :], reply=reply)


def encode_fields(
    fields: list[tuple[Tag, bytes | bytearray | memoryview]],
) -> list[bytes | bytearray | memoryview]:
    """Field headers and values as a list of buffers for sendmsg (values are not copied)."""
    parts: list[bytes | bytearray | memoryview] = []
    for tag, value in fields:
        parts.append(FIELD.pack(tag, len(value)))
        parts.append(value)
    return parts


def encode_frame(
    op: Op, request_id: int, fields: list[tuple[Tag, bytes | bytearray | memoryview]]
) -> list[bytes | bytearray | memoryview]:
    parts = encode_fields(fields)
    length = sum(len(p) for p in parts)
    if length > MAX_PAYLOAD:
        raise ProtocolError(f"frame payload of {length} bytes exceeds {MAX_PAYLOAD}")
    return [HEADER.pack(VERSION, op, 0, request_id, length), *parts]
