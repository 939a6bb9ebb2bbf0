/*  edge_scim - the HTTP side of SCIM 2.0 on the admin listener (issue 11):
 *  answers and errors in SCIM's shape (application/scim+json,
 *  urn:ietf:params:scim:api:messages:2.0:Error with `status` as a string),
 *  and the discovery documents (ServiceProviderConfig, ResourceTypes,
 *  Schemas) the edge answers itself. The routes (/scim/v2/Users, /Groups)
 *  are rows of edge_admin's table (role scim), handled by the vault.
 */
#ifndef EDGE_SCIM_H
#define EDGE_SCIM_H

#include <h2o.h>

void edge_scim_send(h2o_req_t *req, int status, const char *rid, const char *body, size_t len);
void edge_scim_send_error(h2o_req_t *req, int status, const char *rid, const char *scim_type,
                          const char *detail);
/* /scim/v2/ServiceProviderConfig, /ResourceTypes, /Schemas (GET): answers and returns 1; else 0. */
int edge_scim_discovery(h2o_req_t *req, const char *rid);

#endif
