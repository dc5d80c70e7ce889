"""python -m attacks.lldb_core --pid N --needle-file F [--key-file K] [--json]"""

from ._front import run_front
from ._lldb import LldbCore

if __name__ == "__main__":
    raise SystemExit(run_front(LldbCore))
