-- Virtual keys: LiteLLM's own client keys, made and changed through LiteLLM's /key/* API. keyplane
-- keeps the alias, LiteLLM's hash of the key (its `token`) and the settings it was given; never the
-- key, which is shown once, in the answer that made it.
CREATE TABLE virtual_keys (
  alias           text PRIMARY KEY CHECK (alias ~ '^[A-Za-z0-9]([A-Za-z0-9_.@-]{0,98}[A-Za-z0-9])?$'),
  -- `creating`: reserved while /key/generate runs (the leader cleans up a row a crash left here);
  -- `active`: LiteLLM made the key.
  status          text NOT NULL CHECK (status IN ('creating', 'active')),
  token           text UNIQUE CHECK (length(token) BETWEEN 1 AND 256),
  -- LiteLLM's abbreviation of the key, `sk-...abcd`, so its holder can tell which one they have.
  masked_key      text,
  models          text[] NOT NULL DEFAULT '{}',
  max_budget      double precision CHECK (max_budget >= 0),
  budget_duration text,
  rpm_limit       bigint CHECK (rpm_limit >= 0),
  tpm_limit       bigint CHECK (tpm_limit >= 0),
  duration        text,
  metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
  expires_at      timestamptz,
  -- The tag keyplane puts into the metadata of the key it asks LiteLLM to make
  -- (metadata.keyplane_op): a key made by a request whose answer was lost is found by it, and no
  -- other key is ever taken for it.
  op              text NOT NULL,
  created_by      text NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  rotated_at      timestamptz,
  CHECK (status = 'creating' OR token IS NOT NULL)
);

-- Rotations with overlap: a new key beside the old one, the old one deleted in LiteLLM at
-- `delete_at` by the leader. The deadline and every retry live here, not in a process, so a restart
-- or a new leader carries on.
CREATE TABLE virtual_key_rotations (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  -- No foreign key: deleting the virtual key must not drop an old key still to be deleted.
  alias           text NOT NULL,
  -- `generating`: the new key is being made (one at a time per alias); `retiring`: both keys work
  -- until delete_at; `done`: the old key is deleted (or was gone already).
  status          text NOT NULL CHECK (status IN ('generating', 'retiring', 'done')),
  old_token       text NOT NULL,
  old_masked_key  text,
  new_token       text,
  new_masked_key  text,
  grace_ms        bigint NOT NULL CHECK (grace_ms >= 0),
  delete_at       timestamptz,
  deleted_at      timestamptz,
  -- Failed deletions: how many, the last error (LiteLLM's message, scrubbed), when to try again,
  -- and when a person was alerted.
  attempts        integer NOT NULL DEFAULT 0,
  last_error      text,
  next_attempt_at timestamptz,
  alerted_at      timestamptz,
  note            text,
  -- Idempotency-Key, and the keyed digest of the request it came with.
  idempotency_key text UNIQUE CHECK (length(idempotency_key) BETWEEN 1 AND 255),
  request_digest  text,
  created_by      text NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  CHECK (status = 'generating' OR (new_token IS NOT NULL AND delete_at IS NOT NULL))
);
CREATE UNIQUE INDEX virtual_key_rotations_generating ON virtual_key_rotations (alias) WHERE status = 'generating';
CREATE INDEX virtual_key_rotations_due ON virtual_key_rotations (delete_at) WHERE status = 'retiring';
CREATE INDEX virtual_key_rotations_alias ON virtual_key_rotations (alias, id);
