"""Attacker classes: who runs an attack, relative to its victim.

`root`: the harness's own uid 0 (this root lacks CAP_SYS_RESOURCE, nothing else).
`same-user`: victim and attacker share one unprivileged uid (the lab uses `nobody`), as
malware running under a daemon's account would. The kernel lets such an attacker ptrace,
read /proc/PID/mem and call process_vm_readv on the victim unless the victim made itself
non-dumpable, which root ignores: this class is what measures PR_SET_DUMPABLE.

The interpreter cannot be exec'ed as `nobody` here (it lives under /root, mode 0700), so
both the same-user victim and the same-user attacker are forked from root processes that
have already imported what they need, and then drop to the uid for good.
"""

from __future__ import annotations

import os
import pickle
import pwd
import signal
from collections.abc import Callable
from typing import Any, TypeVar

from .._platform import die_with_parent, set_dumpable

ROOT, SAME_USER = "root", "same-user"
ATTACKER_CLASSES = (ROOT, SAME_USER)
LAB_USER = "nobody"

T = TypeVar("T")


class AttackerError(RuntimeError):
    """An attack run under another uid failed inside its child (type and message only)."""


def lab_identity() -> tuple[int, int]:
    """(uid, gid) the same-user class runs as."""
    entry = pwd.getpwnam(LAB_USER)
    return entry.pw_uid, entry.pw_gid


def attacker_supported(attacker: str) -> str | None:
    """None if the class can be measured here, else why and the fix."""
    if attacker not in ATTACKER_CLASSES:
        raise ValueError(f"attacker class must be one of {ATTACKER_CLASSES}, got {attacker!r}")
    if os.geteuid() != 0:
        return f"the {attacker} class needs a root harness (to drop to a lab uid): run as root"
    if attacker == SAME_USER:
        try:
            lab_identity()
        except KeyError:
            return f"no user {LAB_USER!r} here: useradd --system {LAB_USER}"
    return None


def drop_privileges(uid: int, gid: int) -> None:
    """Become uid:gid for good. A uid change also makes the process non-dumpable
    (fs.suid_dumpable) and clears its parent-death signal; a process that user had
    exec'ed would have neither, so both are put back as such a process has them."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    set_dumpable(True)
    die_with_parent()


def run_as(uid: int, gid: int, fn: Callable[..., T], *args: Any) -> T:
    """Run fn(*args) in a forked child as uid:gid and return its (pickled) result."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.close(read_end)
        try:
            drop_privileges(uid, gid)
            result: tuple[str, Any] = ("ok", fn(*args))
        except BaseException as exc:  # reported by type and message
            result = ("error", f"{type(exc).__name__}: {exc}")
        try:
            data = pickle.dumps(result)
            view = memoryview(data)
            while view:
                view = view[os.write(write_end, view) :]
        finally:
            os._exit(0)
    os.close(write_end)
    chunks = []
    try:
        with os.fdopen(read_end, "rb") as reader:
            while block := reader.read(1 << 20):
                chunks.append(block)
    except BaseException:
        os.kill(child, signal.SIGKILL)
        raise
    finally:
        os.waitpid(child, 0)
    if not chunks:
        raise AttackerError(f"the child running as uid {uid} died without a result")
    status, value = pickle.loads(b"".join(chunks))
    if status != "ok":
        raise AttackerError(value)
    return value  # type: ignore[no-any-return]
