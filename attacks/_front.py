"""The command-line front shared by every attack: `python -m attacks.<name> --pid N ...`."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from ._base import Attack, AttackOutcome
from .scan import (
    DEFAULT_TOLERANCE,
    MAX_TOLERANCE,
    KeyScheduleError,
    KeyScheduleScanner,
    NeedleSet,
    Scanner,
    ScheduleHit,
    secrets_from_files,
)


def needle_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--needle-file",
        action="append",
        default=[],
        metavar="F",
        help="file whose whole content is a secret to look for (repeatable)",
    )
    parser.add_argument(
        "--key-file",
        action="append",
        default=[],
        metavar="F",
        help="file holding a raw key to look for (repeatable)",
    )
    parser.add_argument(
        "--keep-newline",
        action="store_true",
        help="do not drop one trailing newline from needle files",
    )
    parser.add_argument("--engine", default="auto", choices=["auto", "hyperscan", "python"])


def schedule_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key-schedules",
        action="store_true",
        help="also search AES key schedules blind (every one, any key); --key-file keys "
        "are marked when found",
    )
    parser.add_argument(
        "--tolerance",
        type=int,
        default=DEFAULT_TOLERANCE,
        metavar="N",
        help=f"bit errors allowed per key schedule (0..{MAX_TOLERANCE}, default "
        f"{DEFAULT_TOLERANCE}; 0 is the fast exact mode)",
    )


def schedule_scanner_from_args(
    args: argparse.Namespace, salt: bytes | None = None
) -> KeyScheduleScanner:
    """Blind key-schedule search; the --key-file keys of AES size are the known keys."""
    known: dict[str, bytes] = {}
    for index, path in enumerate(args.key_file, 1):
        with open(path, "rb") as handle:
            key = handle.read()
        if len(key) not in (16, 24, 32):
            raise SystemExit(
                f"--key-file {path} holds {len(key)} bytes; an AES key is 16, 24 or 32 "
                "(drop --key-schedules to search this key only as a needle)"
            )
        known["key" if index == 1 else f"key{index}"] = key
    try:
        return KeyScheduleScanner(tolerance=args.tolerance, known_keys=known, salt=salt)
    except KeyScheduleError as exc:
        raise SystemExit(str(exc)) from None


def scanner_from_args(args: argparse.Namespace) -> Scanner:
    if not args.needle_file and not args.key_file:
        raise SystemExit("give at least one --needle-file or --key-file")
    secrets = secrets_from_files(
        args.needle_file, args.key_file, strip_newline=not args.keep_newline
    )
    return Scanner(NeedleSet(secrets), engine=args.engine)


def run_front(attack_cls: type[Attack], argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m attacks.{attack_cls.name.replace('-', '_')}",
        description=attack_cls.summary,
    )
    parser.add_argument("--pid", type=int, required=True, help="process to attack")
    needle_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    args = parser.parse_args(argv)
    scanner = scanner_from_args(args)
    outcome = attack_cls().run(args.pid, scanner)
    print_outcome(outcome, as_json=args.json)
    moments = [outcome] + [later for _, later in outcome.follow_ups]
    return 0 if all(o.status in ("ok", "blocked") for o in moments) else 1


def outcome_dict(outcome: AttackOutcome) -> dict[str, object]:
    return {
        "attack": outcome.attack,
        "attacker": outcome.attacker,
        "artefact": outcome.artefact,
        "pid": outcome.pid,
        "status": outcome.status,
        "reason": outcome.reason,
        "duration_s": round(outcome.duration_s, 4),
        "regions_total": outcome.regions_total,
        "bytes_scanned": outcome.stats.bytes_read,
        "bytes_unreadable": outcome.stats.bytes_unreadable,
        "read_errors": dict(outcome.stats.errors),
        "findings": [asdict(f) for f in outcome.findings],
        "follow_ups": {moment: outcome_dict(later) for moment, later in outcome.follow_ups},
    }


def print_schedule_hits(hits: list[ScheduleHit], tolerance: int) -> None:
    """The key schedules found: where, which layout, how many bit errors, the key's id."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    console.print(
        f"[bold]AES key schedules[/]: {len(hits)} found (up to {tolerance} bit errors each)"
    )
    table = Table(
        "offset", "key bits", "direction", "byte order", "bit errors", "key id", "known", "region"
    )
    for h in hits:
        table.add_row(
            f"{h.address:#x}",
            str(h.key_bits),
            h.direction,
            h.byte_order,
            str(h.bit_errors),
            h.key_id,
            h.known or "-",
            escape(h.region.describe()) if h.region is not None else "",
        )
    console.print(table)


def print_outcome(
    outcome: AttackOutcome, *, as_json: bool = False, needles: bool = True, moment: str = ""
) -> None:
    if as_json:
        json.dump(outcome_dict(outcome), sys.stdout, indent=2)
        print()
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    stats = outcome.stats
    console.print(
        f"[bold]{outcome.attack}{' ' + moment if moment else ''}[/] pid {outcome.pid} "
        f"as {outcome.attacker}: {outcome.status}"
        f"{' - ' + outcome.reason if outcome.reason else ''}\n"
        f"{outcome.regions_total} regions, {stats.bytes_read / 2**20:.1f} MiB scanned, "
        f"{stats.bytes_unreadable / 2**20:.2f} MiB unreadable "
        f"({stats.errors_text() or 'no read errors'}), {outcome.duration_s:.2f} s"
    )
    if needles:
        table = Table("needle", "encoding", "form", "id", "hits", "copies", "regions")
        for f in outcome.findings:
            if f.status != "ok":
                continue
            table.add_row(
                f.kind,
                f.encoding,
                f.form,
                f.needle_id,
                str(f.hits),
                str(f.copies),
                escape("; ".join(f.regions[:3])) + (" ..." if len(f.regions) > 3 else ""),
            )
        console.print(table)
    for later_moment, later in outcome.follow_ups:
        print_outcome(later, needles=needles, moment=later_moment)
