-- Bounds on what a render reads from `models`: at most 5,000 deployments, and at most 8 MiB of their
-- text (names, api_base, litellm_params and model_info as stored). The API bounds each deployment;
-- this bounds their sum, for every writer (API, import, SQL), race-free: writers of models take one
-- advisory lock for the check, and each check sees every committed row.

ALTER TABLE models ADD COLUMN stored_bytes integer GENERATED ALWAYS AS (
  octet_length(model_name) + octet_length(model) + coalesce(octet_length(api_base), 0)
  + octet_length(litellm_params::text) + octet_length(model_info::text)
) STORED;

CREATE FUNCTION keyplane_models_within_limits() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  n bigint;
  total bigint;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext('keyplane.models.limits'));
  SELECT count(*), coalesce(sum(stored_bytes), 0) INTO n, total FROM models;
  IF n > 5000 THEN
    RAISE EXCEPTION 'keyplane holds at most 5000 model deployments (limit: models); delete some first'
      USING ERRCODE = 'KPLIM';
  END IF;
  IF total > 8388608 THEN
    RAISE EXCEPTION 'the model deployments may hold at most 8 MiB of names, api_base, litellm_params and model_info in all (limit: models_bytes; % bytes with this change)', total
      USING ERRCODE = 'KPLIM';
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER models_within_limits AFTER INSERT OR UPDATE ON models
  FOR EACH STATEMENT EXECUTE FUNCTION keyplane_models_within_limits();
