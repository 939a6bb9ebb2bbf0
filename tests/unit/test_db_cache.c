/*  test_db_cache - lk_db's row cache (bounded, per-entry ttl, flush, copies
 *  independent of the result) and a LISTEN connection that cannot connect. */
#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "lk_db.h"
#include "lk_test.h"

/* A text-format result of one row: vals[i] NULL = SQL NULL. */
static PGresult *result_of(int n, const char *const *vals)
{
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    PGresAttDesc attrs[8];
    memset(attrs, 0, sizeof attrs);
    static char *names[] = {"a", "b", "c", "d", "e", "f", "g", "h"};
    for (int i = 0; i < n; i++) {
        attrs[i].name = names[i];
        attrs[i].typid = 25; /* text */
        attrs[i].typlen = -1;
        attrs[i].atttypmod = -1;
    }
    if (!res || !PQsetResultAttrs(res, n, attrs)) return NULL;
    for (int i = 0; i < n; i++)
        if (!PQsetvalue(res, 0, i, (char *)vals[i], vals[i] ? (int)strlen(vals[i]) : -1)) return NULL;
    return res;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_put_get_copy(void)
{
    lk_db_cache_t *c = lk_db_cache_new(16);
    LK_CHECK(c != NULL);
    const char *vals[] = {"key_1", NULL, "t", "\\x0102ff"};
    PGresult *res = result_of(4, vals);
    LK_CHECK(res != NULL);
    lk_db_row_t row;
    LK_CHECK(lk_db_cache_get(c, "k1", 2, &row) == 0);
    LK_CHECK(lk_db_cache_put(c, "k1", 2, res, 0, 10 * 1000000, &row) == 0);
    PQclear(res); /* the cache keeps its own copy */
    memset(&row, 0, sizeof row);
    LK_CHECK(lk_db_cache_get(c, "k1", 2, &row) == 1);
    LK_CHECK(row.ncols == 4 && lk_str_eq(row.v[0], "key_1") && row.null[1] && row.v[1].len == 0 &&
             !row.null[0] && lk_str_eq(row.v[2], "t"));
    LK_CHECK(row.v[0].ptr[row.v[0].len] == '\0'); /* NUL-terminated: strtoll / strtod work on it */
    uint8_t b[8];
    size_t n = 0;
    LK_CHECK(lk_db_row_bytea(&row, 3, b, sizeof b, &n) == 0 && n == 3 && b[0] == 1 && b[2] == 0xff);
    LK_CHECK(lk_db_row_bytea(&row, 1, b, sizeof b, &n) != 0); /* NULL */
    LK_CHECK(lk_db_row_bytea(&row, 3, b, 2, &n) != 0);        /* does not fit */
    LK_CHECK(lk_db_row_bytea(&row, 9, b, sizeof b, &n) != 0); /* no such column */
    /* another key of the same bytes but another length is another key */
    LK_CHECK(lk_db_cache_get(c, "k1x", 3, &row) == 0 && lk_db_cache_get(c, "k", 1, &row) == 0);
    /* the same key stored again: the newer row wins */
    const char *vals2[] = {"key_2", "u", "f", "\\x"};
    res = result_of(4, vals2);
    LK_CHECK(lk_db_cache_put(c, "k1", 2, res, 0, 10 * 1000000, &row) == 0 && lk_str_eq(row.v[0], "key_2"));
    PQclear(res);
    LK_CHECK(lk_db_cache_get(c, "k1", 2, &row) == 1 && lk_str_eq(row.v[0], "key_2") && !row.null[1]);
    /* flush forgets everything */
    lk_db_cache_flush(c);
    LK_CHECK(lk_db_cache_get(c, "k1", 2, &row) == 0);
    lk_db_cache_stats_t st = lk_db_cache_stats(c);
    LK_CHECK(st.hits == 2 && st.puts == 2 && st.flushes == 1);
    lk_db_cache_destroy(&c);
    LK_CHECK(c == NULL);
    lk_db_cache_destroy(&c); /* NULL-safe */
}

static void test_ttl(void)
{
    lk_db_cache_t *c = lk_db_cache_new(8);
    const char *vals[] = {"x"};
    PGresult *res = result_of(1, vals);
    lk_db_row_t row;
    LK_CHECK(lk_db_cache_put(c, "a", 1, res, 0, 20 * 1000, &row) == 0);    /* 20 ms */
    LK_CHECK(lk_db_cache_put(c, "b", 1, res, 0, 60 * 1000000, &row) == 0); /* 60 s */
    LK_CHECK(lk_db_cache_get(c, "a", 1, &row) == 1);
    sleep_ms(40);
    LK_CHECK(lk_db_cache_get(c, "a", 1, &row) == 0);
    LK_CHECK(lk_db_cache_get(c, "b", 1, &row) == 1);
    LK_CHECK(lk_db_cache_stats(c).expired == 1);
    PQclear(res);
    lk_db_cache_destroy(&c);
}

static void test_bounded(void)
{
    lk_db_cache_t *c = lk_db_cache_new(5); /* rounded up to 8 slots */
    const char *vals[] = {"v"};
    PGresult *res = result_of(1, vals);
    lk_db_row_t row;
    char key[32];
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(key, sizeof key, "key-%d", i);
        LK_CHECK(lk_db_cache_put(c, key, (size_t)n, res, 0, 60 * 1000000, &row) == 0);
    }
    int present = 0;
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(key, sizeof key, "key-%d", i);
        present += lk_db_cache_get(c, key, (size_t)n, &row);
    }
    LK_CHECK(present > 0 && present <= 8);
    int n = snprintf(key, sizeof key, "key-%d", 999); /* the last one stored is always there */
    LK_CHECK(lk_db_cache_get(c, key, (size_t)n, &row) == 1);
    PQclear(res);
    lk_db_cache_destroy(&c);
}

static int calls, resets;

static void on_notify(void *arg, const char *payload)
{
    (void)arg;
    calls++;
    if (!payload) resets++;
}

static void test_listen_unreachable(void)
{
    lk_db_listen_t *l = lk_db_listen_new("host=/nonexistent-lumkey-dir port=1", "test", "lumkey_cache");
    LK_CHECK(l != NULL);
    LK_CHECK(lk_db_listen_poll(l, on_notify, NULL) == 0); /* not listening: callers bypass their cache */
    LK_CHECK(lk_db_listen_poll(l, on_notify, NULL) == 0); /* backing off, fails fast */
    LK_CHECK(lk_db_listen_fd(l) == -1);
    LK_CHECK(calls == 0); /* never connected: nothing was announced */
    LK_CHECK(lk_db_listen_poll(NULL, on_notify, NULL) == 0);
    lk_db_listen_destroy(&l);
    LK_CHECK(l == NULL);
    (void)resets;
}

int main(void)
{
    LK_RUN(test_put_get_copy);
    LK_RUN(test_ttl);
    LK_RUN(test_bounded);
    LK_RUN(test_listen_unreachable);
    return LK_TEST_DONE();
}
