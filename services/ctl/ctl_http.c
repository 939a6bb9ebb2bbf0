/*  ctl_http - one call to the Lumkey admin API (libcurl, blocking). */
#include "ctl_http.h"

#include <stdio.h>
#include <string.h>

#include <curl/curl.h>
#include <sodium.h>

void ctl_http_global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

void ctl_http_global_cleanup(void)
{
    curl_global_cleanup();
}

static size_t on_body(char *data, size_t size, size_t n, void *ctx)
{
    lk_buf_t *buf = ctx;
    /* keep room for the NUL written at the end */
    if (lk_buf_reserve(buf, size * n + 1) != 0 || lk_buf_append(buf, data, size * n) != 0)
        return 0; /* makes curl fail with CURLE_WRITE_ERROR */
    return size * n;
}

/* Wipes header strings (one holds the token) before handing them back to curl. */
static void free_headers(struct curl_slist *list)
{
    for (struct curl_slist *h = list; h; h = h->next)
        sodium_memzero(h->data, strlen(h->data));
    curl_slist_free_all(list);
}

int ctl_http_call(const ctl_http_t *self, const char *method, const char *path, const char *body,
                  size_t body_len, ctl_http_response_t *res)
{
    int rc = -1;
    char url[2048], errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *headers = NULL, *h;
    lk_buf_t auth;
    lk_buf_init(&auth, 1);
    res->status = 0;
    lk_buf_init(&res->body, 1);

    CURL *curl = curl_easy_init();
    if (curl == NULL) {
        fprintf(stderr, "lumkeyctl: cannot initialise libcurl\n");
        goto cleanup;
    }
    if ((size_t)snprintf(url, sizeof(url), "%s%s", self->addr, path) >= sizeof(url)) {
        fprintf(stderr, "lumkeyctl: address too long\n");
        goto cleanup;
    }
    if ((h = curl_slist_append(headers, "Accept: application/json")) == NULL) goto oom;
    headers = h;
    if (body) {
        if ((h = curl_slist_append(headers, "Content-Type: application/json")) == NULL) goto oom;
        headers = h;
    }
    if (self->token) {
        static const char prefix[] = "Authorization: Bearer ";
        if (lk_buf_append(&auth, prefix, sizeof(prefix) - 1) != 0 ||
            lk_buf_append(&auth, self->token, strlen(self->token) + 1) != 0)
            goto oom;
        if ((h = curl_slist_append(headers, (const char *)auth.data)) == NULL) goto oom;
        headers = h;
    }
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "lumkeyctl/0.1");
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &res->body);
    if (body) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body); /* not copied: the caller wipes it */
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }

    CURLcode cc = curl_easy_perform(curl);
    if (cc != CURLE_OK) {
        const char *why = errbuf[0] ? errbuf : curl_easy_strerror(cc);
        if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST || cc == CURLE_OPERATION_TIMEDOUT)
            fprintf(stderr,
                    "lumkeyctl: cannot reach Lumkey at %s: %s\n"
                    "  is the edge running? set the address with --addr or LUMKEY_ADDR\n",
                    self->addr, why);
        else
            fprintf(stderr, "lumkeyctl: request to %s failed: %s\n", self->addr, why);
        goto cleanup;
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &res->status);
    if (lk_buf_reserve(&res->body, 1) != 0) goto oom;
    res->body.data[res->body.len] = '\0';
    rc = 0;
    goto cleanup;
oom:
    fprintf(stderr, "lumkeyctl: out of memory\n");
cleanup:
    free_headers(headers);
    lk_buf_free(&auth);
    if (curl) curl_easy_cleanup(curl);
    return rc;
}

void ctl_http_response_free(ctl_http_response_t *res)
{
    lk_buf_free(&res->body);
}
