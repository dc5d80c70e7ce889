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
# # Threat matrix: every design against every attack
#
# Each victim process holds a fresh random secret in one design and walks through the
# phases of the secret's life; in each phase every attack acquires the victim's memory
# (live reads, debugger cores, kernel cores, ...) and a scanner looks for the plaintext in
# every encoding, for the key, and for a decoy the victim never saw. A cell of the matrix is
# one design × victim × attacker × attack × phase. This page shows all of them.

# %% tags=["parameters"]
run_dir = "../results"  # a run folder, or a results folder (then its newest run)
figures_dir = None  # default: RUN_DIR/figures
dpi = 110

# %%
from IPython.display import display

from memcryptor_lab import report
from memcryptor_lab.report import matrix

run = report.load_run(run_dir, figures_dir, dpi)
cells = matrix.cells(run.rows)
run.table(matrix.cell_table(cells), "01-cells")
report.facts(run.facts())

# %% [markdown]
# ## What ran
#
# Cells per attack and attacker class: `ok` (the memory was acquired and scanned),
# `blocked` (the kernel refused part of it; the readable rest was still scanned and counted),
# `skipped` (the attack could not or must not run there, with the reason) and `error`.

# %%
display(report.table(run.table(matrix.coverage(cells), "01-coverage"), "cells per attack"))
report.bullets(matrix.matrix_claims(cells)[:1])

# %% [markdown]
# ## Positive control: every attack must find the naive design's secret
#
# A zero elsewhere means something only if the same attack finds the plaintext where it is
# known to be: in `plain`, which holds the secret as an ordinary string.

# %%
report.bullets(matrix.positive_control_claims(cells))

# %% [markdown]
# ## Copies of the plaintext
#
# Rows are the designs (the broker design's key-holder process is its own row), columns
# the attacks, one panel per attacker class and phase. A number is the copies found: full
# copies, plus `+Np` for N partial ones (16-byte fragments). Hatched: the reader was
# blocked somewhere in that process and what it could read holds that many. Grey: not
# measured.

# %%
run.save(matrix.heatmap(cells, "plaintext"), "01-heatmap-plaintext")

# %% [markdown]
# ## Copies of the key
#
# Whoever holds the key decrypts every secret sealed under it, in every phase: a key copy
# is worse than a plaintext copy.

# %%
run.save(matrix.heatmap(cells, "key"), "01-heatmap-key")

# %% [markdown]
# What each design let through, with the numbers behind both heatmaps:

# %%
report.bullets(matrix.matrix_claims(cells)[1:])

# %% [markdown]
# ## Where the reader was blocked
#
# A blocked cell is the kernel refusing pages (`memfd_secret` pages, `PROT_NONE` guard
# pages, a process that forbids cores): the table gives the refused bytes and errno counts.

# %%
run.save(matrix.heatmap(cells, "blocked"), "01-heatmap-blocked")

# %%
report.table(run.table(matrix.blocked_table(cells), "01-blocked"), "blocked cells")

# %% [markdown]
# ## The method's own checks: decoy and control victim
#
# The decoy is a secret no victim ever saw; the control victim runs the same design with
# other secrets. Both are searched for with the same scanner: every count must be 0.

# %%
controls = run.table(matrix.controls(cells), "01-controls")
display(report.bullets(matrix.control_claims(controls)))
report.table(controls, "false-positive checks per design and attack", collapsed=True)

# %% [markdown]
# ## Every cell
#
# The whole matrix, control victims included; `figures/01-cells.csv` has it with every
# column (read errors, bytes scanned, reasons).

# %%
report.table(matrix.cell_table(cells, compact=True), "every cell of the matrix", collapsed=True)
