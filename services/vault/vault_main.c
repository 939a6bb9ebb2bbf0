/*  lumkey-vault - keys, admin tokens and provider credentials.
 *
 *      lumkey-vault                          serve (bind LUMKEY_VAULT_ENDPOINT)
 *      lumkey-vault --init-master-key FILE   create a master key file (0600) if absent
 *      lumkey-vault --bootstrap-admin [--tenant T]
 *                                            first admin token of tenant T (default
 *                                            "default"): printed alone on stdout, exit 0;
 *                                            exit 3 if the tenant already has one
 *      lumkey-vault --rotate-kek             rewrap every credential's DEK under the
 *                                            current KEK (progress on stderr; idempotent)
 *
 *  Settings (environment, or the --flag in brackets): LUMKEY_DB [--db],
 *  LUMKEY_MASTER_KEY_FILE [--master-key-file], LUMKEY_VAULT_ENDPOINT
 *  [--endpoint] (default ipc://$LUMKEY_RUN_DIR/vault.ipc), LUMKEY_DB_WAIT_MS,
 *  LUMKEY_DB_STATEMENT_TIMEOUT_MS, LUMKEY_CACHE_MAX_AGE_MS (vault_cache.h); the KMS: LUMKEY_KMS and
 * LUMKEY_PKCS11_* (environment only, see vault_kms.h).
 */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "lk_config.h"
#include "lk_log.h"
#include "lk_worker.h"
#include "vault.h"

static const char USAGE[] =
    "usage: lumkey-vault [--db CONNINFO] [--master-key-file FILE] [--endpoint EP]\n"
    "       lumkey-vault --init-master-key FILE\n"
    "       lumkey-vault --bootstrap-admin [--tenant TENANT]\n"
    "       lumkey-vault --rotate-kek\n"
    "       lumkey-vault --health                 ping the own endpoint; exit 0 if it answers\n"
    "  LUMKEY_DB, LUMKEY_MASTER_KEY_FILE, LUMKEY_VAULT_ENDPOINT (ipc://$LUMKEY_RUN_DIR/vault.ipc),\n"
    "  LUMKEY_DB_WAIT_MS (10000), LUMKEY_DB_STATEMENT_TIMEOUT_MS (5000),\n"
    "  LUMKEY_CACHE_MAX_AGE_MS (1000; 0 = no credential row cache)\n"
    "  LUMKEY_KMS (file | pkcs11), LUMKEY_PKCS11_MODULE, LUMKEY_PKCS11_TOKEN, LUMKEY_PKCS11_PIN_FILE,\n"
    "  LUMKEY_PKCS11_KEY_LABEL, LUMKEY_PKCS11_KEY_VERSION (1), LUMKEY_PKCS11_OLD_KEY_LABEL,\n"
    "  LUMKEY_PKCS11_OLD_KEY_VERSION (1)\n";

int main(int argc, char **argv)
{
    lk_log_init("vault");
    if (sodium_init() < 0) {
        lk_log_error("libsodium failed to initialise");
        return 1;
    }
    if (lk_config_has(argc, argv, "help")) {
        fputs(USAGE, stdout);
        return 0;
    }
    static const char *const with_value[] = {"master-key-file", "init-master-key", "tenant", NULL};
    static const char *const switches[] = {"bootstrap-admin", "rotate-kek", NULL};
    const char *init = lk_config_get(argc, argv, "init-master-key", NULL, NULL);
    if (init) /* needs nothing else */
        return vault_init_master_key(init);
    lk_config_worker_t wc;
    if (lk_config_worker(&wc, "vault", argc, argv, with_value, switches) != 0) {
        fputs(USAGE, stderr);
        return 2;
    }
    if (wc.health) return lk_worker_health("vault", wc.endpoint, 2000);
    vault_config_t cfg = {
        .conninfo = wc.db,
        .master_key_file = lk_config_get(argc, argv, "master-key-file", "LUMKEY_MASTER_KEY_FILE", NULL),
        .db_wait_ms = wc.db_wait_ms,
        .statement_timeout_ms = wc.statement_timeout_ms,
    };

    vault_kms_config_t kcfg;
    if (vault_kms_config_env(&kcfg) != 0) return 2;

    int rc = 1;
    lk_worker_t *worker = NULL;
    vault_t *vault = vault_new_kms(&cfg, &kcfg);
    if (!vault) goto cleanup;
    if (lk_config_has(argc, argv, "rotate-kek")) {
        rc = vault_rotate_kek(vault);
        goto cleanup;
    }
    if (lk_config_has(argc, argv, "bootstrap-admin")) {
        rc = vault_bootstrap_admin(vault, lk_config_get(argc, argv, "tenant", NULL, "default"));
        goto cleanup;
    }
    lk_worker_opts_t opts = {
        .service = "vault",
        .endpoint = wc.endpoint,
        .handler = vault_handle,
        .ctx = vault,
        .tick = vault_tick,
    };
    worker = lk_worker_new(&opts);
    if (worker && lk_worker_run(worker) == 0) rc = 0;
cleanup:
    lk_worker_destroy(&worker);
    vault_destroy(&vault);
    return rc;
}
