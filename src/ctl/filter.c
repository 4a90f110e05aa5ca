/*
 * Which dead letters the dead commands act on. The admin API lists every dead letter of an
 * upstream, a page at a time, with the fields a filter needs (GET .../dead: "status", the
 * backend's last HTTP status or null; "age_seconds", since it was accepted; "error", the last
 * error); the filter is applied here, to what was listed. No I/O.
 *
 * @thread main
 */
#include "ctl.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

int sl_ctl_filter_set_status(struct sl_ctl_filter *f, const char *text) {
  if (strlen(text) != 3 || text[0] < '1' || text[0] > '5')
    return -1;
  if ((text[1] == 'x' || text[1] == 'X') && (text[2] == 'x' || text[2] == 'X')) {
    f->status_class = (unsigned)(text[0] - '0');
    f->status = 0;
  } else if (isdigit((unsigned char)text[1]) && isdigit((unsigned char)text[2])) {
    f->status = (unsigned)((text[0] - '0') * 100 + (text[1] - '0') * 10 + (text[2] - '0'));
    f->status_class = 0;
  } else {
    return -1;
  }
  f->has_status = true;
  return 0;
}

bool sl_ctl_filter_narrows(const struct sl_ctl_filter *f) {
  return f->upstream != NULL || f->id != NULL || f->has_status || f->has_older || f->has_newer ||
         f->reason != NULL;
}

/* Whether <needle> occurs in <haystack>, letters compared without case. */
static bool contains_nocase(const char *haystack, const char *needle) {
  size_t n = strlen(needle);

  for (; *haystack != '\0'; haystack++) {
    size_t i = 0;

    while (i < n && haystack[i] != '\0' &&
           tolower((unsigned char)haystack[i]) == tolower((unsigned char)needle[i]))
      i++;
    if (i == n)
      return true;
  }
  return n == 0;
}

bool sl_ctl_filter_match(const struct sl_ctl_filter *f, const json_t *dl) {
  if (f->id != NULL) {
    const char *id = json_string_value(json_object_get(dl, "id"));

    if (id == NULL || strcasecmp(id, f->id) != 0)
      return false;
  }
  if (f->has_status) {
    /* null: the last attempt got no answer (connect error, timeout); no status matches it */
    const json_t *st = json_object_get(dl, "status");
    json_int_t status = json_is_integer(st) ? json_integer_value(st) : 0;

    if (status == 0)
      return false;
    if (f->status_class != 0 ? status / 100 != (json_int_t)f->status_class
                             : status != (json_int_t)f->status)
      return false;
  }
  if (f->has_older || f->has_newer) {
    const json_t *age = json_object_get(dl, "age_seconds");
    double ms;

    if (!json_is_number(age))
      return false;
    ms = json_number_value(age) * 1e3;
    if (f->has_older && ms < (double)f->older_ms)
      return false;
    if (f->has_newer && ms > (double)f->newer_ms)
      return false;
  }
  if (f->reason != NULL) {
    const char *error = json_string_value(json_object_get(dl, "error"));

    if (error == NULL || !contains_nocase(error, f->reason))
      return false;
  }
  return true;
}
