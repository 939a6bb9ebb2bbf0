-- 0010: Azure OpenAI providers (deployment URLs, api-key header; see services/edge/edge_api.c).
ALTER TABLE providers DROP CONSTRAINT IF EXISTS providers_kind_check;
ALTER TABLE providers ADD CONSTRAINT providers_kind_check
    CHECK (kind IN ('openai', 'anthropic', 'azure', 'openai-compatible'));
