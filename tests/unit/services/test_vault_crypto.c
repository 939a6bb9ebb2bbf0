/*  test_vault_crypto - the vault's envelope encryption and key hashing, alone.
 *
 *  Round trip; a flipped byte anywhere in the nonce, the ciphertext or the
 *  wrapped DEK fails; a ciphertext moved to another credential, tenant,
 *  provider, KEK or format fails; the key hash is deterministic and keyed;
 *  different master keys give different keys and key-check values.
 */
#include <sodium.h>
#include <string.h>

#include "lk_test.h"
#include "vault_crypto.h"

static const char SECRET[] = "sk-test-0123456789abcdefghijklmnopqrstuvwxyz";

typedef struct {
    uint8_t wrapped[VAULT_WRAPPED_DEK_LEN];
    uint8_t nonce[VAULT_NONCE_LEN];
    uint8_t ct[sizeof SECRET - 1 + VAULT_TAG_LEN];
} sealed_t;

static vault_ad_t ad_of(const char *tenant, const char *cred, const char *prov)
{
    vault_ad_t ad = {VAULT_FORMAT_VERSION, lk_str(tenant),           lk_str(cred),
                     lk_str(prov),         LK_STR_LIT(VAULT_KEK_ID), VAULT_KEK_VERSION};
    return ad;
}

static int opens(const vault_keys_t *k, const vault_ad_t *ad, const sealed_t *s)
{
    uint8_t out[sizeof SECRET];
    size_t n = 0;
    int rc = vault_open(k->kek, ad, s->wrapped, sizeof s->wrapped, s->nonce, sizeof s->nonce, s->ct,
                        sizeof s->ct, out, &n);
    return rc == 0 && n == sizeof SECRET - 1 && memcmp(out, SECRET, n) == 0;
}

static vault_keys_t *keys_from(uint8_t fill)
{
    uint8_t master[VAULT_KEY_LEN];
    memset(master, fill, sizeof master);
    return vault_keys_new(master);
}

static void test_round_trip_and_flips(void)
{
    vault_keys_t *k = keys_from(1);
    LK_CHECK(k != NULL);
    vault_ad_t ad = ad_of("default", "cred_A", "prov_A");
    sealed_t s;
    LK_CHECK(vault_seal(k->kek, &ad, (const uint8_t *)SECRET, sizeof SECRET - 1, s.wrapped, s.nonce, s.ct) ==
             0);
    LK_CHECK(opens(k, &ad, &s));
    LK_CHECK(memmem(s.ct, sizeof s.ct, SECRET, 8) == NULL); /* no plaintext in the ciphertext */

    /* every single byte of nonce, ciphertext and wrapped DEK matters */
    int all_fail = 1;
    uint8_t *parts[] = {s.nonce, s.ct, s.wrapped};
    size_t sizes[] = {sizeof s.nonce, sizeof s.ct, sizeof s.wrapped};
    for (int p = 0; p < 3; p++)
        for (size_t i = 0; i < sizes[p]; i++) {
            parts[p][i] ^= 0x01;
            if (opens(k, &ad, &s)) all_fail = 0;
            parts[p][i] ^= 0x01;
        }
    LK_CHECK(all_fail);
    LK_CHECK(opens(k, &ad, &s)); /* restored */

    /* wrong sizes */
    uint8_t out[sizeof SECRET];
    size_t n;
    LK_CHECK(vault_open(k->kek, &ad, s.wrapped, sizeof s.wrapped - 1, s.nonce, sizeof s.nonce, s.ct,
                        sizeof s.ct, out, &n) != 0);
    LK_CHECK(vault_open(k->kek, &ad, s.wrapped, sizeof s.wrapped, s.nonce, sizeof s.nonce - 1, s.ct,
                        sizeof s.ct, out, &n) != 0);
    LK_CHECK(vault_open(k->kek, &ad, s.wrapped, sizeof s.wrapped, s.nonce, sizeof s.nonce, s.ct,
                        sizeof s.ct - 1, out, &n) != 0);
    LK_CHECK(vault_open(k->kek, &ad, s.wrapped, sizeof s.wrapped, s.nonce, sizeof s.nonce, s.ct,
                        VAULT_TAG_LEN, out, &n) != 0);
    vault_keys_free(&k);
    LK_CHECK(k == NULL);
    vault_keys_free(&k); /* NULL-safe */
}

