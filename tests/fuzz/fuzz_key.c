/*  fuzz_key - lk_key_parse on arbitrary bytes: never reads past the end; what it
 *  accepts has the exact shape of a key. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lk_key.h"

static int is_b62(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lk_key_info_t info;
    memset(&info, 0, sizeof info);
    lk_key_err_t err = lk_key_parse((const char *)data, size, &info);
    const char *why = lk_key_strerror(err);
    if (!why || !why[0]) abort();
    if (err != LK_KEY_OK) return 0;
    size_t plen = info.kind == LK_KEY_ADMIN ? 7 : 8;
    if (info.kind < LK_KEY_LIVE || info.kind > LK_KEY_ADMIN) abort();
    if (size != plen + LK_KEY_ID_LEN + LK_KEY_SECRET_LEN + LK_KEY_CRC_LEN) abort();
    if (strlen(info.id) != LK_KEY_ID_LEN || memcmp(info.id, data + plen, LK_KEY_ID_LEN) != 0) abort();
    for (size_t i = plen; i < size; i++)
        if (!is_b62((char)data[i])) abort();
    return 0;
}
