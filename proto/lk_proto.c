/*  lk_proto - the msgpack codec for every edge <-> worker message (spec: proto/README.md).
 *
 *  Wire layout: one msgpack array [version, type, rid, call_id, deadline_ms, body]
 *  where body is a map of short string keys. Each message type is described by
 *  one table of fields below (wire key, value kind, required, where it lives in
 *  lk_msg_t); encode and decode are two loops over that table. Decoding checks
 *  the framing with a cheap walk first (msgpack-c would otherwise allocate for
 *  whatever element count a peer announces), then lets msgpack-c build the
 *  object tree, whose strings point into the input buffer.
 */
#include "lk_proto.h"

#include <msgpack.h>
#include <sodium.h>
#include <stddef.h>
#include <string.h>

/* ------------------------------------------------------------ field tables -- */

typedef enum {
    F_STR,   /* lk_str_t, msgpack str */
    F_I64,   /* int64_t, msgpack int */
    F_BOOL,  /* int 0/1, msgpack bool */
    F_BIN32, /* uint8_t[32], msgpack bin of exactly 32 bytes */
    F_ENUM,  /* an enum, msgpack uint within [lo, hi] */
} fkind_t;

typedef struct {
    const char *key;
    uint8_t klen;
    uint8_t kind;
    uint8_t req; /* must be present (strings: and non-empty) */
    uint8_t lo, hi;
    uint16_t off; /* offset of the field in lk_msg_t */
} field_t;

typedef struct {
    const char *name;
    const field_t *fields;
    uint8_t nfields;
    uint8_t secret;
} msgdef_t;

/* clang-format off */
#define OFF(member) ((uint16_t)offsetof(lk_msg_t, u.member))
#define STR(k, req, m)          {k, sizeof(k) - 1, F_STR, req, 0, 0, OFF(m)}
#define I64(k, req, m)          {k, sizeof(k) - 1, F_I64, req, 0, 0, OFF(m)}
#define BOOL(k, m)              {k, sizeof(k) - 1, F_BOOL, 0, 0, 0, OFF(m)}
#define BIN32(k, m)             {k, sizeof(k) - 1, F_BIN32, 1, 0, 0, OFF(m)}
#define ENUM(k, req, lo, hi, m) {k, sizeof(k) - 1, F_ENUM, req, lo, hi, OFF(m)}
#define REQ 1
#define OPT 0

_Static_assert(sizeof(lk_msg_t) < 65536, "field offsets fit in uint16_t");
_Static_assert(sizeof(lk_status_t) == sizeof(int) && sizeof(lk_decision_t) == sizeof(int) &&
                   sizeof(lk_hold_outcome_t) == sizeof(int),
               "enums are stored as int");
_Static_assert(LK_PROTO_HASH_LEN == 32 && LK_PROTO_DIGEST_LEN == 32, "F_BIN32 fields");

static const field_t F_PING[] = {STR("svc", OPT, ping.service)};

static const field_t F_ERROR[] = {
    ENUM("st", REQ, LK_ST_OK, LK_ST_RATE_LIMITED, error.status),
    STR("msg", OPT, error.message),
};

static const field_t F_KEY_HASH[] = {STR("key", REQ, key_hash.key)};
static const field_t F_KEY_HASH_REP[] = {BIN32("hash", key_hash_rep.hash)};

static const field_t F_CRED_GET[] = {
    STR("tenant", REQ, cred_get.tenant),
    STR("cred", REQ, cred_get.cred_id),
};
static const field_t F_CRED_GET_REP[] = {STR("secret", REQ, cred_get_rep.secret)};

static const field_t F_ADMIN_AUTH[] = {STR("token", REQ, admin_auth.token)};
static const field_t F_ADMIN_AUTH_REP[] = {
    STR("tenant", OPT, admin_auth_rep.tenant),
    STR("role", REQ, admin_auth_rep.role),
    STR("tok", REQ, admin_auth_rep.token_id),
    STR("via", OPT, admin_auth_rep.via),
    STR("ses", OPT, admin_auth_rep.session_id),
    STR("uname", OPT, admin_auth_rep.user_name),
    STR("dname", OPT, admin_auth_rep.display_name),
    STR("email", OPT, admin_auth_rep.email),
    STR("csrf", OPT, admin_auth_rep.csrf),
    I64("exp", OPT, admin_auth_rep.expires_ms),
};

