/*
 * sluicectl status [UPSTREAM] [--watch] [--json]: GET /admin/upstreams as a table (with the
 * drain's progress bars on a terminal), or as the server's JSON. --watch asks again every
 * second and redraws: on a terminal the screen is cleared first; elsewhere each table (or
 * JSON document, one a line) follows the last, so that a log of it reads in order. Ctrl-C
 * ends a watch with status 0.
 *
 * @thread main
 */
#include "ctl.h"

#include <stdio.h>
#include <string.h>

#include "sluice/clock.h"

#define WATCH_INTERVAL_MS 1000

/* The document with only upstream <only> in its list (for --json); a new reference. */
static json_t *only_upstream(json_t *doc, const char *only) {
  json_t *list = json_object_get(doc, "upstreams"), *kept = json_array(), *u;
  size_t i;

  json_array_foreach(list, i, u) {
    const char *name = json_string_value(json_object_get(u, "name"));

    if (name != NULL && strcmp(name, only) == 0)
      json_array_append(kept, u);
  }
  return json_pack("{s:o}", "upstreams", kept);
}

static bool has_upstream(const json_t *doc, const char *name) {
  const json_t *u;
  size_t i;

  json_array_foreach(json_object_get(doc, "upstreams"), i, u) {
    const char *n = json_string_value(json_object_get(u, "name"));

    if (n != NULL && strcmp(n, name) == 0)
      return true;
  }
  return false;
}

/* Asks once and prints. */
static int show(struct sl_ctl *ctl) {
  const struct sl_ctl_args *a = ctl->args;
  json_t *doc;
  struct sl_buf out;
  int rc = sl_ctl_upstreams(ctl, &doc);

  if (rc != 0)
    return rc;
  if (a->upstream != NULL && !has_upstream(doc, a->upstream)) {
    sl_ctl_error("no upstream named %s", a->upstream);
    json_decref(doc);
    return SL_CTL_ENOTFOUND;
  }
  if (a->json) {
    json_t *shown = a->upstream != NULL ? only_upstream(doc, a->upstream) : json_incref(doc);

    sl_ctl_print_json(ctl, shown);
    json_decref(shown);
    json_decref(doc);
    return 0;
  }
  sl_buf_init(&out);
  if (a->watch) {
    char when[SL_CLOCK_RFC3339_LEN];

    /* On a terminal: clear the screen and go home, then draw. */
    sl_buf_printf(&out, "%severy %ds: sluicectl status (admin %s)   %s\n\n",
                  ctl->tty ? "\033[H\033[2J" : "", WATCH_INTERVAL_MS / 1000, ctl->target->admin,
                  sl_clock_format(sl_clock_wall_ms(), false, when));
  }
  sl_ctl_render_status(&out, doc, a->upstream, ctl->tty);
  if (a->watch && !ctl->tty)
    sl_buf_append_str(&out, "\n");
  fwrite(out.base, 1, out.len, stdout);
  fflush(stdout);
  sl_buf_dispose(&out);
  json_decref(doc);
  return 0;
}

static void on_tick(uv_timer_t *t) { (void)t; }

int sl_ctl_cmd_status(struct sl_ctl *ctl) {
  int rc;

  if (!ctl->args->watch)
    return show(ctl);
  for (;;) {
    rc = show(ctl);
    if (rc == SL_CTL_EINTERRUPTED || ctl->interrupted)
      return 0; /* Ctrl-C ends a watch: that is how it is meant to end */
    if (ferror(stdout))
      return 0; /* nobody reads any more (| head): nothing to say, and no one to say it to */
    if (rc != 0)
      return rc;
    /* Waits for the next round; Ctrl-C stops the timer and so ends the wait. */
    uv_timer_start(&ctl->tick, on_tick, WATCH_INTERVAL_MS, 0);
    uv_run(ctl->loop, UV_RUN_DEFAULT);
    if (ctl->interrupted)
      return 0;
  }
}
