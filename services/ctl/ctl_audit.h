/*  ctl_audit - `lumkeyctl audit ...`: query, tail, export, verify, settings,
 *  status, checkpoint, retention (admin API /admin/v1/audit/...).
 *
 *  Parses its own arguments (the global --addr, --format, --token-file too),
 *  so that lumkeyctl only dispatches to it. Knows the audit resources only.
 */
#ifndef CTL_AUDIT_H
#define CTL_AUDIT_H

/* Whether argv names the audit command group (first non-option word). */
int ctl_audit_wants(int argc, char **argv);
/* Runs it. Exit code: 0 ok, 1 failed (or verify found a break), 2 usage. */
int ctl_audit_main(int argc, char **argv);

#endif
