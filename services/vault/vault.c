/*  vault - lumkey-vault's service object and its request-path handlers. */
#include "vault.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lk_key.h"
#include "lk_log.h"
#include "lk_worker.h"
#include "vault_identity.h"
#include "vault_cache.h"

#define MASTER_HEX_LEN  64
#define MASTER_FILE_MAX 256
#define KMS_RETRY_MS    2000

/* vault_t plus what vault.h's struct does not show: the KMS. */
typedef struct {
    vault_t pub; /* first: a vault_t * is a vault_priv_t * */
    vault_kms_t *kms;
    int64_t kms_next_try_ms;
    lk_db_live_t *cred_cache; /* CRED_GET rows (vault_cache.h) */
    uint8_t *dek; /* sodium memory (guarded, locked) for the DEK being used; wiped after each use */
} vault_priv_t;

static vault_priv_t *priv(vault_t *self)
{
    return (vault_priv_t *)self;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char B62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

void vault_new_id(char *out, const char *prefix)
{
    size_t p = strlen(prefix);
    memcpy(out, prefix, p);
    for (int i = 0; i < 20; i++)
        out[p++] = B62[randombytes_uniform(62)];
    out[p] = '\0';
}

/* ------------------------------------------------------------ master key -- */

/* Reads the hex master key from path into sodium memory. NULL (logged) if missing or malformed. */
static uint8_t *load_master_key(const char *path)
{
    uint8_t *master = NULL;
    char *text = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        lk_log_error("vault is sealed: cannot read the master key file %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > MASTER_FILE_MAX) {
        lk_log_error("vault is sealed: %s is not a master key file", path);
        goto cleanup;
    }
    if (st.st_mode & 077)
        lk_log_warn("the master key file %s is readable by other users: chmod 600 it", path);
    text = sodium_malloc(MASTER_FILE_MAX + 1);
    master = sodium_malloc(VAULT_KEY_LEN);
    if (!text || !master) goto fail;
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, text + len, MASTER_FILE_MAX - len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) goto fail;
        if (n == 0) break;
        len += (size_t)n;
        if (len == MASTER_FILE_MAX) break;
    }
    while (len && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
        len--;
    size_t bin_len = 0;
    if (len != MASTER_HEX_LEN ||
        sodium_hex2bin(master, VAULT_KEY_LEN, text, len, NULL, &bin_len, NULL) != 0 ||
        bin_len != VAULT_KEY_LEN)
        goto fail;
    goto cleanup;
fail:
    lk_log_error("vault is sealed: %s does not hold a master key (64 hex characters)", path);
    if (master) sodium_free(master);
    master = NULL;
cleanup:
    if (text) sodium_free(text); /* wipes */
    close(fd);
    return master;
}

int vault_init_master_key(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST) {
        fprintf(stderr, "lumkey-vault: %s already exists; left as it is\n", path);
        return 0;
    }
    if (fd < 0) {
        fprintf(stderr, "lumkey-vault: cannot create %s: %s\n", path, strerror(errno));
        return 1;
    }
    int rc = 1;
    uint8_t *key = sodium_malloc(VAULT_KEY_LEN);
    char *hex = sodium_malloc(MASTER_HEX_LEN + 2);
    if (!key || !hex) goto cleanup;
    randombytes_buf(key, VAULT_KEY_LEN);
    sodium_bin2hex(hex, MASTER_HEX_LEN + 1, key, VAULT_KEY_LEN);
    hex[MASTER_HEX_LEN] = '\n';
    size_t off = 0;
    while (off < MASTER_HEX_LEN + 1) {
        ssize_t n = write(fd, hex + off, MASTER_HEX_LEN + 1 - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) goto cleanup;
        off += (size_t)n;
    }
    if (fsync(fd) != 0) goto cleanup;
    rc = 0;
    fprintf(stderr,
            "lumkey-vault: created the master key %s (mode 0600); keep it safe: without it no "
            "credential can be decrypted\n",
            path);
cleanup:
    if (key) sodium_free(key);
    if (hex) sodium_free(hex);
    close(fd);
    if (rc != 0) {
        fprintf(stderr, "lumkey-vault: could not write %s\n", path);
        unlink(path);
    }
    return rc;
}

/* ---------------------------------------------------------------- state -- */

