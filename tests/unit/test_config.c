/*  test_config - lk_config (config file, worker bind) and lk_curve (keys, admission). */
#include <czmq.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lk_config.h"
#include "lk_curve.h"
#include "lk_test.h"

static char s_dir[] = "/tmp/lk-test-config-XXXXXX";

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

/* Runs lk_config_load_file in a child (it loads once per process). Its return value. */
static int load_in_child(const char *text)
{
    char path[256];
    snprintf(path, sizeof path, "%s/child.conf", s_dir);
    write_file(path, text);
    pid_t pid = fork();
    if (pid == 0) {
        setenv("LUMKEY_CONFIG_FILE", path, 1);
        _exit(lk_config_load_file() == 0 ? 0 : 1);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_config_file(void)
{
    /* in children first: a process loads its file once */
    LK_CHECK(load_in_child("PATH=/evil\n") == 1); /* only LUMKEY_* names */
    LK_CHECK(load_in_child("LUMKEY_X\n") == 1);   /* no '=' */
    LK_CHECK(load_in_child("lumkey_x=1\n") == 1); /* upper case only */
    LK_CHECK(load_in_child("LUMKEY_OK=1\n# x\n") == 0);
    char path[256];
    snprintf(path, sizeof path, "%s/lumkey.conf", s_dir);
    write_file(path, "# comment\n\n  LUMKEY_TEST_A = one \nLUMKEY_TEST_B=from-file\nLK_LOG_LEVEL=warn\n"
                     "LUMKEY_TEST_C=a=b\n");
    setenv("LUMKEY_TEST_B", "from-env", 1);
    setenv("LUMKEY_CONFIG_FILE", path, 1);
    LK_CHECK(lk_config_load_file() == 0);
    LK_CHECK(getenv("LUMKEY_TEST_A") && strcmp(getenv("LUMKEY_TEST_A"), "one") == 0);
    LK_CHECK_STR(getenv("LUMKEY_TEST_B"), "from-env"); /* the environment wins */
    LK_CHECK_STR(getenv("LK_LOG_LEVEL"), "warn");
    LK_CHECK_STR(getenv("LUMKEY_TEST_C"), "a=b");
    LK_CHECK(lk_config_load_file() == 0); /* once */
}

static void test_bind(void)
{
    char out[512];
    char *argv[] = {"w", NULL};
    unsetenv("LUMKEY_POLICY_BIND");
    unsetenv("LUMKEY_POLICY_ENDPOINT");
    setenv("LUMKEY_RUN_DIR", "/tmp/lkrun", 1);
    LK_CHECK(lk_config_bind("policy", 1, argv, out, sizeof out) == 0);
    LK_CHECK_STR(out, "ipc:///tmp/lkrun/policy.ipc");
    setenv("LUMKEY_POLICY_ENDPOINT", "tcp://10.0.0.1:5555,tcp://10.0.0.2:5555", 1);
    LK_CHECK(lk_config_bind("policy", 1, argv, out, sizeof out) == -1); /* a list is for the edge */
    setenv("LUMKEY_POLICY_BIND", "tcp://*:5555", 1);
    LK_CHECK(lk_config_bind("policy", 1, argv, out, sizeof out) == 0);
    LK_CHECK_STR(out, "tcp://*:5555");
    setenv("LUMKEY_POLICY_BIND", "dns+tcp://x:1", 1);
    LK_CHECK(lk_config_bind("policy", 1, argv, out, sizeof out) == -1);
    char *argv2[] = {"w", "--endpoint", "ipc:///tmp/x.ipc", NULL};
    LK_CHECK(lk_config_bind("policy", 3, argv2, out, sizeof out) == 0);
    LK_CHECK_STR(out, "ipc:///tmp/x.ipc");
}

static void test_curve(void)
{
    char server[256], client[256], rogue[256], clients[256], secret[300];
    snprintf(server, sizeof server, "%s/server", s_dir);
    snprintf(client, sizeof client, "%s/clients/edge", s_dir);
    snprintf(rogue, sizeof rogue, "%s/rogue", s_dir);
    snprintf(clients, sizeof clients, "%s/clients", s_dir);
    LK_CHECK(mkdir(clients, 0700) == 0);
    LK_CHECK(lk_curve_keygen(server) == 0 && lk_curve_keygen(client) == 0 && lk_curve_keygen(rogue) == 0);
    struct stat st;
    snprintf(secret, sizeof secret, "%s_secret", server);
    LK_CHECK(stat(secret, &st) == 0 && (st.st_mode & 077) == 0); /* the secret file is private */

    lk_curve_t c;
    unsetenv("LUMKEY_CURVE_SECRET_FILE");
    unsetenv("LUMKEY_CURVE_INSECURE_TCP");
    LK_CHECK(lk_curve_server_load(&c, "ipc:///tmp/x.ipc") == 0 && !c.on); /* ipc: no CURVE needed */
    LK_CHECK(lk_curve_server_load(&c, "tcp://*:5555") == -1);             /* tcp: refused without */
    setenv("LUMKEY_CURVE_INSECURE_TCP", "1", 1);
    LK_CHECK(lk_curve_server_load(&c, "tcp://*:5555") == 0 && !c.on);
    unsetenv("LUMKEY_CURVE_INSECURE_TCP");
    setenv("LUMKEY_CURVE_SECRET_FILE", server, 1); /* the public file: no secret key in it */
    LK_CHECK(lk_curve_server_load(&c, "tcp://*:5555") == -1);
    setenv("LUMKEY_CURVE_SECRET_FILE", secret, 1);
    unsetenv("LUMKEY_CURVE_CLIENTS_DIR");
    LK_CHECK(lk_curve_server_load(&c, "tcp://*:5555") == -1); /* no clients folder */
    setenv("LUMKEY_CURVE_CLIENTS_DIR", clients, 1);
    LK_CHECK(lk_curve_server_load(&c, "tcp://*:5555") == 0 && c.on);

    zcert_t *edge = zcert_load(client), *bad = zcert_load(rogue), *own = zcert_load(server);
    LK_CHECK(edge && bad && own);
    LK_CHECK(lk_curve_admits(&c, zcert_public_key(edge), 32) == 1);
    LK_CHECK(lk_curve_admits(&c, zcert_public_key(own), 32) == 1); /* --health */
    LK_CHECK(lk_curve_admits(&c, zcert_public_key(bad), 32) == 0);
    LK_CHECK(lk_curve_admits(&c, zcert_public_key(edge), 31) == 0);
    zcert_destroy(&edge);
    zcert_destroy(&bad);
    zcert_destroy(&own);
    lk_curve_clear(&c);
    lk_curve_clear(&c); /* idempotent */
    LK_CHECK(c.secret_txt == NULL && c.clients == NULL && !c.on);

    /* client side: needs the server's public key file */
    char edge_secret[300];
    snprintf(edge_secret, sizeof edge_secret, "%s_secret", client);
    setenv("LUMKEY_CURVE_SECRET_FILE", edge_secret, 1);
    unsetenv("LUMKEY_CURVE_SERVER_PUBLIC_FILE");
    LK_CHECK(lk_curve_client_load(&c, "tcp://a:1,ipc:///x") == -1);
    setenv("LUMKEY_CURVE_SERVER_PUBLIC_FILE", server, 1);
    LK_CHECK(lk_curve_client_load(&c, "dns+tcp://a:1") == 0 && c.on && strlen(c.server_txt) == 40);
    lk_curve_clear(&c);
}

int main(void)
{
    if (!mkdtemp(s_dir)) return 1;
    LK_RUN(test_config_file);
    LK_RUN(test_bind);
    LK_RUN(test_curve);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", s_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", s_dir);
    return LK_TEST_DONE();
}
