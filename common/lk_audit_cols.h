/*  lk_audit_cols - the columns of an exported audit event (CSV header, JSON
 *  fields of audit.query rows), in order: one list for lumkeyctl and the
 *  edge's export endpoint. */
#ifndef LK_AUDIT_COLS_H
#define LK_AUDIT_COLS_H

extern const char *const LK_AUDIT_EXPORT_COLS[]; /* NULL-terminated */

#endif
