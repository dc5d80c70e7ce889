"""memlab: list designs and attacks, run the matrix, render its report, attack a process,
scan a file."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def _csv_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _cmd_designs(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ._registry import DESIGNS

    table = Table("design", "runs here", "key lives in", "summary")
    for name, cls in DESIGNS.items():
        reason = cls.supported()
        table.add_row(
            name, "yes" if reason is None else f"no: {reason}", cls.key_location, cls.summary
        )
    Console().print(table)
    return 0


def _cmd_attacks(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from attacks import ATTACKS

    table = Table("attack", "artefact", "runs here", "summary")
    for name, cls in ATTACKS.items():
        reason = cls.supported()
        table.add_row(name, cls.artefact, "yes" if reason is None else f"no: {reason}", cls.summary)
    Console().print(table)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from attacks import ATTACKS

    from ._registry import DESIGNS
    from .lab._phases import EXPOSURE_PHASES
    from .lab.matrix import run_matrix
    from .lab.render import SUMMARY_COLUMNS, print_summary, summarize_rows

    designs = args.designs or list(DESIGNS)
    attacks = args.attacks or list(ATTACKS)
    phases = list(EXPOSURE_PHASES) if args.exposure else args.phases
    total = len(args.attackers) * len(designs) * 2 * len(phases) * len(attacks)
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        disable=args.quiet,
    ) as progress:
        task = progress.add_task("matrix", total=total)

        def step(label: str) -> None:
            progress.update(task, advance=1, description=label)

        result = run_matrix(
            args.out,
            designs,
            attacks,
            phases,
            attackers=args.attackers,
            secret_kind=args.secret_kind,
            keep_artefacts=args.keep_artefacts,
            progress=step,
        )
    summary = summarize_rows(result.rows)
    with open(result.run_dir / "summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(summary)
    print_summary(summary)
    print(f"{len(result.rows)} rows in {result.run_dir} ({result.duration_s:.1f} s)")
    if args.bench != "none":
        _bench(args, result.run_dir)
    return 0


def _bench(args: argparse.Namespace, run_dir: Path | None) -> Path:
    from rich.console import Console

    from .bench import run_bench
    from .lab.render import print_bench

    console = Console(stderr=True)
    with console.status("bench") as status:
        run_dir, rows = run_bench(
            args.out,
            args.bench,
            designs=args.designs,
            run_dir=run_dir,
            progress=None if args.quiet else lambda label: status.update(f"bench: {label}"),
        )
    print_bench(rows)
    print(f"{len(rows)} bench rows in {run_dir / 'bench.csv'}")
    return run_dir


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.full:
        args.bench = "full"
    _bench(args, None)
    return 0


def _notebook_parameter(text: str) -> tuple[str, object]:
    import json

    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def _cmd_report(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .report import ReportError, build_report, publish

    console = Console(stderr=True)
    try:
        with console.status("report") as status:
            path = build_report(
                args.run_dir,
                notebooks=args.notebooks,
                parameters=dict(args.parameter or []),
                timeout=args.timeout,
                progress=None if args.quiet else lambda name: status.update(f"report: {name}"),
            )
        figures = sorted((path.parent / "figures").glob("*.png"))
        print(f"{path} ({len(figures)} figures in {path.parent / 'figures'})")
        if args.publish:
            print(f"published to {publish(path.parent, args.publish)}")
    except ReportError as exc:
        print(f"memlab report: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_scan(args: argparse.Namespace) -> int:
    import json
    import time
    from collections.abc import Iterator

    from attacks import OK, AttackOutcome
    from attacks._front import (
        outcome_dict,
        print_outcome,
        print_schedule_hits,
        scanner_from_args,
        schedule_scanner_from_args,
    )
    from attacks.sources import Chunk, FileSource

    if not (args.needle_file or args.key_file or args.key_schedules):
        raise SystemExit("give at least one --needle-file or --key-file, or --key-schedules")
    scanner = scanner_from_args(args) if args.needle_file or args.key_file else None
    schedules = (
        schedule_scanner_from_args(args, salt=scanner.needles.salt if scanner else None)
        if args.key_schedules
        else None
    )
    source = FileSource(args.file)
    session = schedules.session() if schedules is not None else None

    def chunks() -> Iterator[Chunk]:  # one read of the file feeds both scanners
        for chunk in source.chunks():
            if session is not None:
                session.feed(chunk)
            yield chunk

    started = time.perf_counter()
    if scanner is not None:
        hits = scanner.scan_chunks(chunks(), source.regions())
    else:
        hits = []
        for _ in chunks():
            pass
    schedule_hits = session.finish(source.regions()) if session is not None else []
    outcome = AttackOutcome(
        "scan",
        "n/a",
        "file",
        0,
        OK,
        findings=scanner.summarize(hits) if scanner is not None else [],
        hits=hits,
        stats=source.stats,
        duration_s=time.perf_counter() - started,
        regions_total=1,
    )
    if args.json:
        report = outcome_dict(outcome)
        if schedules is not None:
            report["key_schedule_tolerance"] = schedules.tolerance
            report["key_schedules"] = [h.as_dict() for h in schedule_hits]
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    print_outcome(outcome, needles=scanner is not None)
    if schedules is not None:
        print_schedule_hits(schedule_hits, schedules.tolerance)
    return 0


def _cmd_attack(args: argparse.Namespace) -> int:
    from attacks import ATTACKS
    from attacks._front import print_outcome, scanner_from_args

    outcome = ATTACKS[args.name]().run(args.pid, scanner_from_args(args))
    print_outcome(outcome, as_json=args.json)
    return 0 if outcome.status in ("ok", "blocked", "skipped") else 1


def _cmd_broker(args: argparse.Namespace) -> int:
    import os

    from .broker.daemon import BrokerConfig, default_socket_path, run

    address = f"@{args.abstract}" if args.abstract else (args.socket or default_socket_path())
    uids = frozenset(args.allow_uid or [os.geteuid()])
    config = BrokerConfig(address, uids, frozenset(args.allow_exe or ()), args.identity)
    return run(config)


def build_parser() -> argparse.ArgumentParser:
    from attacks import ATTACKS
    from attacks._front import needle_arguments, schedule_arguments

    from ._registry import DESIGNS
    from .bench import PROFILES
    from .lab._attacker import ATTACKER_CLASSES
    from .lab._phases import EXPOSURE_PHASES, PHASES
    from .lab.matrix import SECRET_KINDS

    parser = argparse.ArgumentParser(prog="memlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("designs", help="list designs and whether they run here").set_defaults(
        func=_cmd_designs
    )
    sub.add_parser("attacks", help="list attacks and whether they run here").set_defaults(
        func=_cmd_attacks
    )

    run = sub.add_parser("run", help="run designs x attacks x phases, write results/<run-id>/")
    run.add_argument("--designs", type=_csv_list, help=f"comma list of {', '.join(DESIGNS)}")
    run.add_argument("--attacks", type=_csv_list, help=f"comma list of {', '.join(ATTACKS)}")
    run.add_argument(
        "--phases",
        type=_csv_list,
        default=list(PHASES),
        help=f"comma list of {', '.join(EXPOSURE_PHASES)} (default: {', '.join(PHASES)})",
    )
    run.add_argument(
        "--exposure",
        action="store_true",
        help="all phases: also 1 s and 10 s after release and after a forced GC",
    )
    run.add_argument(
        "--attackers",
        type=_csv_list,
        default=list(ATTACKER_CLASSES),
        help=f"comma list of attacker classes: {', '.join(ATTACKER_CLASSES)}",
    )
    run.add_argument("--out", type=Path, default=Path("results"))
    run.add_argument("--secret-kind", choices=SECRET_KINDS, default="unicode")
    run.add_argument(
        "--keep-artefacts",
        action="store_true",
        help="keep dumps and cores in the private temp dir (they hold secrets)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress display")
    run.add_argument(
        "--bench",
        choices=["none", *PROFILES],
        default="none",
        help="also run this bench profile into the same run folder",
    )
    run.set_defaults(func=_cmd_run)

    bench = sub.add_parser("bench", help="latency, throughput and scale against baselines")
    bench.add_argument("--profile", dest="bench", choices=list(PROFILES), default="quick")
    bench.add_argument("--full", action="store_true", help="the whole sweep (profile full)")
    bench.add_argument("--designs", type=_csv_list, help=f"comma list of {', '.join(DESIGNS)}")
    bench.add_argument("--out", type=Path, default=Path("results"))
    bench.add_argument("--quiet", action="store_true", help="no progress display")
    bench.set_defaults(func=_cmd_bench)

    report = sub.add_parser(
        "report", help="execute the notebooks on a run and write RUN_DIR/report.html"
    )
    report.add_argument(
        "run_dir", type=Path, help="a run folder, or a results folder (then its newest run)"
    )
    report.add_argument("--notebooks", type=Path, help="notebook folder (default: the checkout's)")
    report.add_argument(
        "--publish",
        type=Path,
        metavar="DIR",
        help="then replace DIR (results/reference) with the run's summaries, figures and "
        "report; only a complete run with its bench",
    )
    report.add_argument(
        "-p",
        "--parameter",
        type=_notebook_parameter,
        action="append",
        metavar="NAME=VALUE",
        help="a notebook parameter (repeatable), e.g. -p dpi=80; VALUE is read as JSON, "
        "else taken as a string",
    )
    report.add_argument("--timeout", type=int, default=900, help="seconds per notebook cell")
    report.add_argument("--quiet", action="store_true", help="no progress display")
    report.set_defaults(func=_cmd_report)

    scan = sub.add_parser(
        "scan", help="scan any dump or image file for needles and AES key schedules"
    )
    scan.add_argument("file", type=Path)
    needle_arguments(scan)
    schedule_arguments(scan)
    scan.add_argument("--json", action="store_true")
    scan.set_defaults(func=_cmd_scan)

    broker = sub.add_parser("broker", help="run the key-holder daemon (the broker design)")
    where = broker.add_mutually_exclusive_group()
    where.add_argument("--socket", help="socket path (its directory is made 0700)")
    where.add_argument("--abstract", help="an abstract socket name instead of a path")
    broker.add_argument(
        "--allow-uid",
        type=int,
        action="append",
        help="uid allowed to connect (repeatable; default: this uid)",
    )
    broker.add_argument(
        "--allow-exe",
        action="append",
        help="executable allowed to connect (repeatable; default: any)",
    )
    broker.add_argument(
        "--identity",
        choices=["uid", "uid+exe", "process"],
        default="uid",
        help="key scope: per uid (like SAME_LOGON), per uid and executable, "
        "or per process (like SAME_PROCESS)",
    )
    broker.set_defaults(func=_cmd_broker)

    attack = sub.add_parser("attack", help="run one attack on any process")
    attack.add_argument("name", choices=list(ATTACKS))
    attack.add_argument("--pid", type=int, required=True)
    needle_arguments(attack)
    attack.add_argument("--json", action="store_true")
    attack.set_defaults(func=_cmd_attack)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted: victims reaped, temporary files removed", file=sys.stderr)
        return 130
