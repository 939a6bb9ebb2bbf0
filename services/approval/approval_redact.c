/*  approval_redact - what approvers may see of a held request.
 *
 *  The edge sends an excerpt it already redacted; this pass runs again
 *  before the excerpt is stored or sent to Slack / webhooks, so an edge bug
 *  cannot leak an email address or a key-like token to a chat channel.
 */
#include <string.h>
#include <strings.h>

#include "approval.h"

static int word_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.' || c == '+' || c == '/' || c == '=' || c == '@' || c >= 0x80;
}

/* A word is redacted when it looks like an email or a secret: has an '@'
 * between word characters, or is 20+ characters with both letters and
 * digits (API keys, tokens, hashes). */
static int sensitive(const char *w, size_t n)
{
    int at = 0, alpha = 0, digit = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)w[i];
        if (c == '@' && i > 0 && i + 1 < n) at = 1;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) alpha = 1;
        if (c >= '0' && c <= '9') digit = 1;
    }
    return at || (n >= 20 && alpha && digit);
}

size_t approval_redact(char *out, size_t cap, lk_str_t in)
{
    static const char RED[] = "[redacted]";
    size_t o = 0, i = 0;
    int after_bearer = 0;
    if (cap == 0) return 0;
    while (i < in.len) {
        unsigned char c = (unsigned char)in.ptr[i];
        size_t j = i, n;
        const char *piece;
        char one;
        if (word_char(c)) {
            while (j < in.len && word_char((unsigned char)in.ptr[j]))
                j++;
            n = j - i;
            int red = after_bearer || sensitive(in.ptr + i, n);
            after_bearer = n == 6 && strncasecmp(in.ptr + i, "bearer", 6) == 0;
            piece = red ? RED : in.ptr + i;
            n = red ? sizeof RED - 1 : n;
        } else {
            one = c < 0x20 || c == 0x7f ? ' ' : (char)c;
            piece = &one;
            n = 1;
            j = i + 1;
        }
        if (o + n > cap - 1) {
            n = cap - 1 - o; /* cut, then back off to a UTF-8 boundary */
            while (n > 0 && ((unsigned char)piece[n] & 0xc0) == 0x80 && piece != RED)
                n--;
            memcpy(out + o, piece, n);
            o += n;
            break;
        }
        memcpy(out + o, piece, n);
        o += n;
        i = j;
    }
    out[o] = '\0';
    return o;
}
