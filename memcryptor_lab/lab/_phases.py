"""Lifecycle phases a victim walks, in order."""

# the default walk
PHASES = ("at-rest", "in-use", "released")
# every moment a row can describe, in the order a report shows them: the exposure walk adds
# delays after release and a forced garbage collection; "after-exit" rows come from attacks
# whose artefact outlives the process (swap)
EXPOSURE_PHASES = ("at-rest", "in-use", "released", "released+1s", "released+10s", "after-gc")
PHASE_ORDER = (*EXPOSURE_PHASES, "after-exit")
