-- taskbus schema, version 12: the reads of the console's dashboard and
-- tasks list (docs/console.md, docs/api.md "Runs across tasks").
--
-- GET /v1/runs pages the runs of a group newest first, (nominal_time,
-- run_id) descending, and GET /v1/runs/counts and /v1/runs/fire-lag count
-- a group's runs over a range of nominal times: one index in that order per
-- group, read by one index scan per group of the caller (store/runs.c).
CREATE INDEX runs_group_nominal ON runs(security_group, nominal_time DESC, run_id DESC);

-- The runs going on now (status scheduled or running) are few however long
-- the history: the dashboard's "running now" reads them from this small
-- partial index instead of walking the group's whole history.
CREATE INDEX runs_group_active ON runs(security_group, nominal_time DESC, run_id DESC)
    WHERE status IN ('scheduled', 'running');

-- GET /v1/tasks?last_outcome=: a task's latest finished run (succeeded,
-- failed, timed_out, cancelled, lost) is the first entry of this index for
-- the task, one probe per task the list looks at.
CREATE INDEX runs_task_outcome ON runs(task_id, nominal_time DESC, run_id DESC)
    WHERE status IN ('succeeded', 'failed', 'timed_out', 'cancelled', 'lost');
