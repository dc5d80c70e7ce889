"""The notebooks and `memlab report`, executed for real on a small real run: two designs
(the positive control and one protected design), proc-mem, every phase, a smoke bench.

The jupytext pairs are checked too: committed without outputs, .py and .ipynb in sync.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import memlab, needs_root

INSTALL = "pip install -e '.[notebooks]'"
ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
DESIGNS = ["plain", "hardened"]
FIGURES = [
    "01-heatmap-plaintext",
    "01-heatmap-key",
    "01-heatmap-blocked",
    "02-exposure-over-phases",
    "02-regions-plaintext",
    "02-regions-key",
    "03-latency",
    "03-throughput",
    "03-throughput-ratio",
    "03-scale",
    "04-verdicts",
]


def _need(module: str) -> None:
    pytest.importorskip(module, reason=f"{module} is not installed: {INSTALL}")


@pytest.fixture(scope="module")
def report_run(tmp_path_factory: pytest.TempPathFactory):
    """A real run (matrix + smoke bench), then `memlab report` on it as a user runs it."""
    for module in ("papermill", "nbconvert", "nbformat", "ipykernel"):
        _need(module)
    from memcryptor_lab.bench import run_bench
    from memcryptor_lab.lab import PHASES, LabSecrets, run_matrix

    truth = LabSecrets.generate("unicode")
    out = tmp_path_factory.mktemp("results")
    result = run_matrix(out, DESIGNS, ["proc-mem"], PHASES, lab_secrets=truth)
    run_bench(out, "smoke", designs=DESIGNS, run_dir=result.run_dir)
    # a path relative to where memlab runs, as `make lab` passes it
    relative = os.path.relpath(result.run_dir, ROOT)
    done = memlab("report", relative, "-p", "dpi=40", "--quiet")
    yield truth, result.run_dir, done
    truth.wipe()


@needs_root()
def test_report_writes_html_figures_and_tables(report_run) -> None:
    _, run_dir, done = report_run
    report = run_dir / "report.html"
    assert str(report) in done.stdout
    for name in FIGURES:
        png = run_dir / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    html = report.read_text()
    # every design and attack is in front of the reader, and no code is
    for word in [*DESIGNS, "proc-mem", "Review report", "Threat matrix", "Exposure over time"]:
        assert word in html, word
    assert "load_run(" not in html and "import " not in html
    assert html.count('src="data:image/png;base64,') >= len(FIGURES)
    # the executed notebooks stay in the run folder, with their outputs
    executed = sorted(p.stem for p in (run_dir / "notebooks").glob("*.ipynb"))
    assert executed == sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))


@needs_root()
def test_summary_tables_have_the_expected_rows(report_run) -> None:
    import pandas as pd

    _, run_dir, _ = report_run
    figures = run_dir / "figures"
    cells = pd.read_csv(figures / "01-cells.csv")
    # design x victim (subject, control) x attacker (root, same-user) x attack x phase
    assert len(cells) == len(DESIGNS) * 2 * 2 * 3
    assert set(cells.attacker) == {"root", "same-user"}
    assert set(cells.design) == set(DESIGNS) and set(cells.attack) == {"proc-mem"}
    recommendations = pd.read_csv(figures / "04-recommendations.csv")
    assert list(recommendations.design) == DESIGNS
    verdicts = pd.read_csv(figures / "04-verdicts.csv")
    root = verdicts[verdicts.attacker == "root"].set_index("design")
    same_user = verdicts[verdicts.attacker == "same-user"].set_index("design")
    # the positive control loses its key; the protected design loses none and shows
    # plaintext at most while it is in use (measured here: the reveal slot)
    assert root.at["plain", "verdict"] == "key" and same_user.at["plain", "verdict"] == "key"
    assert root.at["hardened", "verdict"] in ("in-use", "clean", "blocked")
    assert same_user.at["hardened", "verdict"] == "blocked"  # non-dumpable: refused
    controls = pd.read_csv(figures / "01-controls.csv")
    assert controls.drop(columns=["design", "attack", "cells checked"]).sum().sum() == 0
    deployments = pd.read_csv(figures / "04-deployments.csv")
    assert len(deployments) == 3
    goals = pd.read_csv(figures / "03-costs.csv")
    assert list(goals.design) == DESIGNS


@needs_root()
def test_report_holds_no_secret_bytes(report_run) -> None:
    from attacks.scan import NeedleSet, Scanner, Secret
    from attacks.sources import FileSource

    truth, run_dir, _ = report_run
    scanner = Scanner(
        NeedleSet(
            [Secret("plaintext", bytes(truth.plaintext), True), Secret("key", bytes(truth.key))]
        )
    )
    files = [run_dir / "report.html", *(run_dir / "notebooks").glob("*.ipynb")]
    files += (run_dir / "figures").glob("*.csv")
    for path in files:
        assert not scanner.scan(FileSource(path)), path.name


@needs_root()
def test_publish_copies_summaries_not_hits(report_run, tmp_path: Path) -> None:
    from memcryptor_lab.report import ReportError, publish

    _, run_dir, _ = report_run
    dest = publish(run_dir, tmp_path / "reference")
    names = {p.name for p in dest.iterdir()}
    # summary.csv too when `memlab run` made the run; never hits (addresses) or raw rows
    assert names >= {"meta.json", "bench.csv", "report.html", "figures"}
    assert not names & {"hits.csv", "results.csv", "notebooks"}
    assert (dest / "figures" / "04-verdicts.png").exists()
    # a partial run never becomes the reference
    partial = tmp_path / "partial"
    shutil.copytree(run_dir, partial)
    meta = json.loads((partial / "meta.json").read_text())
    (partial / "meta.json").write_text(json.dumps({**meta, "status": "interrupted"}))
    with pytest.raises(ReportError, match="not complete"):
        publish(partial, tmp_path / "reference")
    assert (tmp_path / "reference" / "report.html").exists()  # the old one stays


def test_report_names_the_fix_for_a_folder_without_runs(tmp_path: Path, capsys) -> None:
    from memcryptor_lab._cli import main

    assert main(["report", str(tmp_path), "--quiet"]) == 2
    assert "memlab run --out" in capsys.readouterr().err


@needs_root()
def test_screenshot_shows_the_figures(report_run, tmp_path: Path) -> None:
    """The report renders in a real browser: the verdict grid's colours are on screen."""
    if not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")):
        pytest.skip("chromium is not installed: apt-get install -y chromium (as root)")
    from PIL import Image

    from memcryptor_lab.report.matrix import VERDICTS

    _, run_dir, _ = report_run
    png = tmp_path / "report.png"
    subprocess.run(
        [str(ROOT / "scripts" / "screenshot-report"), str(run_dir / "report.html"), str(png)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    image = Image.open(png).convert("RGB")
    assert image.size == (1400, 4000)
    colours = {c for _, c in image.getcolors(maxcolors=1 << 20) or []}
    key_found = tuple(int(VERDICTS["key"][1][i : i + 2], 16) for i in (1, 3, 5))
    assert key_found in colours  # the verdict grid (a PNG in the page) was drawn
    assert len(colours) > 50  # not a blank or error page


def test_committed_notebooks_have_no_outputs_and_pairs_are_in_sync() -> None:
    _need("jupytext")
    import jupytext
    import nbformat

    from memcryptor_lab.report import NOTEBOOKS

    assert sorted(p.stem for p in NOTEBOOK_DIR.glob("*.py")) == sorted(NOTEBOOKS)
    assert sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)

    def cells(book: nbformat.NotebookNode) -> list[tuple[str, str, list[str]]]:
        return [
            (c.cell_type, c.source.strip(), list(c.get("metadata", {}).get("tags", [])))
            for c in book.cells
        ]

    for name in NOTEBOOKS:
        stored = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
        for cell in stored.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, name
        assert "widgets" not in stored.metadata and "papermill" not in stored.metadata, name
        paired = jupytext.read(NOTEBOOK_DIR / f"{name}.py")
        assert cells(paired) == cells(stored), f"{name}: run `jupytext --sync notebooks/*.py`"
        parameters = [c for c in stored.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(parameters) == 1 and "run_dir" in parameters[0].source, name


@needs_root()
def test_rendering_takes_attackers_attacks_and_phases_it_has_not_seen(report_run) -> None:
    """The lab gains attackers, attacks and phases; the report must show them without a
    change. Relabelled copies of this run's real rows stand in for them here (rendering
    only: nothing below is presented as a measurement)."""
    import pandas as pd

    from memcryptor_lab.lab import PHASE_ORDER, load_results
    from memcryptor_lab.report import exposure, matrix, recommend

    _, run_dir, _ = report_run
    rows = load_results(run_dir)
    hits = load_results(run_dir, "hits")
    extra = [
        rows.assign(attacker="same-user"),
        rows.assign(attack="lldb", artefact="debugger-live"),
        rows[rows.phase == "released"].assign(phase="after-gc"),
        rows[rows.phase == "released"].assign(phase="after-exit", attack="swap", artefact="swap"),
    ]
    wider = pd.concat([rows, *extra], ignore_index=True)
    wider_hits = pd.concat([hits, hits.assign(attacker="same-user")], ignore_index=True)
    cells = matrix.cells(wider)
    phases = [p for p in PHASE_ORDER if p in set(cells.phase)]
    assert phases == ["at-rest", "in-use", "released", "after-gc", "after-exit"]
    for metric in matrix.METRICS:
        fig = matrix.heatmap(cells, metric)
        titles = {ax.get_title() for ax in fig.axes}
        assert {"same-user · after-gc", "root · after-exit"} <= titles
        assert "lldb" in {t.get_text() for t in fig.axes[0].get_xticklabels()}
    verdicts = matrix.verdicts(cells)
    assert {"same-user · live-memory", "root · swap", "root · debugger-live"} <= set(
        verdicts.threat
    )
    assert set(matrix.recommendations(verdicts).design) == set(DESIGNS)
    table = recommend.scenario_table(verdicts)
    assert (table["attackers not measured in this run"] != "none").sum() == 1  # other-user
    exposure.exposure_figure(cells)
    exposure.region_figure(exposure.region_table(wider_hits), cells)
    assert set(exposure.exposure_table(cells).attacker) == {"root", "same-user"}
