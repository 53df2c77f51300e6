-- Key pools: a provider uses one or more platform keys, each with a weight; every model on the
-- provider is rendered once per key in service. `providers.key_name` stays: it is the pool's first key
-- (a pool of one, as before), kept in step by the providers service.
CREATE TABLE provider_keys (
  provider  text NOT NULL REFERENCES providers (slug) ON DELETE CASCADE ON UPDATE CASCADE,
  key_name  text NOT NULL CHECK (key_name ~ '^[a-z][a-z0-9_-]{0,62}$'),
  weight    integer NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 1000),
  position  integer NOT NULL CHECK (position >= 0),
  PRIMARY KEY (provider, key_name),
  UNIQUE (provider, position) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX provider_keys_key_name ON provider_keys (key_name);
INSERT INTO provider_keys (provider, key_name, weight, position) SELECT slug, key_name, 1, 0 FROM providers;
CREATE TRIGGER provider_keys_notify AFTER INSERT OR UPDATE OR DELETE ON provider_keys
  FOR EACH ROW EXECUTE FUNCTION keyplane_notify_changed('provider', 'key_name');

-- A key's state decides whether it is rendered: `active` and `cooling` (rate limited until
-- `state_until`, still served) and `retiring` (replaced, served until `state_until`) are in service;
-- `disabled` is left out of both files. Changes are rare and render (platform_keys' trigger).
ALTER TABLE platform_keys
  ADD COLUMN state        text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'cooling', 'disabled', 'retiring')),
  ADD COLUMN state_reason text,
  ADD COLUMN state_note   text CHECK (length(state_note) <= 500),
  ADD COLUMN state_since  timestamptz NOT NULL DEFAULT now(),
  ADD COLUMN state_until  timestamptz,
  ADD COLUMN replaced_by  text,
  ADD CONSTRAINT platform_keys_state_reason CHECK (
    (state = 'active' AND state_reason IS NULL)
    OR (state = 'cooling' AND state_reason = 'rate_limited' AND state_until IS NOT NULL)
    OR (state = 'disabled' AND state_reason IN ('auth_failed', 'quota_exhausted', 'manual', 'replaced'))
    OR (state = 'retiring' AND state_reason = 'rotated' AND state_until IS NOT NULL)
  );
CREATE INDEX platform_keys_state ON platform_keys (state);

-- What the last probe of each key saw (frequent writes: a table of its own, so probing never renders).
CREATE TABLE key_health (
  name              text PRIMARY KEY REFERENCES platform_keys (name) ON DELETE CASCADE,
  outcome           text NOT NULL CHECK (outcome IN ('ok', 'auth_failed', 'quota_exhausted', 'rate_limited', 'error', 'not_approved', 'no_probe')),
  http_status       integer,
  endpoint          text,
  detail            text,
  latency_ms        integer,
  key_version       integer,
  checked_at        timestamptz NOT NULL,
  ok_streak         integer NOT NULL DEFAULT 0,
  fail_streak       integer NOT NULL DEFAULT 0,
  next_probe_at     timestamptz,
  credit_limit      numeric,
  credit_usage      numeric,
  credit_remaining  numeric,
  credit_checked_at timestamptz,
  credit_low        boolean NOT NULL DEFAULT false
);
