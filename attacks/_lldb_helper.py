"""The lldb side of the `lldb` and `lldb-core` attacks, run as a child process.

    python3 -I _lldb_helper.py --lldb-python DIR --pid PID --out DIR [--core] [--parent PID]

It runs under the interpreter that lldb's Python binding was built for (Debian's
/usr/bin/python3 for python3-lldb-19), not the harness's, and imports nothing from the
project: it attaches to PID with lldb's SB API, then either reads every region lldb lists
as readable into files under --out, or saves a full core there (`process save-core --style
full`), and detaches. It reports on stdout, one JSON object a line, only addresses, sizes,
file names and lldb's messages, never memory contents:

    {"event": "attached", "lldb": "lldb version 19.1.7", "seconds": 0.1}
    {"event": "region", "start": A, "end": B, "perms": "rw-", "mapped": true, "name": "..."}
    {"event": "run", "address": A, "length": N, "file": "run-....bin"}   # bytes read
    {"event": "refused", "address": A, "length": N, "error": "memory read failed ..."}
    {"event": "core", "file": "core.dmp", "bytes": N, "seconds": 1.2}
    {"event": "error", "stage": "attach", "message": "..."}               # then exit 2
    {"event": "detached"}

Detach always happens: in `finally`, also on SIGTERM/SIGINT (which raise here) and when the
harness dies (PR_SET_PDEATHSIG sends SIGTERM). If this process is killed outright,
lldb-server loses its connection and detaches by itself (checked: the target runs on).
Interrupted, it deletes the files it wrote: the harness may no longer be there to do it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import sys
import time
from typing import Any

CHUNK = 16 * 1024 * 1024
PAGE = 4096
# Faster attach: symbols are not needed to read memory (0.5 s -> 0.1 s here).
SETTINGS = (
    "settings set target.preload-symbols false",
    "settings set symbols.load-on-demand true",
    "settings set symbols.enable-external-lookup false",
)


class Interrupted(Exception):
    pass


def _raise(signum: int, frame: object) -> None:
    raise Interrupted(f"signal {signum}")


def emit(**event: object) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    if parent and os.getppid() != parent:  # the parent died before prctl
        raise Interrupted("parent gone")


class Writer:
    """Files under `out`, 0600, created new; all removed again by `discard`."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.files: list[str] = []

    def create(self, name: str) -> int:
        path = os.path.join(self.out, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.files.append(path)
        return fd

    def discard(self) -> None:
        for path in self.files:
            with contextlib.suppress(OSError):
                os.unlink(path)


def read_region(lldb: Any, process: Any, writer: Writer, start: int, end: int) -> None:
    """Read [start, end) in chunks; a chunk lldb refuses is retried page by page, and the
    readable pages are written as runs, the refused ones reported."""
    run_fd, run_start, run_len = -1, 0, 0
    refused_start, refused_len, refused_error = 0, 0, ""

    def flush_run() -> None:
        nonlocal run_fd, run_len
        if run_fd >= 0:
            os.close(run_fd)
            emit(event="run", address=run_start, length=run_len, file=f"run-{run_start:x}.bin")
        run_fd, run_len = -1, 0

    def flush_refused() -> None:
        nonlocal refused_len
        if refused_len:
            emit(event="refused", address=refused_start, length=refused_len, error=refused_error)
        refused_len = 0

    def good(address: int, data: bytes) -> None:
        nonlocal run_fd, run_start, run_len
        flush_refused()
        if run_fd < 0 or run_start + run_len != address:
            flush_run()
            run_fd, run_start = writer.create(f"run-{address:x}.bin"), address
        view = memoryview(data)
        while view:
            view = view[os.write(run_fd, view) :]
        run_len += len(data)

    def bad(address: int, length: int, message: str) -> None:
        nonlocal refused_start, refused_len, refused_error
        flush_run()
        if not refused_len or refused_start + refused_len != address:
            flush_refused()
            refused_start, refused_error = address, message
        refused_len += length

    def read(address: int, length: int) -> tuple[bytes, str]:
        error = lldb.SBError()
        data = process.ReadMemory(address, length, error)
        return (data or b""), ("" if error.Success() else (error.GetCString() or "read failed"))

    try:
        address = start
        while address < end:
            want = min(CHUNK, end - address)
            data, message = read(address, want)
            if data:
                good(address, data)
            if len(data) < want:  # salvage the rest of the chunk page by page
                page_at = address + len(data)
                while page_at < address + want:
                    size = min(PAGE - page_at % PAGE, address + want - page_at)
                    page, page_message = read(page_at, size)
                    if page:
                        good(page_at, page)
                    if len(page) < size:
                        bad(page_at + len(page), size - len(page), page_message or message)
                    page_at += size
            address += want
    finally:
        flush_run()
        flush_refused()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lldb-python", required=True, help="directory holding lldb's module")
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--core", action="store_true", help="save a full core instead")
    parser.add_argument("--parent", type=int, default=0)
    args = parser.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _raise)
    # the harness blocks them while it starts us, and the mask is inherited
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    os.umask(0o077)
    writer = Writer(args.out)
    try:
        die_with_parent(args.parent)
        sys.path.insert(0, args.lldb_python)
        import lldb  # type: ignore[import-not-found]

        return run(lldb, args, writer)
    except Interrupted:
        writer.discard()
        return 130
    except BaseException:
        writer.discard()
        raise


