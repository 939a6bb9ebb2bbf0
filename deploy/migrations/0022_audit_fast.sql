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
-- The same body wrapped in PL/pgSQL (RETURN (SELECT ...)) is planned once per
-- connection and its plan kept. The encoding is the same text, byte for byte:
-- the body is taken from the function as it stands, so this works on whatever
-- definition the previous migrations left (and the chain still verifies; the C
-- verifier in services/audit/audit_admin.c is unchanged). A migration that
-- redefines audit_canonical() later must keep it PL/pgSQL (or re-run this).
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
    EXECUTE format('CREATE OR REPLACE FUNCTION audit_canonical(e audit_events) RETURNS text '
                   'LANGUAGE plpgsql IMMUTABLE AS %L',
                   E'BEGIN\n    RETURN (' || body || E');\nEND');
END
$migrate$;
