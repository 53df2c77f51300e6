-- Health: the prober's view of every provider and of LiteLLM itself, and a history of every probe.
-- `health_status` is the status after hysteresis; `health_observed_*` is what the last probe saw.
-- The sync trigger on providers fires only for kind/api_base/key_name/enabled, so these frequent
-- updates never cause a render.

ALTER TABLE providers
  ADD COLUMN health_status           text NOT NULL DEFAULT 'unknown' CHECK (health_status IN ('healthy', 'degraded', 'down', 'unknown')),
  ADD COLUMN health_reason           text NOT NULL DEFAULT 'never_checked',
  ADD COLUMN health_observed_status  text CHECK (health_observed_status IN ('healthy', 'degraded', 'down', 'unknown')),
  ADD COLUMN health_observed_reason  text,
  ADD COLUMN health_latency_ms       integer,
  ADD COLUMN health_http_status      integer,
  ADD COLUMN health_detail           text,
  ADD COLUMN health_checked_at       timestamptz,
  ADD COLUMN health_changed_at       timestamptz,
  ADD COLUMN health_ok_streak        integer NOT NULL DEFAULT 0,
  ADD COLUMN health_fail_streak      integer NOT NULL DEFAULT 0,
  ADD COLUMN health_key_fingerprint  text,
  ADD COLUMN health_key_version      integer,
  ADD COLUMN degraded_ms             integer NOT NULL DEFAULT 2000 CHECK (degraded_ms > 0);

-- LiteLLM's own health, one row per LiteLLM URL probed (credentials stripped from the URL).
CREATE TABLE litellm_health (
  url              text PRIMARY KEY,
  status           text NOT NULL CHECK (status IN ('healthy', 'degraded', 'down', 'unknown')),
  reason           text NOT NULL,
  observed_status  text NOT NULL CHECK (observed_status IN ('healthy', 'degraded', 'down', 'unknown')),
  observed_reason  text NOT NULL,
  latency_ms       integer,
  http_status      integer,
  detail           text,
  litellm_version  text,
  checked_at       timestamptz NOT NULL,
  changed_at       timestamptz NOT NULL,
  ok_streak        integer NOT NULL DEFAULT 0,
  fail_streak      integer NOT NULL DEFAULT 0
);

-- One row per probe. `subject` tells a provider slug from a LiteLLM URL (a provider may be called `litellm`).
CREATE TABLE health_history (
  id               bigserial PRIMARY KEY,
  subject          text NOT NULL CHECK (subject IN ('provider', 'litellm')),
  name             text NOT NULL,
  status           text NOT NULL CHECK (status IN ('healthy', 'degraded', 'down', 'unknown')),
  observed_status  text NOT NULL CHECK (observed_status IN ('healthy', 'degraded', 'down', 'unknown')),
  reason           text NOT NULL,
  latency_ms       integer,
  http_status      integer,
  detail           text,
  key_name         text,
  key_version      integer,
  key_fingerprint  text,
  checked_at       timestamptz NOT NULL
);
CREATE INDEX health_history_subject ON health_history (subject, name, id DESC);
CREATE INDEX health_history_checked_at ON health_history (checked_at);
