/*  migrate - applies the schema migrations embedded in lumkey-migrate. */
#include "migrate.h"

#include <sodium.h>
#include <string.h>

#include "lk_log.h"
#include "lk_util.h"

#define LOCK_KEY "7306037418557646161" /* any constant: the migrators' advisory lock */

static const char SQL_TABLE[] = "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                " version text PRIMARY KEY,"
                                " checksum text NOT NULL,"
                                " applied_at timestamptz NOT NULL DEFAULT now())";

static void checksum(const migrate_file_t *f, char out[65])
{
    uint8_t h[32];
    crypto_generichash(h, sizeof h, (const uint8_t *)f->sql, f->len, NULL, 0);
    lk_hex(out, h, sizeof h);
}

/* schema_migrations rows: version, checksum, applied_at. create: make the table if missing
 * (otherwise a missing table reads as no rows). */
static int load_applied(lk_db_t *db, int create, PGresult **res)
{
    if (create && lk_db_query(db, SQL_TABLE, NULL, NULL) != LK_DB_OK) return -1;
    const char *sql = "SELECT version, checksum, applied_at::text FROM schema_migrations ORDER BY version";
    if (!create) {
        PGresult *r = NULL;
        if (lk_db_query(db, "SELECT to_regclass('schema_migrations') IS NOT NULL", NULL, &r) != LK_DB_OK)
            return -1;
        int exists = lk_db_bool(r, 0, 0);
        PQclear(r);
        if (!exists) sql = "SELECT ''::text, ''::text, ''::text WHERE false";
    }
    return lk_db_query(db, sql, NULL, res) == LK_DB_OK ? 0 : -1;
}

/* Row of version in res, or -1. */
static int find_row(const PGresult *res, const char *version)
{
    for (int i = 0; i < PQntuples(res); i++)
        if (lk_str_eq(lk_db_str(res, i, 0), version)) return i;
    return -1;
}

static int apply_one(lk_db_t *db, const migrate_file_t *f, const char *sum)
{
    if (lk_db_begin(db) != LK_DB_OK) return -1;
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_cstr(&p, f->version);
    lk_db_param_cstr(&p, sum);
    if (lk_db_script(db, f->sql) != LK_DB_OK ||
        lk_db_query(db, "INSERT INTO schema_migrations (version, checksum) VALUES ($1::text, $2::text)", &p,
                    NULL) != LK_DB_OK ||
        lk_db_commit(db) != LK_DB_OK) {
        lk_db_rollback(db);
        lk_log_error("migration %s failed and was rolled back", f->version);
        return -1;
    }
    lk_log_info("applied migration %s", f->version);
    return 0;
}

int migrate_apply(lk_db_t *db, int *applied)
{
    *applied = 0;
    int rc = -1, locked = 0;
    PGresult *res = NULL;
    if (lk_db_query(db, "SELECT pg_advisory_lock(" LOCK_KEY ")", NULL, NULL) != LK_DB_OK) goto cleanup;
    locked = 1;
    if (load_applied(db, 1, &res) != 0) goto cleanup;
    for (size_t i = 0; i < migrate_nfiles; i++) {
        const migrate_file_t *f = &migrate_files[i];
        char sum[65];
        checksum(f, sum);
        int row = find_row(res, f->version);
        if (row >= 0) {
            if (!lk_str_eq(lk_db_str(res, row, 1), sum)) {
                lk_log_error(
                    "migration %s changed after it was applied: this database does not match the code "
                    "(recreate a development database, or add a new migration instead of editing one)",
                    f->version);
                goto cleanup;
            }
            continue;
        }
        if (apply_one(db, f, sum) != 0) goto cleanup;
        (*applied)++;
    }
    for (int r = 0; r < PQntuples(res); r++) {
        int known = 0;
        for (size_t i = 0; i < migrate_nfiles; i++)
            known |= lk_str_eq(lk_db_str(res, r, 0), migrate_files[i].version);
        if (!known)
            lk_log_warn(
                "the database has migration %s, which this lumkey-migrate does not know (newer schema?)",
                PQgetvalue(res, r, 0));
    }
    rc = 0;
cleanup:
    PQclear(res);
    if (locked && lk_db_query(db, "SELECT pg_advisory_unlock(" LOCK_KEY ")", NULL, NULL) != LK_DB_OK)
        lk_log_warn("could not release the migration lock (it goes with the session)");
    return rc;
}

int migrate_status(lk_db_t *db, FILE *out)
{
    PGresult *res = NULL;
    if (load_applied(db, 0, &res) != 0) return -1;
    for (size_t i = 0; i < migrate_nfiles; i++) {
        const migrate_file_t *f = &migrate_files[i];
        char sum[65];
        checksum(f, sum);
        int row = find_row(res, f->version);
        if (row < 0)
            fprintf(out, "%-32s pending\n", f->version);
        else
            fprintf(out, "%-32s %s %s\n", f->version,
                    lk_str_eq(lk_db_str(res, row, 1), sum) ? "applied" : "CHANGED", PQgetvalue(res, row, 2));
    }
    for (int r = 0; r < PQntuples(res); r++) {
        int known = 0;
        for (size_t i = 0; i < migrate_nfiles; i++)
            known |= lk_str_eq(lk_db_str(res, r, 0), migrate_files[i].version);
        if (!known) fprintf(out, "%-32s unknown %s\n", PQgetvalue(res, r, 0), PQgetvalue(res, r, 2));
    }
    PQclear(res);
    return 0;
}
