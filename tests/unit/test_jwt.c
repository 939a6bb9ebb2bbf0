/*  test_jwt - edge_jwt: JWKS parsing and ID-token verification with keys made
 *  here (RSA 2048 and P-256, OpenSSL), tokens signed here; every refusal the
 *  header promises, and the accepted shapes. */
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge_jwt.h"
#include "lk_test.h"

#define NOW 1767225600

static EVP_PKEY *rsa_a, *rsa_b, *ec_a, *rsa_small;

static void b64u(char *out, size_t cap, const uint8_t *in, size_t n)
{
    sodium_bin2base64(out, cap, in, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

static void bn_b64(EVP_PKEY *k, const char *param, char *out, size_t cap)
{
    BIGNUM *bn = NULL;
    EVP_PKEY_get_bn_param(k, param, &bn);
    uint8_t buf[1024];
    int n = BN_bn2bin(bn, buf);
    b64u(out, cap, buf, (size_t)n);
    BN_free(bn);
}

static json_t *rsa_jwk(EVP_PKEY *k, const char *kid, const char *alg)
{
    char n[1400], e[16];
    bn_b64(k, OSSL_PKEY_PARAM_RSA_N, n, sizeof n);
    bn_b64(k, OSSL_PKEY_PARAM_RSA_E, e, sizeof e);
    json_t *j = json_pack("{s:s,s:s,s:s,s:s}", "kty", "RSA", "use", "sig", "n", n, "e", e);
    if (kid) json_object_set_new(j, "kid", json_string(kid));
    if (alg) json_object_set_new(j, "alg", json_string(alg));
    return j;
}

static json_t *ec_jwk(EVP_PKEY *k, const char *kid, int break_point)
{
    uint8_t pt[65];
    size_t len = 0;
    EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, pt, sizeof pt, &len);
    if (break_point) pt[64] ^= 1; /* no longer on the curve */
    char x[64], y[64];
    b64u(x, sizeof x, pt + 1, 32);
    b64u(y, sizeof y, pt + 33, 32);
    return json_pack("{s:s,s:s,s:s,s:s,s:s}", "kty", "EC", "crv", "P-256", "kid", kid, "x", x, "y", y);
}

static edge_jwks_t *jwks_of(json_t *keys)
{
    json_t *doc = json_pack("{s:o}", "keys", keys);
    char *s = json_dumps(doc, JSON_COMPACT);
    char err[200];
    edge_jwks_t *j = edge_jwks_parse(s, strlen(s), err, sizeof err);
    free(s);
    json_decref(doc);
    return j;
}

/* header and claims are JSON texts; sign with k (RSA PKCS#1 v1.5 or ECDSA as r||s); k NULL = empty signature
 */
static char *make_jwt(const char *header, const char *claims, EVP_PKEY *k)
{
    char h[2048], c[4096], sig64[1024] = "";
    b64u(h, sizeof h, (const uint8_t *)header, strlen(header));
    b64u(c, sizeof c, (const uint8_t *)claims, strlen(claims));
    char *input = malloc(strlen(h) + strlen(c) + 2);
    sprintf(input, "%s.%s", h, c);
    if (k) {
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        size_t sl = 0;
        uint8_t sig[600];
        EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k);
        EVP_DigestSign(md, NULL, &sl, (const uint8_t *)input, strlen(input));
        EVP_DigestSign(md, sig, &sl, (const uint8_t *)input, strlen(input));
        EVP_MD_CTX_free(md);
        if (EVP_PKEY_is_a(k, "EC")) {
            const uint8_t *p = sig;
            ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)sl);
            uint8_t rs[64];
            BN_bn2binpad(ECDSA_SIG_get0_r(es), rs, 32);
            BN_bn2binpad(ECDSA_SIG_get0_s(es), rs + 32, 32);
            ECDSA_SIG_free(es);
            b64u(sig64, sizeof sig64, rs, 64);
        } else {
            b64u(sig64, sizeof sig64, sig, sl);
        }
    }
    char *out = malloc(strlen(input) + strlen(sig64) + 2);
    sprintf(out, "%s.%s", input, sig64);
    free(input);
    return out;
}

static char *claims_std(const char *extra)
{
    static char buf[2048];
    snprintf(buf, sizeof buf,
             "{\"iss\":\"https://idp.example\",\"sub\":\"u1\",\"aud\":\"lumkey\",\"iat\":%d,\"exp\":%d,"
             "\"nonce\":\"n0nce\",\"email\":\"a@example.com\"%s%s}",
             NOW - 10, NOW + 300, extra && *extra ? "," : "", extra ? extra : "");
    return buf;
}

