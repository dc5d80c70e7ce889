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

import gdb  # type: ignore[import-not-found]

PROT_READ = 1


def _call(expression: str) -> int:
    return int(gdb.parse_and_eval(expression))


def _errno() -> int:
    return _call("(int)*(int*)__errno_location()")


def _copy_out(plan: dict) -> dict:  # type: ignore[type-arg]
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = _call(f'(int)open("{plan["image"]}", {flags}, 0600)')
    if fd < 0:
        return {"error": f"open in the target failed: errno {_errno()}"}
    written = []
    for start, length, prot, opened in plan["regions"]:
        if opened and _call(f"(int)mprotect({start}, {length}, {PROT_READ})") != 0:
            written.append([start, -_errno()])
            continue
        done = 0
        while done < length:
            n = _call(f"(long)write({fd}, {start + done}, {length - done})")
            if n <= 0:
                done = -_errno() if n < 0 and done == 0 else done
                break
            done += n
        if opened:
            _call(f"(int)mprotect({start}, {length}, {prot})")
        written.append([start, done])
    _call(f"(int)close({fd})")
    return {"written": written}


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
