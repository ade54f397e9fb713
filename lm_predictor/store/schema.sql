-- LM-Predictor run database: tables, macro and views.  schema_version: 5
--
-- Executed by lm_predictor/store.py on a new database and after migrating an older one; every
-- statement is idempotent (CREATE ... IF NOT EXISTS, CREATE OR REPLACE). The version lives in
-- `meta` (key 'schema_version') and in store.SCHEMA_VERSION; change both together and add a
-- migration in store.MIGRATIONS.
--
-- Conventions:
-- - Counts (FLOPs, bytes) are HUGEINT: exact integers, no float rounding at 1e18+.
--   measured_* come from the trace; predicted_* from the formulas (fractional predictions are
--   rounded to the nearest integer when stored; rel_error_* are computed before rounding).
-- - rel_error_* = |predicted - measured| / measured: 0 when both are 0, +inf when measured is 0
--   and predicted is not, NULL when there is no prediction (formula error: see `error`).
-- - Timestamps are UTC. JSON columns hold plain data (shapes, dtypes, scalars), never tensors.
-- - Keys are (run_id, ...); there are no foreign keys: delete a run from every table by run_id.

CREATE TABLE IF NOT EXISTS meta (
    key   VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);

-- One row per run: a traced run (kind 'traced': measured and predicted, calls in `calls`) or a
-- predicted-only run (kind 'predicted': measured_* and coverage NULL, points in `predictions`,
-- predicted_* the sum over its points, peak_activation_bytes and weight_bytes their maximum).
CREATE TABLE IF NOT EXISTS runs (
    run_id                     VARCHAR PRIMARY KEY,
    kind                       VARCHAR NOT NULL DEFAULT 'traced'
                               CHECK (kind IN ('traced', 'predicted')),
    created_at                 TIMESTAMP NOT NULL,
    model_id                   VARCHAR NOT NULL,
    config_hash                VARCHAR,
    phase                      VARCHAR,
    batch_size                 INTEGER,
    seq_len                    INTEGER,
    kv_len                     INTEGER,
    dtype                      VARCHAR,
    device                     VARCHAR,
    counter                    VARCHAR,
    rtol                       DOUBLE,
    tool_version               VARCHAR,
    torch_version              VARCHAR,
    transformers_version       VARCHAR,
    measured_flops             HUGEINT,
    measured_vector_flops      HUGEINT,
    measured_bytes_read        HUGEINT,
    measured_bytes_written     HUGEINT,
    measured_activation_bytes  HUGEINT,
    predicted_flops            HUGEINT,
    predicted_vector_flops     HUGEINT,
    predicted_bytes_read       HUGEINT,
    predicted_bytes_written    HUGEINT,
    predicted_activation_bytes HUGEINT,
    peak_activation_bytes      HUGEINT,
    weight_bytes               HUGEINT,
    buffer_bytes               HUGEINT,
    coverage_flops             DOUBLE,   -- share of measured flops explained by formulas
    coverage_bytes             DOUBLE,   -- same for bytes_read + bytes_written
    config                     JSON      -- the model config formulas were bound against
);

-- One row per module call of a traced run (call_id is the index in the trace).
CREATE TABLE IF NOT EXISTS calls (
    run_id                         VARCHAR NOT NULL,
    call_id                        INTEGER NOT NULL,
    parent_call_id                 INTEGER,
    depth                          INTEGER NOT NULL,
    module_path                    VARCHAR NOT NULL,
    class_name                     VARCHAR NOT NULL,
    formula_key                    VARCHAR NOT NULL,
    status                         VARCHAR NOT NULL,  -- exact|within_tolerance|mismatch|no_formula
    measured_flops                 HUGEINT,           -- inclusive of children
    measured_vector_flops          HUGEINT,
    measured_bytes_read            HUGEINT,
    measured_bytes_written         HUGEINT,
    measured_activation_bytes      HUGEINT,
    measured_peak_activation_bytes HUGEINT,           -- measured only: no formula predicts it
    predicted_flops                HUGEINT,
    predicted_vector_flops         HUGEINT,
    predicted_bytes_read           HUGEINT,
    predicted_bytes_written        HUGEINT,
    predicted_activation_bytes     HUGEINT,
    rel_error_flops                DOUBLE,
    rel_error_vector_flops         DOUBLE,
    rel_error_bytes_read           DOUBLE,
    rel_error_bytes_written        DOUBLE,
    rel_error_activation_bytes     DOUBLE,
    wall_time_s                    DOUBLE,            -- NULL when not measured
    inputs                         JSON,              -- {"args": [...], "kwargs": {...}}
    outputs                        JSON,
    attributes                     JSON,              -- module attributes used by binds
    error                          VARCHAR,           -- why the formula could not be evaluated
    PRIMARY KEY (run_id, call_id)
);

