/*  ctl_hdp - `lumkeyctl hdp ...`: the tenant's trusted HDP issuers (docs/hdp.md).
 *
 *      hdp issuers create --name N (--public-key K | --public-key-file F) [--kid KID]
 *      hdp issuers list
 *      hdp issuers revoke ID
 *
 *  K: the issuer's raw Ed25519 public key in base64url (what the HDP SDKs'
 *  exportPublicKey prints), base64 or hex; F: a file holding K, or a PEM
 *  "PUBLIC KEY" (as `openssl pkey -pubout` writes). KID: the key id the
 *  issuer's tokens name in signature.kid (default: the name). A public key is
 *  not a secret, so it may be given on the command line.
 *  Calls /admin/v1/hdp/issuers[/ID/revoke] (create / revoke: role admin;
 *  list: auditor or admin).
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

static const ctl_column_t ISSUER_COLS[] = {{"ID", "id"},
                                           {"KID", "kid"},
                                           {"NAME", "name"},
                                           {"PUBLIC KEY", "public_key"},
                                           {"CREATED", "created_at"},
                                           {"REVOKED", "revoked_at"}};

static const char *const ISSUER_FIELDS[] = {"id",         "kid",        "name",       "public_key",
                                            "created_by", "created_at", "revoked_at", NULL};

/* The key text of file f: its first non-empty line, or the raw key inside a PEM
 * Ed25519 SubjectPublicKeyInfo (re-encoded base64url). 0 / -1 after a message. */
static int read_key_file(const char *f, char *out, size_t cap)
{
    FILE *fp = fopen(f, "r");
    if (!fp) {
        fprintf(stderr, "lumkeyctl: cannot read %s\n", f);
        return -1;
    }
    char text[4096];
    size_t n = fread(text, 1, sizeof text - 1, fp);
    fclose(fp);
    text[n] = '\0';
    const char *pem = strstr(text, "-----BEGIN PUBLIC KEY-----");
    if (pem) {
        char b64[256];
        size_t k = 0;
        const char *s = strchr(pem, '\n');
        const char *end = strstr(pem, "-----END PUBLIC KEY-----");
        for (; s && end && s < end && k < sizeof b64 - 1; s++)
            if (*s != '\n' && *s != '\r' && *s != ' ') b64[k++] = *s;
        b64[k] = '\0';
        static const unsigned char PREFIX[12] = {0x30, 0x2a, 0x30, 0x05, 0x06, 0x03,
                                                 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00};
        unsigned char der[64];
        size_t dl = 0;
        if (sodium_base642bin(der, sizeof der, b64, k, NULL, &dl, NULL, sodium_base64_VARIANT_ORIGINAL) !=
                0 ||
            dl != 44 || memcmp(der, PREFIX, sizeof PREFIX) != 0) {
            fprintf(stderr, "lumkeyctl: %s is not a PEM Ed25519 public key\n", f);
            return -1;
        }
        sodium_bin2base64(out, cap, der + 12, 32, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        return 0;
    }
    char *s = text;
    while (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t')
        s++;
    size_t len = strcspn(s, " \r\n\t");
    if (len == 0 || len >= cap) {
        fprintf(stderr, "lumkeyctl: %s holds no public key\n", f);
        return -1;
    }
    memcpy(out, s, len);
    out[len] = '\0';
    return 0;
}

static int issuers_create(ctl_t *c)
{
    static const char *const allowed[] = {"name", "public-key", "public-key-file", "kid", NULL};
    if (check_opts(c, allowed) != EXIT_OK) return EXIT_USAGE;
    const char *name = opt(c, "name"), *key = opt(c, "public-key"), *file = opt(c, "public-key-file");
    if (!name || !*name) return usage_error("hdp issuers create needs --name N");
    if (!key == !file)
        return usage_error("hdp issuers create needs one of --public-key K or --public-key-file F");
    char buf[256];
    if (file) {
        if (read_key_file(file, buf, sizeof buf) != 0) return EXIT_FAIL;
        key = buf;
    }
    json_t *req = json_pack("{s:s,s:s}", "name", name, "public_key", key);
    if (req && opt(c, "kid")) json_object_set_new(req, "kid", json_string(opt(c, "kid")));
    int rc = object_call(c, "POST", "/admin/v1/hdp/issuers", req, ISSUER_FIELDS);
    json_decref(req);
    return rc;
}

static int issuers_revoke(ctl_t *c)
{
    const char *id = c->nwords > 3 ? c->words[3] : NULL;
    if (!id) return usage_error("hdp issuers revoke needs the hdpi_... id");
    size_t n = strlen(id);
    int ok = n > 5 && n <= 64 && strncmp(id, "hdpi_", 5) == 0;
    for (size_t i = 5; ok && i < n; i++)
        ok = (id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'z') ||
             (id[i] >= 'A' && id[i] <= 'Z');
    if (!ok) return usage_error("'%s' is not an hdpi_... id", id);
    if (check_opts(c, NULL) != EXIT_OK) return EXIT_USAGE;
    char path[128];
    snprintf(path, sizeof path, "/admin/v1/hdp/issuers/%s/revoke", id);
    return object_call(c, "POST", path, NULL, ISSUER_FIELDS);
}

int ctl_hdp(ctl_t *c, const char *b)
{
    const char *sub = c->nwords > 2 ? c->words[2] : NULL;
    if (b == NULL || strcmp(b, "issuers") != 0)
        return usage_error("'hdp' needs 'issuers' and a subcommand: create, list or revoke");
    if (sub == NULL) return usage_error("'hdp issuers' needs a subcommand: create, list or revoke");
    size_t want = strcmp(sub, "revoke") == 0 ? 4 : 3;
    if (c->nwords > want) return usage_error("unexpected argument '%s'", c->words[want]);
    if (strcmp(sub, "create") == 0) return issuers_create(c);
    if (strcmp(sub, "list") == 0)
        return cmd_list(c, "/admin/v1/hdp/issuers", ISSUER_COLS, sizeof ISSUER_COLS / sizeof ISSUER_COLS[0]);
    if (strcmp(sub, "revoke") == 0) return issuers_revoke(c);
    return usage_error("unknown command '%s'", sub);
}