/* Checks the master key against the database's key-check value (recording
 * it on first use). Only acts while UNVERIFIED; stays so if the database is away. */
static void verify(vault_t *self)
{
    vault_priv_t *v = priv(self);
    /* sealed for want of the KMS (the master key is loaded): retry it now and then */
    if (self->state == VAULT_SEALED_NO_KEY && self->keys && v->kms && !vault_kms_connected(v->kms)) {
        int64_t now = now_ms();
        if (now < v->kms_next_try_ms) return;
        v->kms_next_try_ms = now + KMS_RETRY_MS;
        if (vault_kms_connect(v->kms) != VAULT_KMS_OK) return;
        self->state = VAULT_UNVERIFIED;
    }
    if (self->state != VAULT_UNVERIFIED) return;
    char kcv[VAULT_CHECK_HEX_LEN + 1];
    vault_key_check(self->keys, kcv);
    PGresult *res = NULL;
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_cstr(&p, kcv);
    if (lk_db_exec(self->db, "vault_check_put", &p, NULL) != LK_DB_OK ||
        lk_db_exec(self->db, "vault_check_get", NULL, &res) != LK_DB_OK)
        return;
    lk_str_t stored = PQntuples(res) == 1 ? lk_db_str(res, 0, 0) : LK_STR_NULL;
    int same = stored.len == VAULT_CHECK_HEX_LEN && sodium_memcmp(stored.ptr, kcv, VAULT_CHECK_HEX_LEN) == 0;
    PQclear(res);
    if (!same) {
        self->state = VAULT_SEALED_MISMATCH;
        vault_keys_free(&self->keys);
        lk_log_error("vault is sealed: the master key does not match this database "
                     "(LUMKEY_MASTER_KEY_FILE is not the key this database was set up with)");
        return;
    }
    self->state = VAULT_UNSEALED;
    lk_log_info("vault unsealed: master key verified");
}

vault_t *vault_new(const vault_config_t *cfg)
{
    vault_kms_config_t file = {.backend = "file"};
    return vault_new_kms(cfg, &file);
}

vault_t *vault_new_kms(const vault_config_t *cfg, const vault_kms_config_t *kcfg)
{
    vault_priv_t *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    vault_t *self = &v->pub;
    vault_admin_init_json(); /* before any jansson allocation */
    self->db = lk_db_new(cfg->conninfo, "lumkey-vault", cfg->statement_timeout_ms);
    if (!self->db ||
        lk_db_prepare(self->db, "vault_check_get",
                      "SELECT value FROM vault_meta WHERE name = 'master_key_check'") != 0 ||
        lk_db_prepare(self->db, "vault_check_put",
                      "INSERT INTO vault_meta (name, value) VALUES ('master_key_check', $1::text) "
                      "ON CONFLICT (name) DO NOTHING") != 0 ||
        lk_db_prepare(
            self->db, "admin_auth",
            "SELECT id, tenant_id, role FROM admin_tokens WHERE hash = $1::bytea AND revoked_at IS NULL") !=
            0 ||
        lk_db_prepare(
            self->db, "cred_get",
            "SELECT provider_id, format_version, kek_id, kek_version, wrapped_dek, nonce, ciphertext "
            "FROM credentials WHERE id = $1::text AND tenant_id = $2::text") != 0 ||
        vault_admin_prepare(self->db) != 0) {
        vault_destroy(&self);
        return NULL;
    }
    const char *age = getenv("LUMKEY_CACHE_MAX_AGE_MS");
    v->cred_cache =
        lk_db_live_new(cfg->conninfo, "lumkey-vault-listen", "lumkey_cache",
                       age && *age ? atoi(age) : VAULT_CACHE_AGE_MS, VAULT_CACHE_SLOTS, vault_cache_tables);
    v->dek = sodium_malloc(VAULT_KEY_LEN);
    if (!v->cred_cache || !v->dek) {
        vault_destroy(&self);
        return NULL;
    }
    self->state = VAULT_SEALED_NO_KEY;
    if (!cfg->master_key_file || !*cfg->master_key_file) {
        lk_log_error("vault is sealed: LUMKEY_MASTER_KEY_FILE is not set");
    } else {
        uint8_t *master = load_master_key(cfg->master_key_file);
        if (master) {
            self->keys = vault_keys_new(master);
            sodium_free(master);
            if (self->keys) v->kms = vault_kms_new(kcfg, self->keys->kek);
            if (!v->kms) {
                lk_log_error("vault is sealed: the KMS settings are not usable");
                vault_keys_free(&self->keys); /* stays sealed for good */
            } else if (vault_kms_connect(v->kms) == VAULT_KMS_OK) {
                self->state = VAULT_UNVERIFIED;
            } else {
                lk_log_error("vault is sealed: the KMS is unavailable; retrying every %d s",
                             KMS_RETRY_MS / 1000);
                v->kms_next_try_ms = now_ms() + KMS_RETRY_MS;
            }
        }
    }
    if (lk_db_connect(self->db, cfg->db_wait_ms) != 0)
        lk_log_warn("database not reachable yet; will keep trying");
    verify(self);
    return self;
}

