"""memlab subcommands as a user runs them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import Holder, memlab, needs_root


def test_designs_and_attacks_are_listed() -> None:
    designs = memlab("designs").stdout
    assert "plain" in designs and "inproc-aead" in designs
    assert "proc-mem" in memlab("attacks").stdout


def test_scan_a_file(tmp_path: Path) -> None:
    secret = os.urandom(32)
    image = tmp_path / "dump.bin"
    image.write_bytes(os.urandom(5000) + secret.hex().encode() + os.urandom(100))
    needle = tmp_path / "needle"
    needle.write_bytes(secret)
    report = json.loads(memlab("scan", str(image), "--needle-file", str(needle), "--json").stdout)
    copies = {(f["encoding"], f["form"]): f["copies"] for f in report["findings"]}
    assert copies[("hex", "full")] == 1 and copies[("raw", "full")] == 0
    assert report["bytes_scanned"] == 5000 + 64 + 100


@needs_root()
def test_attack_any_pid(holder: Holder, tmp_path: Path) -> None:
    needle = tmp_path / "needle"
    needle.write_bytes(holder.marker)
    out = memlab("attack", "proc-mem", "--pid", str(holder.pid), "--needle-file", str(needle))
    assert "proc-mem" in out.stdout and "raw" in out.stdout
    assert holder.marker.hex() not in out.stdout
