/*  lk_db - one PostgreSQL connection for a worker. */
#include "lk_db.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lk_log.h"
#include "lk_util.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000

typedef struct {
    const char *name;
    const char *sql;
    int prepared; /* on the current connection */
} stmt_t;

/* Reconnection pacing and its log lines, for both kinds of connection. */
typedef struct {
    int64_t next_attempt_ms; /* monotonic */
    int backoff_ms;
    int down_logged; /* "unavailable" or "lost" logged since the last success */
    int ever_connected;
} link_t;

struct lk_db {
    char *conninfo;
    char app_name[64];
    char options[64];
    PGconn *conn;
    stmt_t stmts[LK_DB_MAX_STATEMENTS];
    int nstmts;
    int in_tx;
    int in_pipe;     /* lk_db_pipe_begin .. lk_db_pipe_commit */
    size_t pipe_n;   /* statements queued */
    int pipe_broken; /* a send failed: the commit fails */
    link_t link;
    char sqlstate[6];
    char last_logged_state[6]; /* repeated failures are logged at most every 5 s */
    int64_t last_logged_ms;
};

/* ----------------------------------------------------------- parameters -- */

void lk_db_params_init(lk_db_params_t *p)
{
    p->n = 0;
    p->overflow = 0;
}

static int param_slot(lk_db_params_t *p)
{
    if (p->n >= LK_DB_MAX_PARAMS) {
        p->overflow = 1;
        return -1;
    }
    return p->n++;
}

void lk_db_param_bytes(lk_db_params_t *p, const void *data, size_t len)
{
    int i = param_slot(p);
    if (i < 0) return;
    if (len > INT32_MAX) {
        p->overflow = 1;
        len = 0;
    }
    p->values[i] = data ? (const char *)data : "";
    p->lengths[i] = (int)len;
    p->formats[i] = 1;
}

void lk_db_param_str(lk_db_params_t *p, lk_str_t s)
{
    lk_db_param_bytes(p, s.ptr, s.len);
}

void lk_db_param_cstr(lk_db_params_t *p, const char *s)
{
    lk_db_param_bytes(p, s, s ? strlen(s) : 0);
}

void lk_db_param_i64(lk_db_params_t *p, int64_t v)
{
    int i = param_slot(p);
    if (i < 0) return;
    snprintf(p->num[i], sizeof p->num[i], "%" PRId64, v);
    p->values[i] = p->num[i];
    p->lengths[i] = 0;
    p->formats[i] = 0;
}

void lk_db_param_null(lk_db_params_t *p)
{
    int i = param_slot(p);
    if (i < 0) return;
    p->values[i] = NULL;
    p->lengths[i] = 0;
    p->formats[i] = 0;
}

void lk_db_param_str_or_null(lk_db_params_t *p, lk_str_t s)
{
    if (s.len)
        lk_db_param_str(p, s);
    else
        lk_db_param_null(p);
}

/* ----------------------------------------------------------- connection -- */

static int64_t mono_ms(void)
{
    return lk_mono_us() / 1000;
}

static void first_line(char *out, size_t cap, const char *msg);

/* Connected: logs `first` (the first time) or `restored` (after a failure). */
static void link_up(link_t *l, const char *first, const char *restored)
{
    if (l->down_logged || !l->ever_connected) lk_log_info("%s", l->ever_connected ? restored : first);
    l->down_logged = 0;
    l->ever_connected = 1;
    l->backoff_ms = BACKOFF_MIN_MS;
    l->next_attempt_ms = mono_ms();
}

/* A connection attempt failed (conn may be NULL): logged once as "<what> unavailable", next
 * attempt after the backoff, which doubles up to BACKOFF_MAX_MS. */
static void link_failed(link_t *l, const char *what, PGconn *conn)
{
    if (!l->down_logged) {
        char line[256];
        first_line(line, sizeof line, conn ? PQerrorMessage(conn) : "out of memory");
        lk_log_warn("%s unavailable: %s", what, line);
        l->down_logged = 1;
    }
    l->next_attempt_ms = mono_ms() + l->backoff_ms;
    l->backoff_ms = l->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : l->backoff_ms * 2;
}

