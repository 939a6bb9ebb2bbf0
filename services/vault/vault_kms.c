/*  vault_kms - the KEK behind the file backend or a PKCS#11 token. */
#include "vault_kms.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <p11-kit-1/p11-kit/pkcs11.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lk_log.h"

#define PIN_MAX   256
#define MAX_SLOTS 64

typedef struct {
    char label[VAULT_MAX_AD_FIELD + 1];
    char id[VAULT_KMS_ID_MAX + 1]; /* "pkcs11:<label>" */
    uint32_t version;
    CK_OBJECT_HANDLE handle; /* CK_INVALID_HANDLE when disconnected */
} p11_key_t;

struct vault_kms {
    int pkcs11;
    uint8_t *file_kek; /* sodium memory */
    /* pkcs11 */
    char module[512], token[33], pin_file[512];
    p11_key_t cur, old;
    int has_old;
    void *dl;
    CK_FUNCTION_LIST_PTR f;
    int initialized; /* we called C_Initialize */
    CK_SESSION_HANDLE session;
    int connected;
};

static int copy_setting(char *dst, size_t cap, const char *v, const char *name)
{
    if (!v || !*v) {
        lk_log_error("LUMKEY_KMS=pkcs11 needs %s", name);
        return -1;
    }
    if (strlen(v) >= cap) {
        lk_log_error("%s is too long", name);
        return -1;
    }
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

static int parse_version(const char *name, uint32_t *out)
{
    const char *v = getenv(name);
    *out = 1;
    if (!v || !*v) return 0;
    char *end = NULL;
    errno = 0;
    unsigned long n = strtoul(v, &end, 10);
    if (errno || *end || n < 1 || n > 0x7fffffffUL) {
        lk_log_error("%s must be a positive integer", name);
        return -1;
    }
    *out = (uint32_t)n;
    return 0;
}

int vault_kms_config_env(vault_kms_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->backend = getenv("LUMKEY_KMS");
    cfg->module = getenv("LUMKEY_PKCS11_MODULE");
    cfg->token = getenv("LUMKEY_PKCS11_TOKEN");
    cfg->pin_file = getenv("LUMKEY_PKCS11_PIN_FILE");
    cfg->key_label = getenv("LUMKEY_PKCS11_KEY_LABEL");
    cfg->old_key_label = getenv("LUMKEY_PKCS11_OLD_KEY_LABEL");
    if (parse_version("LUMKEY_PKCS11_KEY_VERSION", &cfg->key_version) != 0 ||
        parse_version("LUMKEY_PKCS11_OLD_KEY_VERSION", &cfg->old_key_version) != 0)
        return -1;
    return 0;
}

static int key_init(p11_key_t *k, const char *label, uint32_t version, const char *name)
{
    if (copy_setting(k->label, sizeof k->label, label, name) != 0) return -1;
    snprintf(k->id, sizeof k->id, "pkcs11:%s", label);
    k->version = version;
    k->handle = CK_INVALID_HANDLE;
    return 0;
}

vault_kms_t *vault_kms_new(const vault_kms_config_t *cfg, const uint8_t file_kek[VAULT_KEY_LEN])
{
    const char *b = cfg->backend && *cfg->backend ? cfg->backend : "file";
    if (strcmp(b, "file") != 0 && strcmp(b, "pkcs11") != 0) {
        lk_log_error("LUMKEY_KMS must be file or pkcs11");
        return NULL;
    }
    vault_kms_t *kms = calloc(1, sizeof *kms);
    if (!kms) return NULL;
    kms->file_kek = sodium_malloc(VAULT_KEY_LEN);
    if (!kms->file_kek) goto fail;
    memcpy(kms->file_kek, file_kek, VAULT_KEY_LEN);
    kms->pkcs11 = strcmp(b, "pkcs11") == 0;
    kms->connected = !kms->pkcs11;
    if (!kms->pkcs11) return kms;
    if (copy_setting(kms->module, sizeof kms->module, cfg->module, "LUMKEY_PKCS11_MODULE") != 0 ||
        copy_setting(kms->token, sizeof kms->token, cfg->token, "LUMKEY_PKCS11_TOKEN") != 0 ||
        copy_setting(kms->pin_file, sizeof kms->pin_file, cfg->pin_file, "LUMKEY_PKCS11_PIN_FILE") != 0 ||
        key_init(&kms->cur, cfg->key_label, cfg->key_version ? cfg->key_version : 1,
                 "LUMKEY_PKCS11_KEY_LABEL") != 0)
        goto fail;
    if (cfg->old_key_label && *cfg->old_key_label) {
        if (key_init(&kms->old, cfg->old_key_label, cfg->old_key_version ? cfg->old_key_version : 1,
                     "LUMKEY_PKCS11_OLD_KEY_LABEL") != 0)
            goto fail;
        if (strcmp(kms->old.id, kms->cur.id) == 0 && kms->old.version == kms->cur.version) {
            lk_log_error("LUMKEY_PKCS11_OLD_KEY_LABEL/VERSION name the current KEK");
            goto fail;
        }
        kms->has_old = 1;
    }
    return kms;
fail:
    vault_kms_destroy(&kms);
    return NULL;
}

void vault_kms_destroy(vault_kms_t **kms_p)
{
    if (!kms_p || !*kms_p) return;
    vault_kms_t *kms = *kms_p;
    vault_kms_disconnect(kms);
    if (kms->dl) dlclose(kms->dl);
    if (kms->file_kek) sodium_free(kms->file_kek);
    free(kms);
    *kms_p = NULL;
}

int vault_kms_connected(const vault_kms_t *kms)
{
    return kms->connected;
}

const char *vault_kms_kek_id(const vault_kms_t *kms)
{
    return kms->pkcs11 ? kms->cur.id : VAULT_KEK_ID;
}

uint32_t vault_kms_kek_version(const vault_kms_t *kms)
{
    return kms->pkcs11 ? kms->cur.version : VAULT_KEK_VERSION;
}

/* ------------------------------------------------------------- pkcs11 -- */

void vault_kms_disconnect(vault_kms_t *kms)
{
    if (!kms->pkcs11) return;
    if (kms->f && kms->session != CK_INVALID_HANDLE) {
        kms->f->C_Logout(kms->session);
        kms->f->C_CloseSession(kms->session);
    }
    kms->session = CK_INVALID_HANDLE;
    kms->cur.handle = kms->old.handle = CK_INVALID_HANDLE;
    /* finalize so that the next connect sees tokens as they are now */
    if (kms->f && kms->initialized) kms->f->C_Finalize(NULL);
    kms->initialized = 0;
    kms->connected = 0;
}

/* Reads the PIN into sodium memory (NUL-terminated, trailing newline cut). */
static char *read_pin(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        lk_log_error("KMS: cannot read the PIN file %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && (st.st_mode & 077))
        lk_log_warn("KMS: the PIN file %s is readable by other users: chmod 600 it", path);
    char *pin = sodium_malloc(PIN_MAX + 1);
    size_t n = 0;
    if (pin) {
        for (;;) {
            ssize_t r = read(fd, pin + n, PIN_MAX - n);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) break;
            n += (size_t)r;
            if (n == PIN_MAX) break;
        }
        while (n && (pin[n - 1] == '\n' || pin[n - 1] == '\r'))
            n--;
        pin[n] = '\0';
        if (n == 0) {
            lk_log_error("KMS: the PIN file %s is empty", path);
            sodium_free(pin);
            pin = NULL;
        }
    }
    close(fd);
    *len = n;
    return pin;
}

static void padded_label(const unsigned char *field, size_t cap, char *out)
{
    size_t n = cap;
    while (n && (field[n - 1] == ' ' || field[n - 1] == '\0'))
        n--;
    memcpy(out, field, n);
    out[n] = '\0';
}

static int find_key(vault_kms_t *kms, p11_key_t *k)
{
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE kt = CKK_AES;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof cls},
        {CKA_KEY_TYPE, &kt, sizeof kt},
        {CKA_LABEL, k->label, strlen(k->label)},
    };
    CK_OBJECT_HANDLE h[2];
    CK_ULONG n = 0;
    CK_RV rv = kms->f->C_FindObjectsInit(kms->session, tmpl, 3);
    if (rv == CKR_OK) {
        rv = kms->f->C_FindObjects(kms->session, h, 2, &n);
        kms->f->C_FindObjectsFinal(kms->session);
    }
    if (rv != CKR_OK || n != 1) {
        lk_log_error("KMS: %s AES key labelled '%s' on token '%s' (rv 0x%lx)", n > 1 ? "more than one" : "no",
                     k->label, kms->token, (unsigned long)rv);
        return -1;
    }
    CK_BBOOL sensitive = CK_FALSE, extractable = CK_TRUE;
    CK_ATTRIBUTE a[] = {{CKA_SENSITIVE, &sensitive, sizeof sensitive},
                        {CKA_EXTRACTABLE, &extractable, sizeof extractable}};
    rv = kms->f->C_GetAttributeValue(kms->session, h[0], a, 2);
    if (rv != CKR_OK || sensitive != CK_TRUE || extractable != CK_FALSE) {
        lk_log_error("KMS: the key '%s' must be sensitive and not extractable; refusing it", k->label);
        return -1;
    }
    k->handle = h[0];
    return 0;
}

