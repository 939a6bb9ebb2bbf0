/*  test_vault_kms - the vault's KEK behind PKCS#11, on a real SoftHSM2 token.
 *
 *  Makes a throwaway SoftHSM2 token in a temporary directory (SOFTHSM2_CONF
 *  points at a config there; softhsm2-util --init-token), creates AES KEKs on
 *  it with C_GenerateKey (sensitive, not extractable), then:
 *    - vault_kms directly: wrap / unwrap round trip, any flipped byte or
 *      another row's binding refused, wrong PIN / token / an extractable key
 *      refused at connect, a session killed under it reported UNAVAILABLE
 *      and recovered by reconnecting, an old key unwrapping until rotated;
 *    - with --vault (and the pg fixture): the real lumkey-vault with
 *      LUMKEY_KMS=pkcs11: sealed on a wrong PIN or a missing token and
 *      unsealed on its own once they are right, --rotate-kek from the file KEK
 *      to a token key and between two token keys (ciphertext untouched, rows
 *      naming the new KEK, idempotent), CRED_GET after each; no secret and no
 *      PIN in the logs or in a pg_dump.
 *  Secrets are compared, never printed.
 */
#include <dlfcn.h>
#include <errno.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <p11-kit-1/p11-kit/pkcs11.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "lk_proto.h"
#include "lk_test.h"
#include "lk_util.h"
#include "vault_kms.h"
#include "wtest_proc.h"

#define TOKEN "lk-test-token"

static struct {
    const char *pgctl, *pg_dir, *migrate, *vault, *module;
    char tmp[64], conf[128], tokens[128], pin_file[128], pin[40], so_pin[40];
    char run_dir[128], log_dir[128], master[160], vault_log[200];
    char dbname[64], conninfo[512];
    PGconn *pg;
    void *zctx, *sock;
    zmq_msg_t frame;
    uint64_t call_id;
    wt_proc_t proc;
    char secrets[4][64], creds[4][64];
    int check_create; /* --check-create: new rows must name the token KEK (vault_admin.c on vault_cred_seal)
                       */
} T;

static void msleep(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void die(const char *what)
{
    fprintf(stderr, "FATAL: %s\n", what);
    wt_proc_kill_all();
    exit(2);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) die("cannot write a file");
    chmod(path, 0600);
}

static int run_quiet(char *const argv[])
{
    char log[256];
    snprintf(log, sizeof log, "%s/tools.log", T.tmp);
    return wt_proc_run(argv, NULL, 0, log);
}

/* ----------------------------------------------------------- the token -- */

static CK_FUNCTION_LIST_PTR p11(void)
{
    static CK_FUNCTION_LIST_PTR f;
    if (f) return f;
    void *dl = dlopen(T.module, RTLD_NOW | RTLD_LOCAL); /* the same instance vault_kms loads */
    CK_C_GetFunctionList gfl = dl ? (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList") : NULL;
    if (!gfl || gfl(&f) != CKR_OK) die("cannot load the SoftHSM2 module");
    return f;
}

static CK_SLOT_ID token_slot(void)
{
    CK_SLOT_ID slots[16];
    CK_ULONG n = 16;
    if (p11()->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK) die("C_GetSlotList");
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO ti;
        if (p11()->C_GetTokenInfo(slots[i], &ti) == CKR_OK && !memcmp(ti.label, TOKEN, strlen(TOKEN)))
            return slots[i];
    }
    die("the test token is missing");
    return 0;
}

static void gen_key(CK_SESSION_HANDLE s, const char *label, CK_BBOOL extractable)
{
    CK_MECHANISM mech = {CKM_AES_KEY_GEN, NULL, 0};
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE kt = CKK_AES;
    CK_ULONG len = 32;
    CK_BBOOL yes = CK_TRUE, sensitive = extractable ? CK_FALSE : CK_TRUE;
    CK_ATTRIBUTE t[] = {
        {CKA_CLASS, &cls, sizeof cls},
        {CKA_KEY_TYPE, &kt, sizeof kt},
        {CKA_VALUE_LEN, &len, sizeof len},
        {CKA_LABEL, (void *)label, strlen(label)},
        {CKA_TOKEN, &yes, sizeof yes},
        {CKA_PRIVATE, &yes, sizeof yes},
        {CKA_SENSITIVE, &sensitive, sizeof sensitive},
        {CKA_EXTRACTABLE, &extractable, sizeof extractable},
        {CKA_ENCRYPT, &yes, sizeof yes},
        {CKA_DECRYPT, &yes, sizeof yes},
    };
    CK_OBJECT_HANDLE h;
    if (p11()->C_GenerateKey(s, &mech, t, sizeof t / sizeof t[0], &h) != CKR_OK) die("C_GenerateKey");
}

