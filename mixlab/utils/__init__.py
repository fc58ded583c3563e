"""Small helpers the core and the workbook share: io (atomic writes), paths (the workbook root,
per-profile output folders), cache (reuse and locks), provenance, precision (bf16 autocast),
distributed (DDP), checks (config validation errors)."""