static const edge_jwt_expect_t X = {"https://idp.example", "lumkey", "n0nce", NOW, 60};

static edge_jwt_rc_t check(const edge_jwks_t *jwks, const char *header, const char *claims, EVP_PKEY *k)
{
    char *t = make_jwt(header, claims, k);
    json_t *out = NULL;
    edge_jwt_rc_t rc = edge_jwt_verify(jwks, t, strlen(t), &X, &out);
    if (rc == EDGE_JWT_OK) {
        LK_CHECK(json_is_object(out) && strcmp(json_string_value(json_object_get(out, "sub")), "u1") == 0);
    } else {
        LK_CHECK(out == NULL);
    }
    json_decref(out);
    free(t);
    return rc;
}

static edge_jwks_t *std_jwks(void)
{
    return jwks_of(json_pack("[o,o]", rsa_jwk(rsa_a, "rsa1", "RS256"), ec_jwk(ec_a, "ec1", 0)));
}

static void test_accepts_rs256_and_es256(void)
{
    edge_jwks_t *j = std_jwks();
    LK_CHECK(j && edge_jwks_count(j) == 2);
    LK_CHECK(check(j, "{\"alg\":\"RS256\",\"kid\":\"rsa1\",\"typ\":\"JWT\"}", claims_std(NULL), rsa_a) ==
             EDGE_JWT_OK);
    LK_CHECK(check(j, "{\"alg\":\"ES256\",\"kid\":\"ec1\"}", claims_std(NULL), ec_a) == EDGE_JWT_OK);
    /* aud as an array with only us; azp right; nbf in the past; iat within the skew; exp as a real */
    LK_CHECK(check(j, "{\"alg\":\"RS256\",\"kid\":\"rsa1\"}",
                   "{\"iss\":\"https://idp.example\",\"sub\":\"u1\",\"aud\":[\"lumkey\"],\"iat\":1767225650,"
                   "\"exp\":1767225900.5,\"nbf\":1767225000,\"nonce\":\"n0nce\",\"azp\":\"lumkey\"}",
                   rsa_a) == EDGE_JWT_OK);
    edge_jwks_free(&j);
    LK_CHECK(j == NULL);
    /* no kid: usable when the JWKS has one key of the type */
    j = jwks_of(json_pack("[o]", rsa_jwk(rsa_a, NULL, NULL)));
    LK_CHECK(check(j, "{\"alg\":\"RS256\"}", claims_std(NULL), rsa_a) == EDGE_JWT_OK);
    edge_jwks_free(&j);
    j = jwks_of(json_pack("[o,o]", rsa_jwk(rsa_a, "a", NULL), rsa_jwk(rsa_b, "b", NULL)));
    LK_CHECK(check(j, "{\"alg\":\"RS256\"}", claims_std(NULL), rsa_a) == EDGE_JWT_UNKNOWN_KID);
    LK_CHECK(check(j, "{\"alg\":\"RS256\",\"kid\":\"b\"}", claims_std(NULL), rsa_b) == EDGE_JWT_OK);
    edge_jwks_free(&j);
}

static void test_refuses_algorithms(void)
{
    edge_jwks_t *j = std_jwks();
    LK_CHECK(check(j, "{\"alg\":\"none\",\"kid\":\"rsa1\"}", claims_std(NULL), NULL) == EDGE_JWT_ALG);
    LK_CHECK(check(j, "{\"alg\":\"None\"}", claims_std(NULL), NULL) == EDGE_JWT_ALG);
    LK_CHECK(check(j, "{\"kid\":\"rsa1\"}", claims_std(NULL), rsa_a) == EDGE_JWT_ALG);
    LK_CHECK(check(j, "{\"alg\":\"RS512\",\"kid\":\"rsa1\"}", claims_std(NULL), rsa_a) == EDGE_JWT_ALG);
    LK_CHECK(check(j, "{\"alg\":\"PS256\",\"kid\":\"rsa1\"}", claims_std(NULL), rsa_a) == EDGE_JWT_ALG);
    LK_CHECK(check(j, "{\"alg\":\"RS256\",\"kid\":\"rsa1\",\"crit\":[\"exp\"]}", claims_std(NULL), rsa_a) ==
             EDGE_JWT_ALG);
    /* HS256 keyed with something public: refused before any key is used */
    char *t = make_jwt("{\"alg\":\"HS256\",\"kid\":\"rsa1\"}", claims_std(NULL), NULL);
    size_t l = strlen(t);
    char *h = malloc(l + 50);
    sprintf(h, "%sAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", t);
    LK_CHECK(edge_jwt_verify(j, h, strlen(h), &X, NULL) == EDGE_JWT_ALG);
    free(h);
    free(t);
    /* a key the JWKS marks for another alg, or an RSA key for ES256 */
    LK_CHECK(check(j, "{\"alg\":\"ES256\",\"kid\":\"rsa1\"}", claims_std(NULL), ec_a) ==
             EDGE_JWT_UNKNOWN_KID);
    edge_jwks_free(&j);
}

