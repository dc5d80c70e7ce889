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
# # Review report: how should a daemon hold its secrets?
#
# This report answers one question with measurements: *how should a process hold its
# secrets (passwords, keys, tokens) so that memory dumps, debuggers, core files and swap
# do not give them away?* The answer depends on how far the operating system is trusted,
# so every finding names the attacker, the path it used and the phase of the secret's
# life. The threat matrix, the exposure over time and the costs follow as evidence.

# %% tags=["parameters"]
run_dir = "../results"  # a run folder, or a results folder (then its newest run)
figures_dir = None  # default: RUN_DIR/figures
dpi = 110

# %%
from IPython.display import display

from memcryptor_lab import report
from memcryptor_lab.report import bench, matrix, recommend

run = report.load_run(run_dir, figures_dir, dpi)
cells = matrix.cells(run.rows)
verdicts = run.table(matrix.verdicts(cells), "04-verdicts")
report.facts(run.facts())

# %%
report.markdown(recommend.HOW_TO_READ)

# %% [markdown]
# ## Findings
#
# For each design and each threat class (an attacker class and the kind of artefact its
# attacks produce), the worst any of its attacks found in any phase, over all the design's
# processes:

# %%
run.save(matrix.verdict_figure(verdicts), "04-verdicts")

# %%
report.bullets(matrix.verdict_claims(verdicts))

# %% [markdown]
# The same as a table: which design resists which threat class.

# %%
report.table(
    run.table(matrix.recommendations(verdicts), "04-recommendations"),
    "which design resists which threat class",
)

# %% [markdown]
# The method's checks, which every finding above rests on:

# %%
report.bullets(
    matrix.control_claims(matrix.controls(cells)) + matrix.positive_control_claims(cells)
)

# %% [markdown]
# ## Recommendations by deployment
#
# Fixed advice for three deployments, each followed by what this run measured against
# the threats that deployment faces.

# %%
display(report.table(run.table(recommend.scenario_table(verdicts), "04-deployments")))
report.markdown(recommend.scenario_markdown(verdicts))

# %%
report.markdown(recommend.ROOT_RUNS_CODE)

# %% [markdown]
# ## What it costs
#
# Latency per operation and throughput as a ratio to in-process AES-GCM measured in the
# same run; memory per secret at the largest number of secrets held (details on the
# throughput and scale page).

# %%
display(report.table(bench.cost_table(run.bench), "cost per design"))
report.bullets(bench.bench_claims(run.bench))

# %% [markdown]
# ## What this run did not measure
#
# A gap is a gap, never a pass.

# %%
report.bullets(matrix.gaps(cells) or ["Every cell of the run was measured."])

# %% [markdown]
# ## Designs and attacks in this run

# %%
designs, attacks = recommend.catalog(cells)
display(report.table(designs, "designs"))
report.table(attacks, "attacks")
