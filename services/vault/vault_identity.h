/*  vault_identity - SCIM-provisioned SSO users and groups, and their browser
 *  sessions (issue 11; see vault_identity.c and docs/sso.md).
 */
#ifndef VAULT_IDENTITY_H
#define VAULT_IDENTITY_H

#include "lk_buf.h"
#include "lk_proto.h"
#include "vault.h"

/* Whether tok has the shape of a session token ("lks_" + 43 base64url). */
int vault_identity_is_session(lk_str_t tok);
/* ADMIN_AUTH for a session token: fills rep->u.admin_auth_rep (via "session") or answers ERROR UNAUTHORIZED.
 */
int vault_identity_session_auth(vault_t *self, lk_str_t tok, lk_msg_t *rep, lk_buf_t *scratch);
/* The sso.* and scim.* admin operations. */
int vault_identity_handle(vault_t *self, const lk_admin_req_t *q, lk_msg_t *rep, lk_buf_t *scratch);

#endif
