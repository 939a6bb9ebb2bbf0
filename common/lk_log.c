/*  lk_log - JSON log lines, one object per line (stderr, or stdout when serving). */
#include "lk_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static const char *s_service = "lumkey";
static lk_log_level_t s_level = LK_LOG_INFO;
static const char *s_names[] = {"debug", "info", "warn", "error"};
static int s_stdout; /* 0 = stderr */

void lk_log_init(const char *service)
{
    s_service = service;
    const char *lv = getenv("LK_LOG_LEVEL");
    if (lv)
        for (int i = 0; i < 4; i++)
            if (strcmp(lv, s_names[i]) == 0) s_level = (lk_log_level_t)i;
}

void lk_log_to_stdout(void)
{
    s_stdout = 1;
    setvbuf(stdout, NULL, _IOLBF, 0); /* one line at a time, even into a pipe */
}

void lk_log_set_level(lk_log_level_t level)
{
    s_level = level;
}

/* Appends s to out as JSON string contents; returns the new length. */
static size_t escape(char *out, size_t pos, size_t cap, const char *s)
{
    for (; *s && pos + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[pos++] = '\\';
            out[pos++] = (char)c;
        } else if (c < 0x20) {
            pos += (size_t)snprintf(out + pos, cap - pos, "\\u%04x", c);
        } else {
            out[pos++] = (char)c;
        }
    }
    return pos;
}

void lk_log(lk_log_level_t level, const char *rid, const char *fmt, ...)
{
    if (level < s_level) return;
    char msg[2048], line[4400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    size_t pos = (size_t)snprintf(
        line, sizeof line, "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\",\"svc\":\"%s\"",
        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
        (long)(tv.tv_usec / 1000), s_names[level], s_service);
    if (rid) {
        pos += (size_t)snprintf(line + pos, sizeof line - pos, ",\"rid\":\"");
        pos = escape(line, pos, sizeof line - 8, rid);
        line[pos++] = '"';
    }
    pos += (size_t)snprintf(line + pos, sizeof line - pos, ",\"msg\":\"");
    pos = escape(line, pos, sizeof line - 4, msg);
    line[pos++] = '"';
    line[pos++] = '}';
    line[pos++] = '\n';
    fwrite(line, 1, pos, s_stdout ? stdout : stderr);
}
