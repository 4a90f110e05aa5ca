/*
 * sluicectl: wiring only. Reads the command line, finds the admin listener and the token,
 * runs the command on one libuv loop and exits with its status (sluicectl(1) lists them).
 * Ctrl-C interrupts the call under way and the wait of --watch.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "ctl.h"

static void on_sigint(uv_signal_t *h, int signum) {
  struct sl_ctl *ctl = h->data;

  (void)signum;
  ctl->interrupted = true;
  sl_ctl_http_abort(&ctl->admin);
  sl_ctl_http_abort(&ctl->client);
  uv_timer_stop(&ctl->tick);
}

static int run(struct sl_ctl *ctl) {
  switch (ctl->args->command) {
  case SL_CTL_STATUS:
    return sl_ctl_cmd_status(ctl);
  case SL_CTL_PAUSE:
  case SL_CTL_RESUME:
  case SL_CTL_RATE:
    return sl_ctl_cmd_upstream(ctl);
  case SL_CTL_RELOAD:
    return sl_ctl_cmd_reload(ctl);
  case SL_CTL_DEAD_LIST:
  case SL_CTL_DEAD_SHOW:
  case SL_CTL_DEAD_REDRIVE:
  case SL_CTL_DEAD_PURGE:
    return sl_ctl_cmd_dead(ctl);
  case SL_CTL_REQUEST:
  case SL_CTL_CANCEL:
    return sl_ctl_cmd_request(ctl);
  default:
    return SL_CTL_EUSAGE;
  }
}

int main(int argc, char **argv) {
  struct sl_ctl_args args;
  struct sl_ctl_target target;
  struct sl_ctl ctl = {0};
  char err[1280];
  int rc;

  if (sl_ctl_args_parse(argc, argv, &args, err, sizeof(err)) != 0) {
    fprintf(
        stderr,
        "sluicectl: %s\nusage: sluicectl [OPTIONS] COMMAND [ARGS] (sluicectl --help lists them)\n",
        err);
    return SL_CTL_EUSAGE;
  }
  if (args.command == SL_CTL_HELP) {
    fputs(sl_ctl_usage, stdout);
    return 0;
  }
  if (args.command == SL_CTL_VERSION) {
    printf("sluicectl %s\n", SLUICE_VERSION);
    return 0;
  }
  rc = sl_ctl_target_resolve(&args, getenv, &target, err, sizeof(err));
  if (rc != 0) {
    fprintf(stderr, "sluicectl: %s\n", err);
    return rc;
  }
  signal(SIGPIPE, SIG_IGN);
  ctl.args = &args;
  ctl.target = &target;
  ctl.loop = uv_default_loop();
  ctl.tty = isatty(STDOUT_FILENO);
  ctl.err_tty = isatty(STDERR_FILENO);
  sl_ctl_http_init(&ctl.admin, ctl.loop, &target.admin_sa, target.admin, args.timeout_ms);
  sl_ctl_http_init(&ctl.client, ctl.loop, &target.listen_sa, target.listen, args.timeout_ms);
  uv_timer_init(ctl.loop, &ctl.tick);
  uv_signal_init(ctl.loop, &ctl.sigint);
  ctl.sigint.data = &ctl;
  uv_signal_start(&ctl.sigint, on_sigint, SIGINT);
  uv_unref((uv_handle_t *)&ctl.sigint); /* it must not keep a loop run going by itself */

  rc = run(&ctl);

  sl_ctl_http_dispose(&ctl.admin);
  sl_ctl_http_dispose(&ctl.client);
  uv_close((uv_handle_t *)&ctl.tick, NULL);
  uv_close((uv_handle_t *)&ctl.sigint, NULL);
  uv_run(ctl.loop, UV_RUN_DEFAULT);
  uv_loop_close(ctl.loop);
  sl_ctl_target_dispose(&target);
  return rc;
}
