"""The small platform layer: everything OS-specific the library and lab need.

Linux is implemented and tested here; macOS has what the portable designs need, and the
hardened designs report through `supported()` that they are Linux-only for now. Callers
import from this package, never from `linux`/`darwin`.
"""

from __future__ import annotations

import sys

if sys.platform.startswith("linux"):
    from . import linux as native
    from .linux import die_with_parent, fill_random, set_dumpable
elif sys.platform == "darwin":
    from . import darwin as native
    from .darwin import die_with_parent, fill_random, set_dumpable
else:  # pragma: no cover - reported, not guessed
    raise ImportError(f"memcryptor_lab has no platform layer for {sys.platform!r}")

IS_LINUX = sys.platform.startswith("linux")

__all__ = ["IS_LINUX", "die_with_parent", "fill_random", "native", "set_dumpable"]
