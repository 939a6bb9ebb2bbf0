/*  lumkey-migrate - applies the database schema (deploy/migrations, embedded).
 *
 *      lumkey-migrate            apply what is pending (idempotent)
 *      lumkey-migrate --status   list migrations: applied (when), pending, CHANGED
 *
 *  LUMKEY_DB (or --db): libpq conninfo. LUMKEY_DB_WAIT_MS: how long to wait
 *  for the server at start (10000). Exit 0 on success, 1 on failure, 2 on
 *  bad usage.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>

#include "lk_config.h"
#include "lk_db.h"
#include "lk_log.h"
#include "migrate.h"

static const char USAGE[] = "usage: lumkey-migrate [--status] [--db CONNINFO]\n"
                            "  applies deploy/migrations/*.sql (embedded) to LUMKEY_DB, in order, once each\n"
                            "  --status   list the migrations and whether they are applied\n"
                            "  LUMKEY_DB          libpq connection string\n"
                            "  LUMKEY_DB_WAIT_MS  how long to wait for the database (10000)\n";

int main(int argc, char **argv)
{
    lk_log_init("migrate");
    if (sodium_init() < 0) {
        lk_log_error("libsodium failed to initialise");
        return 1;
    }
    static const char *const with_value[] = {"db", NULL};
    static const char *const switches[] = {"status", "help", NULL};
    if (lk_config_has(argc, argv, "help")) {
        fputs(USAGE, stdout);
        return 0;
    }
    long wait_ms;
    if (lk_config_load_file() != 0 || lk_config_check_args(argc, argv, with_value, switches) != 0 ||
        lk_config_get_int(argc, argv, NULL, "LUMKEY_DB_WAIT_MS", 10000, 3600000, &wait_ms) != 0) {
        fputs(USAGE, stderr);
        return 2;
    }
    const char *conninfo = lk_config_get(argc, argv, "db", "LUMKEY_DB", NULL);
    if (!conninfo) {
        lk_log_error("LUMKEY_DB is not set");
        return 2;
    }

    int rc = 1;
    lk_db_t *db = lk_db_new(conninfo, "lumkey-migrate", 0);
    if (!db || lk_db_connect(db, (int)wait_ms) != 0) {
        lk_log_error("cannot reach the database");
        goto cleanup;
    }
    if (lk_config_has(argc, argv, "status")) {
        rc = migrate_status(db, stdout) == 0 ? 0 : 1;
        goto cleanup;
    }
    int applied = 0;
    if (migrate_apply(db, &applied) != 0) goto cleanup;
    lk_log_info("schema up to date (%d migration%s applied now, %zu known)", applied, applied == 1 ? "" : "s",
                migrate_nfiles);
    rc = 0;
cleanup:
    lk_db_destroy(&db);
    return rc;
}
