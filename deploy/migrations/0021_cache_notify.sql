-- 0021_cache_notify: lumkey-policy and lumkey-vault cache what DECIDE and
-- CRED_GET read (docs/architecture.md, "Caches"). Every statement that changes
-- one of the tables those answers come from sends NOTIFY lumkey_cache with the
-- table's name as payload, delivered to the workers' LISTEN connections at
-- commit; a worker drops its cached rows before its next answer. One
-- notification per statement (and PostgreSQL folds identical ones within a
-- transaction): only admin operations write these tables, never the request
-- path.

CREATE FUNCTION lumkey_cache_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('lumkey_cache', TG_TABLE_NAME);
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_keys_cache_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION lumkey_cache_notify();
CREATE TRIGGER tenants_cache_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenants
    FOR EACH STATEMENT EXECUTE FUNCTION lumkey_cache_notify();
CREATE TRIGGER policies_cache_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON policies
    FOR EACH STATEMENT EXECUTE FUNCTION lumkey_cache_notify();
CREATE TRIGGER policy_versions_cache_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON policy_versions
    FOR EACH STATEMENT EXECUTE FUNCTION lumkey_cache_notify();
CREATE TRIGGER routes_cache_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON routes
    FOR EACH STATEMENT EXECUTE FUNCTION lumkey_cache_notify();
CREATE TRIGGER providers_cache_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON providers
    FOR EACH STATEMENT EXECUTE FUNCTION lumkey_cache_notify();
CREATE TRIGGER credentials_cache_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON credentials
    FOR EACH STATEMENT EXECUTE FUNCTION lumkey_cache_notify();