def run(lldb: Any, args: argparse.Namespace, writer: Writer) -> int:
    lldb.SBDebugger.Initialize()
    debugger = lldb.SBDebugger.Create(False)
    debugger.SetAsync(False)
    process = None
    try:
        result = lldb.SBCommandReturnObject()
        for command in SETTINGS:
            debugger.GetCommandInterpreter().HandleCommand(command, result)
        target = debugger.CreateTarget("")
        error = lldb.SBError()
        started = time.monotonic()
        process = target.AttachToProcessWithID(lldb.SBListener(), args.pid, error)
        if not error.Success() or not process.IsValid():
            emit(event="error", stage="attach", message=error.GetCString() or "attach failed")
            process = None
            return 2
        emit(
            event="attached",
            lldb=lldb.SBDebugger.GetVersionString().splitlines()[0],
            seconds=round(time.monotonic() - started, 3),
        )
        if args.core:
            return save_core(lldb, process, writer)
        regions = process.GetMemoryRegions()
        info = lldb.SBMemoryRegionInfo()
        listed = []
        for i in range(regions.GetSize()):
            regions.GetMemoryRegionAtIndex(i, info)
            start, end = info.GetRegionBase(), info.GetRegionEnd()
            flags = (("r", info.IsReadable()), ("w", info.IsWritable()), ("x", info.IsExecutable()))
            perms = "".join(c if ok else "-" for c, ok in flags)
            emit(
                event="region",
                start=start,
                end=end,
                perms=perms,
                mapped=info.IsMapped(),
                name=info.GetName() or "",
            )
            if info.IsMapped() and info.IsReadable():
                listed.append((start, end))
        for start, end in listed:
            read_region(lldb, process, writer, start, end)
        return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal must not skip detach
            signal.signal(sig, signal.SIG_IGN)
        if process is not None:
            process.Detach()
            emit(event="detached")
        lldb.SBDebugger.Destroy(debugger)


def save_core(lldb: Any, process: Any, writer: Writer) -> int:
    name = "core.dmp"
    path = os.path.join(writer.out, name)
    writer.files.append(path)
    started = time.monotonic()
    # lldb-19 on Linux writes minidumps only (its ELF object plugin cannot save cores)
    error = process.SaveCore(path, "minidump", lldb.eSaveCoreFull)
    if not error.Success():
        emit(event="error", stage="save-core", message=error.GetCString() or "save-core failed")
        return 2
    os.chmod(path, 0o600)
    emit(
        event="core",
        file=name,
        bytes=os.path.getsize(path),
        seconds=round(time.monotonic() - started, 3),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
