"""The live regions of a process, from whatever the platform offers.

Linux: /proc/PID/smaps (maps when smaps is refused). macOS: `vmmap -wide PID`, parsed by
`_vmmap` (tested on recorded outputs only: these machines run Linux).
"""

from __future__ import annotations

import sys

from ._regions import Region, read_regions


def live_regions(pid: int) -> list[Region]:
    """Raises FileNotFoundError (ProcessLookupError on macOS) when the process is gone."""
    if sys.platform == "darwin":
        from ._vmmap import vmmap_regions

        return vmmap_regions(pid)
    return read_regions(pid)[0]
