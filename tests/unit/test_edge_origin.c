/*  test_edge_origin - provider base URLs: what the edge accepts as an origin. */
#include <arpa/inet.h>
#include <string.h>

#include "edge_upstream.h"
#include "lk_test.h"

static void accepts(void)
{
    edge_origin_t o;
    LK_CHECK(edge_origin_parse("https://api.openai.com/v1", &o) == 0);
    LK_CHECK(o.tls == 1 && o.port == 443);
    LK_CHECK_STR(o.host, "api.openai.com");
    LK_CHECK_STR(o.path, "/v1");

    LK_CHECK(edge_origin_parse("http://127.0.0.1:9100/v1/", &o) == 0);
    LK_CHECK(o.tls == 0 && o.port == 9100);
    LK_CHECK_STR(o.host, "127.0.0.1");
    LK_CHECK_STR(o.path, "/v1"); /* trailing slash dropped */

    LK_CHECK(edge_origin_parse("http://localhost", &o) == 0);
    LK_CHECK(o.port == 80 && o.path[0] == '\0');

    LK_CHECK(edge_origin_parse("https://[::1]:8443/openai", &o) == 0);
    LK_CHECK_STR(o.host, "[::1]");
    LK_CHECK(o.port == 8443);
    LK_CHECK_STR(o.path, "/openai");
}

static void refuses(void)
{
    edge_origin_t o;
    const char *bad[] = {
        "",                              /* empty */
        "ftp://host/v1",                 /* scheme */
        "//host/v1",                     /* no scheme */
        "https://",                      /* no host */
        "https:///v1",                   /* no host */
        "https://user:pw@host/v1",       /* userinfo */
        "https://host@evil.example/v1",  /* userinfo trick */
        "https://host:80@evil.example/", /* port followed by userinfo */
        "https://host:0/v1",             /* port 0 */
        "https://host:65536/v1",         /* port range */
        "https://host:/v1",              /* empty port */
        "https://host:12ab/v1",          /* junk port */
        "https://host/v1?api_base=x",    /* query */
        "https://host/v1#frag",          /* fragment */
        "https://[::1/v1",               /* unclosed IPv6 */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = edge_origin_parse(bad[i], &o);
        if (rc != -1) fprintf(stderr, "accepted: %s\n", bad[i]);
        LK_CHECK(rc == -1);
    }
    char longhost[400] = "https://";
    memset(longhost + 8, 'a', 300);
    LK_CHECK(edge_origin_parse(longhost, &o) == -1);
}

static int refused4(const char *ip)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    LK_CHECK(inet_pton(AF_INET, ip, &a.sin_addr) == 1);
    return edge_addr_refused((struct sockaddr *)&a);
}

static int refused6(const char *ip)
{
    struct sockaddr_in6 a = {.sin6_family = AF_INET6};
    LK_CHECK(inet_pton(AF_INET6, ip, &a.sin6_addr) == 1);
    return edge_addr_refused((struct sockaddr *)&a);
}

/* connect-time check: what a provider name may never resolve to */
static void connect_time_addresses(void)
{
    LK_CHECK(refused4("169.254.169.254") && refused4("169.254.0.1") && refused4("0.0.0.0"));
    LK_CHECK(refused6("fd00:ec2::254") && refused6("fe80::1") && refused6("::") &&
             refused6("::ffff:169.254.169.254") && refused6("::ffff:0.0.0.0"));
    LK_CHECK(!refused4("127.0.0.1") && !refused4("10.0.0.1") &&
             !refused4("8.8.8.8")); /* checked at creation */
    LK_CHECK(!refused6("::1") && !refused6("2001:db8::1") && !refused6("fd00:ec2::253"));
}

int main(void)
{
    LK_RUN(connect_time_addresses);
    LK_RUN(accepts);
    LK_RUN(refuses);
    return LK_TEST_DONE();
}