static const field_t F_ADMIN_REQ[] = {
    STR("op", REQ, admin_req.op),
    STR("tenant", OPT, admin_req.tenant),
    STR("actor", OPT, admin_req.actor),
    STR("role", OPT, admin_req.role),
    STR("obj", OPT, admin_req.object_id),
    STR("json", OPT, admin_req.json),
};
static const field_t F_ADMIN_REP[] = {
    ENUM("st", REQ, LK_ST_OK, LK_ST_RATE_LIMITED, admin_rep.status),
    STR("json", OPT, admin_rep.json),
};

static const field_t F_DECIDE[] = {
    BIN32("hash", decide.key_hash),
    STR("kid", OPT, decide.key_id),
    STR("ep", OPT, decide.endpoint),
    STR("model", OPT, decide.model),
    BOOL("stream", decide.stream),
    STR("ip", OPT, decide.source_ip),
    STR("body", OPT, decide.body),
    STR("hdrs", OPT, decide.headers),
};
static const field_t F_DECIDE_REP[] = {
    ENUM("st", REQ, LK_ST_OK, LK_ST_RATE_LIMITED, decide_rep.status),
    STR("code", OPT, decide_rep.error_code),
    STR("msg", OPT, decide_rep.message),
    ENUM("dec", OPT, LK_DECISION_ALLOW, LK_DECISION_REDACT, decide_rep.decision), /* required when st = OK */
    STR("tenant", OPT, decide_rep.tenant),
    STR("kid", OPT, decide_rep.key_id),
    STR("user", OPT, decide_rep.user),
    STR("prov", OPT, decide_rep.provider_id),
    STR("pkind", OPT, decide_rep.provider_kind),
    STR("url", OPT, decide_rep.base_url),
    STR("cred", OPT, decide_rep.cred_id),
    STR("umodel", OPT, decide_rep.upstream_model),
    STR("prov2", OPT, decide_rep.provider_id2),
    STR("pkind2", OPT, decide_rep.provider_kind2),
    STR("url2", OPT, decide_rep.base_url2),
    STR("cred2", OPT, decide_rep.cred_id2),
    STR("umodel2", OPT, decide_rep.upstream_model2),
    STR("models", OPT, decide_rep.models),
    STR("pol", OPT, decide_rep.policy_id),
    I64("pver", OPT, decide_rep.policy_version),
    STR("rule", OPT, decide_rep.rule_id),
    STR("body", OPT, decide_rep.body),
    ENUM("would", OPT, LK_DECISION_ALLOW, LK_DECISION_REDACT, decide_rep.would),
    BOOL("ans", decide_rep.answer_rules),
    STR("agent", OPT, decide_rep.agent),
    STR("team", OPT, decide_rep.team),
    BOOL("rsv", decide_rep.reserved),
    I64("cost", OPT, decide_rep.est_microusd),
    BOOL("priced", decide_rep.priced),
    I64("pin", OPT, decide_rep.price_in),
    I64("pout", OPT, decide_rep.price_out),
    STR("anom", OPT, decide_rep.anomaly),
    STR("hdp", OPT, decide_rep.hdp),
};

static const field_t F_POLICY_GET[] = {
    STR("tenant", REQ, policy_get.tenant),
    STR("pol", REQ, policy_get.policy_id),
    I64("pver", REQ, policy_get.policy_version),
};
static const field_t F_POLICY_GET_REP[] = {STR("doc", REQ, policy_get_rep.document)};

static const field_t F_SETTLE[] = {
    STR("tenant", REQ, settle.tenant),
    I64("ptok", OPT, settle.prompt_tokens),
    I64("ctok", OPT, settle.completion_tokens),
};
static const field_t F_SETTLE_REP[] = {I64("cost", OPT, settle_rep.microusd)};

