"""python -m attacks.gcore --pid N --needle-file F [--key-file K] [--json]"""

from ._front import run_front
from ._gcore import Gcore

if __name__ == "__main__":
    raise SystemExit(run_front(Gcore))
