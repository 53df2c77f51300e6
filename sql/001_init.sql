-- keyplane's key store: platform keys with versions, providers, models, routing, tokens, audit.
-- Every secret column holds a JWE (flattened JSON, dir + A256GCM) whose additional authenticated
-- data is the row's reference; it is never stored in plain text.

CREATE TABLE keyplane_secrets (
  name        text PRIMARY KEY,
  jwe         jsonb NOT NULL,
  kid         text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE platform_keys (
  name             text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
  env_var          text NOT NULL UNIQUE CHECK (env_var ~ '^[A-Z_][A-Z0-9_]*$'),
  current_version  integer NOT NULL,
  expires_at       timestamptz,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE platform_key_versions (
  name         text NOT NULL REFERENCES platform_keys (name) ON DELETE CASCADE,
  version      integer NOT NULL CHECK (version > 0),
  jwe          jsonb NOT NULL,
  kid          text NOT NULL,
  fingerprint  text NOT NULL,
  last4        text NOT NULL,
  expires_at   timestamptz,
  created_by   text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (name, version)
);
CREATE INDEX platform_key_versions_kid ON platform_key_versions (kid);

CREATE TABLE providers (
  slug         text PRIMARY KEY CHECK (slug ~ '^[a-z][a-z0-9_-]{0,62}$' AND slug <> 'health'),
  kind         text NOT NULL,
  api_base     text,
  key_name     text NOT NULL,
  enabled      boolean NOT NULL DEFAULT true,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now()
);

INSERT INTO providers (slug, kind, api_base, key_name) VALUES
  ('openai',     'openai',       'https://api.openai.com/v1',                        'openai'),
  ('anthropic',  'anthropic',    'https://api.anthropic.com',                        'anthropic'),
  ('gemini',     'gemini',       'https://generativelanguage.googleapis.com/v1beta', 'gemini'),
  ('groq',       'groq',         'https://api.groq.com/openai/v1',                   'groq'),
  ('openrouter', 'openrouter',   'https://openrouter.ai/api/v1',                     'openrouter'),
  ('together',   'together_ai',  'https://api.together.xyz/v1',                      'together'),
  ('fireworks',  'fireworks_ai', 'https://api.fireworks.ai/inference/v1',            'fireworks');

CREATE TABLE models (
  id             uuid PRIMARY KEY,
  model_name     text NOT NULL,
  provider       text NOT NULL REFERENCES providers (slug) ON DELETE RESTRICT,
  model          text NOT NULL,
  api_base       text,
  rpm            integer,
  tpm            integer,
  litellm_params jsonb NOT NULL DEFAULT '{}'::jsonb,
  model_info     jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX models_provider ON models (provider);
CREATE INDEX models_model_name ON models (model_name);

-- One row: the routing document (aliases and fallbacks).
CREATE TABLE routing (
  id          integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
  aliases     jsonb NOT NULL DEFAULT '{}'::jsonb,
  fallbacks   jsonb NOT NULL DEFAULT '{}'::jsonb,
  version     integer NOT NULL DEFAULT 0,
  updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO routing (id) VALUES (1);

CREATE TABLE api_tokens (
  id            uuid PRIMARY KEY,
  name          text NOT NULL,
  role          text NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
  token_sha256  bytea NOT NULL UNIQUE,
  created_by    text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  last_used_at  timestamptz,
  revoked_at    timestamptz
);

CREATE TABLE byok_keys (
  user_sub     text NOT NULL,
  provider     text NOT NULL,
  jwe          jsonb NOT NULL,
  kid          text NOT NULL,
  fingerprint  text NOT NULL,
  last4        text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_sub, provider)
);

-- Append-only audit trail; each row's hash covers the previous row's hash (a hash chain).
CREATE TABLE audit_log (
  id          bigserial PRIMARY KEY,
  at          timestamptz NOT NULL,
  actor       text NOT NULL,
  action      text NOT NULL,
  target      text NOT NULL,
  version     integer,
  request_id  text,
  details     jsonb NOT NULL DEFAULT '{}'::jsonb,
  prev_hash   text NOT NULL,
  hash        text NOT NULL UNIQUE
);

-- The head of the chain: appends lock this row (FOR UPDATE sees the latest committed head even
-- after waiting), so the chain never forks.
CREATE TABLE audit_head (
  id    integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
  hash  text NOT NULL
);
INSERT INTO audit_head (id, hash) VALUES (1, repeat('0', 64));