void vault_destroy(vault_t **self_p)
{
    if (!self_p || !*self_p) return;
    vault_t *self = *self_p;
    vault_kms_destroy(&priv(self)->kms);
    lk_db_live_destroy(&priv(self)->cred_cache);
    if (priv(self)->dek) sodium_free(priv(self)->dek); /* wipes */
    vault_keys_free(&self->keys);
    lk_db_destroy(&self->db);
    free(priv(self));
    *self_p = NULL;
}

void vault_tick(void *ctx)
{
    verify(ctx);
    (void)lk_db_live_sync(priv(ctx)->cred_cache); /* keeps the LISTEN connection drained */
}

/* -------------------------------------------------------------- handlers -- */

static int db_error(lk_msg_t *rep, lk_db_rc_t rc)
{
    return lk_worker_error(rep, lk_db_status(rc), lk_db_message(rc));
}

static int on_key_hash(vault_t *self, const lk_msg_t *req, lk_msg_t *rep)
{
    lk_str_t key = req->u.key_hash.key;
    lk_key_info_t info;
    if (lk_key_parse(key.ptr, key.len, &info) != LK_KEY_OK || info.kind == LK_KEY_ADMIN)
        return lk_worker_error(rep, LK_ST_UNAUTHORIZED, "malformed key");
    vault_hash_key(self->keys->pepper, key.ptr, key.len, rep->u.key_hash_rep.hash);
    return 0;
}

static int on_admin_auth(vault_t *self, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch)
{
    lk_str_t tok = req->u.admin_auth.token;
    if (vault_identity_is_session(tok)) return vault_identity_session_auth(self, tok, rep, scratch);
    lk_key_info_t info;
    if (lk_key_parse(tok.ptr, tok.len, &info) != LK_KEY_OK || info.kind != LK_KEY_ADMIN)
        return lk_worker_error(rep, LK_ST_UNAUTHORIZED, "invalid admin token");
    uint8_t hash[32];
    vault_hash_key(self->keys->pepper, tok.ptr, tok.len, hash);
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_bytes(&p, hash, sizeof hash);
    PGresult *res = NULL;
    lk_db_rc_t rc = lk_db_exec(self->db, "admin_auth", &p, &res);
    if (rc != LK_DB_OK) return db_error(rep, rc);
    int ret = 0;
    if (PQntuples(res) != 1) {
        ret = lk_worker_error(rep, LK_ST_UNAUTHORIZED, "invalid admin token");
        goto cleanup;
    }
    lk_admin_auth_rep_t *a = &rep->u.admin_auth_rep;
    a->token_id = lk_db_str(res, 0, 0);
    a->tenant = lk_db_str(res, 0, 1);
    a->role = lk_db_str(res, 0, 2);
    lk_str_t *keep[] = {&a->token_id, &a->tenant, &a->role};
    ret = lk_worker_keep(scratch, keep, 3);
cleanup:
    PQclear(res);
    return ret;
}

/* The credentials row of CRED_GET: from the cache (vault_cache.h) when it may
 * answer, else from PostgreSQL (res then holds it; *from_cache says which). */