static void test_refuses_bad_signatures_and_keys(void)
{
    edge_jwks_t *j = std_jwks();
    LK_CHECK(check(j, "{\"alg\":\"RS256\",\"kid\":\"rsa1\"}", claims_std(NULL), rsa_b) == EDGE_JWT_SIGNATURE);
    LK_CHECK(check(j, "{\"alg\":\"RS256\",\"kid\":\"nope\"}", claims_std(NULL), rsa_a) ==
             EDGE_JWT_UNKNOWN_KID);
    LK_CHECK(check(j, "{\"alg\":\"RS256\",\"kid\":\"rsa1\"}", claims_std(NULL), NULL) == EDGE_JWT_SIGNATURE);
    /* payload swapped after signing */
    char *t = make_jwt("{\"alg\":\"RS256\",\"kid\":\"rsa1\"}", claims_std(NULL), rsa_a);
    char *t2 = make_jwt("{\"alg\":\"RS256\",\"kid\":\"rsa1\"}", claims_std("\"role\":\"admin\""), rsa_b);
    char *d1 = strchr(t, '.'), *s1 = strrchr(t, '.'), *d2 = strchr(t2, '.'), *s2 = strrchr(t2, '.');
    char forged[8192];
    snprintf(forged, sizeof forged, "%.*s%.*s%s", (int)(d1 - t), t, (int)(s2 - d2), d2, s1);
    LK_CHECK(edge_jwt_verify(j, forged, strlen(forged), &X, NULL) == EDGE_JWT_SIGNATURE);
    /* a flipped signature bit */
    char *last = t + strlen(t) - 5;
    *last = *last == 'A' ? 'B' : 'A';
    LK_CHECK(edge_jwt_verify(j, t, strlen(t), &X, NULL) == EDGE_JWT_SIGNATURE);
    free(t);
    free(t2);
    /* ES256 with a DER signature (not r||s) or a wrong length */
    LK_CHECK(check(j, "{\"alg\":\"ES256\",\"kid\":\"ec1\"}", claims_std(NULL), rsa_a) == EDGE_JWT_SIGNATURE);
    edge_jwks_free(&j);
}

