"""python -m attacks.lldb --pid N --needle-file F [--key-file K] [--json]"""

from ._front import run_front
from ._lldb import Lldb

if __name__ == "__main__":
    raise SystemExit(run_front(Lldb))
