/*  wtest_proc - child processes for integration tests. */
#include "wtest_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CHILDREN 64

static pid_t s_children[MAX_CHILDREN];

static void record(pid_t pid)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (s_children[i] == 0) {
            s_children[i] = pid;
            return;
        }
}

static void forget(pid_t pid)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (s_children[i] == pid) s_children[i] = 0;
}

void wt_proc_kill_all(void)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (s_children[i] > 0) {
            kill(-s_children[i], SIGKILL);
            kill(s_children[i], SIGKILL);
            waitpid(s_children[i], NULL, 0);
            s_children[i] = 0;
        }
}

static void on_fatal(int sig)
{
    wt_proc_kill_all();
    signal(sig, SIG_DFL);
    raise(sig);
}

void wt_proc_init(void)
{
    atexit(wt_proc_kill_all);
    signal(SIGINT, on_fatal);
    signal(SIGTERM, on_fatal);
    signal(SIGABRT, on_fatal);
    signal(SIGSEGV, on_fatal);
    signal(SIGPIPE, SIG_IGN);
}

/* In the child: own group, die with the parent, output redirected, exec. */
static void child_exec(char *const argv[], int out_fd, int err_fd)
{
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1) _exit(127);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (out_fd >= 0) dup2(out_fd, STDOUT_FILENO);
    if (err_fd >= 0) dup2(err_fd, STDERR_FILENO);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    execv(argv[0], argv);
    _exit(127);
}

int wt_proc_start(wt_proc_t *p, const char *name, char *const argv[], const char *log)
{
    snprintf(p->name, sizeof p->name, "%s", name);
    snprintf(p->log, sizeof p->log, "%s", log);
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(fd);
        return -1;
    }
    if (pid == 0) child_exec(argv, fd, fd);
    close(fd);
    setpgid(pid, pid);
    record(pid);
    p->pid = pid;
    return 0;
}

static int decode_status(int st)
{
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    return -1;
}

int wt_proc_stop(wt_proc_t *p, int sig, int timeout_ms)
{
    if (p->pid <= 0) return -1;
    kill(p->pid, sig);
    int st = 0;
    for (int waited = 0;; waited += 10) {
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid) break;
        if (r < 0 && errno != EINTR) {
            st = -1;
            break;
        }
        if (waited >= timeout_ms) {
            kill(-p->pid, SIGKILL);
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &st, 0);
            break;
        }
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    kill(-p->pid, SIGKILL); /* anything the child left in its group */
    forget(p->pid);
    p->pid = 0;
    return st == -1 ? -1 : decode_status(st);
}

int wt_proc_run(char *const argv[], char *out, size_t cap, const char *err_log)
{
    int pipefd[2];
    if (pipe(pipefd) != 0) return -1;
    int err_fd = err_log ? open(err_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600) : -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        close(pipefd[0]);
        child_exec(argv, pipefd[1], err_fd);
    }
    record(pid);
    close(pipefd[1]);
    if (err_fd >= 0) close(err_fd);
    size_t len = 0;
    for (;;) {
        char tmp[4096];
        ssize_t n = read(pipefd[0], tmp, sizeof tmp);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        size_t take = (size_t)n;
        if (out && cap && len + take > cap - 1) take = cap - 1 - len;
        if (out && take) memcpy(out + len, tmp, take);
        len += take;
    }
    if (out && cap) out[len] = '\0';
    close(pipefd[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    forget(pid);
    return decode_status(st);
}
