-- 0022_audit_fast: the audit append's fast path (issue 9).
--
-- audit_canonical() (0005, redefined by later migrations when the chain covers
-- new fields) is a LANGUAGE sql function that PostgreSQL cannot inline (it takes
-- a whole row). audit_append() calls it from PL/pgSQL, whose simple-expression
-- state lives for one transaction only, so PostgreSQL parsed and planned the
-- SQL function's body again in every transaction: ~0.3 ms of the ~0.56 ms an
-- event cost when it was committed alone (measured with pgbench, one
-- audit_append per transaction; docs/benchmarks.md, lead notes).
--
-- The same body as a PL/pgSQL RETURN expression (the SQL body `SELECT x` becomes
-- `RETURN x`, which PL/pgSQL evaluates as that same SELECT) is planned once per
-- connection, its plan kept, and run as a simple expression (no executor per
-- call): ~10 us a call instead of ~33 us for RETURN (SELECT x). The encoding is
-- the same text, byte for byte: the body is taken from the function as it
-- stands, so this works on whatever definition the previous migrations left
-- (e.g. one that appends new fields), and the chain still verifies (the C
-- verifier in services/audit/audit_admin.c is unchanged). tests/e2e/
-- test_audit_fast.py compares it with the last LANGUAGE sql definition in
-- deploy/migrations on varied rows. A migration that redefines audit_canonical()
-- later must keep it PL/pgSQL (or repeat this block).
DO $migrate$
DECLARE
    body text;
    lang text;
BEGIN
    SELECT p.prosrc, l.lanname INTO body, lang
      FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
     WHERE p.oid = 'audit_canonical(audit_events)'::regprocedure;
    IF lang = 'plpgsql' THEN
        RETURN; -- already fast
    END IF;
    IF lang <> 'sql' THEN
        RAISE EXCEPTION 'audit_canonical is LANGUAGE %, expected sql', lang;
    END IF;
    body := rtrim(btrim(body, E' \t\r\n'), E'; \t\r\n');
    IF body !~* '^select\s' THEN
        RAISE EXCEPTION 'audit_canonical body does not start with SELECT';
    END IF;
    body := regexp_replace(body, '^select\s+', '', 'i');
    EXECUTE format('CREATE OR REPLACE FUNCTION audit_canonical(e audit_events) RETURNS text '
                   'LANGUAGE plpgsql IMMUTABLE AS %L',
                   E'BEGIN\n    RETURN ' || body || E';\nEND');
END
$migrate$;