static void setup_token(void)
{
    snprintf(T.tmp, sizeof T.tmp, "/tmp/lkk-XXXXXX");
    if (!mkdtemp(T.tmp)) die("mkdtemp");
    snprintf(T.tokens, sizeof T.tokens, "%s/tokens", T.tmp);
    snprintf(T.conf, sizeof T.conf, "%s/softhsm2.conf", T.tmp);
    snprintf(T.pin_file, sizeof T.pin_file, "%s/pin", T.tmp);
    mkdir(T.tokens, 0700);
    char conf[400];
    snprintf(conf, sizeof conf, "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n",
             T.tokens);
    write_file(T.conf, conf);
    setenv("SOFTHSM2_CONF", T.conf, 1);
    uint8_t r[8];
    randombytes_buf(r, sizeof r);
    lk_hex(T.pin, r, sizeof r);
    randombytes_buf(r, sizeof r);
    lk_hex(T.so_pin, r, sizeof r);
    char util[256] = "/usr/bin/softhsm2-util";
    FILE *w = popen("command -v softhsm2-util", "r");
    if (w) {
        if (fgets(util, sizeof util, w)) util[strcspn(util, "\n")] = '\0';
        pclose(w);
    }
    char *init[] = {util,    "--init-token", "--free",   "--label", TOKEN,
                    "--pin", T.pin,          "--so-pin", T.so_pin,  NULL};
    if (run_quiet(init) != 0)
        die("softhsm2-util --init-token failed (is softhsm2 installed? scripts/deps.sh)");
    char pin_nl[48];
    snprintf(pin_nl, sizeof pin_nl, "%s\n", T.pin);
    write_file(T.pin_file, pin_nl);

    CK_SESSION_HANDLE s;
    if (p11()->C_Initialize(NULL) != CKR_OK) die("C_Initialize");
    if (p11()->C_OpenSession(token_slot(), CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s) != CKR_OK ||
        p11()->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)T.pin, strlen(T.pin)) != CKR_OK)
        die("cannot log in to the test token");
    gen_key(s, "kek-a", CK_FALSE);
    gen_key(s, "kek-b", CK_FALSE);
    gen_key(s, "kek-weak", CK_TRUE);
    p11()->C_CloseAllSessions(token_slot());
    p11()->C_Finalize(NULL);
}

/* Destroys the key labelled label on the token, from this process (as an operator or a fault would). */
static void destroy_key(const char *label)
{
    CK_SESSION_HANDLE s;
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_LABEL, (void *)label, strlen(label)}};
    CK_OBJECT_HANDLE h;
    CK_ULONG n = 0;
    LK_CHECK(p11()->C_Initialize(NULL) == CKR_OK);
    LK_CHECK(p11()->C_OpenSession(token_slot(), CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s) ==
                 CKR_OK &&
             p11()->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)T.pin, strlen(T.pin)) == CKR_OK);
    LK_CHECK(p11()->C_FindObjectsInit(s, t, 2) == CKR_OK && p11()->C_FindObjects(s, &h, 1, &n) == CKR_OK &&
             n == 1);
    p11()->C_FindObjectsFinal(s);
    if (n == 1) LK_CHECK(p11()->C_DestroyObject(s, h) == CKR_OK);
    p11()->C_CloseAllSessions(token_slot());
    p11()->C_Finalize(NULL);
}

/* ---------------------------------------------------------- vault_kms -- */

static vault_kms_config_t p11_cfg(const char *label, uint32_t version)
{
    vault_kms_config_t c = {.backend = "pkcs11",
                            .module = T.module,
                            .token = TOKEN,
                            .pin_file = T.pin_file,
                            .key_label = label,
                            .key_version = version};
    return c;
}

static vault_ad_t ad_for(vault_kms_t *kms, const char *cred)
{
    vault_ad_t ad = {VAULT_FORMAT_VERSION, LK_STR_LIT("default"),         lk_str(cred),
                     LK_STR_LIT("prov_A"), lk_str(vault_kms_kek_id(kms)), vault_kms_kek_version(kms)};
    return ad;
}

static uint8_t s_file_kek[VAULT_KEY_LEN];