lk_db_t *lk_db_new(const char *conninfo, const char *app_name, int statement_timeout_ms)
{
    lk_db_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->conninfo = strdup(conninfo ? conninfo : "");
    if (!self->conninfo) {
        free(self);
        return NULL;
    }
    snprintf(self->app_name, sizeof self->app_name, "%s", app_name ? app_name : "lumkey");
    if (statement_timeout_ms > 0)
        snprintf(self->options, sizeof self->options, "-c statement_timeout=%d", statement_timeout_ms);
    self->link.backoff_ms = BACKOFF_MIN_MS;
    return self;
}

static void disconnect(lk_db_t *self)
{
    if (self->conn) PQfinish(self->conn);
    self->conn = NULL;
    self->in_tx = 0;
    self->in_pipe = 0;
    for (int i = 0; i < self->nstmts; i++)
        self->stmts[i].prepared = 0;
}

void lk_db_destroy(lk_db_t **self_p)
{
    if (!self_p || !*self_p) return;
    lk_db_t *self = *self_p;
    disconnect(self);
    size_t n = strlen(self->conninfo);
    memset(self->conninfo, 0, n); /* may hold a password */
    free(self->conninfo);
    free(self);
    *self_p = NULL;
}

int lk_db_prepare(lk_db_t *self, const char *name, const char *sql)
{
    if (self->nstmts >= LK_DB_MAX_STATEMENTS) return -1;
    self->stmts[self->nstmts++] = (stmt_t){name, sql, 0};
    return 0;
}

/* The first line of a libpq error message (no trailing newline). */
static void first_line(char *out, size_t cap, const char *msg)
{
    snprintf(out, cap, "%s", msg ? msg : "");
    out[strcspn(out, "\n")] = '\0';
}

static void on_notice(void *arg, const char *message)
{
    (void)arg;
    char line[256];
    first_line(line, sizeof line, message);
    lk_log_debug("database notice: %s", line);
}

/* One connection attempt. 0 / -1. */
static int try_connect(lk_db_t *self)
{
    const char *keys[] = {"connect_timeout", "application_name", "options", "dbname", NULL};
    const char *vals[] = {"3", self->app_name, self->options, self->conninfo, NULL};
    if (!self->options[0]) {
        keys[2] = "dbname";
        vals[2] = self->conninfo;
        keys[3] = NULL;
        vals[3] = NULL;
    }
    self->conn = PQconnectdbParams(keys, vals, 1);
    if (self->conn && PQstatus(self->conn) == CONNECTION_OK) {
        PQsetNoticeProcessor(self->conn, on_notice, NULL);
        link_up(&self->link, "database connected", "database connection restored");
        return 0;
    }
    link_failed(&self->link, "database", self->conn);
    disconnect(self);
    return -1;
}

/* Connected, or fails fast while backing off. 0 / -1. */
static int ensure_connected(lk_db_t *self)
{
    if (self->conn && PQstatus(self->conn) == CONNECTION_OK) return 0;
    if (self->conn) {
        if (!self->link.down_logged) {
            lk_log_warn("database connection lost");
            self->link.down_logged = 1;
        }
        disconnect(self);
        self->link.next_attempt_ms = 0; /* try again at once */
    }
    if (mono_ms() < self->link.next_attempt_ms) return -1;
    return try_connect(self);
}

