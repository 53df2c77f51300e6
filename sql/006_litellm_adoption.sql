-- litellm-api: an upgrade from a keyplane without the `litellm_owned` ledger finds its own items in
-- LiteLLM unrecorded. The first reload after the upgrade adopts, once, what carries keyplane's marks
-- in a form a copy cannot have (a credential named keyplane-* marked keyplane_managed, a model whose
-- LiteLLM id is its keyplane_id); from then on only the ledger decides. Set when that was done.
ALTER TABLE litellm_api_state ADD COLUMN adopted_at timestamptz;
