-- taskbus schema, version 3: run history (projected by the projector from
-- runs and run-results) and archived run output (the archiver, from run-logs).
-- See docs/runs-and-logs.md.

-- Order of run statuses: a status only replaces one of a lower rank, so a
-- final status is never overwritten by 'running' or 'scheduled' whatever
-- order the topics are read in.
CREATE FUNCTION taskbus_run_status_rank(p_status text)
RETURNS int LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_status WHEN 'scheduled' THEN 0 WHEN 'running' THEN 1 ELSE 2 END
$$;

ALTER TABLE runs
    -- the task's log_retention at fire time (RunRequest snapshot); NULL until
    -- the RunRequest is projected (the tasks row or the default is used then)
    ADD COLUMN log_retention_ms bigint,
    -- when the archiver deleted the run's expired output (log_expires_at stays,
    -- so the API can say when it expired)
    ADD COLUMN log_purged_at    timestamptz;

-- history retention: the archiver deletes the oldest runs in small batches
CREATE INDEX runs_nominal ON runs(nominal_time);
-- runs whose security group was not known when they were first projected
CREATE INDEX runs_without_group ON runs(task_id) WHERE security_group = '';

-- the last chunk of a run's output (LogChunk.eof): live tails end there
ALTER TABLE run_logs ADD COLUMN eof boolean NOT NULL DEFAULT false;
