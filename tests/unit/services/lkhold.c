/*  lkhold - a test tool that speaks the approval protocol as the edge will:
 *
 *      lkhold open ENDPOINT KEY_ID DIGEST_HEX USER [TMO_MS] [EXCERPT]
 *          HOLD (tenant "default", policy pol_e2e v1) -> "<hold id> <outcome> <exp ms>"
 *      lkhold wait ENDPOINT HOLD_ID
 *          HOLD_WAIT -> "<outcome> <by>"
 *
 *  Outcomes print as pending / approved / rejected / timed_out. Exit 0 on an
 *  answer, 1 on ERROR or no answer within 5 s. For the e2e tests until the
 *  edge's chat flow speaks HOLD_WAIT itself.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "lk_proto.h"
#include "lk_util.h"

static const char *word(lk_hold_outcome_t o)
{
    switch ((int)o) {
    case LK_HOLD_NO_HOLD:
        return "no_hold";
    case LK_HOLD_APPROVED:
        return "approved";
    case LK_HOLD_REJECTED:
        return "rejected";
    case LK_HOLD_TIMED_OUT:
        return "timed_out";
    case 5:
        return "pending";
    }
    return "?";
}

int main(int argc, char **argv)
{
    if (argc < 4 || sodium_init() < 0) {
        fputs("usage: lkhold open EP KEY DIGEST_HEX USER [TMO_MS] [EXCERPT] | lkhold wait EP HOLD_ID\n",
              stderr);
        return 2;
    }
    int open = strcmp(argv[1], "open") == 0;
    lk_msg_t m;
    memset(&m, 0, sizeof m);
    char rid[LK_RID_LEN + 1];
    lk_rid_new(rid);
    m.env.version = LK_PROTO_VERSION;
    m.env.rid = lk_str(rid);
    m.env.call_id = 1;
    m.env.deadline_ms = lk_now_ms() + 5000;
    if (open) {
        if (argc < 6) return 2;
        m.env.type = LK_MSG_HOLD;
        m.u.hold.tenant = LK_STR_LIT("default");
        m.u.hold.key_id = lk_str(argv[3]);
        if (sodium_hex2bin(m.u.hold.digest, 32, argv[4], strlen(argv[4]), NULL, NULL, NULL) != 0) return 2;
        m.u.hold.user = lk_str(argv[5]);
        m.u.hold.timeout_ms = argc > 6 ? atoll(argv[6]) : 0;
        m.u.hold.excerpt = lk_str(argc > 7 ? argv[7] : "");
        m.u.hold.policy_id = LK_STR_LIT("pol_e2e");
        m.u.hold.policy_version = 1;
        m.u.hold.rule_id = LK_STR_LIT("needs_human");
        m.u.hold.reason = LK_STR_LIT("tool use needs approval");
        m.u.hold.agent = LK_STR_LIT("agent-e2e");
        m.u.hold.model = LK_STR_LIT("mock-gpt");
    } else {
        m.env.type = LK_MSG_HOLD_WAIT;
        m.u.hold_wait.tenant = LK_STR_LIT("default");
        m.u.hold_wait.hold_id = lk_str(argv[3]);
    }
    lk_buf_t b;
    lk_buf_init(&b, 0);
    void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0, rc = 1;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    if (lk_proto_encode(&m, &b) == 0 && zmq_connect(s, argv[2]) == 0 &&
        zmq_send(s, b.data, b.len, 0) == (int)b.len) {
        zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
        zmq_msg_t f;
        zmq_msg_init(&f);
        lk_msg_t r;
        if (zmq_poll(&it, 1, 5000) == 1 && zmq_msg_recv(&f, s, 0) >= 0 &&
            lk_proto_decode(zmq_msg_data(&f), zmq_msg_size(&f), &r) == 0) {
            if (r.env.type == LK_MSG_HOLD_REP && open) {
                printf("%.*s %s %lld\n", (int)r.u.hold_rep.hold_id.len, r.u.hold_rep.hold_id.ptr,
                       word(r.u.hold_rep.outcome), (long long)r.u.hold_rep.expires_ms);
                rc = 0;
            } else if (r.env.type == LK_MSG_HOLD_WAIT_REP) {
                printf("%s %.*s\n", word(r.u.hold_rep.outcome), (int)r.u.hold_rep.approver.len,
                       r.u.hold_rep.approver.ptr);
                rc = 0;
            } else if (r.env.type == LK_MSG_ERROR) {
                printf("error %s\n", lk_status_name(r.u.error.status));
            }
        }
        zmq_msg_close(&f);
    }
    lk_buf_free(&b);
    zmq_close(s);
    zmq_ctx_term(ctx);
    return rc;
}
