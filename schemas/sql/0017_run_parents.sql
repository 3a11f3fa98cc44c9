-- taskbus schema, version 17: tasks that wait for others (docs/scheduling.md,
-- "Dependencies").
--
-- A run the dependency poll started (trigger 'dependency') records the
-- parent runs whose outcomes let it start: their run ids, as the
-- RunRequest's parents carried them. [] for every other run. Owner: the
-- projector (store/runs.h), like the rest of runs.

ALTER TABLE runs ADD COLUMN parents jsonb NOT NULL DEFAULT '[]';

-- The tasks that wait for others (the normalized task has "after" only when
-- it names parents): the scheduler's dependency poll reads them per
-- partition every second, the api walks them for the cycle check.
CREATE INDEX tasks_dependents ON tasks(event_partition) WHERE spec ? 'after';
