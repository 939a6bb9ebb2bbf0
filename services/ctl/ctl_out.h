/*  ctl_out - how lumkeyctl shows server objects: aligned tables and
 *  key/value listings, vault style.
 *
 *  Cells are made safe for a terminal (control characters become '?'), times
 *  (unix seconds in *_at fields) are shown as UTC ISO 8601, arrays as a,b,c.
 *  Knows nothing of HTTP.
 */
#ifndef CTL_OUT_H
#define CTL_OUT_H

#include <stdio.h>

#include <jansson.h>

typedef struct {
    const char *title; /* column header */
    const char *field; /* member of each row object; "a.b" reaches into a nested object */
} ctl_column_t;

/* One row per object in rows (a JSON array), columns in order. */
void ctl_out_table(FILE *out, const ctl_column_t *cols, size_t ncols, json_t *rows);

/* "Key  Value" listing of obj: fields listed first, then any other member in
 * server order; nested objects are flattened one level (credential.id).
 * Members named in skip (NULL-terminated) are left out. */
void ctl_out_object(FILE *out, json_t *obj, const char *const *fields, const char *const *skip);

/* The member at "a" or "a.b" of obj, or NULL. */
json_t *ctl_out_get(json_t *obj, const char *path);

/* Writes v for a human into buf (cap bytes); field names the member (for *_at). */
void ctl_out_format(char *buf, size_t cap, const char *field, json_t *v);

/* Frees what jansson returned (json_dumps): through jansson's allocator. */
void ctl_out_json_free(void *p);

/* Writes s to out with control characters replaced. */
void ctl_out_safe(FILE *out, const char *s);

#endif