-- Self ops per call: what ran while the call was the innermost module call.
-- call_id NULL: ops dispatched outside any module call.
CREATE TABLE IF NOT EXISTS ops (
    run_id        VARCHAR NOT NULL,
    call_id       INTEGER,
    op            VARCHAR NOT NULL,
    count         BIGINT NOT NULL,
    flops         HUGEINT NOT NULL,
    vector_flops  HUGEINT NOT NULL,
    bytes_read    HUGEINT NOT NULL,
    bytes_written HUGEINT NOT NULL
);

-- Aten ops the counter has no cost rule for (counted, not costed).
CREATE TABLE IF NOT EXISTS uncovered_ops (
    run_id VARCHAR NOT NULL,
    op     VARCHAR NOT NULL,
    count  BIGINT NOT NULL,
    PRIMARY KEY (run_id, op)
);

-- Snapshot of every formula entry a run used, as it was at the time of the run.
CREATE TABLE IF NOT EXISTS formulas (
    run_id      VARCHAR NOT NULL,
    formula_key VARCHAR NOT NULL,
    layer       VARCHAR,          -- registry layer the entry came from (builtin, user, ...)
    status      VARCHAR,          -- the entry's validation status
    entry       JSON NOT NULL,    -- FormulaEntry.model_dump(mode="json")
    PRIMARY KEY (run_id, formula_key)
);

-- Points of a predicted-only run (one per shape of a sweep).
CREATE TABLE IF NOT EXISTS predictions (
    run_id                          VARCHAR NOT NULL,
    point                           INTEGER NOT NULL,  -- 0-based position in the run
    phase                           VARCHAR,
    batch_size                      INTEGER,
    seq_len                         INTEGER,
    kv_len                          INTEGER,
    predicted_flops                 HUGEINT,
    predicted_vector_flops          HUGEINT,
    predicted_bytes_read            HUGEINT,
    predicted_bytes_written         HUGEINT,
    predicted_activation_bytes      HUGEINT,
    predicted_peak_activation_bytes HUGEINT,
    weight_bytes                    HUGEINT,
    time_s                          DOUBLE,            -- estimated time, when estimated
    extra                           JSON,              -- any other fields of the point
    PRIMARY KEY (run_id, point)
);

-- |predicted - measured| / measured with the conventions above.
CREATE OR REPLACE MACRO rel_error(predicted, measured) AS
    CASE WHEN predicted IS NULL OR measured IS NULL THEN NULL
         WHEN predicted = measured THEN 0.0
         WHEN measured = 0 THEN 'inf'::DOUBLE
         ELSE abs(predicted - measured)::DOUBLE / abs(measured) END;

-- How accurate is each formula? Calls that have a formula, across all runs.
-- mean/max are over the calls with a prediction (formula errors are counted in `errors`);
-- an infinite relative error makes mean and max infinite.
CREATE OR REPLACE VIEW formula_accuracy AS
SELECT formula_key,
       count(*)                                          AS calls,
       count(DISTINCT run_id)                            AS runs,
       avg(abs(rel_error_flops))                         AS mean_rel_error_flops,
       max(abs(rel_error_flops))                         AS max_rel_error_flops,
       avg(abs(rel_error_vector_flops))                  AS mean_rel_error_vector_flops,
       max(abs(rel_error_vector_flops))                  AS max_rel_error_vector_flops,
       avg(abs(rel_error_bytes_read))                    AS mean_rel_error_bytes_read,
       max(abs(rel_error_bytes_read))                    AS max_rel_error_bytes_read,
       avg(abs(rel_error_bytes_written))                 AS mean_rel_error_bytes_written,
       max(abs(rel_error_bytes_written))                 AS max_rel_error_bytes_written,
       avg(abs(rel_error_activation_bytes))              AS mean_rel_error_activation_bytes,
       max(abs(rel_error_activation_bytes))              AS max_rel_error_activation_bytes,
       count(*) FILTER (WHERE status = 'exact')            AS exact,
       count(*) FILTER (WHERE status = 'within_tolerance') AS within_tolerance,
       count(*) FILTER (WHERE status = 'mismatch')         AS mismatches,
       count(*) FILTER (WHERE error IS NOT NULL)           AS errors
