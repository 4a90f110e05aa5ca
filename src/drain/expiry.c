/*
 * Expiry of a spilled request: its deadline from the route and the client,
 * and the internal field that keeps it in the spooled record. See
 * sluice/expiry.h.
 */
#include "sluice/expiry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sluice/units.h"

int sl_expiry_ttl(const char *header, uint64_t route_ttl_ms, uint64_t max_delay_ms,
                  const char *max_text, uint64_t *out, char *why, size_t len) {
  uint64_t v;

  *out = route_ttl_ms;
  if (header == NULL)
    return 0;
  if (sl_duration_parse(header, &v) != 0 || v == 0) {
    snprintf(why, len,
             "X-Sluice-Expires-After is not a duration greater than 0 such as 30s or 1h30m, or "
             "too large");
    return -1;
  }
  if (v > max_delay_ms) {
    snprintf(why, len, "X-Sluice-Expires-After is beyond limits.max_delay (%s)", max_text);
    return -1;
  }
  if (route_ttl_ms == 0 || v < route_ttl_ms)
    *out = v;
  return 0;
}

uint64_t sl_expiry_deadline(uint64_t now_ms, uint64_t ttl_ms) {
  return ttl_ms > UINT64_MAX - now_ms ? UINT64_MAX : now_ms + ttl_ms;
}

int sl_expiry_append(struct sl_buf *fields, uint64_t deadline_ms, bool drop) {
  return sl_buf_printf(fields, SL_EXPIRY_FIELD ": %llu %s\r\n", (unsigned long long)deadline_ms,
                       drop ? "drop" : "dead");
}

/* Whether the line [line, stop) is the internal field. */
static bool is_expiry_line(const char *line, const char *stop) {
  size_t n = sizeof(SL_EXPIRY_FIELD) - 1;

  return (size_t)(stop - line) > n && line[n] == ':' && strncasecmp(line, SL_EXPIRY_FIELD, n) == 0;
}

bool sl_expiry_get(const char *fields, size_t len, uint64_t *deadline_ms, bool *drop) {
  const char *end = fields + len;

  for (const char *line = fields; line < end;) {
    const char *eol = memchr(line, '\n', (size_t)(end - line));
    const char *stop = eol != NULL ? eol : end;

    if (is_expiry_line(line, stop)) {
      /* "<digits> dead|drop\r": short; copied so that strtoull stops in bounds. */
      char value[48], *p;
      const char *v = line + sizeof(SL_EXPIRY_FIELD);
      unsigned long long ms;

      while (v < stop && *v == ' ')
        v++;
      if (stop > v && stop[-1] == '\r')
        stop--;
      if ((size_t)(stop - v) >= sizeof(value) || v == stop || *v < '0' || *v > '9')
        return false;
      memcpy(value, v, (size_t)(stop - v));
      value[stop - v] = '\0';
      ms = strtoull(value, &p, 10);
      if (strcmp(p, " dead") == 0)
        *drop = false;
      else if (strcmp(p, " drop") == 0)
        *drop = true;
      else
        return false;
      *deadline_ms = ms;
      return true;
    }
    line = eol != NULL ? eol + 1 : end;
  }
  return false;
}

int sl_expiry_strip(struct sl_buf *out, const char *fields, size_t len) {
  const char *end = fields + len;
  int r = 0;

  for (const char *line = fields; line < end;) {
    const char *eol = memchr(line, '\n', (size_t)(end - line));
    const char *next = eol != NULL ? eol + 1 : end;

    if (!is_expiry_line(line, eol != NULL ? eol : end))
      r |= sl_buf_append(out, line, (size_t)(next - line));
    line = next;
  }
  return r ? -1 : 0;
}
