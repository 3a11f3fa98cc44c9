-- taskbus schema, version 4: region replication (docs/replication.md).
--
-- When the projector applied each history row, so the replication lag of a
-- region's copy can be measured where it matters (the moment a read in this
-- region sees the event): projected_at - at. clock_timestamp(), not now():
-- one projector transaction applies a batch, and now() is its start.
ALTER TABLE task_history
    ADD COLUMN projected_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- the region whose task-events the row came from ('' = this region)
    ADD COLUMN source_region text NOT NULL DEFAULT '',
    -- home-region epoch of the event (TaskEvent.epoch): a failover raises it
    ADD COLUMN epoch bigint NOT NULL DEFAULT 0;
