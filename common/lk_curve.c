/*  lk_curve - CURVE keys for the tcp:// links between the edge and the workers. */
#include "lk_curve.h"

#include <czmq.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lk_log.h"

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* Loads the own keypair from LUMKEY_CURVE_SECRET_FILE. 1 = loaded, 0 = not set, -1 = error. */
static int load_own(lk_curve_t *self)
{
    const char *path = env_nonempty("LUMKEY_CURVE_SECRET_FILE");
    if (!path) return 0;
    zcert_t *cert = zcert_load(path);
    if (!cert) {
        lk_log_error("cannot load the CURVE keypair from LUMKEY_CURVE_SECRET_FILE %s", path);
        return -1;
    }
    const char *sec = zcert_secret_txt(cert);
    if (strlen(sec) != LK_CURVE_KEY_TXT - 1 || strcmp(sec, "0000000000000000000000000000000000000000") == 0) {
        zcert_destroy(&cert);
        lk_log_error("LUMKEY_CURVE_SECRET_FILE %s holds no secret key (use the NAME_secret file)", path);
        return -1;
    }
    self->secret_txt = sodium_malloc(LK_CURVE_KEY_TXT);
    if (!self->secret_txt) {
        zcert_destroy(&cert);
        return -1;
    }
    memcpy(self->secret_txt, sec, LK_CURVE_KEY_TXT);
    memcpy(self->public_txt, zcert_public_txt(cert), LK_CURVE_KEY_TXT);
    zcert_destroy(&cert); /* CZMQ wipes nothing: the copy in its heap is gone with it */
    self->on = 1;
    return 1;
}

static int needs_curve(const char *endpoints)
{
    return strstr(endpoints, "tcp://") != NULL && !(env_nonempty("LUMKEY_CURVE_INSECURE_TCP") &&
                                                    strcmp(getenv("LUMKEY_CURVE_INSECURE_TCP"), "1") == 0);
}

int lk_curve_server_load(lk_curve_t *self, const char *endpoint)
{
    memset(self, 0, sizeof *self);
    int own = load_own(self);
    if (own < 0) return -1;
    if (!own) {
        if (!needs_curve(endpoint)) return 0;
        lk_log_error("%s is tcp:// without CURVE: set LUMKEY_CURVE_SECRET_FILE and LUMKEY_CURVE_CLIENTS_DIR",
                     endpoint);
        return -1;
    }
    const char *dir = env_nonempty("LUMKEY_CURVE_CLIENTS_DIR");
    struct stat st;
    if (!dir || stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        lk_log_error("LUMKEY_CURVE_CLIENTS_DIR must name the folder of admitted client public keys");
        lk_curve_clear(self);
        return -1;
    }
    self->clients = zcertstore_new(dir);
    if (!self->clients) {
        lk_curve_clear(self);
        return -1;
    }
    return 0;
}

int lk_curve_client_load(lk_curve_t *self, const char *endpoints)
{
    memset(self, 0, sizeof *self);
    int own = load_own(self);
    if (own < 0) return -1;
    if (!own) {
        if (!needs_curve(endpoints)) return 0;
        lk_log_error("worker endpoints over tcp:// need CURVE: set LUMKEY_CURVE_SECRET_FILE and "
                     "LUMKEY_CURVE_SERVER_PUBLIC_FILE");
        return -1;
    }
    const char *path = env_nonempty("LUMKEY_CURVE_SERVER_PUBLIC_FILE");
    zcert_t *cert = path ? zcert_load(path) : NULL;
    if (!cert) {
        lk_log_error("LUMKEY_CURVE_SERVER_PUBLIC_FILE must name the workers' public key file");
        lk_curve_clear(self);
        return -1;
    }
    memcpy(self->server_txt, zcert_public_txt(cert), LK_CURVE_KEY_TXT);
    zcert_destroy(&cert);
    return 0;
}

int lk_curve_server_apply(const lk_curve_t *self, void *zsock)
{
    if (!self->on) return 0;
    int one = 1;
    if (zmq_setsockopt(zsock, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
        zmq_setsockopt(zsock, ZMQ_CURVE_SECRETKEY, self->secret_txt, LK_CURVE_KEY_TXT - 1) != 0 ||
        zmq_setsockopt(zsock, ZMQ_ZAP_DOMAIN, "lumkey", 6) != 0)
        return -1;
    return 0;
}

int lk_curve_client_apply(const lk_curve_t *self, void *zsock)
{
    if (!self->on) return 0;
    const char *server = self->server_txt[0] ? self->server_txt : self->public_txt;
    if (zmq_setsockopt(zsock, ZMQ_CURVE_SERVERKEY, server, LK_CURVE_KEY_TXT - 1) != 0 ||
        zmq_setsockopt(zsock, ZMQ_CURVE_PUBLICKEY, self->public_txt, LK_CURVE_KEY_TXT - 1) != 0 ||
        zmq_setsockopt(zsock, ZMQ_CURVE_SECRETKEY, self->secret_txt, LK_CURVE_KEY_TXT - 1) != 0)
        return -1;
    return 0;
}

int lk_curve_admits(lk_curve_t *self, const uint8_t *key, size_t len)
{
    if (!self->on || len != 32) return 0;
    char txt[LK_CURVE_KEY_TXT];
    if (!zmq_z85_encode(txt, key, 32)) return 0;
    if (strcmp(txt, self->public_txt) == 0) return 1;
    return self->clients && zcertstore_lookup((zcertstore_t *)self->clients, txt) != NULL;
}

void lk_curve_clear(lk_curve_t *self)
{
    if (!self) return;
    if (self->secret_txt) sodium_free(self->secret_txt); /* wipes */
    self->secret_txt = NULL;
    if (self->clients) {
        zcertstore_t *store = self->clients;
        zcertstore_destroy(&store);
    }
    self->clients = NULL;
    self->on = 0;
}

int lk_curve_keygen(const char *path)
{
    zcert_t *cert = zcert_new();
    if (!cert) return -1;
    zcert_set_meta(cert, "created-by", "lumkey");
    int rc = zcert_save(cert, path); /* path (public) and path_secret (0600) */
    zcert_destroy(&cert);
    if (rc != 0) {
        lk_log_error("cannot write the keypair %s and %s_secret", path, path);
        return -1;
    }
    return 0;
}
