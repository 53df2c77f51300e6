-- Trust: where keys may be sent, a durable wish to reload, LiteLLM auth that fails closed, and what
-- keyplane owns inside LiteLLM's database.

-- (key, destination) pairs an admin approved. A destination is an http(s) origin
-- (`https://api.openai.com`) or `litellm-default:<kind>`. Keys are matched by name, so a pair may be
-- approved before its key exists. Nothing sends a key to a destination that is not listed here.
CREATE TABLE key_destinations (
  key_name     text NOT NULL CHECK (key_name ~ '^[a-z][a-z0-9_-]{0,62}$'),
  destination  text NOT NULL CHECK (length(destination) BETWEEN 1 AND 300),
  approved_by  text NOT NULL,
  approved_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (key_name, destination)
);

CREATE TRIGGER key_destinations_notify AFTER INSERT OR UPDATE OR DELETE ON key_destinations
  FOR EACH ROW EXECUTE FUNCTION keyplane_notify_changed('key_name');

-- An upgrade keeps serving what was already rendered: every pair in use now counts as approved.
CREATE FUNCTION pg_temp.origin_of(url text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT regexp_replace(regexp_replace(lower(substring(url FROM '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*')), '^(https://[^/]*):443$', '\1'), '^(http://[^/]*):80$', '\1')
$$;
WITH kinds (kind, base) AS (VALUES
    ('openai', 'https://api.openai.com'), ('openrouter', 'https://openrouter.ai'), ('groq', 'https://api.groq.com'),
    ('together_ai', 'https://api.together.xyz'), ('fireworks_ai', 'https://api.fireworks.ai'), ('mistral', 'https://api.mistral.ai'),
    ('deepseek', 'https://api.deepseek.com'), ('xai', 'https://api.x.ai'), ('anthropic', 'https://api.anthropic.com'),
    ('gemini', 'https://generativelanguage.googleapis.com'), ('ollama', 'http://127.0.0.1:11434')),
  pairs AS (
    SELECT p.key_name, coalesce(pg_temp.origin_of(p.api_base), k.base, 'litellm-default:' || p.kind) AS destination
      FROM providers p LEFT JOIN kinds k ON k.kind = p.kind
    UNION
    SELECT p.key_name, coalesce(pg_temp.origin_of(coalesce(m.api_base, p.api_base)), k.base, 'litellm-default:' || p.kind)
      FROM models m JOIN providers p ON p.slug = m.provider LEFT JOIN kinds k ON k.kind = p.kind)
INSERT INTO key_destinations (key_name, destination, approved_by)
SELECT key_name, destination, 'migration' FROM pairs
WHERE key_name NOT IN ('litellm_master_key', 'litellm_salt_key')
ON CONFLICT DO NOTHING;

-- Once LiteLLM's config has had a master key, a render without one fails (unless the base config
-- turns auth off on purpose). `reload_wanted` / `reload_done` make the wish to reload durable: a
-- render that changes a file raises `reload_wanted` before the swap, a finished reload of that
-- generation raises `reload_done`; a start or a new leader reloads while they differ.
ALTER TABLE sync_state
  ADD COLUMN auth_required boolean NOT NULL DEFAULT false,
  ADD COLUMN reload_wanted bigint NOT NULL DEFAULT 0,
  ADD COLUMN reload_done bigint NOT NULL DEFAULT 0,
  ADD COLUMN reload_wanted_at timestamptz;
UPDATE sync_state SET auth_required = EXISTS (SELECT 1 FROM platform_keys WHERE name = 'litellm_master_key' OR env_var = 'LITELLM_MASTER_KEY');

-- A viewer sees revisions: the env file's digest is keyed (HMAC), never a plain hash of its secrets.
ALTER TABLE sync_revisions RENAME COLUMN env_sha256 TO env_digest;
UPDATE sync_revisions SET env_digest = 'unavailable';

-- What keyplane created inside LiteLLM (litellm-api): only these are ever changed or deleted there.
-- `known_master_version` is the version of litellm_master_key that LiteLLM was last seen to accept.
CREATE TABLE litellm_owned (
  kind        text NOT NULL CHECK (kind IN ('credential', 'model')),
  name        text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (kind, name)
);
CREATE TABLE litellm_api_state (
  id                    integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
  known_master_version  integer,
  updated_at            timestamptz NOT NULL DEFAULT now()
);
INSERT INTO litellm_api_state (id) VALUES (1);
