/*  edge_policy - compiled answer-side policies, cached by (tenant, id, version). */
#include "edge_policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge.h"
#include "lk_log.h"
#include "lk_util.h"

struct edge_policy_ref {
    char tenant[128];
    char id[80];
    int64_t version;
    lk_policy_t *pol; /* NULL while loading */
    int refs;         /* requests holding it (a loading entry: requests waiting, via pending) */
    uint64_t used;
    edge_policy_ref_t *next;
};

struct edge_policy_wait {
    edge_policy_ref_t *entry;
    edge_policy_cb done; /* NULL once abandoned */
    void *ud;
};
typedef struct edge_policy_wait pending_t;

static edge_policy_ref_t *g_entries;
static size_t g_count;
static uint64_t g_tick;

const lk_policy_t *edge_policy_get(const edge_policy_ref_t *ref)
{
    return ref ? ref->pol : NULL;
}

static edge_policy_ref_t *find(const char *tenant, const char *id, int64_t version)
{
    for (edge_policy_ref_t *e = g_entries; e; e = e->next)
        if (e->pol && e->version == version && strcmp(e->id, id) == 0 && strcmp(e->tenant, tenant) == 0)
            return e;
    return NULL;
}

/* Drops unreferenced entries, least recently used first, down to the cap. */
static void evict(void)
{
    while (g_count > EDGE_POLICY_CACHE_N) {
        edge_policy_ref_t **victim = NULL;
        for (edge_policy_ref_t **p = &g_entries; *p; p = &(*p)->next)
            if ((*p)->refs == 0 && (!victim || (*p)->used < (*victim)->used)) victim = p;
        if (!victim) return; /* all in use */
        edge_policy_ref_t *e = *victim;
        *victim = e->next;
        lk_policy_free(&e->pol);
        free(e);
        g_count--;
    }
}

static void on_policy(void *data, const lk_msg_t *reply)
{
    pending_t *pd = data;
    edge_policy_ref_t *e = pd->entry, *ref = NULL;
    if (!reply || reply->env.type != LK_MSG_POLICY_GET_REP) {
        lk_log(LK_LOG_ERROR, NULL, "policy %s version %lld could not be fetched for the answer side", e->id,
               (long long)e->version);
    } else {
        edge_policy_ref_t *have =
            find(e->tenant, e->id, e->version); /* loaded meanwhile by another request */
        if (have) {
            ref = have;
        } else {
            lk_policy_error_t err;
            lk_str_t doc = reply->u.policy_get_rep.document;
            e->pol = lk_policy_compile(doc.ptr, doc.len, &err);
            if (!e->pol)
                lk_log(LK_LOG_ERROR, NULL, "policy %s version %lld does not compile at the edge: %s at %s",
                       e->id, (long long)e->version, err.msg, err.path);
            else
                ref = e;
        }
    }
    if (ref != e) { /* not kept: the loading entry goes */
        free(e);
    } else {
        e->next = g_entries;
        g_entries = e;
        g_count++;
    }
    edge_policy_cb done = pd->done;
    void *ud = pd->ud;
    free(pd);
    if (ref) {
        if (done) ref->refs++;
        ref->used = ++g_tick;
    }
    evict();
    if (done) done(ud, ref);
}

int edge_policy_acquire(const char *rid, const char *tenant, const char *id, int64_t version,
                        edge_policy_cb done, void *ud, edge_policy_ref_t **ref, edge_policy_wait_t **wait)
{
    *ref = NULL;
    *wait = NULL;
    edge_policy_ref_t *e = find(tenant, id, version);
    if (e) {
        e->refs++;
        e->used = ++g_tick;
        *ref = e;
        return 1;
    }
    e = calloc(1, sizeof *e);
    pending_t *pd = calloc(1, sizeof *pd);
    if (!e || !pd || strlen(tenant) >= sizeof e->tenant || strlen(id) >= sizeof e->id) {
        free(e);
        free(pd);
        return -1;
    }
    snprintf(e->tenant, sizeof e->tenant, "%s", tenant);
    snprintf(e->id, sizeof e->id, "%s", id);
    e->version = version;
    pd->entry = e;
    pd->done = done;
    pd->ud = ud;
    lk_msg_t m;
    memset(&m, 0, sizeof m);
    m.env.type = LK_MSG_POLICY_GET;
    m.env.rid = lk_str(rid);
    m.env.deadline_ms = lk_now_ms() + (int64_t)g_edge->cfg.hop_timeout_ms;
    m.u.policy_get.tenant = lk_str(e->tenant);
    m.u.policy_get.policy_id = lk_str(e->id);
    m.u.policy_get.policy_version = version;
    if (!edge_rpc_call(g_edge->rpc, EDGE_SVC_POLICY, &m, on_policy, pd)) {
        free(e);
        free(pd);
        return -1;
    }
    *wait = pd;
    return 0;
}

void edge_policy_abandon(edge_policy_wait_t *wait)
{
    if (wait) wait->done = NULL;
}

void edge_policy_release(edge_policy_ref_t **ref)
{
    if (!ref || !*ref) return;
    if ((*ref)->refs > 0) (*ref)->refs--;
    *ref = NULL;
    evict();
}

void edge_policy_shutdown(void)
{
    while (g_entries) {
        edge_policy_ref_t *e = g_entries;
        g_entries = e->next;
        lk_policy_free(&e->pol);
        free(e);
    }
    g_count = 0;
}