int lk_db_connect(lk_db_t *self, int wait_ms)
{
    int64_t deadline = mono_ms() + (wait_ms > 0 ? wait_ms : 0);
    for (;;) {
        if (ensure_connected(self) == 0) return 0;
        int64_t now = mono_ms();
        if (now >= deadline) return -1;
        int64_t sleep_ms = self->link.next_attempt_ms - now;
        if (sleep_ms > deadline - now) sleep_ms = deadline - now;
        if (sleep_ms > 0) {
            struct timespec ts = {(time_t)(sleep_ms / 1000), (long)(sleep_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
}

/* ------------------------------------------------------------- outcomes -- */

static lk_db_rc_t classify(const char *state)
{
    if (!state || !*state) return LK_DB_UNAVAILABLE; /* no SQLSTATE: libpq-side failure (connection) */
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "53", 2) == 0 || strncmp(state, "57P", 3) == 0 ||
        strcmp(state, "57014") == 0 || strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 ||
        strcmp(state, "42P01") == 0 || strcmp(state, "25006") == 0 || strcmp(state, "42501") == 0)
        return LK_DB_UNAVAILABLE;
    if (strcmp(state, "23505") == 0) return LK_DB_CONFLICT;
    if (strncmp(state, "22", 2) == 0) return LK_DB_BAD_INPUT;
    return LK_DB_ERROR;
}

lk_status_t lk_db_status(lk_db_rc_t rc)
{
    switch (rc) {
    case LK_DB_OK:
        return LK_ST_OK;
    case LK_DB_UNAVAILABLE:
        return LK_ST_UNAVAILABLE;
    case LK_DB_CONFLICT:
        return LK_ST_CONFLICT;
    case LK_DB_BAD_INPUT:
        return LK_ST_BAD_REQUEST;
    case LK_DB_ERROR:
        break;
    }
    return LK_ST_INTERNAL;
}

const char *lk_db_message(lk_db_rc_t rc)
{
    switch (rc) {
    case LK_DB_OK:
        return "";
    case LK_DB_UNAVAILABLE:
        return "database unavailable";
    case LK_DB_CONFLICT:
        return "already exists";
    case LK_DB_BAD_INPUT:
        return "invalid value";
    case LK_DB_ERROR:
        break;
    }
    return "internal error";
}

const char *lk_db_sqlstate(const lk_db_t *self)
{
    return self->sqlstate;
}

/* Turns a result into an outcome; logs failures. Takes res; sets *out on success. */
static lk_db_rc_t finish(lk_db_t *self, const char *what, PGresult *res, PGresult **out)
{
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        self->sqlstate[0] = '\0';
        if (out)
            *out = res;
        else
            PQclear(res);
        return LK_DB_OK;
    }
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    snprintf(self->sqlstate, sizeof self->sqlstate, "%s", state ? state : "");
    lk_db_rc_t rc = classify(state);
    int conn_lost = !self->conn || PQstatus(self->conn) != CONNECTION_OK;
    if (conn_lost) rc = LK_DB_UNAVAILABLE;
    char line[300];
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    first_line(line, sizeof line,
               primary ? primary : (self->conn ? PQerrorMessage(self->conn) : "no connection"));
    int64_t now = mono_ms();
    int repeat = strcmp(self->last_logged_state, self->sqlstate) == 0 && now - self->last_logged_ms < 5000;
    if (!conn_lost && !repeat) {
        memcpy(self->last_logged_state, self->sqlstate, sizeof self->sqlstate);
        self->last_logged_ms = now;
    }
    if (rc == LK_DB_BAD_INPUT) /* its message may quote the refused value: not logged */
        lk_log_info("%s: the database refused a parameter value (%s)", what, self->sqlstate);
    else if (rc == LK_DB_CONFLICT)
        lk_log_info("%s: %s (%s)", what, line, self->sqlstate);
    else if (!conn_lost)
        lk_log(repeat ? LK_LOG_DEBUG : LK_LOG_ERROR, NULL, "%s failed: %s (%s)%s", what, line, self->sqlstate,
               strcmp(self->sqlstate, "42P01") == 0 ? "; have the migrations run (lumkey-migrate)?" : "");
    if (conn_lost && !self->link.down_logged) {
        lk_log_warn("database connection lost: %s", line);
        self->link.down_logged = 1;
    }
    if (conn_lost) disconnect(self);
    PQclear(res);
    return rc;
}

/* Runs one attempt of a statement (prepared if name is set). */
static lk_db_rc_t attempt(lk_db_t *self, stmt_t *stmt, const char *sql, const lk_db_params_t *p,
                          PGresult **res)
{
    if (self->in_pipe) { /* its result would be read out of order */
        lk_log_error("%s: a statement outside the open pipeline", stmt ? stmt->name : "query");
        return LK_DB_ERROR;
    }
    if (ensure_connected(self) != 0) {
        snprintf(self->sqlstate, sizeof self->sqlstate, "08006");
        return LK_DB_UNAVAILABLE;
    }
    int n = p ? p->n : 0;
    const char *const *values = p ? p->values : NULL;
    const int *lengths = p ? p->lengths : NULL, *formats = p ? p->formats : NULL;
    if (stmt && !stmt->prepared) {
        PGresult *pr = PQprepare(self->conn, stmt->name, stmt->sql, 0, NULL);
        lk_db_rc_t rc = finish(self, stmt->name, pr, NULL);
        if (rc != LK_DB_OK) return rc;
        stmt->prepared = 1;
    }
    PGresult *r = stmt ? PQexecPrepared(self->conn, stmt->name, n, values, lengths, formats, 0)
                       : PQexecParams(self->conn, sql, n, NULL, values, lengths, formats, 0);
    return finish(self, stmt ? stmt->name : "query", r, res);
}

static lk_db_rc_t run(lk_db_t *self, stmt_t *stmt, const char *sql, const lk_db_params_t *p, PGresult **res)
{
    if (res) *res = NULL;
    if (p && p->overflow) {
        lk_log_error("%s: too many parameters", stmt ? stmt->name : "query");
        return LK_DB_ERROR;
    }
    int was_in_tx = self->in_tx;
    int had_conn = self->conn != NULL;
    lk_db_rc_t rc = attempt(self, stmt, sql, p, res);
    /* the server went away under an established connection: reconnect and retry once */
    if (rc == LK_DB_UNAVAILABLE && had_conn && !self->conn && !was_in_tx)
        rc = attempt(self, stmt, sql, p, res);
    return rc;
}

lk_db_rc_t lk_db_exec(lk_db_t *self, const char *name, const lk_db_params_t *p, PGresult **res)
{
    for (int i = 0; i < self->nstmts; i++)
        if (strcmp(self->stmts[i].name, name) == 0) return run(self, &self->stmts[i], NULL, p, res);
    lk_log_error("unknown statement %s", name);
    if (res) *res = NULL;
    return LK_DB_ERROR;
}

lk_db_rc_t lk_db_query(lk_db_t *self, const char *sql, const lk_db_params_t *p, PGresult **res)
{
    return run(self, NULL, sql, p, res);
}

lk_db_rc_t lk_db_script(lk_db_t *self, const char *sql)
{
    if (ensure_connected(self) != 0) return LK_DB_UNAVAILABLE;
    return finish(self, "script", PQexec(self->conn, sql), NULL);
}

lk_db_rc_t lk_db_begin(lk_db_t *self)
{
    if (self->in_tx) {
        lk_log_error("nested transaction");
        return LK_DB_ERROR;
    }
    lk_db_rc_t rc = run(self, NULL, "BEGIN", NULL, NULL);
    if (rc == LK_DB_OK) self->in_tx = 1;
    return rc;
}

lk_db_rc_t lk_db_commit(lk_db_t *self)
{
    if (!self->in_tx) return LK_DB_ERROR;
    PGresult *res = NULL;
    lk_db_rc_t rc = attempt(self, NULL, "COMMIT", NULL, &res);
    /* COMMIT of an aborted transaction answers ROLLBACK without an error */
    if (rc == LK_DB_OK && strcmp(PQcmdStatus(res), "COMMIT") != 0) rc = LK_DB_ERROR;
    PQclear(res);
    self->in_tx = 0;
    return rc;
}

void lk_db_rollback(lk_db_t *self)
{
    if (!self->in_tx) return;
    self->in_tx = 0;
    if (self->conn && PQstatus(self->conn) == CONNECTION_OK) PQclear(PQexec(self->conn, "ROLLBACK"));
}

/* ------------------------------------------------------------ pipelines -- */

lk_db_rc_t lk_db_pipe_begin(lk_db_t *self)
{
    if (self->in_tx || self->in_pipe) {
        lk_log_error("pipeline inside a transaction or pipeline");
        return LK_DB_ERROR;
    }
    if (ensure_connected(self) != 0) {
        snprintf(self->sqlstate, sizeof self->sqlstate, "08006");
        return LK_DB_UNAVAILABLE;
    }
    for (int i = 0; i < self->nstmts; i++) { /* PQprepare cannot run inside the pipeline */
        stmt_t *st = &self->stmts[i];
        if (st->prepared) continue;
        lk_db_rc_t rc = finish(self, st->name, PQprepare(self->conn, st->name, st->sql, 0, NULL), NULL);
        if (rc != LK_DB_OK) return rc;
        st->prepared = 1;
    }
    if (!PQenterPipelineMode(self->conn)) {
        lk_log_error("cannot enter pipeline mode");
        return LK_DB_ERROR;
    }
    self->in_pipe = 1;
    self->pipe_n = 0;
    self->pipe_broken = 0;
    return LK_DB_OK;
}

int lk_db_pipe_send(lk_db_t *self, const char *name, const lk_db_params_t *p)
{
    if (!self->in_pipe || self->pipe_broken) return -1;
    stmt_t *st = NULL;
    for (int i = 0; i < self->nstmts && !st; i++)
        if (strcmp(self->stmts[i].name, name) == 0) st = &self->stmts[i];
    if (!st || (p && p->overflow)) {
        lk_log_error("%s: unknown statement or too many parameters", name);
        self->pipe_broken = 1;
        return -1;
    }
    if (!PQsendQueryPrepared(self->conn, st->name, p ? p->n : 0, p ? p->values : NULL, p ? p->lengths : NULL,
                             p ? p->formats : NULL, 0)) {
        self->pipe_broken = 1;
        return -1;
    }
    self->pipe_n++;
    return 0;
}

/* Leaves pipeline mode, dropping the connection if it cannot (it is then in an unknown state). */
static void pipe_end(lk_db_t *self)
{
    self->in_pipe = 0;
    if (self->conn && !PQexitPipelineMode(self->conn)) {
        lk_log_warn("database connection reset after a failed pipeline");
        disconnect(self);
    }
}

lk_db_rc_t lk_db_pipe_commit(lk_db_t *self, lk_db_result_fn fn, void *arg)
{
    if (!self->in_pipe) return LK_DB_ERROR;
    if (self->pipe_broken || !PQpipelineSync(self->conn)) {
        /* nothing commits without the Sync: dropping the connection rolls back what was sent */
        lk_log_warn("pipeline not sent (%s): connection reset",
                    PQstatus(self->conn) != CONNECTION_OK ? "connection lost" : "send failed");
        self->sqlstate[0] = '\0';
        disconnect(self);
        return LK_DB_UNAVAILABLE;
    }
    /* each statement: one result then NULL; then the PIPELINE_SYNC result */
    lk_db_rc_t rc = LK_DB_OK;
    for (size_t i = 0; i < self->pipe_n; i++) {
        PGresult *res = PQgetResult(self->conn);
        if (!res) { /* connection lost (or out of step) */
            disconnect(self);
            return LK_DB_UNAVAILABLE;
        }
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            if (rc == LK_DB_OK && fn) fn(arg, i, res);
            PQclear(res);
        } else if (st == PGRES_PIPELINE_ABORTED) { /* skipped after the failing one */
            PQclear(res);
            if (rc == LK_DB_OK) rc = LK_DB_ERROR;
        } else {
            lk_db_rc_t e = finish(self, "pipelined statement", res, NULL); /* logs, clears */
            if (rc == LK_DB_OK) rc = e != LK_DB_OK ? e : LK_DB_ERROR;
            if (!self->conn) return LK_DB_UNAVAILABLE;
        }
        PGresult *end;
        while ((end = PQgetResult(self->conn)) != NULL) /* NULL ends this statement's results */
            PQclear(end);
    }
    PGresult *sync = PQgetResult(self->conn);
    int synced = sync && PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
    PQclear(sync);
    if (!synced) { /* the commit's outcome is unknown: never report it as done */
        disconnect(self);
        return LK_DB_UNAVAILABLE;
    }
    pipe_end(self);
    if (rc == LK_DB_OK) self->sqlstate[0] = '\0';
    return rc;
}