static void test_claims(void)
{
    edge_jwks_t *j = std_jwks();
    const char *H = "{\"alg\":\"RS256\",\"kid\":\"rsa1\"}";
    char c[1024];
    snprintf(c, sizeof c,
             "{\"iss\":\"https://idp.example/\",\"sub\":\"u1\",\"aud\":\"lumkey\",\"iat\":%d,\"exp\":%d,"
             "\"nonce\":\"n0nce\"}",
             NOW, NOW + 60);
    LK_CHECK(check(j, H, c, rsa_a) == EDGE_JWT_ISSUER);
    snprintf(c, sizeof c, "{\"sub\":\"u1\",\"aud\":\"lumkey\",\"iat\":%d,\"exp\":%d,\"nonce\":\"n0nce\"}",
             NOW, NOW + 60);
    LK_CHECK(check(j, H, c, rsa_a) == EDGE_JWT_ISSUER);
    snprintf(c, sizeof c,
             "{\"iss\":\"https://idp.example\",\"sub\":\"u1\",\"aud\":\"other\",\"iat\":%d,\"exp\":%d,"
             "\"nonce\":\"n0nce\"}",
             NOW, NOW + 60);
    LK_CHECK(check(j, H, c, rsa_a) == EDGE_JWT_AUDIENCE);
    snprintf(c, sizeof c,
             "{\"iss\":\"https://idp.example\",\"sub\":\"u1\",\"aud\":[\"lumkey\",\"x\"],\"iat\":%d,"
             "\"exp\":%d,\"nonce\":\"n0nce\"}",
             NOW, NOW + 60);
    LK_CHECK(check(j, H, c, rsa_a) == EDGE_JWT_AZP);
    snprintf(c, sizeof c,
             "{\"iss\":\"https://idp.example\",\"sub\":\"u1\",\"aud\":[\"lumkey\",\"x\"],\"azp\":\"lumkey\","
             "\"iat\":%d,\"exp\":%d,\"nonce\":\"n0nce\"}",
             NOW, NOW + 60);
    LK_CHECK(check(j, H, c, rsa_a) == EDGE_JWT_OK);
    snprintf(c, sizeof c,
             "{\"iss\":\"https://idp.example\",\"sub\":\"u1\",\"aud\":\"lumkey\",\"azp\":\"x\",\"iat\":%d,"
             "\"exp\":%d,\"nonce\":\"n0nce\"}",
             NOW, NOW + 60);
    LK_CHECK(check(j, H, c, rsa_a) == EDGE_JWT_AZP);
    /* expiry with the 60 s skew */
    snprintf(c, sizeof c,
             "{\"iss\":\"https://idp.example\",\"sub\":\"u1\",\"aud\":\"lumkey\",\"iat\":%d,\"exp\":%d,"
             "\"nonce\":\"n0nce\"}",
             NOW - 600, NOW - 61);
    LK_CHECK(check(j, H, c, rsa_a) == EDGE_JWT_EXPIRED);
    snprintf(c, sizeof c,
             "{\"iss\":\"https://idp.example\",\"sub\":\"u1\",\"aud\":\"lumkey\",\"iat\":%d,\"exp\":%d,"
             "\"nonce\":\"n0nce\"}",
             NOW - 600, NOW - 30);
    LK_CHECK(check(j, H, c, rsa_a) == EDGE_JWT_OK);
    snprintf(c, sizeof c,
             "{\"iss\":\"https://idp.example\",\"sub\":\"u1\",\"aud\":\"lumkey\",\"iat\":%d,\"exp\":%d,"
             "\"nonce\":\"n0nce\"}",
             NOW + 120, NOW + 600);
    LK_CHECK(check(j, H, c, rsa_a) == EDGE_JWT_NOT_YET);
    snprintf(c, sizeof c,
             "{\"iss\":\"https://idp.example\",\"sub\":\"u1\",\"aud\":\"lumkey\",\"iat\":%d,\"exp\":%d,"
             "\"nbf\":%d,\"nonce\":\"n0nce\"}",
             NOW, NOW + 600, NOW + 120);
    LK_CHECK(check(j, H, c, rsa_a) == EDGE_JWT_NOT_YET);
    /* exp / iat missing or not numbers; no sub */
    snprintf(c, sizeof c,
             "{\"iss\":\"https://idp.example\",\"sub\":\"u1\",\"aud\":\"lumkey\",\"iat\":%d,"
             "\"nonce\":\"n0nce\"}",
             NOW);
    LK_CHECK(check(j, H, c, rsa_a) == EDGE_JWT_MALFORMED);
    snprintf(c, sizeof c,
             "{\"iss\":\"https://idp.example\",\"sub\":\"u1\",\"aud\":\"lumkey\",\"iat\":\"%d\","
             "\"exp\":%d,\"nonce\":\"n0nce\"}",
             NOW, NOW + 60);
    LK_CHECK(check(j, H, c, rsa_a) == EDGE_JWT_MALFORMED);
    snprintf(c, sizeof c,
             "{\"iss\":\"https://idp.example\",\"aud\":\"lumkey\",\"iat\":%d,\"exp\":%d,"
             "\"nonce\":\"n0nce\"}",
             NOW, NOW + 60);
    LK_CHECK(check(j, H, c, rsa_a) == EDGE_JWT_MALFORMED);
    /* nonce */
    snprintf(c, sizeof c,
             "{\"iss\":\"https://idp.example\",\"sub\":\"u1\",\"aud\":\"lumkey\",\"iat\":%d,\"exp\":%d,"
             "\"nonce\":\"other\"}",
             NOW, NOW + 60);
    LK_CHECK(check(j, H, c, rsa_a) == EDGE_JWT_NONCE);
    snprintf(c, sizeof c,
             "{\"iss\":\"https://idp.example\",\"sub\":\"u1\",\"aud\":\"lumkey\",\"iat\":%d,\"exp\":%d}", NOW,
             NOW + 60);
    LK_CHECK(check(j, H, c, rsa_a) == EDGE_JWT_NONCE);
    edge_jwks_free(&j);
}