static vault_kms_rc_t rc_of(CK_RV rv)
{
    switch (rv) {
    case CKR_OK:
        return VAULT_KMS_OK;
    case CKR_ENCRYPTED_DATA_INVALID:
    case CKR_ENCRYPTED_DATA_LEN_RANGE:
    case CKR_DATA_INVALID:
    case CKR_DATA_LEN_RANGE:
        return VAULT_KMS_REFUSED;
    default:
        return VAULT_KMS_UNAVAILABLE;
    }
}

static vault_kms_rc_t p11_crypt(vault_kms_t *kms, const p11_key_t *k, int encrypt, const vault_ad_t *ad,
                                const uint8_t *in, size_t in_len, uint8_t *out, size_t *out_len)
{
    uint8_t aad[VAULT_AD_MAX];
    size_t aad_len;
    if (vault_build_ad(ad, "lumkey.dek", aad, &aad_len) != 0) return VAULT_KMS_REFUSED;
    if (!kms->connected || k->handle == CK_INVALID_HANDLE) return VAULT_KMS_UNAVAILABLE;
    uint8_t iv[VAULT_KMS_GCM_IV_LEN];
    if (encrypt)
        randombytes_buf(iv, sizeof iv);
    else if (in_len != VAULT_KMS_WRAPPED_LEN)
        return VAULT_KMS_REFUSED;
    else
        memcpy(iv, in, sizeof iv);
    CK_GCM_PARAMS gp = {iv, sizeof iv, sizeof iv * 8, aad, aad_len, VAULT_TAG_LEN * 8};
    CK_MECHANISM mech = {CKM_AES_GCM, &gp, sizeof gp};
    CK_RV rv;
    if (encrypt) {
        CK_ULONG n = VAULT_WRAPPED_MAX - sizeof iv;
        rv = kms->f->C_EncryptInit(kms->session, &mech, k->handle);
        if (rv == CKR_OK) rv = kms->f->C_Encrypt(kms->session, (CK_BYTE_PTR)in, in_len, out + sizeof iv, &n);
        if (rv == CKR_OK && n != VAULT_KEY_LEN + VAULT_TAG_LEN) rv = CKR_GENERAL_ERROR;
        if (rv == CKR_OK) {
            memcpy(out, iv, sizeof iv);
            *out_len = sizeof iv + n;
        }
    } else {
        CK_ULONG n = VAULT_WRAPPED_MAX;
        uint8_t *buf = sodium_malloc(VAULT_WRAPPED_MAX);
        if (!buf) return VAULT_KMS_UNAVAILABLE;
        rv = kms->f->C_DecryptInit(kms->session, &mech, k->handle);
        if (rv == CKR_OK)
            rv = kms->f->C_Decrypt(kms->session, (CK_BYTE_PTR)in + sizeof iv, in_len - sizeof iv, buf, &n);
        if (rv == CKR_OK && n != VAULT_KEY_LEN) rv = CKR_ENCRYPTED_DATA_INVALID;
        if (rv == CKR_OK) {
            memcpy(out, buf, VAULT_KEY_LEN);
            *out_len = VAULT_KEY_LEN;
        }
        sodium_free(buf);
    }
    vault_kms_rc_t rc = rc_of(rv);
    /* Some tokens (SoftHSM2) answer a failed GCM tag with CKR_GENERAL_ERROR: when the
     * session is still logged in, the token is fine and the data is at fault. */
    CK_SESSION_INFO si;
    if (rc == VAULT_KMS_UNAVAILABLE && !encrypt && (rv == CKR_GENERAL_ERROR || rv == CKR_FUNCTION_FAILED) &&
        kms->f->C_GetSessionInfo(kms->session, &si) == CKR_OK &&
        (si.state == CKS_RO_USER_FUNCTIONS || si.state == CKS_RW_USER_FUNCTIONS))
        rc = VAULT_KMS_REFUSED;
    if (rc == VAULT_KMS_UNAVAILABLE) {
        lk_log_error("KMS: %s failed (rv 0x%lx): disconnecting", encrypt ? "C_Encrypt" : "C_Decrypt",
                     (unsigned long)rv);
        vault_kms_disconnect(kms);
    }
    return rc;
}

