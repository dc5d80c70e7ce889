"""Scanners: needles in every encoding (and, later, AES key schedules)."""

from .needles import (
    BINARY_ENCODINGS,
    FRAGMENT,
    FRAGMENT_BYTES,
    FRAGMENT_WINDOW,
    FULL,
    TEXT_ENCODINGS,
    Finding,
    Hit,
    Needle,
    NeedleSet,
    Scanner,
    Secret,
    encode_forms,
    reportable_hits,
    secrets_from_files,
    summarize,
)

__all__ = [
    "BINARY_ENCODINGS",
    "FRAGMENT",
    "FRAGMENT_BYTES",
    "FRAGMENT_WINDOW",
    "FULL",
    "TEXT_ENCODINGS",
    "Finding",
    "Hit",
    "Needle",
    "NeedleSet",
    "Scanner",
    "Secret",
    "encode_forms",
    "reportable_hits",
    "secrets_from_files",
    "summarize",
]
