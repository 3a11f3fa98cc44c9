-- Issue 14: quotas per security group and fair execution (docs/api.md,
-- "Quotas"; docs/architecture.md, "How a run flows").
--
-- Quotas, set by `taskbus admin group set` (NULL: unlimited, the default):
--   max_tasks     live (not deleted) tasks of the group; the commands role
--                 refuses a CREATE (or an UPDATE moving a task in) beyond it
--   max_running   runs of the group running at once, over every executor;
--                 beyond it runs wait in the group's FIFO queue
--   run_now_rate  RUN_NOW commands per second for the whole group (the
--                 commands role's token bucket; burst: one second's worth, at
--                 least 1)
ALTER TABLE security_groups
    ADD COLUMN max_tasks    int CHECK (max_tasks IS NULL OR max_tasks >= 0),
    ADD COLUMN max_running  int CHECK (max_running IS NULL OR max_running >= 0),
    ADD COLUMN run_now_rate double precision
        CHECK (run_now_rate IS NULL OR run_now_rate > 0);

-- The run queue lives in run_claims: an executor enqueues every RunRequest
-- it consumes (state 'queued', durable before its Kafka offset is
-- committed), and any executor with a free slot takes queued runs with
-- taskbus_take_runs(): groups in turn, each group's runs in FIFO order,
-- never more than the group's max_running in state 'running'.
--   security_group  the run's group (RunRequest snapshot)
--   queue_seq       FIFO order of the queue (enqueue order)
--   taken_seq       when it was taken from the queue, on the same sequence as
--                   queue_seq: enqueues and takes of every executor in one order
--   request         the RunRequest record, so that any executor can run it
--   overlap         the task's overlap policy, applied when the run is taken
ALTER TABLE run_claims
    ADD COLUMN security_group text NOT NULL DEFAULT '',
    ADD COLUMN queue_seq      bigint,
    ADD COLUMN taken_seq      bigint,
    ADD COLUMN request        bytea,
    ADD COLUMN overlap        text NOT NULL DEFAULT 'FORBID';
CREATE SEQUENCE run_claims_queue_seq;
CREATE INDEX run_claims_queued ON run_claims(security_group, queue_seq) WHERE state = 'queued';
CREATE INDEX run_claims_group_running ON run_claims(security_group) WHERE state = 'running';
-- queued runs whose cancellation was requested: every take finishes them first
CREATE INDEX run_claims_queued_cancelled ON run_claims(queue_seq)
    WHERE state = 'queued' AND cancel_requested;

-- Round robin between groups: the last turn each group was given (the
-- taken_seq of the last run taken from its queue).
CREATE TABLE run_queue_turns (
    security_group text PRIMARY KEY,
    last_turn      bigint NOT NULL DEFAULT 0
);

-- Enqueue run p_run_id. Returns 'queued', or 'duplicate' when the run id
-- was claimed or queued before (by anyone): drop it.
CREATE FUNCTION taskbus_enqueue_run(p_run_id text, p_task_id text, p_executor_id text,
                                    p_nominal_ms bigint, p_attempt int, p_executor text,
                                    p_group text, p_overlap text, p_request bytea)
RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO run_claims (run_id, task_id, executor_id, lease_until, nominal_time,
                            attempt, executor, state, security_group, queue_seq,
                            request, overlap)
    VALUES (p_run_id, p_task_id, p_executor_id, 'infinity',
            to_timestamp(p_nominal_ms / 1000.0), p_attempt, p_executor, 'queued',
            p_group, nextval('run_claims_queue_seq'), p_request, p_overlap)
    ON CONFLICT (run_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'duplicate';
    END IF;
    INSERT INTO run_queue_turns (security_group) VALUES (p_group)
    ON CONFLICT (security_group) DO NOTHING;
    RETURN 'queued';
END
$$;

-- Take up to p_max queued runs for executor p_executor_id, which runs the
-- plugins p_executors, with a lease of p_lease_ms. A run is eligible once
-- its nominal time is at most p_horizon_ms ahead (the executor holds it
-- until then). Each slot goes to the eligible group whose last turn is the
-- oldest (round robin: a group with 10,000 queued runs and a group with one
-- alternate), within a group to its oldest run (FIFO), and never to a group
-- that already has max_running runs running. The task's overlap policy is
-- applied as taskbus_claim_run() does. Queued runs whose cancellation was
-- requested are finished as CANCELLED first (they need no slot).
-- Rows: run_id, outcome ('claimed:<ids>', 'replaced:<ids>', 'skipped:<ids>',
-- 'cancelled:<reason>'), request.
CREATE FUNCTION taskbus_take_runs(p_executor_id text, p_max int, p_lease_ms bigint,
                                  p_host text, p_executors text[], p_horizon_ms bigint)
RETURNS TABLE (run_id text, outcome text, request bytea)
LANGUAGE plpgsql AS $$
DECLARE
    v_group  text;
    v_run    run_claims%ROWTYPE;
    v_others text;
    v_taken  int := 0;
    v_seq    bigint;
    v_head   text;
BEGIN
    -- One taker at a time over every executor: the running counts and the
    -- turns below are then exact. A take is a few index lookups.
    PERFORM pg_advisory_xact_lock(1415734854, 0);
    FOR v_run IN
        SELECT * FROM run_claims c
         WHERE c.state = 'queued' AND c.cancel_requested AND c.executor = ANY(p_executors)
         ORDER BY c.queue_seq LIMIT 100
    LOOP
        UPDATE run_claims c
           SET state = 'done', status = 'CANCELLED', finished_at = now(),
               executor_id = p_executor_id, host = p_host
         WHERE c.run_id = v_run.run_id;
        run_id := v_run.run_id;
        outcome := 'cancelled:' || coalesce(v_run.cancel_reason, 'cancelled by request');
        request := v_run.request;
        RETURN NEXT;
    END LOOP;
    WHILE v_taken < p_max LOOP
        -- the head of each group's queue (LATERAL ... LIMIT 1: one index
        -- probe per group, however long its queue)
        SELECT h.run_id INTO v_head
          FROM run_queue_turns t
          LEFT JOIN security_groups g ON g.name = t.security_group
          CROSS JOIN LATERAL (
                SELECT c.run_id FROM run_claims c
                 WHERE c.state = 'queued' AND c.security_group = t.security_group
                   AND NOT c.cancel_requested AND c.executor = ANY(p_executors)
                   AND c.nominal_time <= now() + p_horizon_ms * interval '1 millisecond'
                 ORDER BY c.queue_seq LIMIT 1) h
         WHERE g.max_running IS NULL OR
               (SELECT count(*) FROM run_claims c
                 WHERE c.state = 'running' AND c.security_group = t.security_group)
               < g.max_running
         ORDER BY t.last_turn, t.security_group
         LIMIT 1;
        EXIT WHEN NOT FOUND;
        SELECT * INTO v_run FROM run_claims c WHERE c.run_id = v_head;
        v_group := v_run.security_group;
        v_seq := nextval('run_claims_queue_seq');
        UPDATE run_queue_turns t SET last_turn = v_seq WHERE t.security_group = v_group;
        SELECT string_agg(c.run_id, ',' ORDER BY c.claimed_at, c.run_id) INTO v_others
          FROM run_claims c
         WHERE c.task_id = v_run.task_id AND c.state = 'running';
        run_id := v_run.run_id;
        request := v_run.request;
        IF v_others IS NOT NULL AND v_run.overlap = 'FORBID' THEN
            UPDATE run_claims c
               SET state = 'done', status = 'SKIPPED_OVERLAP', finished_at = now(),
                   executor_id = p_executor_id, host = p_host, taken_seq = v_seq
             WHERE c.run_id = v_run.run_id;
            outcome := 'skipped:' || v_others;
            RETURN NEXT;
            CONTINUE;
        END IF;
        v_taken := v_taken + 1;
        UPDATE run_claims c
           SET state = 'running', executor_id = p_executor_id, host = p_host,
               claimed_at = now(), taken_seq = v_seq, lease_until = now() + p_lease_ms * interval '1 millisecond'
         WHERE c.run_id = v_run.run_id;
        IF v_others IS NOT NULL AND v_run.overlap = 'REPLACE' THEN
            UPDATE run_claims c
               SET cancel_requested = true,
                   cancel_reason = coalesce(c.cancel_reason, 'replaced by run ' || v_run.run_id)
             WHERE c.task_id = v_run.task_id AND c.state = 'running'
               AND c.run_id <> v_run.run_id;
            outcome := 'replaced:' || v_others;
        ELSE
            outcome := 'claimed:' || coalesce(v_others, '');
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

-- A queued run's place in its group's queue (1: next), NULL when it is not queued.
CREATE FUNCTION taskbus_queue_position(p_run_id text)
RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT (SELECT count(*) FROM run_claims o
             WHERE o.state = 'queued' AND o.security_group = r.security_group
               AND NOT o.cancel_requested AND o.queue_seq <= r.queue_seq)
      FROM run_claims r
     WHERE r.run_id = p_run_id AND r.state = 'queued'
$$;
