"""The lab: victims, the attack matrix, result rows and their rendering."""

from ._phases import EXPOSURE_PHASES, PHASE_ORDER, PHASES
from .matrix import LabError, LabSecrets, RunResult, Victim, run_matrix
from .render import summarize_rows
from .results import SCHEMA_VERSION, HitRow, Row, load_results

__all__ = [
    "EXPOSURE_PHASES",
    "PHASES",
    "PHASE_ORDER",
    "SCHEMA_VERSION",
    "HitRow",
    "LabError",
    "LabSecrets",
    "Row",
    "RunResult",
    "Victim",
    "load_results",
    "run_matrix",
    "summarize_rows",
]