static lk_db_rc_t cred_row(vault_t *self, const lk_cred_get_t *q, int use_cache, lk_db_row_t *row,
                           PGresult **res, int *from_cache)
{
    lk_db_live_t *cache = priv(self)->cred_cache;
    uint8_t key[VAULT_CACHE_KEY_MAX];
    size_t key_len = use_cache && lk_db_live_sync(cache) ? vault_cache_key(key, q->cred_id, q->tenant) : 0;
    *from_cache = lk_db_live_get(cache, key, key_len, row);
    if (*from_cache) return LK_DB_OK;
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_str(&p, q->cred_id);
    lk_db_param_str(&p, q->tenant);
    lk_db_rc_t rc = lk_db_exec(self->db, "cred_get", &p, res);
    if (rc != LK_DB_OK) return rc;
    row->ncols = 0;
    if (PQntuples(*res) == 1 &&
        lk_db_live_put(cache, key, key_len, *res, lk_db_live_max_age_ms(cache), row) != 0)
        return LK_DB_ERROR;
    return LK_DB_OK;
}

static int on_cred_get(vault_t *self, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch)
{
    const lk_cred_get_t *q = &req->u.cred_get;
    char rid[LK_PROTO_MAX_RID + 1], cred[80];
    lk_str_copy(rid, sizeof rid, req->env.rid);
    lk_str_copy(cred, sizeof cred, q->cred_id);
    PGresult *res = NULL;
    lk_db_row_t row;
    int from_cache = 0, ret = 0;
    uint8_t wrapped[VAULT_WRAPPED_MAX + 1], nonce[VAULT_NONCE_LEN + 1];
    uint8_t *ct = malloc(VAULT_MAX_SECRET + VAULT_TAG_LEN + 1);
    size_t wlen = 0, nlen = 0, ctlen = 0, outlen = 0;
    if (!ct) return -1;
    for (int use_cache = 1;; use_cache = 0) {
        lk_db_rc_t rc = cred_row(self, q, use_cache, &row, &res, &from_cache);
        if (rc == LK_DB_BAD_INPUT) {
            ret = lk_worker_error(rep, LK_ST_NOT_FOUND, "credential not found");
            goto cleanup;
        }
        if (rc != LK_DB_OK) {
            ret = db_error(rep, rc);
            goto cleanup;
        }
        if (row.ncols == 0) {
            ret = lk_worker_error(rep, LK_ST_NOT_FOUND, "credential not found");
            goto cleanup;
        }
        vault_ad_t ad = {
            .format_version = (uint32_t)strtoul(row.v[1].ptr, NULL, 10),
            .tenant = q->tenant,
            .cred_id = q->cred_id,
            .provider_id = row.v[0],
            .kek_id = row.v[2],
            .kek_version = (uint32_t)strtoul(row.v[3].ptr, NULL, 10),
        };
        int ok = lk_db_row_bytea(&row, 4, wrapped, sizeof wrapped, &wlen) == 0 &&
                 lk_db_row_bytea(&row, 5, nonce, sizeof nonce, &nlen) == 0 &&
                 lk_db_row_bytea(&row, 6, ct, VAULT_MAX_SECRET + VAULT_TAG_LEN + 1, &ctlen) == 0 &&
                 ad.format_version == VAULT_FORMAT_VERSION && ctlen > VAULT_TAG_LEN;
        vault_kms_rc_t krc = VAULT_KMS_REFUSED;
        if (ok) {
            lk_buf_reset(scratch);
            ok = lk_buf_reserve(scratch, ctlen) == 0 &&
                 (krc = vault_cred_open(self, &ad, wrapped, wlen, nonce, nlen, ct, ctlen, scratch->data,
                                        &outlen)) == VAULT_KMS_OK;
        }
        if (krc == VAULT_KMS_UNAVAILABLE) {
            lk_log(LK_LOG_ERROR, rid, "the KMS failed while opening credential %s: vault resealed", cred);
            ret = lk_worker_error(rep, LK_ST_UNAVAILABLE, "vault is sealed");
            goto cleanup;
        }
        if (!ok && from_cache) { /* changed before its notification arrived? ask PostgreSQL */
            lk_db_live_flush(priv(self)->cred_cache);
            continue;
        }
        if (!ok) {
            lk_log(LK_LOG_ERROR, rid, "credential integrity check failed for credential %s", cred);
            ret = lk_worker_error(rep, LK_ST_INTEGRITY, "credential integrity check failed");
            goto cleanup;
        }
        break;
    }
    scratch->len = outlen;
    rep->u.cred_get_rep.secret = (lk_str_t){(const char *)scratch->data, outlen};
cleanup:
    sodium_memzero(ct, VAULT_MAX_SECRET + VAULT_TAG_LEN + 1);
    free(ct);
    PQclear(res);
    return ret;
}

