"""Shared fixtures: real child processes that hold known markers."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

# The holder reads its marker from a pipe into a bytearray (no literal in its source or
# argv), optionally copies it into a page it then makes PROT_NONE, and waits.
_HOLDER = textwrap.dedent(
    """
    import mmap, os, sys, ctypes
    fd = int(sys.argv[1]); n = int(sys.argv[2]); prot_none = sys.argv[3] == "1"
    held = bytearray(n)
    os.readv(fd, [held])
    if prot_none:
        page = mmap.mmap(-1, 4096)
        page[100:100 + n] = held
        held[:] = bytes(n)
        libc = ctypes.CDLL(None, use_errno=True)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
        assert libc.mprotect(ctypes.c_void_p(addr), 4096, 0) == 0
    print("ready", flush=True)
    sys.stdin.read()
    """
)


@dataclass
class Holder:
    pid: int
    marker: bytes
    proc: subprocess.Popen[str]


def _start_holder(marker: bytes, prot_none: bool = False) -> Holder:
    r, w = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(r), str(len(marker)), "1" if prot_none else "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        pass_fds=(r,),
    )
    os.close(r)
    os.write(w, marker)
    os.close(w)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return Holder(proc.pid, marker, proc)


def _stop(holder: Holder) -> None:
    holder.proc.kill()
    holder.proc.wait()
    for stream in (holder.proc.stdin, holder.proc.stdout):
        if stream is not None:
            stream.close()


@pytest.fixture(scope="session", autouse=True)
def runner_stays_unhardened() -> Iterator[None]:
    """Fail the session if a test hardened the pytest process itself: its children would
    inherit a hard RLIMIT_CORE 0 that cannot be lifted (seen in CI: crash-core found none)."""
    import resource

    before = resource.getrlimit(resource.RLIMIT_CORE)
    yield
    assert resource.getrlimit(resource.RLIMIT_CORE) == before, "a test hardened the runner"


@pytest.fixture(scope="session", autouse=True)
def broker_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real broker for the whole session, so the `broker` design runs like the others."""
    from memcryptor_lab.broker import start_broker

    address = str(tmp_path_factory.mktemp("broker") / "run" / "broker.sock")
    proc = start_broker(address, identity="uid", tied=True)
    previous = os.environ.get("MEMLAB_BROKER_SOCKET")
    os.environ["MEMLAB_BROKER_SOCKET"] = address
    yield address
    if previous is None:
        os.environ.pop("MEMLAB_BROKER_SOCKET", None)
    else:
        os.environ["MEMLAB_BROKER_SOCKET"] = previous
    proc.terminate()
    proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture
def marker() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
def holder(marker: bytes) -> Iterator[Holder]:
    h = _start_holder(marker)
    yield h
    _stop(h)


@pytest.fixture
def prot_none_holder(marker: bytes) -> Iterator[Holder]:
    h = _start_holder(marker, prot_none=True)
    yield h
    _stop(h)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def memlab(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m memcryptor_lab ARGS` from the checkout, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "memcryptor_lab", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, COLUMNS="200"),
    )


def needs_root() -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        os.geteuid() != 0, reason="reads another process's memory: run as root"
    )
