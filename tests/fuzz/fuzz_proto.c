/*  fuzz_proto - lk_proto_decode on arbitrary bytes; whatever decodes must re-encode
 *  and decode again to the same message (compared through its canonical bytes). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lk_proto.h"

static int same_str(lk_str_t a, lk_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lk_msg_t m1, m2;
    if (lk_proto_decode(data, size, &m1) != 0) return 0;
    lk_buf_t b1, b2;
    lk_buf_init(&b1, 0);
    lk_buf_init(&b2, 0);
    if (lk_proto_encode(&m1, &b1) != 0) abort(); /* everything that decodes must encode */
    if (b1.len > size) abort(); /* the encoding is canonical and minimal: never longer than what was read */
    if (lk_proto_decode(b1.data, b1.len, &m2) != 0) abort();
    if (m1.env.type != m2.env.type || m1.env.call_id != m2.env.call_id ||
        m1.env.deadline_ms != m2.env.deadline_ms || !same_str(m1.env.rid, m2.env.rid))
        abort();
    if (lk_proto_encode(&m2, &b2) != 0 || b1.len != b2.len || memcmp(b1.data, b2.data, b1.len) != 0)
        abort(); /* the body survived the round trip: same canonical bytes */
    (void)lk_proto_type_name(m1.env.type);
    lk_buf_free(&b1);
    lk_buf_free(&b2);
    return 0;
}