/* ---------------------------------------------------------------- KMS -- */

static void reseal(vault_t *self)
{
    vault_priv_t *v = priv(self);
    if (self->state == VAULT_UNSEALED || self->state == VAULT_UNVERIFIED)
        lk_log_error("vault is sealed: the KMS failed; reconnecting");
    vault_kms_disconnect(v->kms);
    self->state = VAULT_SEALED_NO_KEY;
    v->kms_next_try_ms = now_ms(); /* try again at once, then every KMS_RETRY_MS */
}

vault_kms_rc_t vault_cred_seal(vault_t *self, vault_ad_t *ad, const uint8_t *secret, size_t len,
                               uint8_t *wrapped, size_t *wrapped_len, uint8_t nonce[VAULT_NONCE_LEN],
                               uint8_t *ciphertext)
{
    vault_priv_t *v = priv(self);
    *wrapped_len = 0;
    if (!v->kms || !self->keys) return VAULT_KMS_UNAVAILABLE;
    ad->kek_id = lk_str(vault_kms_kek_id(v->kms));
    ad->kek_version = vault_kms_kek_version(v->kms);
    uint8_t *dek = sodium_malloc(VAULT_KEY_LEN);
    if (!dek) return VAULT_KMS_REFUSED;
    crypto_aead_xchacha20poly1305_ietf_keygen(dek);
    vault_kms_rc_t rc = VAULT_KMS_REFUSED;
    if (vault_seal_secret(dek, ad, secret, len, nonce, ciphertext) == 0)
        rc = vault_kms_wrap(v->kms, ad, dek, wrapped, wrapped_len);
    sodium_free(dek); /* wipes */
    if (rc == VAULT_KMS_UNAVAILABLE) reseal(self);
    return rc;
}

vault_kms_rc_t vault_cred_open(vault_t *self, const vault_ad_t *ad, const uint8_t *wrapped,
                               size_t wrapped_len, const uint8_t *nonce, size_t nonce_len,
                               const uint8_t *ciphertext, size_t ct_len, uint8_t *out, size_t *out_len)
{
    vault_priv_t *v = priv(self);
    *out_len = 0;
    if (!v->kms || !self->keys) return VAULT_KMS_UNAVAILABLE;
    uint8_t *dek = v->dek; /* allocated once: sodium_malloc costs several system calls */
    vault_kms_rc_t rc = vault_kms_unwrap(v->kms, ad, wrapped, wrapped_len, dek);
    if (rc == VAULT_KMS_OK &&
        vault_open_secret(dek, ad, nonce, nonce_len, ciphertext, ct_len, out, out_len) != 0)
        rc = VAULT_KMS_REFUSED;
    sodium_memzero(dek, VAULT_KEY_LEN);
    if (rc == VAULT_KMS_UNAVAILABLE) reseal(self);
    return rc;
}

/* Rewraps one row under the current KEK in its own transaction. 1 rewrapped,
 * 0 already current, -1 failed. */
