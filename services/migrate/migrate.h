/*  migrate - applies the schema migrations embedded in lumkey-migrate.
 *
 *  Migrations are deploy/migrations/NNNN_name.sql, embedded at build time and
 *  applied in file-name order. Each runs in its own transaction together with
 *  its row in schema_migrations (version, checksum, applied_at); a session
 *  advisory lock keeps two migrators from racing. Applying is idempotent: an
 *  applied migration is skipped, and one whose SQL changed since it was
 *  applied is an error (the database no longer matches the code).
 *  A migration file must not contain its own BEGIN / COMMIT.
 */
#ifndef MIGRATE_H
#define MIGRATE_H

#include <stddef.h>
#include <stdio.h>

#include "lk_db.h"

typedef struct {
    const char *version; /* file name without ".sql": "0001_init" */
    const char *sql;
    size_t len;
} migrate_file_t;

/* Generated (migrate_embedded.c): migrate_nfiles entries, then a zero entry. */
extern const migrate_file_t migrate_files[];
extern const size_t migrate_nfiles;

/* Applies what is pending. *applied = how many were applied now. 0 / -1 (logged). */
int migrate_apply(lk_db_t *db, int *applied) __attribute__((warn_unused_result));

/* Prints one line per migration (applied with its time, pending, changed,
 * or unknown to this binary) to out. 0 / -1 (logged). */
int migrate_status(lk_db_t *db, FILE *out) __attribute__((warn_unused_result));

#endif
