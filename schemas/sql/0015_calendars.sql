-- taskbus schema, version 15: business calendars (docs/scheduling.md,
-- "Calendars"; docs/api.md, "Calendars").
--
-- A calendar is named within its security group, like a task's name, and
-- is what PUT /v1/calendars/{name} last stored: the iCalendar text as it
-- was uploaded (already checked by the strict reader, core/lib/schedule/
-- ics.c, and built once into a calendar, so a row always parses), the zone
-- its days are read in and its weekend. version counts the PUTs (1 on the
-- first) and lets a writer refuse to overwrite a newer calendar. Owner: the
-- api role (store/calendars.h). The scheduler does not read it yet.

CREATE TABLE calendars (
    security_group  text NOT NULL,
    name            text NOT NULL,
    timezone        text NOT NULL,
    weekend         text NOT NULL,                 -- "sat,sun", or "" for none
    source          text NOT NULL,                 -- the .ics text
    events          integer NOT NULL,              -- VEVENTs read from it
    version         bigint NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    updated_by      text NOT NULL,                 -- the user id of the last PUT
    PRIMARY KEY (security_group, name)
);