static int rotate_row(vault_t *self, const char *id)
{
    vault_kms_t *kms = priv(self)->kms;
    lk_db_params_t p;
    PGresult *res = NULL;
    uint8_t wrapped[VAULT_WRAPPED_MAX + 1], nw[VAULT_WRAPPED_MAX];
    size_t wlen = 0, nwlen = 0;
    uint8_t *dek = NULL;
    int ret = -1;
    if (lk_db_begin(self->db) != LK_DB_OK) return -1;
    lk_db_params_init(&p);
    lk_db_param_cstr(&p, id);
    if (lk_db_query(self->db,
                    "SELECT tenant_id, provider_id, format_version, kek_id, kek_version, wrapped_dek "
                    "FROM credentials WHERE id = $1::text FOR UPDATE",
                    &p, &res) != LK_DB_OK ||
        PQntuples(res) != 1)
        goto cleanup;
    vault_ad_t ad = {(uint32_t)lk_db_i64(res, 0, 2), lk_db_str(res, 0, 0), lk_str(id),
                     lk_db_str(res, 0, 1),           lk_db_str(res, 0, 3), (uint32_t)lk_db_i64(res, 0, 4)};
    if (lk_str_eq(ad.kek_id, vault_kms_kek_id(kms)) && ad.kek_version == vault_kms_kek_version(kms)) {
        ret = 0;
        goto cleanup;
    }
    dek = sodium_malloc(VAULT_KEY_LEN);
    vault_ad_t nad = ad;
    nad.kek_id = lk_str(vault_kms_kek_id(kms));
    nad.kek_version = vault_kms_kek_version(kms);
    vault_kms_rc_t rc = VAULT_KMS_REFUSED;
    if (dek && lk_db_bytea(res, 0, 5, wrapped, sizeof wrapped, &wlen) == 0 &&
        (rc = vault_kms_unwrap(kms, &ad, wrapped, wlen, dek)) == VAULT_KMS_OK)
        rc = vault_kms_wrap(kms, &nad, dek, nw, &nwlen);
    if (rc != VAULT_KMS_OK) {
        fprintf(stderr, "lumkey-vault: credential %s: %s\n", id,
                rc == VAULT_KMS_UNAVAILABLE ? "the KMS failed"
                                            : "its DEK does not unwrap (is its KEK configured?)");
        goto cleanup;
    }
    lk_db_params_init(&p);
    lk_db_param_cstr(&p, id);
    lk_db_param_str(&p, nad.kek_id);
    lk_db_param_i64(&p, nad.kek_version);
    lk_db_param_bytes(&p, nw, nwlen);
    if (lk_db_query(
            self->db,
            "UPDATE credentials SET kek_id = $2::text, kek_version = $3::bigint, wrapped_dek = $4::bytea "
            "WHERE id = $1::text",
            &p, NULL) != LK_DB_OK ||
        lk_db_commit(self->db) != LK_DB_OK)
        goto cleanup;
    ret = 1;
cleanup:
    if (ret != 1) lk_db_rollback(self->db);
    if (dek) sodium_free(dek);
    PQclear(res);
    return ret;
}

int vault_rotate_kek(vault_t *self)
{
    vault_kms_t *kms = priv(self)->kms;
    if (self->state == VAULT_UNVERIFIED) verify(self);
    if (self->state != VAULT_UNSEALED || !kms) {
        fprintf(stderr, "lumkey-vault: the vault is sealed (see the log above); nothing rotated\n");
        return 1;
    }
    const char *kid = vault_kms_kek_id(kms);
    char ver[16];
    snprintf(ver, sizeof ver, "%u", vault_kms_kek_version(kms));
    lk_db_params_t p;
    lk_db_params_init(&p);
    lk_db_param_cstr(&p, kid);
    lk_db_param_i64(&p, vault_kms_kek_version(kms));
    PGresult *res = NULL;
    if (lk_db_query(self->db,
                    "SELECT id FROM credentials WHERE NOT (kek_id = $1::text AND kek_version = $2::bigint) "
                    "ORDER BY created_at, id",
                    &p, &res) != LK_DB_OK) {
        fprintf(stderr, "lumkey-vault: could not list the credentials (database unavailable?)\n");
        return 1;
    }
    int n = PQntuples(res), done = 0, failed = 0;
    fprintf(stderr, "lumkey-vault: rotate-kek: %d credential(s) to rewrap under %s version %s\n", n, kid,
            ver);
    for (int i = 0; i < n; i++) {
        char id[80];
        lk_str_copy(id, sizeof id, lk_db_str(res, i, 0));
        int r = rotate_row(self, id);
        if (r < 0)
            failed++;
        else
            done++;
        fprintf(stderr, "lumkey-vault: rotate-kek: %d of %d %s %s\n", i + 1, n, id,
                r < 0 ? "FAILED"
                : r   ? "rewrapped"
                      : "already current");
    }
    PQclear(res);
    fprintf(stderr, "lumkey-vault: rotate-kek: %d of %d done, %d failed\n", done, n, failed);
    lk_log_info("rotate-kek: %d of %d credentials now under %s version %s, %d failed", done, n, kid, ver,
                failed);
    return failed ? 1 : 0;
}

