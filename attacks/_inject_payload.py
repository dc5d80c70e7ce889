"""Runs inside the target (exec'ed by `inject-api` through PyRun_SimpleString).

It does what code an attacker got into the process can do: find the secrets the program
holds through the protector library's *public* API (`Sealed.reveal()`, the call the
program itself makes) and write them out. Variables come from the exec'ed prefix:
`_memlab_image` (where to write), `_memlab_report` (counts, as JSON). It writes no secret
anywhere but the image file, and only exception type names to the report.
"""


def _memlab_inject() -> None:
    import gc
    import json
    import os
    import sys

    report: dict[str, object] = {"library": "memcryptor_lab" in sys.modules}
    revealed, failures = 0, []
    out = os.open(_memlab_image, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # type: ignore[name-defined]  # noqa: F821
    try:
        if report["library"]:
            sealed_type = sys.modules["memcryptor_lab"].Sealed
            for obj in gc.get_objects():
                if isinstance(obj, sealed_type):
                    try:
                        with obj.reveal() as view:
                            os.write(out, view)
                        revealed += 1
                    except Exception as exc:  # a destroyed secret, a broker gone...
                        failures.append(type(exc).__name__)
    finally:
        os.close(out)
    report.update(revealed=revealed, failures=failures)
    with open(_memlab_report, "w") as handle:  # type: ignore[name-defined]  # noqa: F821
        json.dump(report, handle)


_memlab_inject()
