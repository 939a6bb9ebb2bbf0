/*  fuzz_jwt - edge_jwt on arbitrary bytes. First byte even: the rest is a
 *  JWKS document; odd: the rest is an ID token verified against a fixed JWKS
 *  (one RSA, one P-256 key; seeds signed with them are in corpus/jwt). Never
 *  crashes or leaks; an accepted token has claims with a string `sub`, the
 *  expected issuer and audience. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "edge_jwt.h"

static const char JWKS[] =
    "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"rsa1\",\"use\":\"sig\",\"alg\":\"RS256\",\"n\":\"6vKj77k3y_Uq9"
    "EJRy-wFPrepVWeuquFWjQbcvRy4N74cW34a_ofDHglyuZ1h2ePAtdRYyuIzmdcwxHBbuZjL0_tguMQYO4xTVOevaSKSfOQaxy7VQ"
    "GKH_YrZwicanItFig9L5dbXprHBhe7LJthyeUWSB6u1EtNnufaWIMVfyaL3sAYKlW_LyouLWNrwFT33lhE8ehcPg-BvncqsMh7ch"
    "ExDipspY8Eek6-g7VscynlFxcoAMNH5wkwHD-BAFZBoVBFuxCOWNNljoboPVv5O4l32ajKD4LKe6v88yDKb69VML3WIJhrld8eb_"
    "D2BMrFrIQYaACTY6cMYX0kskaJxQQ\",\"e\":\"AQAB\"},{\"kty\":\"EC\",\"kid\":\"ec1\",\"use\":\"sig\",\"cr"
    "v\":\"P-256\",\"x\":\"dL54W9Yxx9hlD3TvjD8fn8Oj6B_1rdda8R8hS3VbhVI\",\"y\":\"JtH4XvkPxTKiRof-aPy7E14p"
    "WyP_PptEfbeBxJdAToI\"}]}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static edge_jwks_t *fixed;
    char err[200];
    if (!fixed) fixed = edge_jwks_parse(JWKS, sizeof JWKS - 1, err, sizeof err);
    if (!fixed) abort();
    if (size == 0) return 0;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    if ((data[0] & 1) == 0) {
        edge_jwks_t *j = edge_jwks_parse(s, n, err, sizeof err);
        if (j && (edge_jwks_count(j) == 0 || edge_jwks_count(j) > EDGE_JWKS_MAX_KEYS)) abort();
        if (!j && !err[0]) abort();
        edge_jwks_free(&j);
        return 0;
    }
    edge_jwt_expect_t x = {"https://idp.example", "lumkey", (data[0] & 2) ? "n0nce" : NULL, 1767225600, 60};
    json_t *claims = NULL;
    edge_jwt_rc_t rc = edge_jwt_verify(fixed, s, n, &x, &claims);
    if (!edge_jwt_rc_code(rc)[0]) abort();
    if (rc == EDGE_JWT_OK) {
        if (!json_is_string(json_object_get(claims, "sub"))) abort();
        if (strcmp(json_string_value(json_object_get(claims, "iss")), "https://idp.example") != 0) abort();
    } else if (claims) {
        abort();
    }
    json_decref(claims);
    return 0;
}
