"""python -m attacks.inject --pid N --needle-file F [--key-file K] [--json]"""

from ._front import run_front
from ._inject import Inject

if __name__ == "__main__":
    raise SystemExit(run_front(Inject))