static void test_round_trip(void)
{
    vault_kms_config_t c = p11_cfg("kek-a", 1);
    vault_kms_t *kms = vault_kms_new(&c, s_file_kek);
    LK_CHECK(kms != NULL);
    if (!kms) return;
    LK_CHECK(!vault_kms_connected(kms));
    LK_CHECK(vault_kms_connect(kms) == VAULT_KMS_OK && vault_kms_connected(kms));
    LK_CHECK(strcmp(vault_kms_kek_id(kms), "pkcs11:kek-a") == 0 && vault_kms_kek_version(kms) == 1);
    uint8_t *dek = sodium_malloc(VAULT_KEY_LEN), *back = sodium_malloc(VAULT_KEY_LEN);
    randombytes_buf(dek, VAULT_KEY_LEN);
    uint8_t w[VAULT_WRAPPED_MAX], w2[VAULT_WRAPPED_MAX];
    size_t wl = 0, wl2 = 0;
    vault_ad_t ad = ad_for(kms, "cred_A");
    LK_CHECK(vault_kms_wrap(kms, &ad, dek, w, &wl) == VAULT_KMS_OK && wl == VAULT_KMS_WRAPPED_LEN);
    LK_CHECK(memmem(w, wl, dek, VAULT_KEY_LEN) == NULL);
    LK_CHECK(vault_kms_unwrap(kms, &ad, w, wl, back) == VAULT_KMS_OK && !memcmp(dek, back, VAULT_KEY_LEN));
    /* a fresh IV each time */
    LK_CHECK(vault_kms_wrap(kms, &ad, dek, w2, &wl2) == VAULT_KMS_OK && memcmp(w, w2, wl) != 0);
    /* every flipped byte (IV, body, tag) is refused, without dropping the connection */
    int refused = 0;
    for (size_t i = 0; i < wl; i++) {
        w[i] ^= 0x01;
        refused += vault_kms_unwrap(kms, &ad, w, wl, back) == VAULT_KMS_REFUSED;
        w[i] ^= 0x01;
    }
    LK_CHECK(refused == (int)wl);
    LK_CHECK(vault_kms_connected(kms));
    LK_CHECK(vault_kms_unwrap(kms, &ad, w, wl - 1, back) == VAULT_KMS_REFUSED);
    /* another row, tenant or KEK version: refused */
    vault_ad_t other = ad_for(kms, "cred_B");
    LK_CHECK(vault_kms_unwrap(kms, &other, w, wl, back) == VAULT_KMS_REFUSED);
    other = ad;
    other.tenant = LK_STR_LIT("t2");
    LK_CHECK(vault_kms_unwrap(kms, &other, w, wl, back) == VAULT_KMS_REFUSED);
    other = ad;
    other.kek_version = 2;
    LK_CHECK(vault_kms_unwrap(kms, &other, w, wl, back) == VAULT_KMS_REFUSED);
    LK_CHECK(vault_kms_wrap(kms, &other, dek, w2, &wl2) == VAULT_KMS_REFUSED); /* not the current KEK */
    /* a "local" row still opens with the file KEK, and only with it */
    vault_ad_t local = ad;
    local.kek_id = LK_STR_LIT(VAULT_KEK_ID);
    local.kek_version = VAULT_KEK_VERSION;
    uint8_t lw[VAULT_WRAPPED_DEK_LEN];
    LK_CHECK(vault_wrap_local(s_file_kek, &local, dek, lw) == 0);
    LK_CHECK(vault_kms_unwrap(kms, &local, lw, sizeof lw, back) == VAULT_KMS_OK &&
             !memcmp(dek, back, VAULT_KEY_LEN));
    LK_CHECK(vault_kms_unwrap(kms, &ad, lw, sizeof lw, back) == VAULT_KMS_REFUSED);

    /* a session killed under it (as a token reset would): UNAVAILABLE, disconnected, then recovers */
    LK_CHECK(p11()->C_CloseAllSessions(token_slot()) == CKR_OK);
    LK_CHECK(vault_kms_unwrap(kms, &ad, w, wl, back) == VAULT_KMS_UNAVAILABLE);
    LK_CHECK(!vault_kms_connected(kms));
    LK_CHECK(vault_kms_wrap(kms, &ad, dek, w2, &wl2) == VAULT_KMS_UNAVAILABLE); /* no fallback */
    LK_CHECK(vault_kms_connect(kms) == VAULT_KMS_OK);
    LK_CHECK(vault_kms_unwrap(kms, &ad, w, wl, back) == VAULT_KMS_OK && !memcmp(dek, back, VAULT_KEY_LEN));
    vault_kms_destroy(&kms);
    LK_CHECK(kms == NULL);
    ad.kek_id = LK_STR_LIT("pkcs11:kek-a"); /* it pointed into the KMS just destroyed */

    /* kek-b current, kek-a old: both unwrap; kek-a is only for unwrapping */
    c = p11_cfg("kek-b", 2);
    c.old_key_label = "kek-a";
    c.old_key_version = 1;
    kms = vault_kms_new(&c, s_file_kek);
    LK_CHECK(kms && vault_kms_connect(kms) == VAULT_KMS_OK);
    if (kms) {
        LK_CHECK(vault_kms_unwrap(kms, &ad, w, wl, back) == VAULT_KMS_OK &&
                 !memcmp(dek, back, VAULT_KEY_LEN));
        LK_CHECK(vault_kms_wrap(kms, &ad, dek, w2, &wl2) == VAULT_KMS_REFUSED);
        vault_ad_t bd = ad_for(kms, "cred_A");
        LK_CHECK(strcmp(vault_kms_kek_id(kms), "pkcs11:kek-b") == 0 && bd.kek_version == 2);
        LK_CHECK(vault_kms_wrap(kms, &bd, dek, w2, &wl2) == VAULT_KMS_OK);
        LK_CHECK(vault_kms_unwrap(kms, &bd, w2, wl2, back) == VAULT_KMS_OK);
        /* kek-b's wrapping does not open as kek-a's */
        LK_CHECK(vault_kms_unwrap(kms, &ad, w2, wl2, back) == VAULT_KMS_REFUSED);
        vault_kms_destroy(&kms);
    }
    sodium_free(dek);
    sodium_free(back);
}