static const field_t F_HOLD[] = {
    STR("tenant", REQ, hold.tenant),
    STR("kid", REQ, hold.key_id),
    BIN32("dig", hold.digest),
    STR("pol", OPT, hold.policy_id),
    I64("pver", OPT, hold.policy_version),
    STR("rule", OPT, hold.rule_id),
    STR("reason", OPT, hold.reason),
    I64("tmo", OPT, hold.timeout_ms),
    STR("kind", OPT, hold.kind),
    STR("user", OPT, hold.user),
    STR("agent", OPT, hold.agent),
    STR("model", OPT, hold.model),
    STR("tool", OPT, hold.tool),
    STR("excerpt", OPT, hold.excerpt),
};
static const field_t F_HOLD_REP[] = {
    ENUM("out", REQ, LK_HOLD_NO_HOLD, LK_HOLD_PENDING, hold_rep.outcome),
    STR("hold", OPT, hold_rep.hold_id),
    STR("by", OPT, hold_rep.approver),
    STR("reason", OPT, hold_rep.reason),
    I64("exp", OPT, hold_rep.expires_ms),
};
static const field_t F_HOLD_WAIT[] = {
    STR("tenant", REQ, hold_wait.tenant),
    STR("hold", REQ, hold_wait.hold_id),
};

static const field_t F_AUDIT[] = {
    STR("eid", REQ, audit.event_id),
    STR("kind", REQ, audit.kind),
    I64("time", OPT, audit.time_ms),
    STR("tenant", OPT, audit.tenant),
    STR("kid", OPT, audit.key_id),
    STR("user", OPT, audit.user),
    STR("ip", OPT, audit.source_ip),
    STR("ep", OPT, audit.endpoint),
    STR("prov", OPT, audit.provider_id),
    STR("model", OPT, audit.model),
    STR("umodel", OPT, audit.upstream_model),
    STR("dec", OPT, audit.decision),
    STR("pol", OPT, audit.policy_id),
    I64("pver", OPT, audit.policy_version),
    STR("rule", OPT, audit.rule_id),
    I64("http", OPT, audit.http_status),
    I64("ups", OPT, audit.upstream_status),
    I64("lat", OPT, audit.latency_us),
    I64("ptok", OPT, audit.prompt_tokens),
    I64("ctok", OPT, audit.completion_tokens),
    I64("ttok", OPT, audit.total_tokens),
    STR("code", OPT, audit.error_code),
    STR("trace", OPT, audit.trace_id),
    BOOL("stream", audit.stream),
    STR("agent", OPT, audit.agent),
    STR("appr", OPT, audit.approver),
    I64("cost", OPT, audit.cost_micros),
    STR("rsha", OPT, audit.request_sha),
    STR("asha", OPT, audit.answer_sha),
    STR("rbody", OPT, audit.request_body),
    STR("abody", OPT, audit.answer_body),
    STR("prov2", OPT, audit.provider_id2),
    STR("umodel2", OPT, audit.upstream_model2),
    STR("anom", OPT, audit.anomaly),
    STR("hdp", OPT, audit.hdp),
};
static const field_t F_AUDIT_REP[] = {I64("seq", REQ, audit_rep.seq), BOOL("fopen", audit_rep.fail_open)};

#define N(a) ((uint8_t)(sizeof(a) / sizeof((a)[0])))
_Static_assert(sizeof(F_AUDIT) / sizeof(F_AUDIT[0]) <= 64, "decode tracks seen fields in a uint64_t");
#define MAX_TYPE LK_MSG_AUDIT_REP

