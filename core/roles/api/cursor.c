/**
 * @file api/cursor.c
 * @brief The opaque cursors of the REST API's keyset pages.
 */
#include "api/cursor.h"
#include "api/util.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

void tb_api_b64url(const char *in, size_t len, char *out) {
        static const char a[] =
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        size_t o = 0;
        for (size_t i = 0; i < len; i += 3) {
                uint32_t v = (uint32_t)(unsigned char)in[i] << 16;
                if (i + 1 < len)
                        v |= (uint32_t)(unsigned char)in[i + 1] << 8;
                if (i + 2 < len)
                        v |= (unsigned char)in[i + 2];
                out[o++] = a[(v >> 18) & 63];
                out[o++] = a[(v >> 12) & 63];
                if (i + 1 < len)
                        out[o++] = a[(v >> 6) & 63];
                if (i + 2 < len)
                        out[o++] = a[v & 63];
        }
        out[o] = '\0';
}

/** @returns decoded length, or -1 if \p in is not base64url. */
ssize_t tb_api_unb64url(const char *in, char *out, size_t cap) {
        size_t o = 0;
        uint32_t acc = 0;
        int bits = 0;
        for (const char *s = in; *s; s++) {
                int v;
                if (*s >= 'A' && *s <= 'Z')
                        v = *s - 'A';
                else if (*s >= 'a' && *s <= 'z')
                        v = *s - 'a' + 26;
                else if (*s >= '0' && *s <= '9')
                        v = *s - '0' + 52;
                else if (*s == '-')
                        v = 62;
                else if (*s == '_')
                        v = 63;
                else if (*s == '=')
                        break;
                else
                        return -1;
                acc = (acc << 6) | (uint32_t)v;
                bits += 6;
                if (bits >= 8) {
                        bits -= 8;
                        if (o + 1 >= cap)
                                return -1;
                        out[o++] = (char)((acc >> bits) & 0xff);
                }
        }
        out[o] = '\0';
        return (ssize_t)o;
}

/* A cursor is base64url("<created_at with microseconds>|<id>") of the last
 * row of a page: the keyset (created_at, id) to continue below. */
bool tb_api_cursor_parse(const char *cur, char ts[40], char id[200]) {
        char raw[300];
        ssize_t n = tb_api_unb64url(cur, raw, sizeof(raw));
        if (n < 0)
                return false;
        char *bar = strchr(raw, '|');
        if (!bar || bar - raw != 27 || !tb_api_id_ok(bar + 1))
                return false;
        /* YYYY-MM-DDTHH:MM:SS.uuuuuuZ, exactly as the server wrote it */
        static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
        for (int i = 0; i < 27; i++) {
                if (shape[i] == 'd' ? !isdigit((unsigned char)raw[i]) : raw[i] != shape[i])
                        return false;
        }
        memcpy(ts, raw, 27);
        ts[27] = '\0';
        tb_snprintf(id, 200, "%s", bar + 1);
        return true;
}