static void test_connect_refusals(void)
{
    vault_kms_config_t c = p11_cfg("kek-a", 1);
    vault_kms_t *kms;
    /* wrong PIN */
    char bad_pin[160];
    snprintf(bad_pin, sizeof bad_pin, "%s/bad-pin", T.tmp);
    write_file(bad_pin, "0000\n");
    c.pin_file = bad_pin;
    kms = vault_kms_new(&c, s_file_kek);
    LK_CHECK(kms && vault_kms_connect(kms) == VAULT_KMS_UNAVAILABLE && !vault_kms_connected(kms));
    vault_kms_destroy(&kms);
    /* another token, a missing key, an extractable key, a module that is not there */
    c = p11_cfg("kek-a", 1);
    c.token = "no-such-token";
    kms = vault_kms_new(&c, s_file_kek);
    LK_CHECK(kms && vault_kms_connect(kms) == VAULT_KMS_UNAVAILABLE);
    vault_kms_destroy(&kms);
    c = p11_cfg("kek-missing", 1);
    kms = vault_kms_new(&c, s_file_kek);
    LK_CHECK(kms && vault_kms_connect(kms) == VAULT_KMS_UNAVAILABLE);
    vault_kms_destroy(&kms);
    c = p11_cfg("kek-weak", 1);
    kms = vault_kms_new(&c, s_file_kek);
    LK_CHECK(kms && vault_kms_connect(kms) == VAULT_KMS_UNAVAILABLE);
    vault_kms_destroy(&kms);
    c = p11_cfg("kek-a", 1);
    c.module = "/nonexistent/libpkcs11.so";
    kms = vault_kms_new(&c, s_file_kek);
    LK_CHECK(kms && vault_kms_connect(kms) == VAULT_KMS_UNAVAILABLE);
    vault_kms_destroy(&kms);
    /* incomplete settings or an unknown backend: no KMS at all */
    c = p11_cfg(NULL, 1);
    LK_CHECK(vault_kms_new(&c, s_file_kek) == NULL);
    c = p11_cfg("kek-a", 1);
    c.backend = "vault";
    LK_CHECK(vault_kms_new(&c, s_file_kek) == NULL);
    /* the file backend: "local" 1, always connected */
    vault_kms_config_t f = {.backend = "file"};
    kms = vault_kms_new(&f, s_file_kek);
    LK_CHECK(kms && vault_kms_connect(kms) == VAULT_KMS_OK && vault_kms_connected(kms) &&
             strcmp(vault_kms_kek_id(kms), "local") == 0);
    vault_kms_destroy(&kms);
}

/* ------------------------------------------------- the vault, end to end -- */

static int call(lk_msg_t *m, lk_msg_t *out, int ms)
{
    m->env.call_id = ++T.call_id;
    m->env.version = LK_PROTO_VERSION;
    m->env.deadline_ms = lk_now_ms() + ms;
    lk_buf_t b;
    lk_buf_init(&b, lk_proto_is_secret(m->env.type));
    int rc =
        lk_proto_encode(m, &b) == 0 && zmq_send(T.sock, b.data, b.len, ZMQ_DONTWAIT) == (int)b.len ? 0 : -1;
    lk_buf_free(&b);
    if (rc != 0) return -1;
    zmq_pollitem_t it = {T.sock, 0, ZMQ_POLLIN, 0};
    int64_t end = lk_now_ms() + ms;
    for (;;) {
        int left = (int)(end - lk_now_ms());
        if (left < 0 || zmq_poll(&it, 1, left) != 1) return -1;
        zmq_msg_close(&T.frame);
        zmq_msg_init(&T.frame);
        if (zmq_msg_recv(&T.frame, T.sock, 0) < 0) return -1;
        if (lk_proto_decode(zmq_msg_data(&T.frame), zmq_msg_size(&T.frame), out) == 0 &&
            out->env.call_id == m->env.call_id)
            return 0;
    }
}

static lk_msg_t msg_of(lk_msg_type_t type)
{
    lk_msg_t m;
    memset(&m, 0, sizeof m);
    m.env.type = type;
    static char rid[LK_RID_LEN + 1];
    lk_rid_new(rid);
    m.env.rid = lk_str(rid);
    return m;
}