static void test_ad_binding(void)
{
    vault_keys_t *k = keys_from(2);
    vault_ad_t ad = ad_of("default", "cred_A", "prov_A");
    sealed_t s;
    LK_CHECK(vault_seal(k->kek, &ad, (const uint8_t *)SECRET, sizeof SECRET - 1, s.wrapped, s.nonce, s.ct) ==
             0);
    vault_ad_t other;
    other = ad_of("default", "cred_B", "prov_A");
    LK_CHECK(!opens(k, &other, &s)); /* moved to another credential */
    other = ad_of("tenant2", "cred_A", "prov_A");
    LK_CHECK(!opens(k, &other, &s)); /* another tenant */
    other = ad_of("default", "cred_A", "prov_B");
    LK_CHECK(!opens(k, &other, &s)); /* another provider */
    other = ad;
    other.kek_version = 2;
    LK_CHECK(!opens(k, &other, &s));
    other = ad;
    other.kek_id = LK_STR_LIT("kms");
    LK_CHECK(!opens(k, &other, &s));
    other = ad;
    other.format_version = 2;
    LK_CHECK(!opens(k, &other, &s));
    /* length-prefixed fields: shifting a byte between fields changes the AD */
    vault_ad_t a1 = ad_of("ab", "c", "prov_A"), a2 = ad_of("a", "bc", "prov_A");
    sealed_t s1;
    LK_CHECK(vault_seal(k->kek, &a1, (const uint8_t *)SECRET, sizeof SECRET - 1, s1.wrapped, s1.nonce,
                        s1.ct) == 0);
    LK_CHECK(opens(k, &a1, &s1));
    LK_CHECK(!opens(k, &a2, &s1));

    /* swapping parts between two rows fails */
    vault_ad_t adb = ad_of("default", "cred_B", "prov_A");
    sealed_t sb;
    LK_CHECK(vault_seal(k->kek, &adb, (const uint8_t *)SECRET, sizeof SECRET - 1, sb.wrapped, sb.nonce,
                        sb.ct) == 0);
    sealed_t mix = s;
    memcpy(mix.wrapped, sb.wrapped, sizeof mix.wrapped); /* B's DEK in A's row */
    LK_CHECK(!opens(k, &ad, &mix));
    LK_CHECK(!opens(k, &adb, &mix));
    mix = sb;
    memcpy(mix.ct, s.ct, sizeof mix.ct); /* A's ciphertext in B's row */
    memcpy(mix.nonce, s.nonce, sizeof mix.nonce);
    LK_CHECK(!opens(k, &adb, &mix));

    /* another master key cannot open it */
    vault_keys_t *k2 = keys_from(3);
    LK_CHECK(!opens(k2, &ad, &s));
    vault_keys_free(&k2);
    vault_keys_free(&k);
}

static void test_limits(void)
{
    vault_keys_t *k = keys_from(4);
    vault_ad_t ad = ad_of("default", "cred_A", "prov_A");
    static uint8_t big[VAULT_MAX_SECRET + 1], ct[VAULT_MAX_SECRET + 1 + VAULT_TAG_LEN];
    uint8_t w[VAULT_WRAPPED_DEK_LEN], nonce[VAULT_NONCE_LEN];
    LK_CHECK(vault_seal(k->kek, &ad, big, 0, w, nonce, ct) != 0);                    /* empty */
    LK_CHECK(vault_seal(k->kek, &ad, big, VAULT_MAX_SECRET + 1, w, nonce, ct) != 0); /* too big */
    LK_CHECK(vault_seal(k->kek, &ad, big, VAULT_MAX_SECRET, w, nonce, ct) == 0);     /* largest */
    char longf[VAULT_MAX_AD_FIELD + 2];
    memset(longf, 'x', sizeof longf - 1);
    longf[sizeof longf - 1] = '\0';
    vault_ad_t bad = ad_of(longf, "cred_A", "prov_A");
    LK_CHECK(vault_seal(k->kek, &bad, big, 10, w, nonce, ct) != 0);
    /* two seals of the same secret differ (fresh DEK and nonces) */
    uint8_t w2[VAULT_WRAPPED_DEK_LEN], n2[VAULT_NONCE_LEN], ct2[10 + VAULT_TAG_LEN], ct1[10 + VAULT_TAG_LEN];
    LK_CHECK(vault_seal(k->kek, &ad, big, 10, w, nonce, ct1) == 0);
    LK_CHECK(vault_seal(k->kek, &ad, big, 10, w2, n2, ct2) == 0);
    LK_CHECK(memcmp(w, w2, sizeof w) != 0 && memcmp(nonce, n2, sizeof n2) != 0 &&
             memcmp(ct1, ct2, sizeof ct1) != 0);
    vault_keys_free(&k);
}

static void test_hash_and_check(void)
{
    vault_keys_t *k1 = keys_from(5), *k1b = keys_from(5), *k2 = keys_from(6);
    uint8_t h1[32], h1b[32], h2[32], h3[32], plain[32];
    const char *key = "lk_live_0123456789abcdefABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq";
    vault_hash_key(k1->pepper, key, strlen(key), h1);
    vault_hash_key(k1b->pepper, key, strlen(key), h1b);
    vault_hash_key(k2->pepper, key, strlen(key), h2);
    vault_hash_key(k1->pepper, key, strlen(key) - 1, h3);
    crypto_generichash(plain, sizeof plain, (const uint8_t *)key, strlen(key), NULL, 0);
    LK_CHECK(memcmp(h1, h1b, 32) == 0); /* deterministic */
    LK_CHECK(memcmp(h1, h2, 32) != 0);  /* keyed: another pepper, another hash */
    LK_CHECK(memcmp(h1, h3, 32) != 0);
    LK_CHECK(memcmp(h1, plain, 32) != 0); /* not an unkeyed hash */
    LK_CHECK(memcmp(k1->pepper, k1->kek, 32) != 0 && memcmp(k1->kek, k1->check, 32) != 0);

    char c1[VAULT_CHECK_HEX_LEN + 1], c1b[VAULT_CHECK_HEX_LEN + 1], c2[VAULT_CHECK_HEX_LEN + 1];
    vault_key_check(k1, c1);
    vault_key_check(k1b, c1b);
    vault_key_check(k2, c2);
    LK_CHECK(strlen(c1) == VAULT_CHECK_HEX_LEN);
    LK_CHECK_STR(c1, c1b);
    LK_CHECK(strcmp(c1, c2) != 0);
    vault_keys_free(&k1);
    vault_keys_free(&k1b);
    vault_keys_free(&k2);
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    LK_RUN(test_round_trip_and_flips);
    LK_RUN(test_ad_binding);
    LK_RUN(test_limits);
    LK_RUN(test_hash_and_check);
    return LK_TEST_DONE();
}