static const msgdef_t DEFS[MAX_TYPE + 1] = {
    [LK_MSG_PING] = {"PING", F_PING, N(F_PING), 0},
    [LK_MSG_PONG] = {"PONG", F_PING, N(F_PING), 0},
    [LK_MSG_ERROR] = {"ERROR", F_ERROR, N(F_ERROR), 0},
    [LK_MSG_KEY_HASH] = {"KEY_HASH", F_KEY_HASH, N(F_KEY_HASH), 1},
    [LK_MSG_KEY_HASH_REP] = {"KEY_HASH_REP", F_KEY_HASH_REP, N(F_KEY_HASH_REP), 0},
    [LK_MSG_CRED_GET] = {"CRED_GET", F_CRED_GET, N(F_CRED_GET), 0},
    [LK_MSG_CRED_GET_REP] = {"CRED_GET_REP", F_CRED_GET_REP, N(F_CRED_GET_REP), 1},
    [LK_MSG_ADMIN_AUTH] = {"ADMIN_AUTH", F_ADMIN_AUTH, N(F_ADMIN_AUTH), 1},
    [LK_MSG_ADMIN_AUTH_REP] = {"ADMIN_AUTH_REP", F_ADMIN_AUTH_REP, N(F_ADMIN_AUTH_REP), 0},
    [LK_MSG_ADMIN_REQ] = {"ADMIN_REQ", F_ADMIN_REQ, N(F_ADMIN_REQ), 1},
    [LK_MSG_ADMIN_REP] = {"ADMIN_REP", F_ADMIN_REP, N(F_ADMIN_REP), 1},
    [LK_MSG_DECIDE] = {"DECIDE", F_DECIDE, N(F_DECIDE), 0},
    [LK_MSG_DECIDE_REP] = {"DECIDE_REP", F_DECIDE_REP, N(F_DECIDE_REP), 0},
    [LK_MSG_POLICY_GET] = {"POLICY_GET", F_POLICY_GET, N(F_POLICY_GET), 0},
    [LK_MSG_POLICY_GET_REP] = {"POLICY_GET_REP", F_POLICY_GET_REP, N(F_POLICY_GET_REP), 0},
    [LK_MSG_SETTLE] = {"SETTLE", F_SETTLE, N(F_SETTLE), 0},
    [LK_MSG_SETTLE_REP] = {"SETTLE_REP", F_SETTLE_REP, N(F_SETTLE_REP), 0},
    [LK_MSG_HOLD] = {"HOLD", F_HOLD, N(F_HOLD), 0},
    [LK_MSG_HOLD_REP] = {"HOLD_REP", F_HOLD_REP, N(F_HOLD_REP), 0},
    [LK_MSG_HOLD_WAIT] = {"HOLD_WAIT", F_HOLD_WAIT, N(F_HOLD_WAIT), 0},
    [LK_MSG_HOLD_WAIT_REP] = {"HOLD_WAIT_REP", F_HOLD_REP, N(F_HOLD_REP), 0},
    [LK_MSG_AUDIT] = {"AUDIT", F_AUDIT, N(F_AUDIT), 0},
    [LK_MSG_AUDIT_REP] = {"AUDIT_REP", F_AUDIT_REP, N(F_AUDIT_REP), 0},
};
/* clang-format on */

static const msgdef_t *def_of(uint64_t type)
{
    if (type > MAX_TYPE || !DEFS[type].name) return NULL;
    return &DEFS[type];
}

/* Rules that span fields: a DECIDE_REP that says OK must carry a decision. */
static int check_message(const lk_msg_t *msg)
{
    if (msg->env.type == LK_MSG_DECIDE_REP && msg->u.decide_rep.status == LK_ST_OK &&
        msg->u.decide_rep.decision == 0)
        return -1;
    return 0;
}

static lk_str_t *str_at(lk_msg_t *msg, const field_t *f)
{
    return (lk_str_t *)((char *)msg + f->off);
}

static const lk_str_t *cstr_at(const lk_msg_t *msg, const field_t *f)
{
    return (const lk_str_t *)((const char *)msg + f->off);
}

static int64_t i64_get(const lk_msg_t *msg, const field_t *f)
{
    int64_t v;
    memcpy(&v, (const char *)msg + f->off, sizeof v);
    return v;
}

static int int_get(const lk_msg_t *msg, const field_t *f)
{
    int v;
    memcpy(&v, (const char *)msg + f->off, sizeof v);
    return v;
}

/* ---------------------------------------------------------------- encoding -- */

static int on_write(void *data, const char *buf, size_t len)
{
    lk_buf_t *b = data;
    if (len && b->cap - b->len >= len) { /* the usual case: room was reserved up front */
        memcpy(b->data + b->len, buf, len);
        b->len += len;
        return 0;
    }
    return lk_buf_append(b, buf, len);
}

/* Upper bound of the encoded size of f: key, header, payload. */
static size_t field_bound(const lk_msg_t *msg, const field_t *f)
{
    size_t n = 1 + f->klen;
    switch (f->kind) {
    case F_STR:
        return n + 5 + cstr_at(msg, f)->len;
    case F_BIN32:
        return n + 2 + 32;
    default:
        return n + 9;
    }
}

