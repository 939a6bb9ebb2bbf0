/*  policy_match - PII detectors (regex + validator), globs, JSON paths and the
 *  one-match primitive over a compiled pattern (PCRE2 JIT).
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy_int.h"

static const char *const pii_names[PII_N] = {"email", "phone",  "card",        "ssn", "iban",
                                             "ip",    "secret", "private_key", "jwt"};

static const char *const pii_res[PII_N] = {
    /* email */
    "(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\\.[A-Za-z0-9-]{1,63}){0,8}\\.[A-Za-z]{"
    "2,24}"
    "(?![A-Za-z0-9-])",
    /* phone: international (+CC ...) or North-American grouped; validator counts digits */
    "(?<![\\w+])(?:\\+\\d{1,3}[ .-]?(?:\\(\\d{1,4}\\)[ .-]?)?\\d{1,4}(?:[ .-]?\\d{2,4}){2,4}|\\(\\d{3}\\)[ "
    ".-]?\\d{3}[ .-]"
    "\\d{4}|\\d{3}[.-]\\d{3}[.-]\\d{4})(?![\\w])",
    /* card: 13-19 digits, optional single space/dash separators; Luhn */
    "(?<![\\d])\\d(?:[ -]?\\d){12,18}(?![\\d])",
    /* ssn */
    "(?<![\\d-])\\d{3}-\\d{2}-\\d{4}(?![\\d-])",
    /* iban: country, check digits, BBAN (optionally grouped by 4 with spaces); mod-97 */
    "(?<![A-Za-z0-9])[A-Z]{2}\\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])",
    /* ip: IPv4 or IPv6 candidates; inet_pton decides */
    "(?<![\\w.:])(?:\\d{1,3}(?:\\.\\d{1,3}){3}|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\\.\\d{1,3}(?:\\."
    "\\d{1,3}){"
    "3})?)(?![\\w.:])",
    /* secret: provider and platform API keys */
    "(?:\\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,200}|\\bAKIA[0-9A-Z]{16}\\b|\\bgh[pousr]_[A-Za-z0-9]{36,251}|"
    "\\bxox[abpr]-[A-Za-z0-9-]{10,200}|\\bAIza[0-9A-Za-z_-]{35}|\\blk_(?:live|test|adm)_[A-Za-z0-9_]{16,200}"
    ")",
    /* private_key */
    "-----BEGIN [A-Z ]{0,40}PRIVATE KEY-----",
    /* jwt */
    "\\beyJ[A-Za-z0-9_-]{2,2000}\\.eyJ[A-Za-z0-9_-]{2,4000}\\.[A-Za-z0-9_-]{1,2000}",
};

const char *pii_name(int pii)
{
    return pii >= 0 && pii < PII_N ? pii_names[pii] : "?";
}

int pii_index(const char *name)
{
    for (int i = 0; i < PII_N; i++)
        if (strcmp(name, pii_names[i]) == 0) return i;
    return -1;
}

const char *pii_regex(int pii)
{
    return pii_res[pii];
}

static int luhn_ok(const char *s, size_t len)
{
    int sum = 0, n = 0;
    for (size_t i = len; i-- > 0;) {
        if (!isdigit((unsigned char)s[i])) continue;
        int d = s[i] - '0';
        if (n % 2 == 1) {
            d *= 2;
            if (d > 9) d -= 9;
        }
        sum += d;
        n++;
    }
    return n >= 13 && n <= 19 && sum % 10 == 0;
}

static int iban_ok(const char *s, size_t len)
{
    char c[40];
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == ' ') continue;
        if (n >= sizeof c) return 0;
        c[n++] = s[i];
    }
    if (n < 15 || n > 34) return 0;
    /* move the first four characters to the end, letters -> 10..35, mod 97 */
    unsigned rem = 0;
    for (size_t k = 0; k < n; k++) {
        char ch = c[(k + 4) % n];
        if (isdigit((unsigned char)ch))
            rem = (rem * 10 + (unsigned)(ch - '0')) % 97;
        else if (ch >= 'A' && ch <= 'Z')
            rem = (rem * 100 + (unsigned)(ch - 'A' + 10)) % 97;
        else
            return 0;
    }
    return rem == 1;
}

