-- A forced reload restarts LiteLLM even when nothing changed: one per interval for the whole
-- deployment (every instance shares this row), so no operator can keep LiteLLM restarting.
ALTER TABLE sync_state ADD COLUMN forced_reload_at timestamptz;