/* A wrap / unwrap round trip with k: tells a key that cannot do the job. */
static int self_test(vault_kms_t *kms, const p11_key_t *k)
{
    vault_ad_t ad = {VAULT_FORMAT_VERSION, LK_STR_LIT("lumkey.selftest"),
                     LK_STR_LIT("-"),      LK_STR_LIT("-"),
                     lk_str(k->id),        k->version};
    uint8_t *dek = sodium_malloc(2 * VAULT_KEY_LEN);
    uint8_t w[VAULT_WRAPPED_MAX];
    size_t wl = 0, dl = 0;
    if (!dek) return -1;
    randombytes_buf(dek, VAULT_KEY_LEN);
    int ok = p11_crypt(kms, k, 1, &ad, dek, VAULT_KEY_LEN, w, &wl) == VAULT_KMS_OK &&
             p11_crypt(kms, k, 0, &ad, w, wl, dek + VAULT_KEY_LEN, &dl) == VAULT_KMS_OK &&
             sodium_memcmp(dek, dek + VAULT_KEY_LEN, VAULT_KEY_LEN) == 0;
    sodium_free(dek);
    if (!ok) lk_log_error("KMS: the key '%s' failed an AES-GCM wrap round trip", k->label);
    return ok ? 0 : -1;
}