static int ssn_ok(const char *s, size_t len)
{
    if (len != 11) return 0;
    int area = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    int group = (s[4] - '0') * 10 + (s[5] - '0');
    int serial = atoi(s + 7);
    if (area == 0 || area == 666 || area >= 900) return 0;
    return group != 0 && serial != 0;
}

static int ip_ok(const char *s, size_t len)
{
    char b[64];
    unsigned char out[16];
    if (len >= sizeof b) return 0;
    memcpy(b, s, len);
    b[len] = 0;
    return inet_pton(AF_INET, b, out) == 1 || inet_pton(AF_INET6, b, out) == 1;
}

static int phone_ok(const char *s, size_t len)
{
    int digits = 0;
    for (size_t i = 0; i < len; i++)
        if (isdigit((unsigned char)s[i])) digits++;
    return digits >= 9 && digits <= 15;
}

int pii_validate(int pii, const char *s, size_t len)
{
    switch (pii) {
    case PII_CARD:
        return luhn_ok(s, len);
    case PII_IBAN:
        return iban_ok(s, len);
    case PII_SSN:
        return ssn_ok(s, len);
    case PII_IP:
        return ip_ok(s, len);
    case PII_PHONE:
        return phone_ok(s, len);
    default:
        return 1;
    }
}

int glob_any(const globs_t *g, const char *s)
{
    if (!s) return 0;
    for (size_t i = 0; i < g->n; i++)
        if (fnmatch(g->v[i], s, 0) == 0) return 1;
    return 0;
}

/* "a.b[2].c" into the parsed arguments; NULL when absent. */
json_t *json_path_get(json_t *root, const char *path)
{
    json_t *cur = root;
    const char *q = path;
    char key[256];
    while (*q && cur) {
        if (*q == '.') {
            q++;
            continue;
        }
        if (*q == '[') {
            char *end;
            unsigned long idx = strtoul(q + 1, &end, 10);
            if (*end != ']' || !json_is_array(cur)) return NULL;
            cur = json_array_get(cur, idx);
            q = end + 1;
            continue;
        }
        size_t n = strcspn(q, ".[");
        if (n >= sizeof key || !json_is_object(cur)) return NULL;
        memcpy(key, q, n);
        key[n] = 0;
        cur = json_object_get(cur, key);
        q += n;
    }
    return cur;
}

void rule_label(const lk_policy_t *p, int pi, char *out, size_t outlen)
{
    const pat_t *pt = &p->pats[pi];
    snprintf(out, outlen, "[REDACTED:%s]", pt->pii >= 0 ? pii_name(pt->pii) : p->rules[pt->rule].id);
}

static int match_once(const pat_t *pt, const char *s, size_t len, size_t off, uint32_t opts,
                      pcre2_match_data *md)
{
    int rc = pcre2_match(pt->re, (PCRE2_SPTR)s, len, off, opts, md, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match(pt->re, (PCRE2_SPTR)s, len, off, opts | PCRE2_NO_JIT, md, NULL);
    return rc;
}

int pat_next(const lk_policy_t *p, int pi, const char *s, size_t len, size_t off, int partial,
             pcre2_match_data *md, size_t *a, size_t *b)
{
    const pat_t *pt = &p->pats[pi];
    while (off <= len) {
        int rc = match_once(pt, s, len, off, partial ? PCRE2_PARTIAL_HARD : 0, md);
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        if (rc == PCRE2_ERROR_PARTIAL) {
            *a = ov[0];
            *b = len;
            return 2;
        }
        if (rc < 0) return 0; /* no match, or a match/limit error: treated as no match */
        size_t s0 = ov[0], e0 = ov[1];
        if (e0 < s0) return 0; /* \K tricks */
        if (pt->pii < 0 || pii_validate(pt->pii, s + s0, e0 - s0)) {
            *a = s0;
            *b = e0;
            return 1;
        }
        if (pt->pii == PII_IBAN) /* a word after the IBAN may have been taken in: try shorter */
            for (size_t e = e0; e > s0 + 15; e--)
                if (s[e - 1] == ' ' && pii_validate(PII_IBAN, s + s0, e - 1 - s0)) {
                    *a = s0;
                    *b = e - 1;
                    return 1;
                }
        /* invalid candidate: go on after its first character */
        off = s0 + 1;
        while (off < len && ((unsigned char)s[off] & 0xC0) == 0x80)
            off++;
    }
    return 0;
}
