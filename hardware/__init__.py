"""Hardware: a cited device catalog, roofline time estimates, memory fit, calibration and fitting.

Modules (the package imports none of them eagerly, so `import hardware` stays cheap):
- `catalog`: devices as data (`devices.json` + the user's devices file), pydantic-validated,
  names matched case-insensitively with aliases; `HardwareError` (in `errors`).
- `roofline`: per-call time = max(compute, memory) + op overhead, estimated for each call's own
  work and summed upward; `estimate_totals` for trace-free predictions.
- `memory_fit`: weights + KV cache + activations against capacity, largest batch that fits.
- `calibrate`: microbenchmarks of the local device -> a user device entry.
- `fit`: efficiency factors and op overhead from measured times; MAPE before/after.
- `report`, `plot`: tables, JSON blocks and the roofline/breakdown PNG.
This layer imports nothing of `lm_predictor` or `tracing`: it reads traces by attribute.

Example:
    >>> from hardware.catalog import load_catalog
    >>> from hardware.roofline import estimate_totals
    >>> est = estimate_totals(2e12, 0, 1e9, 1e9, load_catalog().get("A100-80GB-SXM"), "bf16")
    >>> est.bound
    'compute'
"""
