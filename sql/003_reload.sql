-- Reload runs: one row per attempt to make LiteLLM serve a revision, and one row per target
-- (container, command or URL) of that attempt. GET /api/v1/admin/sync shows the latest.

CREATE TABLE reload_runs (
  id           bigserial PRIMARY KEY,
  revision     bigint NOT NULL,
  reloader     text NOT NULL CHECK (reloader IN ('none', 'command', 'docker', 'litellm-api')),
  attempt      integer NOT NULL CHECK (attempt > 0),
  started_at   timestamptz NOT NULL,
  finished_at  timestamptz NOT NULL,
  status       text NOT NULL CHECK (status IN ('ok', 'failed', 'skipped')),
  error        text
);
CREATE INDEX reload_runs_revision ON reload_runs (revision);

CREATE TABLE reload_run_targets (
  run_id       bigint NOT NULL REFERENCES reload_runs (id) ON DELETE CASCADE,
  position     integer NOT NULL,
  target       text NOT NULL,
  started_at   timestamptz NOT NULL,
  finished_at  timestamptz NOT NULL,
  status       text NOT NULL CHECK (status IN ('ok', 'failed', 'skipped')),
  error        text,
  PRIMARY KEY (run_id, position)
);
