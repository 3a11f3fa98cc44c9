-- taskbus schema, version 16: notifications (docs/notifications.md).
--
-- The notifier role reads run-results (offsets in consumer_offsets, consumer
-- "notifier") and, in the same transaction as those offsets, keeps each
-- task's last final outcome (notify_state) and records every notification it
-- decided (notify_deliveries). Its sender thread then delivers the pending
-- rows to the channels of taskbusd's config (notify.channels) and records
-- each attempt (notify_attempts). Owner: store/notify.c.

-- The last final outcome of each task: 'succeeded' or 'failed' (a failure
-- after its last attempt). Ordered by (nominal_ms, attempt) so that a late
-- or repeated result of an older run does not move it back.
CREATE TABLE notify_state (
    task_id     text PRIMARY KEY,
    outcome     text NOT NULL CHECK (outcome IN ('succeeded', 'failed')),
    run_id      text NOT NULL,
    nominal_ms  bigint NOT NULL,
    attempt     int NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One notification: a rule of a task (rule_index in its notify array; -1 for
-- a test sent with POST /v1/notify/test) and one of its events, for one run.
-- The unique key is what makes a result read twice notify once.
CREATE TABLE notify_deliveries (
    id              bigserial PRIMARY KEY,
    run_id          text NOT NULL,
    rule_index      int NOT NULL,
    event           text NOT NULL,     -- failure, recovery, state_change, skipped, long_running, test
    task_id         text NOT NULL,
    security_group  text NOT NULL,
    channel         text NOT NULL,
    facts           jsonb NOT NULL,    -- task, run and outcome as decided (no secret)
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    UNIQUE (run_id, rule_index, event)
);
CREATE INDEX notify_deliveries_due ON notify_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX notify_deliveries_task ON notify_deliveries (task_id, id DESC);

-- Every attempt of a delivery: when, and the HTTP or SMTP status or the error.
CREATE TABLE notify_attempts (
    delivery_id  bigint NOT NULL REFERENCES notify_deliveries(id) ON DELETE CASCADE,
    attempt      int NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    status_code  int,                  -- HTTP status, or the SMTP server's last reply code
    error        text,                 -- NULL when delivered
    duration_ms  int NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

-- The notifier's check for long_running rules (every second) reads the runs
-- still running: few, whatever the history's size.
CREATE INDEX runs_running ON runs(started_at) WHERE status = 'running';