int vault_handle(void *ctx, const lk_msg_t *req, lk_msg_t *rep, lk_buf_t *scratch)
{
    vault_t *self = ctx;
    verify(self);
    if (self->state != VAULT_UNSEALED)
        return lk_worker_error(rep, LK_ST_UNAVAILABLE,
                               self->state == VAULT_UNVERIFIED ? "vault is sealed: database unavailable"
                                                               : "vault is sealed");
    switch (req->env.type) {
    case LK_MSG_KEY_HASH:
        return on_key_hash(self, req, rep);
    case LK_MSG_ADMIN_AUTH:
        return on_admin_auth(self, req, rep, scratch);
    case LK_MSG_CRED_GET:
        return on_cred_get(self, req, rep, scratch);
    case LK_MSG_ADMIN_REQ:
        return vault_admin_handle(self, req, rep, scratch);
    default:
        return lk_worker_error(rep, LK_ST_BAD_REQUEST, "the vault does not handle this message type");
    }
}

/* ------------------------------------------------------------ bootstrap -- */

int vault_bootstrap_admin(vault_t *self, const char *tenant)
{
    if (self->state == VAULT_UNVERIFIED) verify(self);
    if (self->state != VAULT_UNSEALED) {
        fprintf(stderr, "lumkey-vault: the vault is sealed (%s); no admin token created\n",
                self->state == VAULT_UNVERIFIED ? "database unavailable" : "see the log above");
        return 1;
    }
    int ret = 1;
    char *token = sodium_malloc(LK_KEY_MAX_LEN);
    char id[LK_KEY_ID_LEN + 1], token_id[LK_KEY_ID_LEN + 8];
    PGresult *res = NULL;
    lk_db_params_t p;
    if (!token) return 1;
    if (lk_db_begin(self->db) != LK_DB_OK) goto cleanup;
    lk_db_params_init(&p);
    lk_db_param_cstr(&p, tenant);
    if (lk_db_query(self->db, "SELECT pg_advisory_xact_lock(hashtext('lumkey.bootstrap.' || $1::text))", &p,
                    NULL) != LK_DB_OK ||
        lk_db_query(self->db,
                    "INSERT INTO tenants (id, name) VALUES ($1::text, $1::text) ON CONFLICT DO NOTHING", &p,
                    NULL) != LK_DB_OK ||
        lk_db_query(self->db,
                    "SELECT 1 FROM admin_tokens WHERE tenant_id = $1::text AND revoked_at IS NULL LIMIT 1",
                    &p, &res) != LK_DB_OK)
        goto cleanup;
    if (PQntuples(res) > 0) {
        fprintf(stderr, "lumkey-vault: tenant '%s' already has an admin token; none created\n", tenant);
        ret = 3;
        goto cleanup;
    }
    lk_key_generate(LK_KEY_ADMIN, token, id);
    snprintf(token_id, sizeof token_id, "adm_%s", id);
    uint8_t hash[32];
    vault_hash_key(self->keys->pepper, token, strlen(token), hash);
    lk_db_params_init(&p);
    lk_db_param_cstr(&p, token_id);
    lk_db_param_cstr(&p, tenant);
    lk_db_param_bytes(&p, hash, sizeof hash);
    if (lk_db_query(self->db,
                    "INSERT INTO admin_tokens (id, tenant_id, hash, role, name) "
                    "VALUES ($1::text, $2::text, $3::bytea, 'admin', 'bootstrap')",
                    &p, NULL) != LK_DB_OK ||
        lk_db_commit(self->db) != LK_DB_OK)
        goto cleanup;
    lk_log_info("bootstrap admin token %s created for tenant %s", token_id, tenant);
    /* straight to the fd: no stdio buffer keeps a copy of the token */
    size_t tlen = strlen(token);
    token[tlen] = '\n';
    for (size_t off = 0; off < tlen + 1;) {
        ssize_t n = write(STDOUT_FILENO, token + off, tlen + 1 - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            fprintf(stderr, "lumkey-vault: could not print the token (it was created: revoke it)\n");
            ret = 4;
            goto cleanup;
        }
        off += (size_t)n;
    }
    ret = 0;
cleanup:
    lk_db_rollback(self->db);
    PQclear(res);
    sodium_free(token);
    if (ret == 1)
        fprintf(stderr, "lumkey-vault: could not create the bootstrap admin token (database unavailable?)\n");
    return ret;
}
