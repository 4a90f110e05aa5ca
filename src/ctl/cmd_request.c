/*
 * sluicectl request ID and cancel ID: a spilled request's status URL on the client listener
 * (listen and status_prefix of the config, or --listen), as a client would use it: GET for
 * its status, DELETE (with the admin token) to cancel it while it is queued or delayed.
 *
 * @thread main
 */
#include "ctl.h"

#include <stdio.h>
#include <string.h>

int sl_ctl_cmd_request(struct sl_ctl *ctl) {
  const struct sl_ctl_args *a = ctl->args;
  bool cancel = a->command == SL_CTL_CANCEL;
  char target[512], not_found[128];
  struct sl_ctl_call call = {.on_listener = true,
                             .method = cancel ? "DELETE" : "GET",
                             .target = target,
                             .token = cancel,
                             .not_found = not_found,
                             .own_errors = cancel};
  struct sl_buf out;
  json_t *doc;
  unsigned status = 0;
  int rc;

  snprintf(target, sizeof(target), "%s%s", ctl->target->status_prefix, a->id);
  snprintf(not_found, sizeof(not_found), "no request with id %s", a->id);
  rc = sl_ctl_call(ctl, &call, &doc, &status);
  if (rc != 0)
    return rc;
  if (cancel && status != 200) {
    if (status == 404) {
      sl_ctl_error("%s", not_found);
      rc = SL_CTL_ENOTFOUND;
    } else if (status == 409) {
      sl_ctl_error("request %s cannot be cancelled: it is %s", a->id,
                   json_string_value(json_object_get(doc, "status"))
                       ? json_string_value(json_object_get(doc, "status"))
                       : "past cancelling");
      rc = SL_CTL_EFAILED;
    } else {
      sl_ctl_error("%s (%u from the listener %s)", sl_ctl_doc_error(doc, "failed"), status,
                   ctl->client.host);
      rc = SL_CTL_EFAILED;
    }
    if (a->json && status == 409)
      sl_ctl_print_json(ctl, doc);
    json_decref(doc);
    return rc;
  }
  if (a->json) {
    sl_ctl_print_json(ctl, doc);
  } else if (cancel) {
    printf("cancelled %s: it will not be delivered\n", a->id);
  } else {
    sl_buf_init(&out);
    sl_ctl_render_request(&out, doc);
    fwrite(out.base, 1, out.len, stdout);
    sl_buf_dispose(&out);
  }
  json_decref(doc);
  return 0;
}
