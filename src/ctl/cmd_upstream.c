/*
 * The commands that steer: sluicectl pause|resume UPSTREAM, rate UPSTREAM N and reload.
 * Each is one POST to the admin API; its answer (the upstream's state, or how the reload
 * ended) is printed as a line, or as the server's JSON with --json.
 *
 * A reload waits for the reload to end (POST /admin/reload answers then, within a minute),
 * so it has a longer timeout of its own unless --timeout says otherwise.
 *
 * @thread main
 */
#include "ctl.h"

#include <stdio.h>
#include <string.h>

#define RELOAD_TIMEOUT_MS 65000 /* the admin listener's own wait (60 s), and some */

int sl_ctl_cmd_upstream(struct sl_ctl *ctl) {
  const struct sl_ctl_args *a = ctl->args;
  const char *action = a->command == SL_CTL_PAUSE    ? "pause"
                       : a->command == SL_CTL_RESUME ? "resume"
                                                     : "rate";
  char target[512], not_found[256], rate[64] = "";
  struct sl_ctl_call call = {.method = "POST", .target = target, .not_found = not_found};
  json_t *doc;
  int rc;

  if (!sl_ctl_path_segment_ok(a->upstream)) {
    sl_ctl_error("no upstream named %s (a name with such characters cannot be one)", a->upstream);
    return SL_CTL_ENOTFOUND;
  }
  if (a->command == SL_CTL_RATE)
    snprintf(rate, sizeof(rate), "?value=%.17g", a->rate);
  snprintf(target, sizeof(target), "/admin/upstreams/%s/%s%s", a->upstream, action, rate);
  snprintf(not_found, sizeof(not_found), "no upstream named %s", a->upstream);
  rc = sl_ctl_call(ctl, &call, &doc, NULL);
  if (rc != 0)
    return rc;
  if (a->json) {
    sl_ctl_print_json(ctl, doc);
  } else if (a->command == SL_CTL_RATE) {
    const json_t *r = json_object_get(doc, "rate");

    printf("%s: rate %g requests/s until the next reload\n", a->upstream,
           json_is_number(r) ? json_number_value(r) : a->rate);
  } else {
    printf("%s: %s (%s)\n", a->upstream, a->command == SL_CTL_PAUSE ? "paused" : "resumed",
           a->command == SL_CTL_PAUSE ? "spilling goes on, replay stops"
                                      : "replay goes on at its rate");
  }
  json_decref(doc);
  return 0;
}

int sl_ctl_cmd_reload(struct sl_ctl *ctl) {
  const struct sl_ctl_call call = {.method = "POST", .target = "/admin/reload", .own_errors = true};
  json_t *doc;
  unsigned status = 0;
  int rc;

  if (!ctl->args->timeout_given)
    ctl->admin.timeout_ms = RELOAD_TIMEOUT_MS;
  rc = sl_ctl_call(ctl, &call, &doc, &status);
  if (rc != 0)
    return rc;
  if (ctl->args->json)
    sl_ctl_print_json(ctl, doc);
  if (status == 200) {
    if (!ctl->args->json)
      printf("reloaded: the new config applies (reloads since the start: %lld succeeded, %lld "
             "failed)\n",
             (long long)json_integer_value(json_object_get(doc, "successes")),
             (long long)json_integer_value(json_object_get(doc, "failures")));
    rc = 0;
  } else if (status == 404 || status == 405) {
    sl_ctl_error("the admin listener %s has no POST /admin/reload: this sluice is older than "
                 "sluicectl; send it SIGHUP",
                 ctl->admin.host);
    rc = SL_CTL_EFAILED;
  } else {
    sl_ctl_error("reload %s, the running config stays: %s", status == 422 ? "refused" : "failed",
                 sl_ctl_doc_error(doc, "unknown error"));
    rc = SL_CTL_EFAILED;
  }
  json_decref(doc);
  return rc;
}