FROM calls
WHERE status <> 'no_formula'
GROUP BY formula_key;

-- One row per run: shape, totals measured and predicted, their relative error, coverage.
CREATE OR REPLACE VIEW run_totals AS
SELECT r.run_id, r.kind, r.created_at, r.model_id, r.phase, r.batch_size, r.seq_len, r.kv_len,
       r.dtype, r.device,
       r.measured_flops, r.predicted_flops,
       rel_error(r.predicted_flops, r.measured_flops)                         AS rel_error_flops,
       r.measured_vector_flops, r.predicted_vector_flops,
       rel_error(r.predicted_vector_flops, r.measured_vector_flops)           AS rel_error_vector_flops,
       r.measured_bytes_read, r.predicted_bytes_read,
       rel_error(r.predicted_bytes_read, r.measured_bytes_read)               AS rel_error_bytes_read,
       r.measured_bytes_written, r.predicted_bytes_written,
       rel_error(r.predicted_bytes_written, r.measured_bytes_written)         AS rel_error_bytes_written,
       r.measured_activation_bytes, r.predicted_activation_bytes,
       rel_error(r.predicted_activation_bytes, r.measured_activation_bytes)   AS rel_error_activation_bytes,
       r.peak_activation_bytes, r.weight_bytes,
       r.coverage_flops, r.coverage_bytes,
       coalesce(c.calls, 0)      AS calls,
       coalesce(c.mismatches, 0) AS mismatches,
       coalesce(c.no_formula, 0) AS no_formula
FROM runs r
LEFT JOIN (SELECT run_id,
                  count(*)                                    AS calls,
                  count(*) FILTER (WHERE status = 'mismatch')   AS mismatches,
                  count(*) FILTER (WHERE status = 'no_formula') AS no_formula
           FROM calls GROUP BY run_id) c USING (run_id);

-- Self (exclusive) figures beside the inclusive ones (schema 4): one row per call, self_* =
-- the call's inclusive figure minus the sum of its direct children's. self_measured_* equal
-- the call's own ops (`ops` rows of the call). self_predicted_* are NULL when the call or one
-- of its children has no prediction; for a call without a formula (status 'no_formula') they
-- are its own measured ops, which is what reconcile predicted for it.
-- "Which class is most expensive by its own work?":
--   SELECT class_name, sum(self_measured_flops) FROM calls_self GROUP BY 1 ORDER BY 2 DESC
CREATE OR REPLACE VIEW calls_self AS
SELECT c.run_id, c.call_id, c.parent_call_id, c.depth, c.module_path, c.class_name,
       c.formula_key, c.status,
       c.measured_flops,
       c.measured_flops - coalesce(k.measured_flops, 0)                 AS self_measured_flops,
       c.predicted_flops,
       CASE WHEN coalesce(k.missing_flops, 0) = 0
            THEN c.predicted_flops - coalesce(k.predicted_flops, 0) END  AS self_predicted_flops,
       c.measured_vector_flops,
       c.measured_vector_flops - coalesce(k.measured_vector_flops, 0)   AS self_measured_vector_flops,
       c.predicted_vector_flops,
       CASE WHEN coalesce(k.missing_vector_flops, 0) = 0
            THEN c.predicted_vector_flops - coalesce(k.predicted_vector_flops, 0) END
                                                                        AS self_predicted_vector_flops,
       c.measured_bytes_read,
       c.measured_bytes_read - coalesce(k.measured_bytes_read, 0)       AS self_measured_bytes_read,
       c.predicted_bytes_read,
       CASE WHEN coalesce(k.missing_bytes_read, 0) = 0
            THEN c.predicted_bytes_read - coalesce(k.predicted_bytes_read, 0) END
                                                                        AS self_predicted_bytes_read,
       c.measured_bytes_written,
       c.measured_bytes_written - coalesce(k.measured_bytes_written, 0) AS self_measured_bytes_written,
       c.predicted_bytes_written,
       CASE WHEN coalesce(k.missing_bytes_written, 0) = 0
            THEN c.predicted_bytes_written - coalesce(k.predicted_bytes_written, 0) END
                                                                        AS self_predicted_bytes_written
