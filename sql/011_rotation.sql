-- Rotations without a gap: a new key joins every pool that holds the key it replaces; once LiteLLM
-- serves a revision with it (that revision's reload finished), the old key is `retiring` until
-- `retire_at`, then leaves the files. Each step and the deadline live here, not in a process, so a
-- restart or a new leader carries a rotation on from where it stopped.
CREATE TABLE key_rotations (
  id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  -- The provider it was asked for; no foreign key: deleting the provider must not drop the deadline.
  provider          text NOT NULL,
  new_key           text NOT NULL,
  replaces          text NOT NULL,
  -- Every provider whose pool held the replaced key when the new one was added beside it.
  pools             text[] NOT NULL,
  grace_ms          bigint NOT NULL CHECK (grace_ms >= 0),
  status            text NOT NULL CHECK (status IN ('waiting_for_reload', 'retiring', 'done', 'failed')),
  -- [{"step", "at", ...}] in order, as the API shows them.
  steps             jsonb NOT NULL DEFAULT '[]'::jsonb,
  -- The newest revision when the key was added: only a later one can have rendered it.
  after_revision    bigint NOT NULL DEFAULT 0,
  -- The new value's keyed fingerprint, to find the revision that rendered it (never the value).
  new_fingerprint   text NOT NULL,
  rendered_revision bigint,
  -- reload_done must reach this for the rendered revision to count as served.
  wait_generation   bigint,
  retire_at         timestamptz,
  error             text,
  -- Idempotency-Key, and the keyed digest of the request it came with.
  idempotency_key   text UNIQUE CHECK (length(idempotency_key) BETWEEN 1 AND 255),
  request_digest    text,
  created_by        text NOT NULL,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  CHECK (status <> 'retiring' OR retire_at IS NOT NULL)
);
CREATE INDEX key_rotations_open ON key_rotations (id) WHERE status IN ('waiting_for_reload', 'retiring');
CREATE INDEX key_rotations_provider ON key_rotations (provider, id);
