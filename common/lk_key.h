/*  lk_key - the Lumkey key format: generate and check, no storage, no lookup.
 *
 *      lk_live_<id:16><secret:43><crc:6>     agent key (live)
 *      lk_test_<id:16><secret:43><crc:6>     agent key (test)
 *      lk_adm_<id:16><secret:43><crc:6>      admin token
 *
 *  All parts are base62 [0-9A-Za-z]. The secret is 43 uniformly random base62
 *  characters (>= 256 bits). The checksum is CRC32 of everything before it,
 *  base62, zero-padded to 6. A malformed key is rejected here, before anything
 *  is looked up. The id is public (it names the key in lists and audit).
 */
#ifndef LK_KEY_H
#define LK_KEY_H

#include <stddef.h>

#define LK_KEY_ID_LEN     16
#define LK_KEY_SECRET_LEN 43
#define LK_KEY_CRC_LEN    6
#define LK_KEY_MAX_LEN    80 /* longest key + NUL, with room */

typedef enum { LK_KEY_LIVE = 1, LK_KEY_TEST = 2, LK_KEY_ADMIN = 3 } lk_key_kind_t;

typedef enum {
    LK_KEY_OK = 0,
    LK_KEY_ERR_EMPTY,
    LK_KEY_ERR_PREFIX,
    LK_KEY_ERR_LENGTH,
    LK_KEY_ERR_CHARSET,
    LK_KEY_ERR_CHECKSUM,
} lk_key_err_t;

typedef struct {
    lk_key_kind_t kind;
    char id[LK_KEY_ID_LEN + 1]; /* public id part */
} lk_key_info_t;

/* Checks the format of s[0..len). Fills info on success. Never reads past len. */
lk_key_err_t lk_key_parse(const char *s, size_t len, lk_key_info_t *info);

/* Human-readable reason for err (static string, no key material). */
const char *lk_key_strerror(lk_key_err_t err);

/* Writes a fresh NUL-terminated key of the given kind into out (cap >= LK_KEY_MAX_LEN)
 * and its public id into id (cap >= LK_KEY_ID_LEN + 1). Put out in secret memory. */
void lk_key_generate(lk_key_kind_t kind, char *out, char *id);

/* The "key id" shown to admins: "key_" + id. out cap >= 24. */
void lk_key_public_id(const lk_key_info_t *info, char *out, size_t cap);

#endif
