-- taskbus schema, version 18: the parameter values of a run (docs/api.md,
-- "Run now with parameters"). params is RunRequest.params (and
-- RunResult.params, for a row a result made first): every declared
-- parameter of the task with the value the run got, as a JSON object of
-- strings; {} for a task without parameters and for runs from before this
-- migration. The first non-empty value a run's records carry is kept.
-- Owner: the projector (store/runs.h).

ALTER TABLE runs ADD COLUMN params jsonb NOT NULL DEFAULT '{}'::jsonb;
