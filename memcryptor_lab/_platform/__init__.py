"""The small platform layer: everything OS-specific the library and lab need.

Linux is implemented and tested here; macOS has what the library needs to import and run
its portable designs. Callers import from this package, never from `linux`/`darwin`.
"""

from __future__ import annotations

import sys

if sys.platform.startswith("linux"):
    from .linux import die_with_parent, fill_random, set_dumpable
elif sys.platform == "darwin":
    from .darwin import die_with_parent, fill_random, set_dumpable
else:  # pragma: no cover - reported, not guessed
    raise ImportError(f"memcryptor_lab has no platform layer for {sys.platform!r}")

__all__ = ["die_with_parent", "fill_random", "set_dumpable"]
