-- Sync: every committed change to a table that shapes LiteLLM's files nudges the watcher through
-- pg_notify('keyplane_changed', ...). The payload names the table, the operation and the row (names,
-- versions, ids), never a secret: the watcher re-reads the whole state anyway.

CREATE FUNCTION keyplane_notify_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  row_json jsonb;
  col text;
  parts text[] := '{}';
BEGIN
  row_json := to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END);
  -- The trigger's arguments name the key columns; only those leave the database.
  FOREACH col IN ARRAY TG_ARGV LOOP
    parts := parts || coalesce(row_json ->> col, '');
  END LOOP;
  PERFORM pg_notify('keyplane_changed', json_build_object(
    'table', TG_TABLE_NAME,
    'op', lower(TG_OP),
    'id', array_to_string(parts, '/')
  )::text);
  RETURN NULL;
END;
$$;

CREATE TRIGGER platform_keys_notify AFTER INSERT OR UPDATE OR DELETE ON platform_keys
  FOR EACH ROW EXECUTE FUNCTION keyplane_notify_changed('name');
CREATE TRIGGER platform_key_versions_notify AFTER INSERT OR UPDATE OR DELETE ON platform_key_versions
  FOR EACH ROW EXECUTE FUNCTION keyplane_notify_changed('name', 'version');
CREATE TRIGGER models_notify AFTER INSERT OR UPDATE OR DELETE ON models
  FOR EACH ROW EXECUTE FUNCTION keyplane_notify_changed('id');
CREATE TRIGGER routing_notify AFTER INSERT OR UPDATE OR DELETE ON routing
  FOR EACH ROW EXECUTE FUNCTION keyplane_notify_changed('id');

-- Providers also carry health columns that the prober updates often; only the columns the
-- renderer reads may cause a render.
CREATE TRIGGER providers_notify_insert_delete AFTER INSERT OR DELETE ON providers
  FOR EACH ROW EXECUTE FUNCTION keyplane_notify_changed('slug');
CREATE TRIGGER providers_notify_update AFTER UPDATE OF slug, kind, api_base, key_name, enabled ON providers
  FOR EACH ROW
  WHEN (OLD.slug IS DISTINCT FROM NEW.slug
     OR OLD.kind IS DISTINCT FROM NEW.kind
     OR OLD.api_base IS DISTINCT FROM NEW.api_base
     OR OLD.key_name IS DISTINCT FROM NEW.key_name
     OR OLD.enabled IS DISTINCT FROM NEW.enabled)
  EXECUTE FUNCTION keyplane_notify_changed('slug');

-- One row per render that changed a file. `keys` holds, per platform key, its env var, version and
-- HMAC fingerprint (never a value), so the next revision can name the keys that changed.
CREATE TABLE sync_revisions (
  revision       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  config_sha256  text NOT NULL,
  env_sha256     text NOT NULL,
  changed_files  text[] NOT NULL,
  trigger        text NOT NULL,
  changed_keys   text[] NOT NULL DEFAULT '{}',
  keys           jsonb NOT NULL DEFAULT '{}'::jsonb,
  skipped        jsonb NOT NULL DEFAULT '[]'::jsonb,
  instance_id    text NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now()
);

-- One row: who leads, and how the leader's last render went, so every instance can show it.
CREATE TABLE sync_state (
  id               integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
  leader_instance  text,
  leader_since     timestamptz,
  last_attempt_at  timestamptz,
  last_status      text CHECK (last_status IN ('changed', 'unchanged', 'failed')),
  last_trigger     text,
  last_error       jsonb,
  last_duration_ms double precision,
  skipped          jsonb NOT NULL DEFAULT '[]'::jsonb,
  warnings         jsonb NOT NULL DEFAULT '[]'::jsonb,
  updated_at       timestamptz NOT NULL DEFAULT now()
);
INSERT INTO sync_state (id) VALUES (1);
