/*  edge_auth - admin sign-in through OpenID Connect (authorization code flow
 *  with PKCE S256), browser sessions and their CSRF checks (issue 11).
 *
 *  Routes on the admin listener: GET /auth/login?return=/path,
 *  GET /auth/callback, GET /auth/session, POST /auth/logout. The identity
 *  provider's discovery document, JWKS and token endpoint are fetched with
 *  h2o's client (edge_upstream_request) inside the loop, never blocking it.
 *  ID tokens are verified by edge_jwt; the session itself (token, CSRF token,
 *  user, role) lives in the vault (sso.login, ADMIN_AUTH with `lks_...`).
 *  Settings (environment of lumkey-edge): LUMKEY_OIDC_ISSUER,
 *  LUMKEY_OIDC_CLIENT_ID, LUMKEY_OIDC_CLIENT_SECRET or
 *  LUMKEY_OIDC_CLIENT_SECRET_FILE, LUMKEY_OIDC_REDIRECT_URI,
 *  LUMKEY_ADMIN_ORIGIN (optional), LUMKEY_SSO_SESSION_TTL_S (cookie Max-Age).
 */
#ifndef EDGE_AUTH_H
#define EDGE_AUTH_H

#include <h2o.h>

#include "lk_str.h"

/* Reads the settings; call once at start (after g_edge is set). */
void edge_auth_init(void);
void edge_auth_shutdown(void);

/* {"enabled", "issuer", "client_id", "redirect_uri", "discovered", "jwks_keys"} (never the secret). */
#include <jansson.h>
json_t *edge_auth_status(void);

/* /auth/... on the admin listener. */
int edge_auth_on_req(h2o_handler_t *handler, h2o_req_t *req);

/* The lk_session cookie's value when it has a session token's shape, else {NULL,0}. */
h2o_iovec_t edge_auth_session_cookie(h2o_req_t *req);
/* POST, PUT, PATCH, DELETE. */
int edge_auth_unsafe_method(h2o_req_t *req);
/* For a state-changing request authenticated by cookie: the Origin (when
 * present) must be the admin listener's, and X-CSRF-Token must be present
 * (once). Returns NULL and sets *csrf, or a refusal message. */
const char *edge_auth_csrf_precheck(h2o_req_t *req, h2o_iovec_t *csrf);
/* Constant-time comparison of the presented CSRF token with the session's. 1 / 0. */
int edge_auth_csrf_equal(h2o_iovec_t presented, lk_str_t want);

#endif