vault_kms_rc_t vault_kms_connect(vault_kms_t *kms)
{
    if (!kms->pkcs11 || kms->connected) return VAULT_KMS_OK;
    vault_kms_disconnect(kms);
    if (!kms->dl) {
        kms->dl = dlopen(kms->module, RTLD_NOW | RTLD_LOCAL);
        if (!kms->dl) {
            lk_log_error("KMS: cannot load the PKCS#11 module %s: %s", kms->module, dlerror());
            return VAULT_KMS_UNAVAILABLE;
        }
        CK_C_GetFunctionList gfl = (CK_C_GetFunctionList)dlsym(kms->dl, "C_GetFunctionList");
        if (!gfl || gfl(&kms->f) != CKR_OK || !kms->f) {
            lk_log_error("KMS: %s is not a PKCS#11 module", kms->module);
            dlclose(kms->dl);
            kms->dl = NULL;
            kms->f = NULL;
            return VAULT_KMS_UNAVAILABLE;
        }
    }
    CK_RV rv = kms->f->C_Initialize(NULL);
    if (rv == CKR_OK)
        kms->initialized = 1;
    else if (rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        lk_log_error("KMS: C_Initialize failed (rv 0x%lx)", (unsigned long)rv);
        return VAULT_KMS_UNAVAILABLE;
    }
    CK_SLOT_ID slots[MAX_SLOTS];
    CK_ULONG nslots = MAX_SLOTS;
    CK_SLOT_ID slot = 0;
    int found = 0;
    rv = kms->f->C_GetSlotList(CK_TRUE, slots, &nslots);
    for (CK_ULONG i = 0; rv == CKR_OK && i < nslots && !found; i++) {
        CK_TOKEN_INFO ti;
        char label[33];
        if (kms->f->C_GetTokenInfo(slots[i], &ti) != CKR_OK) continue;
        padded_label(ti.label, sizeof ti.label, label);
        if (strcmp(label, kms->token) == 0) {
            slot = slots[i];
            found = 1;
        }
    }
    if (!found) {
        lk_log_error("KMS: no token labelled '%s' (rv 0x%lx)", kms->token, (unsigned long)rv);
        goto fail;
    }
    CK_MECHANISM_INFO mi;
    rv = kms->f->C_GetMechanismInfo(slot, CKM_AES_GCM, &mi);
    if (rv != CKR_OK || !(mi.flags & CKF_ENCRYPT) || !(mi.flags & CKF_DECRYPT)) {
        lk_log_error("KMS: token '%s' does not offer CKM_AES_GCM", kms->token);
        goto fail;
    }
    rv = kms->f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &kms->session);
    if (rv != CKR_OK) {
        kms->session = CK_INVALID_HANDLE;
        lk_log_error("KMS: C_OpenSession failed (rv 0x%lx)", (unsigned long)rv);
        goto fail;
    }
    size_t pin_len = 0;
    char *pin = read_pin(kms->pin_file, &pin_len);
    if (!pin) goto fail;
    rv = kms->f->C_Login(kms->session, CKU_USER, (CK_UTF8CHAR_PTR)pin, pin_len);
    sodium_free(pin); /* wipes */
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
        lk_log_error("KMS: login to token '%s' failed (rv 0x%lx)", kms->token, (unsigned long)rv);
        goto fail;
    }
    kms->connected = 1;
    if (find_key(kms, &kms->cur) != 0 || (kms->has_old && find_key(kms, &kms->old) != 0) ||
        self_test(kms, &kms->cur) != 0)
        goto fail;
    lk_log_info("KMS: connected to token '%s', KEK %s version %u", kms->token, kms->cur.id, kms->cur.version);
    return VAULT_KMS_OK;
