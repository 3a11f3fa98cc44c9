-- taskbus schema, version 5: poison isolation (docs/reliability.md).
--
-- A record that a PostgreSQL-consuming role (projector, archiver, replay)
-- can never apply as it is (it cannot be decoded, or PostgreSQL refuses it
-- with a data, integrity or program-limit error for its own content) is
-- kept here, raw, instead of stopping its partition: the row is written in
-- the same transaction as the batch's consumed offsets, so a record is
-- either applied or quarantined, exactly once. `taskbus admin quarantine
-- list|show|retry|drop` reads and re-drives it. Owned by store/quarantine.c.
CREATE TABLE quarantine (
    id             bigserial PRIMARY KEY,
    role           text NOT NULL,          -- who refused it ("projector", "archiver")
    topic          text NOT NULL,
    partition      int NOT NULL,
    "offset"       bigint NOT NULL,
    key            bytea,                  -- NULL: the record had no key
    -- the record's headers, in order: names and values (a NULL value is a
    -- header without one); bytea because a hostile producer's header names
    -- need not be UTF-8
    header_names   bytea[] NOT NULL DEFAULT '{}',
    header_values  bytea[] NOT NULL DEFAULT '{}',
    value          bytea,                  -- NULL: a tombstone
    error          text NOT NULL,
    sqlstate       text,                   -- NULL: refused before PostgreSQL (decode)
    first_seen     timestamptz NOT NULL DEFAULT now(),
    status         text NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'retried', 'dropped')),
    status_changed timestamptz,
    -- applied twice (a batch re-read after a crash, a replay): one row
    UNIQUE (role, topic, partition, "offset")
);
CREATE INDEX quarantine_status ON quarantine (status, role, topic);
