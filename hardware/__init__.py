"""Hardware: a cited device catalog, roofline time estimates, memory fit, calibration and fitting.

Modules (the package imports none of them eagerly, so `import hardware` stays cheap):
- `catalog`: devices as data (`devices.json` + the user's devices file), pydantic-validated,
  names matched case-insensitively with aliases; `HardwareError` (in `errors`).
- `roofline`: per-call time = max(compute, memory) + op overhead, estimated for each call's own
  work and summed upward; `estimate_totals` for trace-free predictions.
- `kernels`: the `eager` (as traced) and `fused` (serving-engine kernels) kernel models;
  `estimate_kernels` -> `KernelEstimates` (`estimates.kernels`, `.total.flops/.bytes/.estimate_s`).
- `memory`: weights + KV cache + traced activations (per kernel model), fit, largest batch and
  longest context.
- `calibrate`: microbenchmarks of the local device -> a user device entry.
- `fit`: efficiency factors and op overhead from measured times; MAPE before/after.
- `report`, `plot`: tables, JSON blocks and the roofline/breakdown PNG.
This layer reads traces by attribute; only `memory.TracedMemory` (it builds and traces a meta
model) imports `lm_predictor` and `tracing`, lazily.

Example:
    >>> from hardware.catalog import load_catalog
    >>> from hardware.roofline import estimate_totals
    >>> est = estimate_totals(2e12, 0, 1e9, 1e9, load_catalog().get("A100-80GB-SXM"), "bf16")
    >>> est.bound
    'compute'
"""