fail:
    vault_kms_disconnect(kms);
    return VAULT_KMS_UNAVAILABLE;
}

/* ------------------------------------------------------------ dispatch -- */

vault_kms_rc_t vault_kms_wrap(vault_kms_t *kms, const vault_ad_t *ad, const uint8_t *dek, uint8_t *wrapped,
                              size_t *wrapped_len)
{
    *wrapped_len = 0;
    if (!lk_str_eq(ad->kek_id, vault_kms_kek_id(kms)) || ad->kek_version != vault_kms_kek_version(kms))
        return VAULT_KMS_REFUSED;
    if (!kms->pkcs11) {
        if (vault_wrap_local(kms->file_kek, ad, dek, wrapped) != 0) return VAULT_KMS_REFUSED;
        *wrapped_len = VAULT_WRAPPED_DEK_LEN;
        return VAULT_KMS_OK;
    }
    return p11_crypt(kms, &kms->cur, 1, ad, dek, VAULT_KEY_LEN, wrapped, wrapped_len);
}

vault_kms_rc_t vault_kms_unwrap(vault_kms_t *kms, const vault_ad_t *ad, const uint8_t *wrapped,
                                size_t wrapped_len, uint8_t *dek)
{
    vault_kms_rc_t rc = VAULT_KMS_REFUSED;
    size_t n = 0;
    if (lk_str_eq(ad->kek_id, VAULT_KEK_ID) && ad->kek_version == VAULT_KEK_VERSION)
        rc = vault_unwrap_local(kms->file_kek, ad, wrapped, wrapped_len, dek) == 0 ? VAULT_KMS_OK
                                                                                   : VAULT_KMS_REFUSED;
    else if (kms->pkcs11 && lk_str_eq(ad->kek_id, kms->cur.id) && ad->kek_version == kms->cur.version)
        rc = p11_crypt(kms, &kms->cur, 0, ad, wrapped, wrapped_len, dek, &n);
    else if (kms->pkcs11 && kms->has_old && lk_str_eq(ad->kek_id, kms->old.id) &&
             ad->kek_version == kms->old.version)
        rc = p11_crypt(kms, &kms->old, 0, ad, wrapped, wrapped_len, dek, &n);
    if (rc != VAULT_KMS_OK) sodium_memzero(dek, VAULT_KEY_LEN);
    return rc;
}
