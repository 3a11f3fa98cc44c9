-- taskbus schema, version 2: what the executor role needs in run_claims.
--
-- A claim now carries enough to publish the run's result without the
-- RunRequest (the reaper publishes LOST for runs of dead executors), the
-- final status, and the cancellation request that `taskbus runs cancel`,
-- task deletion and the REPLACE overlap policy set for the owning executor
-- to act on (it polls its running claims about every 500 ms).

ALTER TABLE run_claims
    ADD COLUMN nominal_time     timestamptz,
    ADD COLUMN attempt          int NOT NULL DEFAULT 1,
    ADD COLUMN executor         text NOT NULL DEFAULT '',    -- plugin name, e.g. shell
    ADD COLUMN host             text NOT NULL DEFAULT '',    -- host of the executor process
    ADD COLUMN started_at       timestamptz,
    ADD COLUMN finished_at      timestamptz,
    ADD COLUMN status           text,                        -- final RunStatus once state = 'done'
    ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false,
    ADD COLUMN cancel_reason    text;

-- An executor renews and polls its own running claims.
CREATE INDEX run_claims_executor_running ON run_claims(executor_id) WHERE state = 'running';

-- Claim run p_run_id for executor p_executor_id, applying the task's
-- overlap policy, in one round trip. Returns:
--   'duplicate'                 the run id was claimed before (by anyone): drop it
--   'claimed:<ids>'             claimed; <ids> are the task's other running runs
--                               (empty, or kept running under ALLOW)
--   'replaced:<ids>'            claimed; cancellation of <ids> was requested (REPLACE)
--   'skipped:<ids>'             FORBID and <ids> still run: recorded as done with
--                               status SKIPPED_OVERLAP, not to be started
-- <ids> is a comma-separated list of run ids.
CREATE FUNCTION taskbus_claim_run(p_run_id text, p_task_id text, p_executor_id text,
                                  p_lease_ms bigint, p_nominal_ms bigint, p_attempt int,
                                  p_executor text, p_host text, p_overlap text)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_others text;
BEGIN
    -- Serialize the claims of one task (until commit) so that the overlap
    -- check below sees every other claim of the task, committed.
    PERFORM pg_advisory_xact_lock(1415734853, hashtext(p_task_id));
    INSERT INTO run_claims (run_id, task_id, executor_id, lease_until, nominal_time,
                            attempt, executor, host)
    VALUES (p_run_id, p_task_id, p_executor_id,
            now() + p_lease_ms * interval '1 millisecond',
            to_timestamp(p_nominal_ms / 1000.0), p_attempt, p_executor, p_host)
    ON CONFLICT (run_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'duplicate';
    END IF;
    SELECT string_agg(run_id, ',' ORDER BY claimed_at, run_id) INTO v_others
      FROM run_claims
     WHERE task_id = p_task_id AND state = 'running' AND run_id <> p_run_id;
    IF v_others IS NULL OR p_overlap = 'ALLOW' THEN
        RETURN 'claimed:' || coalesce(v_others, '');
    END IF;
    IF p_overlap = 'REPLACE' THEN
        UPDATE run_claims
           SET cancel_requested = true,
               cancel_reason = coalesce(cancel_reason, 'replaced by run ' || p_run_id)
         WHERE task_id = p_task_id AND state = 'running' AND run_id <> p_run_id;
        RETURN 'replaced:' || v_others;
    END IF;
    UPDATE run_claims
       SET state = 'done', status = 'SKIPPED_OVERLAP', finished_at = now()
     WHERE run_id = p_run_id;
    RETURN 'skipped:' || v_others;
END
$$;