static int wait_pong(int ms)
{
    int64_t end = lk_now_ms() + ms;
    while (lk_now_ms() < end) {
        lk_msg_t m = msg_of(LK_MSG_PING), r;
        if (call(&m, &r, 200) == 0 && r.env.type == LK_MSG_PONG) return 0;
        msleep(50);
    }
    return -1;
}

/* CRED_GET of credential i: 1 the right secret, 0 an error of status want (or another status: -1). */
static int cred_get(int i, lk_status_t *status)
{
    lk_msg_t m = msg_of(LK_MSG_CRED_GET), r;
    m.u.cred_get.tenant = LK_STR_LIT("default");
    m.u.cred_get.cred_id = lk_str(T.creds[i]);
    *status = LK_ST_OK;
    if (call(&m, &r, 5000) != 0) return -1;
    if (r.env.type == LK_MSG_ERROR) {
        *status = r.u.error.status;
        return lk_str_eq(r.u.error.message, "vault is sealed") ? 0 : -1;
    }
    lk_str_t s = r.u.cred_get_rep.secret;
    return r.env.type == LK_MSG_CRED_GET_REP && s.len == strlen(T.secrets[i]) &&
           !memcmp(s.ptr, T.secrets[i], s.len);
}

static int all_creds_open(void)
{
    lk_status_t st;
    for (int i = 0; i < 3; i++)
        if (cred_get(i, &st) != 1) return 0;
    return 1;
}

static int sealed_now(void)
{
    lk_status_t st;
    return cred_get(0, &st) == 0 && st == LK_ST_UNAVAILABLE;
}

static void use_kms(const char *backend, const char *label, const char *version, const char *old,
                    const char *old_version)
{
    setenv("LUMKEY_KMS", backend, 1);
    setenv("LUMKEY_PKCS11_MODULE", T.module, 1);
    setenv("LUMKEY_PKCS11_TOKEN", TOKEN, 1);
    setenv("LUMKEY_PKCS11_PIN_FILE", T.pin_file, 1);
    setenv("LUMKEY_PKCS11_KEY_LABEL", label, 1);
    setenv("LUMKEY_PKCS11_KEY_VERSION", version, 1);
    if (old) {
        setenv("LUMKEY_PKCS11_OLD_KEY_LABEL", old, 1);
        setenv("LUMKEY_PKCS11_OLD_KEY_VERSION", old_version, 1);
    } else {
        unsetenv("LUMKEY_PKCS11_OLD_KEY_LABEL");
        unsetenv("LUMKEY_PKCS11_OLD_KEY_VERSION");
    }
}

static void start_vault(void)
{
    char *argv[] = {(char *)T.vault, NULL};
    if (wt_proc_start(&T.proc, "vault", argv, T.vault_log) != 0) die("cannot start the vault");
    LK_CHECK(wait_pong(10000) == 0);
}

static void stop_vault(void)
{
    LK_CHECK(wt_proc_stop(&T.proc, SIGTERM, 5000) == 0);
}

static long sql_long(const char *q)
{
    PGresult *r = PQexec(T.pg, q);
    long v = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0)
                 ? atol(PQgetvalue(r, 0, 0))
                 : -999;
    PQclear(r);
    return v;
}

/* A digest of every credential's ciphertext: rotation must not change it. */
static void ciphertexts(char *out, size_t cap)
{
    PGresult *r = PQexec(T.pg, "SELECT md5(string_agg(encode(ciphertext || nonce, 'hex'), ',' ORDER BY id)) "
                               "FROM credentials");
    snprintf(out, cap, "%s", PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0) : "?");
    PQclear(r);
}

static int rotate(char *out, size_t cap)
{
    char *argv[] = {(char *)T.vault, "--rotate-kek", NULL};
    char *p = out;
    (void)p;
    /* progress goes to stderr: capture it through a file */
    char log[256];
    snprintf(log, sizeof log, "%s/rotate.log", T.tmp);
    unlink(log);
    int rc = wt_proc_run(argv, NULL, 0, log);
    FILE *f = fopen(log, "r");
    size_t n = f ? fread(out, 1, cap - 1, f) : 0;
    out[n] = '\0';
    if (f) fclose(f);
    return rc;
}

static int file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    static char buf[8 << 20];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return memmem(buf, len, needle, strlen(needle)) != NULL;
}