/* Whether f goes on the wire (optional fields at their zero value are left out). */
static int field_present(const lk_msg_t *msg, const field_t *f)
{
    if (f->req) return 1;
    switch (f->kind) {
    case F_STR:
        return cstr_at(msg, f)->len != 0;
    case F_I64:
        return i64_get(msg, f) != 0;
    case F_BOOL:
    case F_ENUM:
        return int_get(msg, f) != 0;
    default:
        return 1;
    }
}

static int pack_str(msgpack_packer *pk, lk_str_t s)
{
    if (s.len > UINT32_MAX || (s.len && !s.ptr)) return -1;
    if (msgpack_pack_str(pk, s.len) != 0) return -1;
    return s.len ? msgpack_pack_str_body(pk, s.ptr, s.len) : 0;
}

static int pack_field(msgpack_packer *pk, const lk_msg_t *msg, const field_t *f)
{
    if (msgpack_pack_str(pk, f->klen) != 0 || msgpack_pack_str_body(pk, f->key, f->klen) != 0) return -1;
    switch (f->kind) {
    case F_STR: {
        const lk_str_t *s = cstr_at(msg, f);
        if (f->req && s->len == 0) return -1;
        return pack_str(pk, *s);
    }
    case F_I64:
        return msgpack_pack_int64(pk, i64_get(msg, f));
    case F_BOOL:
        return int_get(msg, f) ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
    case F_BIN32:
        if (msgpack_pack_bin(pk, 32) != 0) return -1;
        return msgpack_pack_bin_body(pk, (const char *)msg + f->off, 32);
    case F_ENUM: {
        int v = int_get(msg, f);
        if (v < f->lo || v > f->hi) return -1;
        return msgpack_pack_uint32(pk, (uint32_t)v);
    }
    }
    return -1;
}

int lk_proto_encode(const lk_msg_t *msg, lk_buf_t *out)
{
    if (!msg || !out) return -1;
    const lk_envelope_t *env = &msg->env;
    const msgdef_t *def = def_of((uint64_t)env->type);
    if (!def || (env->version != 0 && env->version != LK_PROTO_VERSION) || env->rid.len > LK_PROTO_MAX_RID)
        return -1;
    if (check_message(msg) != 0) return -1;
    size_t start = out->len;
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, on_write);
    uint32_t present = 0;
    size_t bound = 1 + 5 + 5 + 5 + LK_PROTO_MAX_RID + 9 + 9 + 5; /* envelope */
    for (uint8_t i = 0; i < def->nfields; i++) {
        const field_t *f = &def->fields[i];
        if (field_present(msg, f)) {
            present++;
            size_t fb = field_bound(msg, f);
            bound = bound > SIZE_MAX - fb ? SIZE_MAX : bound + fb;
        }
    }
    /* one allocation (for a secure buffer: no copy-and-wipe while growing) */
    if (lk_buf_reserve(out, bound) != 0) return -1;

    if (msgpack_pack_array(&pk, 6) != 0 || msgpack_pack_uint32(&pk, LK_PROTO_VERSION) != 0 ||
        msgpack_pack_uint32(&pk, (uint32_t)env->type) != 0 || pack_str(&pk, env->rid) != 0 ||
        msgpack_pack_uint64(&pk, env->call_id) != 0 || msgpack_pack_int64(&pk, env->deadline_ms) != 0 ||
        msgpack_pack_map(&pk, present) != 0)
        goto fail;
    for (uint8_t i = 0; i < def->nfields; i++) {
        const field_t *f = &def->fields[i];
        if (field_present(msg, f) && pack_field(&pk, msg, f) != 0) goto fail;
    }
    return 0;
fail:
    /* leave out as it was; a half-written secret is wiped */
    if (out->data && out->len > start) {
        if (out->secure) sodium_memzero(out->data + start, out->len - start);
        out->len = start;
    }
    return -1;
}

/* ---------------------------------------------------------------- decoding -- */

static int read_be(const uint8_t *p, size_t len, size_t *pos, unsigned nbytes, uint64_t *v)
{
    if (len - *pos < nbytes) return -1;
    uint64_t x = 0;
    for (unsigned i = 0; i < nbytes; i++)
        x = (x << 8) | p[*pos + i];
    *pos += nbytes;
    *v = x;
    return 0;
}