static void test_malformed(void)
{
    edge_jwks_t *j = std_jwks();
    static const char *bad[] = {"",
                                "a",
                                "a.b",
                                "a.b.c.d",
                                "..",
                                "eyJhbGciOiJSUzI1NiJ9..",
                                "e30.e30.",
                                "eyJhbGciOiJSUzI1NiJ9=.e30.AAAA",
                                "!!!.e30.AAAA",
                                "W10.e30.AAAA"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        edge_jwt_rc_t rc = edge_jwt_verify(j, bad[i], strlen(bad[i]), &X, NULL);
        LK_CHECK(rc == EDGE_JWT_MALFORMED || rc == EDGE_JWT_ALG);
    }
    /* duplicate claims are refused (which "aud" would count?) */
    char c[512];
    snprintf(c, sizeof c,
             "{\"iss\":\"https://idp.example\",\"sub\":\"u1\",\"aud\":\"x\",\"aud\":\"lumkey\",\"iat\":%d,"
             "\"exp\":%d,\"nonce\":\"n0nce\"}",
             NOW, NOW + 60);
    LK_CHECK(check(j, "{\"alg\":\"RS256\",\"kid\":\"rsa1\"}", c, rsa_a) == EDGE_JWT_MALFORMED);
    char *big = malloc(EDGE_JWT_MAX_LEN + 10);
    memset(big, 'A', EDGE_JWT_MAX_LEN + 9);
    big[EDGE_JWT_MAX_LEN + 9] = '\0';
    LK_CHECK(edge_jwt_verify(j, big, strlen(big), &X, NULL) == EDGE_JWT_MALFORMED);
    free(big);
    LK_CHECK(edge_jwt_verify(NULL, "a.b.c", 5, &X, NULL) == EDGE_JWT_MALFORMED);
    edge_jwks_free(&j);
    LK_CHECK(strcmp(edge_jwt_rc_code(EDGE_JWT_SIGNATURE), "bad_signature") == 0);
    LK_CHECK(strcmp(edge_jwt_rc_code(EDGE_JWT_ALG), "unsupported_alg") == 0);
}

static void test_jwks(void)
{
    char err[200];
    static const char *bad[] = {"",
                                "{}",
                                "{\"keys\":{}}",
                                "{\"keys\":[]}",
                                "[1]",
                                "{\"keys\":[{\"kty\":\"oct\",\"k\":\"AAAA\"}]}",
                                "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}",
                                "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":\"AA\",\"y\":\"AA\"}]}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        edge_jwks_t *j = edge_jwks_parse(bad[i], strlen(bad[i]), err, sizeof err);
        LK_CHECK(j == NULL && err[0]);
    }
    /* a 1024-bit RSA key and an off-curve EC point are skipped: nothing usable */
    edge_jwks_t *j = jwks_of(json_pack("[o]", rsa_jwk(rsa_small, "small", NULL)));
    LK_CHECK(j == NULL);
    j = jwks_of(json_pack("[o]", ec_jwk(ec_a, "broken", 1)));
    LK_CHECK(j == NULL);
    /* use: enc keys are skipped, the others kept */
    json_t *enc = rsa_jwk(rsa_b, "enc", NULL);
    json_object_set_new(enc, "use", json_string("enc"));
    j = jwks_of(json_pack("[o,o,o]", enc, rsa_jwk(rsa_small, "small", NULL), ec_jwk(ec_a, "ec1", 0)));
    LK_CHECK(j && edge_jwks_count(j) == 1);
    edge_jwks_free(&j);
    edge_jwks_free(&j); /* NULL-safe */
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    rsa_a = EVP_RSA_gen(2048);
    rsa_b = EVP_RSA_gen(2048);
    rsa_small = EVP_RSA_gen(1024);
    ec_a = EVP_EC_gen("P-256");
    if (!rsa_a || !rsa_b || !ec_a || !rsa_small) return 1;
    LK_RUN(test_accepts_rs256_and_es256);
    LK_RUN(test_refuses_algorithms);
    LK_RUN(test_refuses_bad_signatures_and_keys);
    LK_RUN(test_claims);
    LK_RUN(test_malformed);
    LK_RUN(test_jwks);
    EVP_PKEY_free(rsa_a);
    EVP_PKEY_free(rsa_b);
    EVP_PKEY_free(rsa_small);
    EVP_PKEY_free(ec_a);
    return LK_TEST_DONE();
}
