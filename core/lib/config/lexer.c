/**
 * @file config/lexer.c
 * @brief The integer-width pre-scan of taskbus.conf and its @includes,
 *        run before libconfig parses the file.
 */
#include "config/config_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

/*
 * libconfig 1.5 stores an integer literal without the L suffix in 32 bits
 * and silently wraps anything larger (memory_max = 5368709120 reads as
 * 1GiB). It keeps no trace of the original text, so the only way to refuse
 * such values is to look at the literals before libconfig parses them.
 * This is a lexer for just enough of libconfig's syntax: comments, strings,
 * names (which may contain digits and '-'), numbers and @include.
 */
#define TB_CONFIG_INCLUDE_DEPTH_MAX 10

/** Check one integer literal [tok, end) at \p line. */
static tb_err_t tb_config_prescan_int(const char *file, unsigned line, const char *tok,
                                      const char *end, char *errstr, size_t errstr_size) {
        bool neg = *tok == '-';
        const char *d = tok + (*tok == '-' || *tok == '+');
        bool hex = d[0] == '0' && (d[1] == 'x' || d[1] == 'X');
        bool wide = end > d && (end[-1] == 'L' || end[-1] == 'l');
        const char *digits = hex ? d + 2 : d;
        const char *dend = wide ? end - 1 : end;
        /* unsigned magnitude with saturation */
        unsigned __int128 mag = 0;
        for (const char *c = digits; c < dend; c++) {
                int v = isdigit((unsigned char)*c) ? *c - '0'
                                                   : (tolower((unsigned char)*c) - 'a' + 10);
                mag = mag * (hex ? 16 : 10) + (unsigned)v;
                if (mag > ((unsigned __int128)1 << 70))
                        break;
        }
        unsigned __int128 lim = wide ? (unsigned __int128)INT64_MAX : INT32_MAX;
        if (neg && !hex)
                lim += 1;
        if (mag <= lim)
                return TB_OK;
        int len = (int)(end - tok);
        if (wide)
                return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                                 "%s:%u: integer %.*s does not fit in 64 bits", file, line,
                                 len > 40 ? 40 : len, tok);
        return tb_seterr(errstr, errstr_size, TB_ERR_INVALID,
                         "%s:%u: integer %.*s does not fit in 32 bits: write %.*sL "
                         "(libconfig would silently truncate it)",
                         file, line, len > 40 ? 40 : len, tok, len > 40 ? 40 : len, tok);
}

static tb_err_t tb_config_prescan_text(const char *dir, const char *file, const char *p,
                                       int depth, char *errstr, size_t errstr_size) {
        unsigned line = 1;
        bool line_start = true;
        while (*p) {
                char c = *p;
                if (c == '\n') {
                        line++;
                        line_start = true;
                        p++;
                        continue;
                }
                if (c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v') {
                        p++;
                        continue;
                }
                bool was_start = line_start;
                line_start = false;
                if (c == '#' || (c == '/' && p[1] == '/')) {
                        while (*p && *p != '\n')
                                p++;
                        continue;
                }
                if (c == '/' && p[1] == '*') {
                        for (p += 2; *p && !(p[0] == '*' && p[1] == '/'); p++)
                                line += *p == '\n';
                        p += *p ? 2 : 0;
                        continue;
                }
                if (c == '"') {
                        for (p++; *p && *p != '"'; p++) {
                                if (*p == '\\' && p[1])
                                        p++;
                                line += *p == '\n';
                        }
                        p += *p ? 1 : 0;
                        continue;
                }
                if (c == '@' && was_start && !strncmp(p, "@include", 8)) {
                        const char *q = p + 8;
                        while (*q == ' ' || *q == '\t')
                                q++;
                        if (*q == '"') {
                                const char *e = strchr(q + 1, '"');
                                if (e && !memchr(q + 1, '\n', (size_t)(e - q - 1))) {
                                        char inc[1024];
                                        int n = (int)(e - q - 1);
                                        /* libconfig 1.5 prepends the include
                                         * directory even to absolute paths. */
                                        if (q[1] == '/')
                                                return tb_seterr(
                                                        errstr, errstr_size, TB_ERR_INVALID,
                                                        "%s:%u: @include \"%.*s\": write the "
                                                        "path relative to %s (includes are "
                                                        "resolved from the main config "
                                                        "file's directory)",
                                                        file, line, n, q + 1, dir);
                                        tb_snprintf(inc, sizeof(inc), "%s/%.*s", dir, n,
                                                    q + 1);
                                        tb_err_t err = tb_config_prescan_file(
                                                dir, inc, depth + 1, errstr, errstr_size);
                                        if (err)
                                                return err;
                                }
                        }
                        while (*p && *p != '\n')
                                p++;
                        continue;
                }
                if (isalpha((unsigned char)c) || c == '*') {
                        while (isalnum((unsigned char)*p) || *p == '-' || *p == '_' ||
                               *p == '*')
                                p++;
                        continue;
                }
                if (isdigit((unsigned char)c) ||
                    ((c == '-' || c == '+') && isdigit((unsigned char)p[1]))) {
                        const char *tok = p;
                        p += c == '-' || c == '+';
                        bool hex = p[0] == '0' && (p[1] == 'x' || p[1] == 'X');
                        if (hex) {
                                p += 2;
                                while (isxdigit((unsigned char)*p))
                                        p++;
                        } else {
                                while (isdigit((unsigned char)*p))
                                        p++;
                                if (*p == '.' || *p == 'e' || *p == 'E') {
                                        /* a float: not our concern */
                                        while (isalnum((unsigned char)*p) || *p == '.' ||
                                               ((*p == '-' || *p == '+') &&
                                                (p[-1] == 'e' || p[-1] == 'E')))
                                                p++;
                                        continue;
                                }
                        }
                        if (*p == 'L' || *p == 'l')
                                p++;
                        tb_err_t err = tb_config_prescan_int(file, line, tok, p, errstr,
                                                             errstr_size);
                        if (err)
                                return err;
                        continue;
                }
                p++;
        }
        return TB_OK;
}

tb_err_t tb_config_prescan_file(const char *dir, const char *file, int depth,
                                char *errstr, size_t errstr_size) {
        /* Unreadable or too deep: libconfig's own error says it better. */
        if (depth > TB_CONFIG_INCLUDE_DEPTH_MAX)
                return TB_OK;
        FILE *fp = fopen(file, "r");
        if (!fp)
                return TB_OK;
        tb_buf_t buf = {0};
        char chunk[4096];
        size_t n;
        tb_err_t err = TB_OK;
        while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0) {
                if (tb_buf_append(&buf, chunk, n)) {
                        err = tb_seterr(errstr, errstr_size, TB_ERR_NOMEM, "out of memory");
                        break;
                }
        }
        fclose(fp);
        if (!err && buf.len && !memchr(buf.data, '\0', buf.len)) {
                if (!tb_buf_append(&buf, "", 1))
                        err = tb_config_prescan_text(dir, file, buf.data, depth, errstr,
                                                     errstr_size);
        }
        tb_buf_free(&buf);
        return err;
}