/* -------------------------------------------------------------- results -- */

lk_str_t lk_db_str(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col)) return (lk_str_t){"", 0};
    return (lk_str_t){PQgetvalue(res, row, col), (size_t)PQgetlength(res, row, col)};
}

int lk_db_is_null(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col);
}

int64_t lk_db_i64(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col)) return 0;
    return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

int lk_db_bool(const PGresult *res, int row, int col)
{
    return !PQgetisnull(res, row, col) && PQgetvalue(res, row, col)[0] == 't';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int bytea_decode(const char *v, size_t n, uint8_t *out, size_t cap, size_t *len);

int lk_db_bytea(const PGresult *res, int row, int col, uint8_t *out, size_t cap, size_t *len)
{
    *len = 0;
    if (PQgetisnull(res, row, col)) return -1;
    return bytea_decode(PQgetvalue(res, row, col), (size_t)PQgetlength(res, row, col), out, cap, len);
}

int lk_db_row_bytea(const lk_db_row_t *row, int col, uint8_t *out, size_t cap, size_t *len)
{
    *len = 0;
    if (col < 0 || col >= row->ncols || row->null[col]) return -1;
    return bytea_decode(row->v[col].ptr, row->v[col].len, out, cap, len);
}

static int bytea_decode(const char *v, size_t n, uint8_t *out, size_t cap, size_t *len)
{
    if (n < 2 || v[0] != '\\' || v[1] != 'x' || (n - 2) % 2 != 0 || (n - 2) / 2 > cap) return -1;
    for (size_t i = 0; i < (n - 2) / 2; i++) {
        int hi = hexval(v[2 + 2 * i]), lo = hexval(v[3 + 2 * i]);
        if (hi < 0 || lo < 0) return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    *len = (n - 2) / 2;
    return 0;
}

/* --------------------------------------------------------------- LISTEN -- */

struct lk_db_listen {
    char *conninfo;
    char app_name[64];
    const char *channel;
    PGconn *conn;
    int listening; /* LISTEN ran on conn */
    int broken;    /* the server spoke unasked: treat conn as lost */
    link_t link;
};

lk_db_listen_t *lk_db_listen_new(const char *conninfo, const char *app_name, const char *channel)
{
    lk_db_listen_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->conninfo = strdup(conninfo ? conninfo : "");
    if (!self->conninfo) {
        free(self);
        return NULL;
    }
    snprintf(self->app_name, sizeof self->app_name, "%s", app_name ? app_name : "lumkey");
    self->channel = channel;
    self->link.backoff_ms = BACKOFF_MIN_MS;
    return self;
}

static void listen_drop(lk_db_listen_t *self)
{
    if (self->conn) PQfinish(self->conn);
    self->conn = NULL;
    self->listening = 0;
    self->broken = 0;
}

void lk_db_listen_destroy(lk_db_listen_t **self_p)
{
    if (!self_p || !*self_p) return;
    lk_db_listen_t *self = *self_p;
    listen_drop(self);
    memset(self->conninfo, 0, strlen(self->conninfo)); /* may hold a password */
    free(self->conninfo);
    free(self);
    *self_p = NULL;
}

/* An idle connection only hears from the server when it is going away
 * ("terminating connection due to administrator command", shutdown). */
static void listen_notice(void *arg, const char *message)
{
    lk_db_listen_t *self = arg;
    char line[256];
    first_line(line, sizeof line, message);
    lk_log_warn("database listen connection: %s", line);
    self->broken = 1;
}

static void listen_lost(lk_db_listen_t *self, const char *why)
{
    if (!self->link.down_logged) {
        lk_log_warn("database listen connection lost (%s): caches bypassed until it is back", why);
        self->link.down_logged = 1;
    }
    listen_drop(self);
    self->link.next_attempt_ms = 0; /* try again at once */
}

static int listen_connect(lk_db_listen_t *self)
{
    const char *keys[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *vals[] = {"3", self->app_name, self->conninfo, NULL};
    self->conn = PQconnectdbParams(keys, vals, 1);
    if (self->conn && PQstatus(self->conn) == CONNECTION_OK) {
        char sql[96];
        snprintf(sql, sizeof sql, "LISTEN %s", self->channel);
        PGresult *res = PQexec(self->conn, sql);
        int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        PQclear(res);
        if (ok && PQsetnonblocking(self->conn, 1) == 0) {
            PQsetNoticeProcessor(self->conn, listen_notice, self);
            self->listening = 1;
            link_up(&self->link, "database listen connection up", "database listen connection restored");
            return 0;
        }
    }
    link_failed(&self->link, "database listen connection", self->conn);
    listen_drop(self);
    return -1;
}

int lk_db_listen_poll(lk_db_listen_t *self, lk_db_notify_fn fn, void *arg)
{
    if (!self) return 0;
    if (self->conn && (self->broken || PQstatus(self->conn) != CONNECTION_OK)) {
        listen_lost(self, "closed by the server");
        fn(arg, NULL);
    }
    if (!self->conn) {
        if (mono_ms() < self->link.next_attempt_ms || listen_connect(self) != 0) return 0;
        fn(arg, NULL); /* what changed while nobody listened is unknown */
    }
    int read_ok = PQconsumeInput(self->conn);
    PGnotify *n; /* PQnotifies parses what arrived: notifications, and notices (listen_notice) */
    while ((n = PQnotifies(self->conn)) != NULL) {
        fn(arg, n->extra ? n->extra : "");
        PQfreemem(n);
    }
    if (!read_ok || self->broken || PQstatus(self->conn) != CONNECTION_OK) {
        listen_lost(self, read_ok ? "closed by the server" : "read failed");
        fn(arg, NULL);
        return 0;
    }
    return self->listening;
}

int lk_db_listen_fd(const lk_db_listen_t *self)
{
    return self && self->conn ? PQsocket(self->conn) : -1;
}

/* ------------------------------------------------------------ row cache -- */

typedef struct {
    uint64_t hash;
    int64_t expires_us;
    int64_t stored_us;
    size_t size;     /* of the whole allocation, for the wipe */
    size_t key_len;  /* key bytes follow the header */
    lk_db_row_t row; /* values follow the key, each NUL-terminated */
} cache_entry_t;

struct lk_db_cache {
    cache_entry_t **slot;
    size_t mask;
    lk_db_cache_stats_t stats;
};

lk_db_cache_t *lk_db_cache_new(size_t slots)
{
    size_t n = 2;
    while (n < slots && n < ((size_t)1 << 30))
        n <<= 1;
    lk_db_cache_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->slot = calloc(n, sizeof *self->slot);
    if (!self->slot) {
        free(self);
        return NULL;
    }
    self->mask = n - 1;
    return self;
}

static void entry_free(cache_entry_t *e)
{
    if (!e) return;
    memset(e, 0, e->size);
    free(e);
}

void lk_db_cache_flush(lk_db_cache_t *self)
{
    if (!self) return;
    for (size_t i = 0; i <= self->mask; i++) {
        entry_free(self->slot[i]);
        self->slot[i] = NULL;
    }
    self->stats.flushes++;
}

void lk_db_cache_destroy(lk_db_cache_t **self_p)
{
    if (!self_p || !*self_p) return;
    lk_db_cache_flush(*self_p);
    free((*self_p)->slot);
    free(*self_p);
    *self_p = NULL;
}

/* FNV-1a, 64 bits. */
static uint64_t key_hash(const void *key, size_t len)
{
    const unsigned char *p = key;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static const unsigned char *entry_key(const cache_entry_t *e)
{
    return (const unsigned char *)(e + 1);
}

static int entry_is(const cache_entry_t *e, uint64_t h, const void *key, size_t len)
{
    return e && e->hash == h && e->key_len == len && memcmp(entry_key(e), key, len) == 0;
}

int lk_db_cache_get(lk_db_cache_t *self, const void *key, size_t key_len, lk_db_row_t *row)
{
    uint64_t h = key_hash(key, key_len);
    size_t i = (size_t)h & self->mask;
    for (int k = 0; k < 2; k++, i ^= 1) {
        cache_entry_t *e = self->slot[i];
        if (!entry_is(e, h, key, key_len)) continue;
        if (lk_mono_us() >= e->expires_us) {
            entry_free(e);
            self->slot[i] = NULL;
            self->stats.expired++;
            break;
        }
        *row = e->row;
        self->stats.hits++;
        return 1;
    }
    self->stats.misses++;
    return 0;
}

int lk_db_row_of(const PGresult *res, int row, lk_db_row_t *out)
{
    int n = PQnfields(res);
    if (n > LK_DB_ROW_MAX_COLS) return -1;
    out->ncols = n;
    for (int c = 0; c < n; c++) {
        out->v[c] = lk_db_str(res, row, c);
        out->null[c] = (uint8_t)lk_db_is_null(res, row, c);
    }
    return 0;
}

int lk_db_cache_put(lk_db_cache_t *self, const void *key, size_t key_len, const PGresult *res, int row,
                    int64_t ttl_us, lk_db_row_t *out)
{
    if (lk_db_row_of(res, row, out) != 0) return -1;
    size_t size = sizeof(cache_entry_t) + key_len;
    for (int c = 0; c < out->ncols; c++)
        size += out->v[c].len + 1;
    cache_entry_t *e = malloc(size);
    if (!e) return -1;
    int64_t now = lk_mono_us();
    uint64_t h = key_hash(key, key_len);
    *e = (cache_entry_t){
        .hash = h, .expires_us = now + ttl_us, .stored_us = now, .size = size, .key_len = key_len};
    char *p = (char *)(e + 1);
    memcpy(p, key, key_len);
    p += key_len;
    e->row.ncols = out->ncols;
    for (int c = 0; c < out->ncols; c++) {
        memcpy(p, out->v[c].ptr, out->v[c].len);
        p[out->v[c].len] = '\0';
        e->row.v[c] = (lk_str_t){p, out->v[c].len};
        e->row.null[c] = out->null[c];
        p += out->v[c].len + 1;
    }
    /* the slot of the same key, else an empty one, else the older of the two */
    size_t i = (size_t)h & self->mask, j = i ^ 1, at;
    if (entry_is(self->slot[i], h, key, key_len))
        at = i;
    else if (entry_is(self->slot[j], h, key, key_len))
        at = j;
    else if (!self->slot[i])
        at = i;
    else if (!self->slot[j])
        at = j;
    else
        at = self->slot[j]->stored_us < self->slot[i]->stored_us ? j : i;
    entry_free(self->slot[at]);
    self->slot[at] = e;
    self->stats.puts++;
    *out = e->row;
    return 0;
}

lk_db_cache_stats_t lk_db_cache_stats(const lk_db_cache_t *self)
{
    return self->stats;
}

/* ------------------------------------------------------------ live cache -- */

struct lk_db_live {
    lk_db_listen_t *listen;
    lk_db_cache_t *rows;
    int64_t max_age_ms;
    const char *const *flush_on;
};

lk_db_live_t *lk_db_live_new(const char *conninfo, const char *app_name, const char *channel, int max_age_ms,
                             size_t slots, const char *const *flush_on)
{
    lk_db_live_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    if (max_age_ms <= 0) return self; /* off */
    self->max_age_ms = max_age_ms;
    self->flush_on = flush_on;
    self->listen = lk_db_listen_new(conninfo, app_name, channel);
    self->rows = lk_db_cache_new(slots);
    if (!self->listen || !self->rows) lk_db_live_destroy(&self);
    return self;
}

void lk_db_live_destroy(lk_db_live_t **self_p)
{
    if (!self_p || !*self_p) return;
    lk_db_listen_destroy(&(*self_p)->listen);
    lk_db_cache_destroy(&(*self_p)->rows);
    free(*self_p);
    *self_p = NULL;
}

void lk_db_live_flush(lk_db_live_t *self)
{
    if (self && self->rows) lk_db_cache_flush(self->rows);
}

static void live_on_change(void *arg, const char *payload)
{
    lk_db_live_t *self = arg;
    int drop = !payload || !self->flush_on;
    for (const char *const *t = self->flush_on; !drop && *t; t++)
        drop = strcmp(payload, *t) == 0;
    if (drop) lk_db_live_flush(self);
}

int lk_db_live_sync(lk_db_live_t *self)
{
    if (!self || !self->listen) return 0;
    return lk_db_listen_poll(self->listen, live_on_change, self);
}

int lk_db_live_get(lk_db_live_t *self, const void *key, size_t len, lk_db_row_t *row)
{
    if (!self || !self->rows || len == 0) return 0;
    return lk_db_cache_get(self->rows, key, len, row);
}

int lk_db_live_put(lk_db_live_t *self, const void *key, size_t len, const PGresult *res, int64_t ttl_ms,
                   lk_db_row_t *row)
{
    if (!self || !self->rows || len == 0 || ttl_ms <= 0) return lk_db_row_of(res, 0, row);
    if (ttl_ms > self->max_age_ms) ttl_ms = self->max_age_ms;
    if (lk_db_cache_put(self->rows, key, len, res, 0, ttl_ms * 1000, row) == 0) return 0;
    return lk_db_row_of(res, 0, row);
}

int64_t lk_db_live_max_age_ms(const lk_db_live_t *self)
{
    return self ? self->max_age_ms : 0;
}
