/*  lk_proto - STUB, being replaced by the real codec. */
#include "lk_proto.h"
int lk_proto_encode(const lk_msg_t *msg, lk_buf_t *out) { (void)msg; (void)out; return -1; }
int lk_proto_decode(const uint8_t *buf, size_t len, lk_msg_t *msg) { (void)buf; (void)len; (void)msg; return -1; }
void lk_proto_reply_env(lk_msg_t *reply, const lk_msg_t *req, lk_msg_type_t type) { reply->env = req->env; reply->env.type = type; }
const char *lk_proto_type_name(lk_msg_type_t type) { (void)type; return "UNKNOWN"; }
const char *lk_status_name(lk_status_t st) { (void)st; return "UNKNOWN"; }
