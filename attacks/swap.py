"""python -m attacks.swap --pid N --needle-file F   (kills the target; needs root)"""

from ._front import run_front
from ._swap import Swap

if __name__ == "__main__":
    raise SystemExit(run_front(Swap))
