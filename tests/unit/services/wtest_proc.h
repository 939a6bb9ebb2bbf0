/*  wtest_proc - child processes for integration tests: start a binary with
 *  its output in a log file, stop it, run a tool and capture its stdout.
 *
 *  Every child gets PR_SET_PDEATHSIG(SIGKILL) and its own process group, and
 *  is recorded: wt_proc_kill_all (also run at exit and on SIGINT / SIGTERM /
 *  SIGABRT of the test) kills whatever is left, so no child outlives the
 *  test, even when the test fails or is killed.
 */
#ifndef WTEST_PROC_H
#define WTEST_PROC_H

#include <stddef.h>
#include <sys/types.h>

typedef struct {
    pid_t pid; /* 0 = not running */
    char name[32];
    char log[512];
} wt_proc_t;

/* Installs the exit / signal clean-up. Call once, first. */
void wt_proc_init(void);

/* Starts argv (argv[0] = path) with stdout and stderr appended to log. 0 / -1. */
int wt_proc_start(wt_proc_t *p, const char *name, char *const argv[], const char *log);

/* Sends sig, waits up to timeout_ms, then SIGKILLs. Returns the exit status
 * (0..255), 128 + signal if killed by one, -1 if it was not running. */
int wt_proc_stop(wt_proc_t *p, int sig, int timeout_ms);

/* Runs argv to completion; its stdout goes to out (NUL-terminated, truncated
 * to cap - 1), its stderr is appended to err_log (or inherited if NULL).
 * Returns the exit status as wt_proc_stop does. */
int wt_proc_run(char *const argv[], char *out, size_t cap, const char *err_log);

/* Kills every recorded child now (SIGKILL to its group). */
void wt_proc_kill_all(void);

#endif
