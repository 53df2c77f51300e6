-- How long each reloaded target did not serve (from its stop, or its reload command, until it was
-- ready again): the cost of a rotation to LiteLLM's clients, shown in the sync status.
ALTER TABLE reload_run_targets ADD COLUMN outage_ms integer CHECK (outage_ms >= 0);
