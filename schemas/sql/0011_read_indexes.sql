-- taskbus schema, version 11: indexes in the keyset order of the REST pages
-- (issue 16; the plans on 1M tasks and 10M runs are in
-- docs/bench-results/reads-plans.txt).
--
-- GET /v1/tasks/{id}/runs?status=...: one LIMITed scan per status, in the
-- page's order (store/runs.c), so a rare status of a task with many runs is
-- found without reading its other runs. Without ?status= the page is served
-- by runs_task_nominal (0001), as before.
--
-- GET /v1/tasks?name_prefix=...: the branch of each group may instead read
-- the group's names in the prefix's range (tasks_group_name, byte order so
-- that starts_with() can use it; with created_at and id included, an
-- index-only scan when name_prefix is the only filter) and sort only those: a rare prefix of old
-- tasks is otherwise found by reading the group's newer tasks one by one
-- (the planner picks the cheaper of the two per page).
--
-- Upgrading a live database: each CREATE INDEX runs inside the migration's
-- transaction and holds a SHARE lock on its table while it builds, so reads
-- go on but the projector's writes to that table wait for it (measured:
-- runs_task_status 47 s on 10M runs, tasks_group_name 2 s on 1M tasks, 2
-- shared cores; docs/benchmarks.md, "Reads"). To avoid that pause, build
-- them beforehand without the lock, with the same names and definitions,
-- then run the migration, which finds them and only records itself:
--
--   CREATE INDEX CONCURRENTLY runs_task_status
--       ON runs (task_id, status, nominal_time DESC, run_id DESC);
--   CREATE INDEX CONCURRENTLY tasks_group_name
--       ON tasks (security_group, name COLLATE "C") INCLUDE (created_at, id);
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
    IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
               WHERE c.relname = 'tasks_group_name' AND NOT i.indisvalid
                 AND c.relnamespace = current_schema()::regnamespace) THEN
        DROP INDEX tasks_group_name;
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS runs_task_status
    ON runs (task_id, status, nominal_time DESC, run_id DESC);

CREATE INDEX IF NOT EXISTS tasks_group_name
    ON tasks (security_group, name COLLATE "C") INCLUDE (created_at, id);