FROM calls c
LEFT JOIN (SELECT run_id, parent_call_id AS call_id,
                  sum(measured_flops)          AS measured_flops,
                  sum(predicted_flops)         AS predicted_flops,
                  count(*) - count(predicted_flops)         AS missing_flops,
                  sum(measured_vector_flops)   AS measured_vector_flops,
                  sum(predicted_vector_flops)  AS predicted_vector_flops,
                  count(*) - count(predicted_vector_flops)  AS missing_vector_flops,
                  sum(measured_bytes_read)     AS measured_bytes_read,
                  sum(predicted_bytes_read)    AS predicted_bytes_read,
                  count(*) - count(predicted_bytes_read)    AS missing_bytes_read,
                  sum(measured_bytes_written)  AS measured_bytes_written,
                  sum(predicted_bytes_written) AS predicted_bytes_written,
                  count(*) - count(predicted_bytes_written) AS missing_bytes_written
           FROM calls WHERE parent_call_id IS NOT NULL
           GROUP BY run_id, parent_call_id) k USING (run_id, call_id);

-- One status per run (schema 4), shown and filtered by `lm-predictor runs`:
-- 'predicted' (a predicted-only run), 'mismatch' (a call's formula is off beyond the run's
-- rtol, or fails to evaluate), 'partial' (no mismatch, but formulas cover less than all
-- measured FLOP or bytes), 'tolerance' (covered, some calls only within rtol), 'exact'
-- (covered, every call with a formula equal on every metric).
CREATE OR REPLACE VIEW run_status AS
SELECT r.run_id,
       CASE WHEN r.kind = 'predicted' THEN 'predicted'
            WHEN coalesce(c.mismatches, 0) > 0 THEN 'mismatch'
            WHEN coalesce(r.coverage_flops, 1) < 1 OR coalesce(r.coverage_bytes, 1) < 1
                 THEN 'partial'
            WHEN coalesce(c.within_tolerance, 0) > 0 THEN 'tolerance'
            ELSE 'exact' END AS status
FROM runs r
LEFT JOIN (SELECT run_id,
                  count(*) FILTER (WHERE status = 'mismatch')         AS mismatches,
                  count(*) FILTER (WHERE status = 'within_tolerance') AS within_tolerance
           FROM calls GROUP BY run_id) c USING (run_id);

-- Module classes without a formula, per run: what to write formulas for next. self_* are the
-- classes' own ops (children excluded), so nested uncovered calls are not counted twice.
CREATE OR REPLACE VIEW uncovered_classes AS
SELECT c.run_id, c.class_name, c.formula_key,
       count(DISTINCT c.call_id)                              AS calls,
       coalesce(sum(o.flops), 0)                              AS self_flops,
       coalesce(sum(o.vector_flops), 0)                       AS self_vector_flops,
       coalesce(sum(o.bytes_read + o.bytes_written), 0)       AS self_bytes
FROM calls c
LEFT JOIN ops o ON o.run_id = c.run_id AND o.call_id = c.call_id
WHERE c.status = 'no_formula'
GROUP BY c.run_id, c.class_name, c.formula_key;

