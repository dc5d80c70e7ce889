"""`memlab report RUN_DIR`: execute the notebooks on a run with papermill and render them
as one HTML report without code; `--publish DIR` copies the result to results/reference."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..lab.results import BENCH_FILE, META_FILE, RESULTS_FILE, resolve_run_dir

NOTEBOOKS = (
    "01-threat-matrix",
    "02-exposure-over-time",
    "03-throughput-and-scale",
    "04-review-report",
)
# the review comes first in the HTML: most readers stop there; the others are its evidence
REPORT_ORDER = (
    "04-review-report",
    "01-threat-matrix",
    "02-exposure-over-time",
    "03-throughput-and-scale",
)
TITLES = {
    "04-review-report": "Review report: findings and recommendations",
    "01-threat-matrix": "Threat matrix: every design against every attack",
    "02-exposure-over-time": "Exposure over time: copies per phase, and where they lie",
    "03-throughput-and-scale": "Throughput and scale: what each design costs",
}
REPORT_FILE = "report.html"
EXECUTED_DIR = "notebooks"  # the executed notebooks, with outputs, inside the run folder
# what a reference copy holds: summaries, figures, the report; no hits (addresses), no rows
PUBLISHED = (META_FILE, "summary.csv", BENCH_FILE, REPORT_FILE, "figures")
INSTALL = "pip install -e '.[notebooks]'"


class ReportError(RuntimeError):
    """The report cannot be built or published; the message says how to fix it."""


def notebooks_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The folder with the notebook sources: given, or `notebooks/` of this checkout."""
    folder = Path(path) if path else Path(__file__).resolve().parents[2] / "notebooks"
    missing = [n for n in NOTEBOOKS if not (folder / f"{n}.ipynb").exists()]
    if missing:
        raise ReportError(
            f"notebooks {', '.join(missing)} not found in {folder}: run from a checkout of "
            "memcryptor-lab, or pass --notebooks DIR (regenerate the .ipynb from the .py "
            "with `jupytext --sync notebooks/*.py`)"
        )
    return folder


def _require() -> None:
    try:
        import nbconvert  # noqa: F401
        import nbformat  # noqa: F401
        import papermill  # noqa: F401
    except ImportError as exc:
        raise ReportError(f"{exc.name} is not installed: {INSTALL}") from None


@contextlib.contextmanager
def _kernel_imports_this_package() -> Iterator[None]:
    """The kernels import the same memcryptor_lab as the caller (a checkout that is not
    installed included): its parent goes first on the kernels' PYTHONPATH."""
    root = str(Path(__file__).resolve().parents[2])
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([root, *([previous] if previous else [])])
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous


