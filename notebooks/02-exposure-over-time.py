# ---
# jupyter:
#   jupytext:
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exposure over time: copies per phase, and where they lie
#
# Exposure is a window in time. A design may leave no copy at rest, one while a secret is
# revealed, and must leave none after it is released; naive code leaves copies behind
# that outlive their use (freed memory is not wiped). This page follows the copies of the
# plaintext and the key through the phases the run measured, and shows the memory
# regions they were found in, with the flags that matter (`lo` locked: never swapped;
# `dd` no-dump: left out of cores; `wf` wiped in a forked child).

# %% tags=["parameters"]
run_dir = "../results"  # a run folder, or a results folder (then its newest run)
figures_dir = None  # default: RUN_DIR/figures
dpi = 110

# %%
from memcryptor_lab import report
from memcryptor_lab.report import exposure, matrix

run = report.load_run(run_dir, figures_dir, dpi)
cells = matrix.cells(run.rows)
over_time = run.table(exposure.exposure_table(cells), "02-exposure")
regions = run.table(exposure.region_table(run.hits), "02-regions")
report.facts({k: v for k, v in run.facts().items() if k in ("run", "designs", "phases")})

# %% [markdown]
# ## Copies over the phases
#
# For each design, the most copies any one attack found in each phase (the in-use phase is
# shaded). A design that keeps secrets only while they are used shows a bump in use and
# zero on both sides; a line that stays up after release is a leak.

# %%
run.save(exposure.exposure_figure(cells), "02-exposure-over-phases")

# %%
report.bullets(exposure.exposure_claims(over_time, regions))

# %% [markdown]
# ## Where the plaintext copies lie

# %%
run.save(exposure.region_figure(regions, cells, "plaintext"), "02-regions-plaintext")

# %% [markdown]
# ## Where the key copies lie

# %%
run.save(exposure.region_figure(regions, cells, "key"), "02-regions-key")

# %% [markdown]
# ## The numbers
#
# Per design, attacker and phase: the most copies one attack found and the attacks that
# found any; then per region (addresses are in the run's `hits.csv`; they mean nothing to a
# reader and are left out here).

# %%
report.table(over_time, "copies per phase (most found by one attack)", collapsed=True)

# %%
report.table(regions, "copies per region", collapsed=True)