-- Hardware time estimates (schema 2): one row per run, call and hardware, from the roofline of
-- hardware/roofline.py. Times in seconds, summed upward from the calls' own work: estimate_s is
-- the call's subtree, self_estimate_s its own work only; compute_s/memory_s/overhead_s are the
-- subtree's roofline components (estimate_s = sum over pseudo-leaves of max(compute, memory)
-- plus overhead, so it is >= max(compute_s, memory_s)). bound: 'compute' or 'memory', by the
-- leaves holding most of the time. intensity = (flops + vector_flops) / bytes (NULL: no bytes).
-- wall_time_s: the call's measured time (NULL on meta), copied from `calls` for comparison.
CREATE TABLE IF NOT EXISTS estimates (
    run_id          VARCHAR NOT NULL,
    call_id         INTEGER NOT NULL,
    hardware        VARCHAR NOT NULL,   -- catalog name (hardware/devices.json or a user device)
    dtype           VARCHAR,            -- fp32, bf16, ... the peak that was used
    compute_s       DOUBLE,
    memory_s        DOUBLE,
    overhead_s      DOUBLE,
    estimate_s      DOUBLE NOT NULL,
    self_estimate_s DOUBLE,
    bound           VARCHAR,
    intensity       DOUBLE,
    wall_time_s     DOUBLE,
    PRIMARY KEY (run_id, call_id, hardware)
);

-- How far are time estimates from measured wall time, per hardware and module class? Calls'
-- inclusive times; mean_abs_pct_error (percent) over calls with a measured time.
CREATE OR REPLACE VIEW time_error_by_class AS
SELECT e.hardware, c.class_name,
       count(*)                                          AS calls,
       count(c.wall_time_s)                              AS measured_calls,
       sum(e.estimate_s)                                 AS estimated_s,
       sum(c.wall_time_s)                                AS measured_s,
       100 * avg(abs(e.estimate_s - c.wall_time_s) / c.wall_time_s)
           FILTER (WHERE c.wall_time_s > 0)              AS mean_abs_pct_error
FROM estimates e
JOIN calls c USING (run_id, call_id)
GROUP BY e.hardware, c.class_name;

-- Formula-agent runs (lm-predictor agent / module / analyze --fill-gaps): cost and outcome.
CREATE TABLE IF NOT EXISTS agent_runs (
    started_at            TIMESTAMP NOT NULL,   -- UTC
    full_class_name       VARCHAR NOT NULL,
    formula_key           VARCHAR NOT NULL,
    outcome               VARCHAR NOT NULL,     -- cached | not_reconciled | error | timeout
    num_turns             INTEGER,
    input_tokens          BIGINT,               -- as the SDK reports them
    output_tokens         BIGINT,
    cache_read_tokens     BIGINT,
    cache_creation_tokens BIGINT,
    cost_usd              DOUBLE,               -- total_cost_usd of the SDK's result message
    duration_s            DOUBLE,               -- wall-clock seconds of the run
    submissions           INTEGER,              -- reconcile calls
    model_id              VARCHAR,              -- the model whose trace supplied the calls
    transcript_path       VARCHAR,
    error                 VARCHAR
);

-- one row per model type of each transformers-wide sweep (schema 5)
CREATE TABLE IF NOT EXISTS sweep_results (
    sweep_id          VARCHAR NOT NULL,     -- one `check --suite transformers` run
    created_at        TIMESTAMP NOT NULL,   -- UTC
    transformers_version  VARCHAR,
    model_type        VARCHAR NOT NULL,
    kind          VARCHAR,          -- causal | encoder | seq2seq | vision
    architecture      VARCHAR,
    built         BOOLEAN,
    traced        BOOLEAN,
    method        VARCHAR,          -- meta | meta+answered-scalars | cpu | cpu-truncated
    config_method     VARCHAR,          -- which config attempt traced
    stage         VARCHAR,          -- the last stage reached
    reason        VARCHAR,          -- normalised failure reason (grouping key)
    error         VARCHAR,
    calls         INTEGER,
    coverage_flops    DOUBLE,
    coverage_bytes    DOUBLE,
    exact         BOOLEAN,          -- every call with a formula exact
    fully_covered_exact   BOOLEAN,
    seconds           DOUBLE,
    details           JSON,         -- the whole TypeResult
    PRIMARY KEY (sweep_id, model_type)
);
