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
# # Throughput and scale: what each design costs
#
# Absolute times on a shared machine drift; ratios to a baseline measured in the same run
# do not. Every figure here comes with one: in-process AES-256-GCM (the ceiling for an
# in-process design), a plain memory copy (the physical floor) and a Unix-socket echo to
# another process (the floor for an out-of-process design). Latencies are medians with
# their spread; goals are the project's, reported met or not.

# %% tags=["parameters"]
run_dir = "../results"  # a run folder, or a results folder (then its newest run)
figures_dir = None  # default: RUN_DIR/figures
dpi = 110

# %%
from memcryptor_lab import report
from memcryptor_lab.report import bench

run = report.load_run(run_dir, figures_dir, dpi)
report.facts({k: v for k, v in run.facts().items() if k in ("run", "host", "bench")})

# %%
report.markdown(
    ""
    if run.has_bench
    else "**This run has no bench.csv**: the figures below are empty. Measure with "
    "`memlab run --bench quick` (matrix and bench in one run folder) or `make lab`."
)

# %% [markdown]
# ## Latency of one operation

# %%
run.save(bench.latency_figure(run.bench), "03-latency")

# %%
report.bullets(bench.bench_claims(run.bench))

# %% [markdown]
# ## Throughput against payload size

# %%
run.save(bench.throughput_figure(run.bench), "03-throughput")

# %%
run.save(bench.ratio_figure(run.bench), "03-throughput-ratio")

# %% [markdown]
# ## Goals

# %%
report.table(run.table(bench.goals_table(run.bench), "03-goals"), "the project's goals")

# %% [markdown]
# ## Holding many secrets
#
# Resident and locked memory per secret, mappings and seal time against the number of
# secrets held: the arena designs share slabs between secrets, so their per-secret cost
# falls as they hold more.

# %%
run.save(bench.scale_figure(run.bench), "03-scale")

# %%
run.save(bench.concurrency_figure(run.bench), "03-concurrency")

# %% [markdown]
# ## Per design, in one line

# %%
report.table(run.table(bench.cost_table(run.bench), "03-costs"), "cost per design")

# %% [markdown]
# ## Not measured

# %%
report.table(bench.not_measured_table(run.bench), "bench figures not measured, and why")

# %% [markdown]
# ## Every figure
#
# Scanners and attacks included (their rows time a needle scan and each attack on a large
# victim).

# %%
report.table(
    run.table(bench.bench_table(run.bench), "03-bench"), "every bench figure", collapsed=True
)
