"""Runs inside gdb (`gdb -batch -p PID -x this-file`), not in the harness.

The plan comes in the file named by $MEMLAB_INJECT_PLAN (JSON); one JSON line starting
with MEMLAB-INJECT goes to stdout with what the target did. Two plans:

- "copy-out": the target writes each region of its own memory to a file with `write(2)`.
  The kernel reads those pages as the target itself, so memory that refuses every other
  reader (memfd_secret) comes out too; PROT_NONE regions are opened with the target's
  own `mprotect` for the copy and closed again.
- "python": the target runs Python code (`PyRun_SimpleString` under the GIL, taken with
  `PyGILState_Ensure` the way pyrasite does) from a file.
"""

import json
import os
import struct

import gdb  # type: ignore[import-not-found]

PROT_READ = 1
IOV_MAX = 1024


def _call(expression: str) -> int:
    return int(gdb.parse_and_eval(expression))


def _errno() -> int:
    return _call("(int)*(int*)__errno_location()")


def _copy_out(plan: dict) -> dict:  # type: ignore[type-arg]
    """Regions go out in batches of one writev(2) each (an inferior call costs tens of
    milliseconds; one per region made this 9 s on a small process). The iovec array lives
    in a page the target maps for us and unmaps after."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = _call(f'(int)open("{plan["image"]}", {flags}, 0600)')
    if fd < 0:
        return {"error": f"open in the target failed: errno {_errno()}"}
    regions = plan["regions"]
    done = {start: 0 for start, *_ in regions}
    readable = []
    for start, length, _prot, opened in regions:
        if opened and _call(f"(int)mprotect({start}, {length}, {PROT_READ})") != 0:
            done[start] = -_errno()
            continue
        readable.append((start, length))
    iov = _call(f"(long)mmap(0, {IOV_MAX * 16}, 3, 0x22, -1, 0)")  # rw, private|anonymous
    inferior = gdb.selected_inferior()
    try:
        i = 0
        while i < len(readable):
            batch = readable[i : i + IOV_MAX]
            inferior.write_memory(iov, b"".join(struct.pack("<QQ", a, n) for a, n in batch))
            wrote = _call(f"(long)writev({fd}, {iov}, {len(batch)})")
            if wrote < 0:  # the first region failed as a whole: note it, go on after it
                done[batch[0][0]] = -_errno()
                i += 1
                continue
            for start, length in batch:  # full regions, then at most one partial one
                part = min(wrote, length)
                done[start], wrote = part, wrote - part
                i += 1
                if part < length:
                    break
    finally:
        _call(f"(int)munmap({iov}, {IOV_MAX * 16})")
        for start, length, prot, opened in regions:
            if opened:
                _call(f"(int)mprotect({start}, {length}, {prot})")
        _call(f"(int)close({fd})")
    # in file order (the order of `readable`), then the regions that could not be opened
    unopened = [[start, done[start]] for start, *_ in regions if done[start] < 0]
    return {"written": [[start, done[start]] for start, _ in readable] + unopened}


def _python(plan: dict) -> dict:  # type: ignore[type-arg]
    state = _call("(int)PyGILState_Ensure()")
    try:
        code = f"exec(open({plan['payload']!r}).read())"
        status = _call(f'(int)PyRun_SimpleString("{code}")')
    finally:
        gdb.execute(f"call (void)PyGILState_Release({state})", to_string=True)
    return {"status": status}


def main() -> None:
    gdb.execute("set confirm off")
    gdb.execute("set pagination off")
    with open(os.environ["MEMLAB_INJECT_PLAN"]) as handle:
        plan = json.load(handle)
    try:
        result = _copy_out(plan) if plan["kind"] == "copy-out" else _python(plan)
    except gdb.error as exc:
        result = {"error": f"gdb: {exc}"}
    finally:
        gdb.execute("detach")
    print("MEMLAB-INJECT " + json.dumps(result), flush=True)


main()
