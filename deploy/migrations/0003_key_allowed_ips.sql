-- 0003_key_allowed_ips: an optional source-address allowlist per Lumkey key.
-- Empty = any address. Entries are addresses or networks (10.0.0.0/8, 2001:db8::/32).
ALTER TABLE api_keys ADD COLUMN allowed_ips inet[] NOT NULL DEFAULT '{}';