/* Walks buf without building anything: 0 if it holds exactly one complete
 * msgpack object and no container announces more elements than there are
 * bytes left to hold them (each element takes at least one byte). */
static int prescan(const uint8_t *p, size_t len)
{
    size_t pos = 0;
    uint64_t pending = 1; /* objects still to read */
    while (pending) {
        if (pos >= len) return -1;
        uint8_t b = p[pos++];
        uint64_t children = 0, skip = 0, n = 0;
        pending--;
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            /* fixint, nil, bool */
        } else if (b <= 0x8f) {
            children = 2u * (b & 0x0fu);
        } else if (b <= 0x9f) {
            children = b & 0x0fu;
        } else if (b <= 0xbf) {
            skip = b & 0x1fu;
        } else {
            switch (b) {
            case 0xc4:
            case 0xd9: /* bin8, str8 */
                if (read_be(p, len, &pos, 1, &skip) != 0) return -1;
                break;
            case 0xc5:
            case 0xda:
                if (read_be(p, len, &pos, 2, &skip) != 0) return -1;
                break;
            case 0xc6:
            case 0xdb:
                if (read_be(p, len, &pos, 4, &skip) != 0) return -1;
                break;
            case 0xc7:
            case 0xc8:
            case 0xc9: /* ext8/16/32: length, then type byte */
                if (read_be(p, len, &pos, b == 0xc7 ? 1u : b == 0xc8 ? 2u : 4u, &n) != 0) return -1;
                skip = n + 1;
                break;
            case 0xcc:
            case 0xd0:
                skip = 1;
                break;
            case 0xcd:
            case 0xd1:
                skip = 2;
                break;
            case 0xca:
            case 0xce:
            case 0xd2:
                skip = 4;
                break;
            case 0xcb:
            case 0xcf:
            case 0xd3:
                skip = 8;
                break;
            case 0xd4:
                skip = 2;
                break; /* fixext 1..16: type byte + data */
            case 0xd5:
                skip = 3;
                break;
            case 0xd6:
                skip = 5;
                break;
            case 0xd7:
                skip = 9;
                break;
            case 0xd8:
                skip = 17;
                break;
            case 0xdc:
            case 0xde:
                if (read_be(p, len, &pos, 2, &n) != 0) return -1;
                children = b == 0xde ? 2 * n : n;
                break;
            case 0xdd:
            case 0xdf:
                if (read_be(p, len, &pos, 4, &n) != 0) return -1;
                children = b == 0xdf ? 2 * n : n;
                break;
            default: /* 0xc1: never used */
                return -1;
            }
        }
        if (skip > len - pos) return -1;
        pos += (size_t)skip;
        pending += children;
        if (pending > len - pos) return -1;
    }
    return pos == len ? 0 : -1;
}

static int get_i64(const msgpack_object *o, int64_t *v)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > (uint64_t)INT64_MAX) return -1;
        *v = (int64_t)o->via.u64;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *v = o->via.i64;
        return 0;
    }
    return -1;
}

static int decode_field(const msgpack_object *o, lk_msg_t *msg, const field_t *f)
{
    char *dst = (char *)msg + f->off;
    switch (f->kind) {
    case F_STR:
        if (o->type != MSGPACK_OBJECT_STR || (f->req && o->via.str.size == 0)) return -1;
        *str_at(msg, f) = (lk_str_t){o->via.str.ptr, o->via.str.size};
        return 0;
    case F_I64: {
        int64_t v;
        if (get_i64(o, &v) != 0) return -1;
        memcpy(dst, &v, sizeof v);
        return 0;
    }
    case F_BOOL: {
        if (o->type != MSGPACK_OBJECT_BOOLEAN) return -1;
        int v = o->via.boolean ? 1 : 0;
        memcpy(dst, &v, sizeof v);
        return 0;
    }
    case F_BIN32:
        if (o->type != MSGPACK_OBJECT_BIN || o->via.bin.size != 32) return -1;
        memcpy(dst, o->via.bin.ptr, 32);
        return 0;
    case F_ENUM: {
        if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 < f->lo || o->via.u64 > f->hi) return -1;
        int v = (int)o->via.u64;
        memcpy(dst, &v, sizeof v);
        return 0;
    }
    }
    return -1;
}

