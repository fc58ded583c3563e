"""The workbook layer: what notebooks and ``make reproduce`` use on top of the core.

experiments (one run, tables) · grid (a notebook's runs on Dask) · baselines (k-means on pixels,
PCA, UMAP) · claims and stats (verdicts over seeds) · report (Markdown tables with provenance) ·
viz (figures) · primer (the EM/ELBO teaching notebook's helpers) · nmm_figures (NMM §8's views) ·
choose_k (picking K without labels) · notebooks (build, parameterize, execute) · pipeline
(``make reproduce``)."""