def _ipc_kernel_manager(sockets: Path) -> type:
    """Kernels that talk over Unix sockets in `sockets` (a private 0700 directory) instead
    of TCP on localhost, where other local users could reach them and ipykernel warns of
    unencrypted traffic. Each kernel gets its own socket names: jupyter_client's default
    ('kernel-ipc' in the working directory) is shared by kernels running side by side."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import CaselessStrEnum, default

    class IPCKernelManager(AsyncKernelManager):  # type: ignore[misc]
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

        @default("ip")
        def _ip_default(self) -> str:
            return str(sockets / f"kernel-{uuid.uuid4().hex[:16]}")

        async def _async_interrupt_kernel(self) -> None:
            # jupyter_client sends SIGINT before a shutdown request; an idle kernel then
            # logs "ERROR | KeyboardInterrupt caught in kernel". The request alone is clean.
            if not self.shutting_down:
                await super()._async_interrupt_kernel()

    return IPCKernelManager


def execute_notebooks(
    run_dir: Path,
    *,
    notebooks: str | os.PathLike[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    timeout: int = 900,
    progress: Callable[[str], None] | None = None,
    workers: int | None = None,
) -> dict[str, Path]:
    """Run every notebook on `run_dir` (papermill), writing `RUN_DIR/notebooks/*.ipynb`.

    The notebooks are independent (each reads the run, writes its own figures), so they run
    side by side, one kernel each, up to one per CPU."""
    _require()
    import papermill

    source = notebooks_dir(notebooks)
    out = run_dir / EXECUTED_DIR
    out.mkdir(exist_ok=True)

    def execute(name: str) -> Path:
        if progress:
            progress(name)
        target = out / f"{name}.ipynb"
        try:
            papermill.execute_notebook(
                str(source / f"{name}.ipynb"),
                str(target),
                parameters={"run_dir": str(run_dir), **(parameters or {})},
                kernel_name="python3",
                cwd=str(run_dir),
                progress_bar=False,
                execution_timeout=timeout,
                kernel_manager_class=manager,
            )
        except papermill.PapermillExecutionError as exc:
            raise ReportError(
                f"notebook {name} failed on {run_dir}: {exc.ename}: {exc.evalue} "
                f"(the executed notebook with the traceback: {target})"
            ) from None
        return target

    count = workers or min(len(NOTEBOOKS), os.cpu_count() or 1)
    with (
        tempfile.TemporaryDirectory(prefix="memlab-kernels-") as sockets,  # mode 0700
        _kernel_imports_this_package(),
        ThreadPoolExecutor(count) as pool,
    ):
        manager = _ipc_kernel_manager(Path(sockets))
        futures = {name: pool.submit(execute, name) for name in NOTEBOOKS}
        try:
            return {name: future.result() for name, future in futures.items()}
        except BaseException:
            for future in futures.values():  # not started yet: never start them
                future.cancel()
            raise


def render_html(run_dir: Path, executed: Mapping[str, Path]) -> Path:
    """The executed notebooks as one HTML page, code hidden, the review first."""
    import nbformat
    from nbconvert import HTMLExporter

    meta = json.loads((run_dir / META_FILE).read_text()) if (run_dir / META_FILE).exists() else {}
    run_id = meta.get("run_id", run_dir.name)
    contents = "\n".join(
        f"{i}. [{TITLES[name]}](#{name})" for i, name in enumerate(REPORT_ORDER, start=1)
    )
    combined = nbformat.v4.new_notebook()
    combined.cells.append(
        nbformat.v4.new_markdown_cell(
            f"*memcryptor-lab report on run `{run_id}`, generated "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `memlab report`. "
            f"Tables and figures are also in `figures/` of the run folder.*\n\n{contents}"
        )
    )
    for name in REPORT_ORDER:
        book = nbformat.read(executed[name], as_version=4)
        if not combined.metadata:
            combined.metadata = book.metadata
        combined.cells.append(nbformat.v4.new_markdown_cell(f'<a id="{name}"></a>\n\n---'))
        for cell in book.cells:
            tags = cell.get("metadata", {}).get("tags", [])
            if "parameters" in tags or "injected-parameters" in tags:
                continue
            combined.cells.append(cell)
    exporter = HTMLExporter(
        template_name="lab",
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    body, _ = exporter.from_notebook_node(
        combined, resources={"metadata": {"name": f"memcryptor-lab report {run_id}"}}
    )
    path = run_dir / REPORT_FILE
    path.write_text(body, encoding="utf-8")
    return path


def build_report(
    run_dir: str | os.PathLike[str],
    *,
    notebooks: str | os.PathLike[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    timeout: int = 900,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Execute the notebooks on a run (or a results folder's newest run) and write
    `RUN_DIR/report.html` and `RUN_DIR/figures/*.png|csv`. Returns the report's path."""
    try:
        # absolute: the notebooks run with the run folder as their working directory
        run = resolve_run_dir(run_dir, RESULTS_FILE).resolve()
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise ReportError(f"{exc}: run the matrix first (memlab run --out {run_dir})") from None
    executed = execute_notebooks(
        run, notebooks=notebooks, parameters=parameters, timeout=timeout, progress=progress
    )
    return render_html(run, executed)


def publish(run_dir: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Replace `dest` (results/reference) with this run's summaries, figures and report.

    Only a complete run with its bench may become the reference: a partial one would be
    read as the project's findings."""
    run = resolve_run_dir(run_dir, RESULTS_FILE)
    meta = json.loads((run / META_FILE).read_text())
    if meta.get("status") != "complete":
        raise ReportError(
            f"run {run.name} is {meta.get('status')!r}, not complete: publish a full run (make lab)"
        )
    if not (run / BENCH_FILE).exists() or meta.get("bench", {}).get("status") != "complete":
        raise ReportError(f"run {run.name} has no complete bench: publish a full run (make lab)")
    if not (run / REPORT_FILE).exists():
        raise ReportError(f"run {run.name} has no {REPORT_FILE}: memlab report {run}")
    dest = Path(dest)
    staging = dest.with_name(f".{dest.name}.new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in PUBLISHED:
        source = run / name
        if source.is_dir():
            shutil.copytree(source, staging / name)
        elif source.exists():
            shutil.copy2(source, staging / name)
    if dest.exists():
        shutil.rmtree(dest)
    staging.rename(dest)
    return dest
