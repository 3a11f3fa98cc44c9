-- taskbus schema, version 9: no result is lost between the executor's claim
-- and Kafka, and no run stays 'scheduled' forever (docs/reliability.md,
-- "No silent loss").
--
-- An outcome the executor decides when it claims a run (SKIPPED_OVERLAP, or
-- the FAILED of a RunRequest it cannot run) is committed here first, marked
-- result_pending, and published on run-results before the consumed offset is
-- committed; once its delivery is confirmed the mark is cleared. A RunRequest
-- read again after a crash in between finds its run claimed with the mark
-- still set, and publishes the result from here (status, result_error).

ALTER TABLE run_claims
    ADD COLUMN result_pending boolean NOT NULL DEFAULT false,
    ADD COLUMN result_error   text;

-- Runs no executor claimed: the executors look for them past
-- executor.unclaimed_timeout and record them LOST, so only runs still
-- 'scheduled' are indexed (a small set, whatever the history's size).
CREATE INDEX runs_scheduled ON runs(nominal_time) WHERE status = 'scheduled';
