-- taskbus schema, version 1.
-- The task tables are a projection of the task-events topic (rebuilt by
-- `taskbus replay`); identity tables are owned by PostgreSQL itself.

-- ---- identity -------------------------------------------------------------
CREATE TABLE users (
    id          text PRIMARY KEY,            -- the user id shown in tasks (user_id)
    created_at  timestamptz NOT NULL DEFAULT now(),
    disabled    boolean NOT NULL DEFAULT false
);

CREATE TABLE security_groups (
    name        text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE group_members (
    group_name  text NOT NULL REFERENCES security_groups(name) ON DELETE CASCADE,
    user_id     text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_name, user_id)
);
CREATE INDEX group_members_user ON group_members(user_id);

-- A token is 32 random bytes shown once; only its SHA-256 is stored.
CREATE TABLE api_tokens (
    id           text PRIMARY KEY,           -- public handle, e.g. "tok_3f9a..." (for revoke)
    user_id      text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash   bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_used_at timestamptz
);
CREATE INDEX api_tokens_user ON api_tokens(user_id);

-- Every administrative action: who (OS user running the CLI), what, when.
CREATE TABLE admin_audit (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    action      text NOT NULL,
    target      text NOT NULL,
    details     jsonb NOT NULL DEFAULT '{}'
);

-- ---- projection of task-events -------------------------------------------
CREATE TABLE tasks (
    id              text PRIMARY KEY,
    version         bigint NOT NULL,
    name            text NOT NULL,
    security_group  text NOT NULL,
    user_id         text NOT NULL,
    spec            jsonb NOT NULL,          -- the task in the REST API's shape
    paused          boolean NOT NULL DEFAULT false,
    labels          jsonb NOT NULL DEFAULT '{}',
    home_region     text NOT NULL DEFAULT '',
    epoch           bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL,
    created_by      text NOT NULL,
    updated_at      timestamptz NOT NULL,
    -- where in task-events this row comes from (for the scheduler's load-then-tail)
    event_partition int NOT NULL,
    event_offset    bigint NOT NULL
);
CREATE INDEX tasks_group_created ON tasks(security_group, created_at DESC, id DESC);
CREATE INDEX tasks_labels ON tasks USING gin (labels);
CREATE INDEX tasks_partition ON tasks(event_partition);

CREATE TABLE task_history (
    task_id         text NOT NULL,
    version         bigint NOT NULL,
    event_id        text NOT NULL UNIQUE,
    type            text NOT NULL,
    at              timestamptz NOT NULL,
    actor           text NOT NULL,
    command_id      text NOT NULL DEFAULT '',
    changed_fields  text[] NOT NULL DEFAULT '{}',
    spec            jsonb,                   -- state after the event (NULL once deleted)
    security_group  text NOT NULL,
    PRIMARY KEY (task_id, version)
);

-- Consumed offsets, written in the same transaction as what they produced:
-- the projection is exactly-once.
CREATE TABLE consumer_offsets (
    consumer    text NOT NULL,
    topic       text NOT NULL,
    partition   int NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (consumer, topic, partition)
);

-- ---- runs -------------------------------------------------------------------
CREATE TABLE runs (
    run_id          text PRIMARY KEY,
    task_id         text NOT NULL,
    security_group  text NOT NULL,
    nominal_time    timestamptz NOT NULL,
    attempt         int NOT NULL DEFAULT 1,
    trigger         text NOT NULL DEFAULT 'schedule',
    status          text NOT NULL,
    scheduled_at    timestamptz,
    started_at      timestamptz,
    finished_at     timestamptz,
    exit_code       int,
    signal          int,
    executor        text NOT NULL DEFAULT '',
    host            text NOT NULL DEFAULT '',
    output_bytes    bigint NOT NULL DEFAULT 0,
    infra_error     boolean NOT NULL DEFAULT false,
    error           text,
    log_expires_at  timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX runs_task_nominal ON runs(task_id, nominal_time DESC, run_id DESC);
CREATE INDEX runs_finished ON runs(finished_at);

-- The executors' claims: a run id is claimed once, ever.
CREATE TABLE run_claims (
    run_id       text PRIMARY KEY,
    task_id      text NOT NULL,
    executor_id  text NOT NULL,
    claimed_at   timestamptz NOT NULL DEFAULT now(),
    lease_until  timestamptz NOT NULL,
    state        text NOT NULL DEFAULT 'running'   -- running | done
);
CREATE INDEX run_claims_running ON run_claims(task_id) WHERE state = 'running';
CREATE INDEX run_claims_lease ON run_claims(lease_until) WHERE state = 'running';

CREATE TABLE run_logs (
    run_id      text NOT NULL,
    seq         bigint NOT NULL,
    stream      text NOT NULL,
    at          timestamptz NOT NULL,
    data        bytea NOT NULL,
    expires_at  timestamptz,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX run_logs_expires ON run_logs(expires_at);
