-- taskbus schema, version 11: indexes in the keyset order of the REST pages
-- (issue 16; the plans on 1M tasks and 10M runs are in
-- docs/bench-results/reads-plans.txt).
--
-- GET /v1/tasks/{id}/runs?status=...: one LIMITed scan per status, in the
-- page's order (store/runs.c), so a rare status of a task with many runs is
-- found without reading its other runs. Without ?status= the page is served
-- by runs_task_nominal (0001), as before.
--
-- Upgrading a live database: this CREATE INDEX runs inside the migration's
-- transaction and holds a SHARE lock on runs while it builds, so reads go on
-- but the projector's writes to runs wait for it (about a minute per 10M
-- runs on 2 cores). To avoid that pause, build it beforehand without the
-- lock, with the same name and definition, then run the migration, which
-- finds it and only records itself:
--
--   CREATE INDEX CONCURRENTLY runs_task_status
--       ON runs (task_id, status, nominal_time DESC, run_id DESC);
--
-- A CONCURRENTLY build that was interrupted leaves an INVALID index of that
-- name; the block below drops it so that the migration builds it again.
-- (docs/deploy.md, "Upgrades".)

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
               WHERE c.relname = 'runs_task_status' AND NOT i.indisvalid
                 AND c.relnamespace = current_schema()::regnamespace) THEN
        DROP INDEX runs_task_status;
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS runs_task_status
    ON runs (task_id, status, nominal_time DESC, run_id DESC);