static void setup_vault(void)
{
    snprintf(T.run_dir, sizeof T.run_dir, "%s/run", T.tmp);
    snprintf(T.log_dir, sizeof T.log_dir, "%s/logs", T.tmp);
    snprintf(T.master, sizeof T.master, "%s/master.key", T.tmp);
    snprintf(T.vault_log, sizeof T.vault_log, "%s/vault.log", T.log_dir);
    mkdir(T.run_dir, 0700);
    mkdir(T.log_dir, 0700);
    snprintf(T.dbname, sizeof T.dbname, "lkk_%d_%u", (int)getpid(), randombytes_uniform(1000000));
    char *mk[] = {"/bin/bash", (char *)T.pgctl, "createdb", (char *)T.pg_dir, T.dbname, NULL};
    if (wt_proc_run(mk, T.conninfo, sizeof T.conninfo, NULL) != 0) die("pgctl.sh createdb failed");
    T.conninfo[strcspn(T.conninfo, "\n")] = '\0';
    T.pg = PQconnectdb(T.conninfo);
    if (PQstatus(T.pg) != CONNECTION_OK) die("cannot connect to the test database");
    setenv("LUMKEY_DB", T.conninfo, 1);
    setenv("LUMKEY_RUN_DIR", T.run_dir, 1);
    setenv("LUMKEY_MASTER_KEY_FILE", T.master, 1);
    setenv("LUMKEY_DB_WAIT_MS", "5000", 1);
    setenv("LK_LOG_LEVEL", "debug", 1);
    /* rows are changed with SQL and read back at once, faster than PostgreSQL
     * delivers the NOTIFY that empties the vault's row cache: test the uncached
     * path here (the cache: tests/e2e/test_cache.py) */
    setenv("LUMKEY_CACHE_MAX_AGE_MS", "0", 1);
    unsetenv("LUMKEY_VAULT_ENDPOINT");
    char *mig[] = {(char *)T.migrate, NULL};
    char *init[] = {(char *)T.vault, "--init-master-key", T.master, NULL};
    if (run_quiet(mig) != 0 || run_quiet(init) != 0) die("migrate / init-master-key failed");
    for (int i = 0; i < 4; i++) {
        uint8_t r[10];
        char hex[24];
        randombytes_buf(r, sizeof r);
        lk_hex(hex, r, sizeof r);
        snprintf(T.secrets[i], sizeof T.secrets[i], "sk-kms-canary-%s", hex);
    }
    T.zctx = zmq_ctx_new();
    T.sock = zmq_socket(T.zctx, ZMQ_DEALER);
    int zero = 0, ivl = 50;
    zmq_setsockopt(T.sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(T.sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    char ep[200];
    snprintf(ep, sizeof ep, "ipc://%s/vault.ipc", T.run_dir);
    if (zmq_connect(T.sock, ep) != 0) die("zmq_connect");
    zmq_msg_init(&T.frame);
}

static int create_provider(int i)
{
    char body[512];
    snprintf(body, sizeof body,
             "{\"name\":\"p%d\",\"kind\":\"openai-compatible\",\"base_url\":\"http://127.0.0.1:9/v1\","
             "\"allow_private\":true,\"api_key\":\"%s\",\"models\":[\"m1\"]}",
             i, T.secrets[i]);
    lk_msg_t m = msg_of(LK_MSG_ADMIN_REQ), r;
    m.u.admin_req.op = LK_STR_LIT("providers.create");
    m.u.admin_req.tenant = LK_STR_LIT("default");
    m.u.admin_req.actor = LK_STR_LIT("adm_test");
    m.u.admin_req.role = LK_STR_LIT("admin");
    m.u.admin_req.json = lk_str(body);
    if (call(&m, &r, 5000) != 0 || r.env.type != LK_MSG_ADMIN_REP || r.u.admin_rep.status != LK_ST_OK)
        return -1;
    json_t *o = json_loadb(r.u.admin_rep.json.ptr, r.u.admin_rep.json.len, 0, NULL);
    const char *id = json_string_value(json_object_get(json_object_get(o, "credential"), "id"));
    snprintf(T.creds[i], sizeof T.creds[i], "%s", id ? id : "");
    json_decref(o);
    return id ? 0 : -1;
}

static void test_vault_end_to_end(void)
{
    char out[8192], before[64], after[64];
    lk_status_t st;
    /* the file KEK (the default): three credentials */
    unsetenv("LUMKEY_KMS");
    start_vault();
    for (int i = 0; i < 3; i++)
        LK_CHECK(create_provider(i) == 0);
    LK_CHECK(all_creds_open());
    stop_vault();
    LK_CHECK(sql_long("SELECT count(*) FROM credentials WHERE kek_id = 'local' AND kek_version = 1") == 3);
    ciphertexts(before, sizeof before);

    /* the token KEK with a wrong PIN: sealed (no fallback to the file KEK), unsealed once it is right */
    write_file(T.pin_file, "000000\n");
    use_kms("pkcs11", "kek-a", "1", NULL, NULL);
    start_vault();
    LK_CHECK(sealed_now());
    lk_msg_t m = msg_of(LK_MSG_KEY_HASH), r;
    m.u.key_hash.key = LK_STR_LIT("lk_live_x");
    LK_CHECK(call(&m, &r, 5000) == 0 && r.env.type == LK_MSG_ERROR && r.u.error.status == LK_ST_UNAVAILABLE);
    LK_CHECK(rotate(out, sizeof out) == 1); /* a sealed vault rotates nothing */
    char pin_nl[48];
    snprintf(pin_nl, sizeof pin_nl, "%s\n", T.pin);
    write_file(T.pin_file, pin_nl);
    int64_t t0 = lk_now_ms();
    while (sealed_now() && lk_now_ms() - t0 < 10000)
        msleep(200);
    LK_CHECK(all_creds_open()); /* "local" rows open until rotated */
    fprintf(stderr, "   unsealed %lld ms after the PIN was fixed\n", (long long)(lk_now_ms() - t0));
    stop_vault();

    /* the token missing at start: sealed; back: unsealed within the retry bound */
    char moved[160];
    snprintf(moved, sizeof moved, "%s.away", T.tokens);
    LK_CHECK(rename(T.tokens, moved) == 0 && mkdir(T.tokens, 0700) == 0);
    start_vault();
    LK_CHECK(sealed_now());
    msleep(2500);
    LK_CHECK(sealed_now()); /* still: retries do not unseal without the token */
    LK_CHECK(rmdir(T.tokens) == 0 && rename(moved, T.tokens) == 0);
    t0 = lk_now_ms();
    while (sealed_now() && lk_now_ms() - t0 < 10000)
        msleep(200);
    LK_CHECK(!sealed_now() && lk_now_ms() - t0 < 10000);
    LK_CHECK(all_creds_open());
    stop_vault();

    /* rotate: file KEK -> pkcs11:kek-a; ciphertext untouched; idempotent */
    LK_CHECK(rotate(out, sizeof out) == 0);
    LK_CHECK(strstr(out, "3 of 3") != NULL && strstr(out, "0 failed") != NULL);
    LK_CHECK(sql_long("SELECT count(*) FROM credentials WHERE kek_id = 'pkcs11:kek-a' AND kek_version = 1 "
                      "AND length(wrapped_dek) = 60") == 3);
    ciphertexts(after, sizeof after);
    LK_CHECK(strcmp(before, after) == 0);
    LK_CHECK(rotate(out, sizeof out) == 0 && strstr(out, "0 credential(s) to rewrap") != NULL);
    start_vault();
    LK_CHECK(all_creds_open());
    /* the KEK gone mid-run (destroyed on the token by another process): that request fails UNAVAILABLE,
     * the vault reseals (every request "sealed", nothing from the file KEK) and reconnects on its own once
     * the token is back (restored from a copy) */
    char backup[200], cmd[1600];
    snprintf(backup, sizeof backup, "%s.bak", T.tokens);
    snprintf(cmd, sizeof cmd, "cp -a '%s' '%s'", T.tokens, backup);
    LK_CHECK(system(cmd) == 0);
    destroy_key("kek-a");
    LK_CHECK(cred_get(0, &st) == 0 && st == LK_ST_UNAVAILABLE);
    LK_CHECK(file_contains(T.vault_log, "vault resealed"));
    msleep(2500);
    LK_CHECK(sealed_now());
    m = msg_of(LK_MSG_KEY_HASH);
    m.u.key_hash.key = LK_STR_LIT("lk_live_x");
    LK_CHECK(call(&m, &r, 5000) == 0 && r.env.type == LK_MSG_ERROR && r.u.error.status == LK_ST_UNAVAILABLE &&
             lk_str_eq(r.u.error.message, "vault is sealed"));
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mv '%s' '%s'", T.tokens, backup, T.tokens);
    LK_CHECK(system(cmd) == 0);
    t0 = lk_now_ms();
    while (sealed_now() && lk_now_ms() - t0 < 10000)
        msleep(200);
    LK_CHECK(!sealed_now() && lk_now_ms() - t0 < 10000);
    LK_CHECK(all_creds_open());
    stop_vault();

    /* rotate kek-a (old) -> kek-b version 2; then kek-b alone still opens everything */
    use_kms("pkcs11", "kek-b", "2", NULL, NULL);
    LK_CHECK(rotate(out, sizeof out) == 1); /* kek-a not configured: those rows cannot be rewrapped */
    LK_CHECK(sql_long("SELECT count(*) FROM credentials WHERE kek_id = 'pkcs11:kek-a'") == 3);
    use_kms("pkcs11", "kek-b", "2", "kek-a", "1");
    start_vault();
    LK_CHECK(all_creds_open()); /* old version still decrypts until rotated */
    stop_vault();
    LK_CHECK(rotate(out, sizeof out) == 0 && strstr(out, "3 of 3") && strstr(out, "0 failed"));
    LK_CHECK(sql_long("SELECT count(*) FROM credentials WHERE kek_id = 'pkcs11:kek-b' AND kek_version = 2") ==
             3);
    ciphertexts(after, sizeof after);
    LK_CHECK(strcmp(before, after) == 0);
    use_kms("pkcs11", "kek-b", "2", NULL, NULL);
    start_vault();
    LK_CHECK(all_creds_open());
    /* a wrapped DEK with a flipped byte: refused as an integrity failure, the vault stays unsealed */
    PQclear(PQexecParams(T.pg,
                         "UPDATE credentials SET wrapped_dek = overlay(wrapped_dek placing "
                         "decode(lpad(to_hex(get_byte(wrapped_dek, 20) # 1), 2, '0'), 'hex') from 21 for 1) "
                         "WHERE id = $1",
                         1, NULL, (const char *const[]){T.creds[1]}, NULL, NULL, 0));
    LK_CHECK(cred_get(1, &st) == -1 && st == LK_ST_INTEGRITY);
    LK_CHECK(cred_get(0, &st) == 1 && cred_get(2, &st) == 1);
    /* a provider created now: its credential opens (and, once vault_admin.c seals through the KMS, its row
     * names the token KEK) */
    LK_CHECK(create_provider(3) == 0);
    LK_CHECK(cred_get(3, &st) == 1);
    if (T.check_create)
        LK_CHECK(
            sql_long("SELECT count(*) FROM credentials WHERE kek_id = 'pkcs11:kek-b' AND kek_version = 2 "
                     "AND length(wrapped_dek) = 60") == 4);
    stop_vault();

    /* the file backend again: rows under a token KEK do not open (no way around the KMS) */
    unsetenv("LUMKEY_KMS");
    start_vault();
    LK_CHECK(cred_get(0, &st) == -1 && st == LK_ST_INTEGRITY);
    stop_vault();

    /* no secret and no PIN in the vault's log or in a database dump */
    LK_CHECK(file_contains(T.vault_log, "KMS: connected to token"));
    LK_CHECK(file_contains(T.vault_log, "vault is sealed"));
    char dump[200];
    snprintf(dump, sizeof dump, "%s/dump.sql", T.tmp);
    snprintf(cmd, sizeof cmd,
             "PGD=$(command -v pg_dump || ls -d /usr/lib/postgresql/*/bin/pg_dump 2>/dev/null | tail -n 1); "
             "[ -n \"$PGD\" ] && \"$PGD\" -d '%s' -f '%s' 2>/dev/null",
             T.conninfo, dump);
    int dumped = system(cmd) == 0;
    LK_CHECK(dumped && file_contains(dump, T.creds[0]));
    const char *paths[] = {T.vault_log, dump};
    for (int p = 0; p < 2; p++) {
        for (int i = 0; i < 4; i++)
            LK_CHECK(!file_contains(paths[p], T.secrets[i]));
        LK_CHECK(!file_contains(paths[p], T.pin));
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: test_vault_kms --module SO [--pgctl PATH --pg-dir DIR --migrate BIN --vault BIN] "
                    "[--check-create]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--check-create")) {
            T.check_create = 1;
            memmove(argv + i, argv + i + 1, (size_t)(argc - i) * sizeof *argv);
            argc--;
            break;
        }
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--pgctl"))
            T.pgctl = v;
        else if (!strcmp(k, "--pg-dir"))
            T.pg_dir = v;
        else if (!strcmp(k, "--migrate"))
            T.migrate = v;
        else if (!strcmp(k, "--vault"))
            T.vault = v;
        else if (!strcmp(k, "--module"))
            T.module = v;
        else
            usage();
    }
    if (!T.module) usage();
    if (sodium_init() < 0) die("sodium_init");
    wt_proc_init();
    randombytes_buf(s_file_kek, sizeof s_file_kek);
    setup_token();
    LK_RUN(test_round_trip);
    LK_RUN(test_connect_refusals);
    if (T.vault && T.pgctl && T.pg_dir && T.migrate) {
        /* this process's module instance must not hold the token while the vault uses it */
        p11()->C_Finalize(NULL);
        setup_vault();
        LK_RUN(test_vault_end_to_end);
        wt_proc_kill_all();
        zmq_msg_close(&T.frame);
        zmq_close(T.sock);
        zmq_ctx_term(T.zctx);
        PQfinish(T.pg);
        char ci[600];
        snprintf(ci, sizeof ci, "%s", T.conninfo);
        char *db = strstr(ci, "dbname=");
        if (db) {
            snprintf(db, sizeof ci - (size_t)(db - ci), "dbname=postgres");
            PGconn *pg = PQconnectdb(ci);
            char q[128];
            snprintf(q, sizeof q, "DROP DATABASE IF EXISTS %s", T.dbname);
            PQclear(PQexec(pg, q));
            PQfinish(pg);
        }
    }
    if (!lk_test_failed) {
        char cmd[200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", T.tmp);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", T.tmp);
    } else {
        fprintf(stderr, "logs kept in %s\n", T.tmp);
    }
    return LK_TEST_DONE();
}
