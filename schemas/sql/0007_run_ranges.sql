-- Issue 13 item 6: fires not run are one run row per range. A paused task's
-- fires, and fires missed under a misfire policy that skips them, are
-- recorded by the scheduler as one RunResult per range of consecutive fires
-- (RunResult.last_nominal_time, RunResult.occurrences): nominal_time is the
-- range's first fire, last_nominal_time its last (NULL for a single run),
-- occurrences how many nominal fires the row stands for (1 for a run).
ALTER TABLE runs
    ADD COLUMN last_nominal_time timestamptz
        CHECK (last_nominal_time IS NULL OR last_nominal_time >= nominal_time),
    ADD COLUMN occurrences       bigint NOT NULL DEFAULT 1 CHECK (occurrences >= 1);
