/*  edge_console - the web console's static files, served at /console/ on the
 *  admin listener.
 *
 *  The files (console/ - html, js, css) are embedded into lumkey-edge at
 *  build time (embed_console.cmake writes edge_console_files[]); nothing is
 *  read from disk at run time, so a path can only name one of those files.
 */
#ifndef EDGE_CONSOLE_H
#define EDGE_CONSOLE_H

#include <h2o.h>
#include <stddef.h>

typedef struct {
    const char *name; /* relative to console/, e.g. "app.js"; NULL ends the table */
    const unsigned char *data;
    size_t len;
} edge_console_file_t;

extern const edge_console_file_t edge_console_files[];
extern const size_t edge_console_nfiles;

/* The embedded file called name (exact match), or NULL. */
const edge_console_file_t *edge_console_find(const char *name, size_t len);
/* Content type for a file name, by its extension. */
const char *edge_console_content_type(const char *name);

/* Handler for /console and /console/...: GET and HEAD only. */
int edge_console_on_req(h2o_handler_t *handler, h2o_req_t *req);

#endif
