"""python -m attacks.inject_api --pid N --needle-file F [--key-file K] [--json]"""

from ._front import run_front
from ._inject import InjectApi

if __name__ == "__main__":
    raise SystemExit(run_front(InjectApi))