static const field_t *find_field(const msgdef_t *def, const char *key, size_t klen)
{
    for (uint8_t i = 0; i < def->nfields; i++) {
        const field_t *f = &def->fields[i];
        if (f->klen == klen && f->key[0] == key[0] && memcmp(f->key, key, klen) == 0) return f;
    }
    return NULL;
}

static int decode_body(const msgpack_object_map *body, const msgdef_t *def, lk_msg_t *msg)
{
    uint64_t seen = 0;
    for (uint32_t i = 0; i < body->size; i++) {
        const msgpack_object *k = &body->ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR) return -1;
        if (k->via.str.size == 0) continue; /* unknown (forward compatible) */
        const field_t *f = find_field(def, k->via.str.ptr, k->via.str.size);
        if (!f) continue; /* unknown (forward compatible) */
        uint64_t bit = 1ull << (f - def->fields);
        if (seen & bit) return -1; /* a duplicate key would let two readers disagree */
        seen |= bit;
        if (decode_field(&body->ptr[i].val, msg, f) != 0) return -1;
    }
    for (uint8_t i = 0; i < def->nfields; i++)
        if (def->fields[i].req && !(seen & (1ull << i))) return -1;
    return check_message(msg);
}

int lk_proto_decode(const uint8_t *buf, size_t len, lk_msg_t *msg)
{
    if (!msg) return -1;
    memset(msg, 0, sizeof *msg);
    if (!buf || len == 0 || prescan(buf, len) != 0) return -1;

    int rc = -1;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    if (msgpack_unpack_next(&up, (const char *)buf, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len)
        goto cleanup;
    const msgpack_object *top = &up.data;
    if (top->type != MSGPACK_OBJECT_ARRAY || top->via.array.size != 6) goto cleanup;
    const msgpack_object *a = top->via.array.ptr;
    if (a[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || a[0].via.u64 != LK_PROTO_VERSION) goto cleanup;
    if (a[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER) goto cleanup;
    const msgdef_t *def = def_of(a[1].via.u64);
    if (!def) goto cleanup;
    if (a[2].type != MSGPACK_OBJECT_STR || a[2].via.str.size > LK_PROTO_MAX_RID) goto cleanup;
    if (a[3].type != MSGPACK_OBJECT_POSITIVE_INTEGER) goto cleanup;
    int64_t deadline;
    if (get_i64(&a[4], &deadline) != 0) goto cleanup;
    if (a[5].type != MSGPACK_OBJECT_MAP) goto cleanup;

    msg->env.version = LK_PROTO_VERSION;
    msg->env.type = (lk_msg_type_t)a[1].via.u64;
    msg->env.rid = (lk_str_t){a[2].via.str.ptr, a[2].via.str.size};
    msg->env.call_id = a[3].via.u64;
    msg->env.deadline_ms = deadline;
    if (decode_body(&a[5].via.map, def, msg) != 0) goto cleanup;
    rc = 0;
cleanup:
    msgpack_unpacked_destroy(&up);
    if (rc != 0) memset(msg, 0, sizeof *msg);
    return rc;
}

/* ------------------------------------------------------------------ helpers -- */

void lk_proto_reply_env(lk_msg_t *reply, const lk_msg_t *req, lk_msg_type_t type)
{
    reply->env.version = LK_PROTO_VERSION;
    reply->env.type = type;
    reply->env.rid = req->env.rid;
    reply->env.call_id = req->env.call_id;
    reply->env.deadline_ms = req->env.deadline_ms;
}

int lk_proto_is_secret(lk_msg_type_t type)
{
    const msgdef_t *def = def_of((uint64_t)type);
    return def ? def->secret : 0;
}

const char *lk_proto_type_name(lk_msg_type_t type)
{
    const msgdef_t *def = def_of((uint64_t)type);
    return def ? def->name : "UNKNOWN";
}

const char *lk_status_name(lk_status_t st)
{
    static const char *const NAMES[] = {"OK",        "BAD_REQUEST", "UNAUTHORIZED", "FORBIDDEN",
                                        "NOT_FOUND", "CONFLICT",    "UNAVAILABLE",  "INTERNAL",
                                        "INTEGRITY", "RATE_LIMITED"};
    if ((unsigned)st >= sizeof NAMES / sizeof NAMES[0]) return "UNKNOWN";
    return NAMES[st];
}
