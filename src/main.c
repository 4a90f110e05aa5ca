/*
 * sluice: wiring only. Parses the command line, loads the config, starts the
 * server on one libuv loop and maps signals: SIGTERM/SIGINT to a graceful
 * shutdown, SIGHUP to a reload (the server reads the file and opens new
 * spools on the threadpool, so the loop never waits on the disk).
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "sluice/admin.h"
#include "sluice/config.h"
#include "sluice/log.h"
#include "sluice/loop.h"
#include "sluice/metrics.h"
#include "sluice/server.h"

#define DEFAULT_CONFIG "/etc/sluice/sluice.conf"

static struct sl_server *server;
static struct sl_admin *admin;
static uv_signal_t sig_term, sig_int, sig_hup;
static const char *config_path = DEFAULT_CONFIG;

static void usage(FILE *out) {
  fprintf(out, "usage: sluice [-t] [-c FILE]\n"
               "  -c, --config FILE  configuration file (default " DEFAULT_CONFIG ")\n"
               "  -t, --test         check the configuration and exit (0 valid, 1 not)\n"
               "  -v, --version      print the version and exit\n"
               "  -h, --help         print this help and exit\n"
               "signals: TERM/INT graceful shutdown, HUP reload the configuration\n");
}

static void close_signals(void) {
  uv_close((uv_handle_t *)&sig_term, NULL);
  uv_close((uv_handle_t *)&sig_int, NULL);
  uv_close((uv_handle_t *)&sig_hup, NULL);
}

static void on_shutdown_done(struct sl_server *srv) {
  sl_log_info("shutdown complete");
  sl_server_destroy(srv);
  server = NULL;
  sl_admin_close(admin, NULL, NULL);
  admin = NULL;
  close_signals();
}

/* After a reload switched the server to <cfg>: the settings main applies itself. The
 * server has logged and counted the outcome either way. */
static void on_reloaded(struct sl_server *srv, const struct sl_config *cfg, int status,
                        const char *error, void *arg) {
  (void)srv;
  (void)error;
  (void)arg;
  if (status != 0)
    return;
  sl_log_set_level(cfg->log.level);
  if (sl_admin_set_config(admin, cfg) != 0)
    sl_log_error("reload: the admin listener keeps its previous token (out of memory)");
}

static void on_signal(uv_signal_t *h, int signum) {
  (void)h;
  if (signum == SIGHUP) {
    if (server == NULL)
      return;
    sl_log_info("SIGHUP: reloading %s", config_path);
    sl_server_reload(server, config_path, on_reloaded, NULL);
    return;
  }
  if (server == NULL)
    return;
  sl_log_info("%s: graceful shutdown", signum == SIGINT ? "SIGINT" : "SIGTERM");
  /* Load balancers watching /readyz stop sending while requests drain. */
  sl_admin_set_ready(admin, false, "shutting down");
  sl_server_shutdown(server, on_shutdown_done);
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"config", required_argument, NULL, 'c'},
      {"test", no_argument, NULL, 't'},
      {"version", no_argument, NULL, 'v'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  struct sl_config *cfg;
  char err[512];
  bool test_only = false;
  uv_loop_t *loop = uv_default_loop();
  struct sl_loop *lp; /* the loop's context: its read buffer (sluice/loop.h) */
  int c;

  while ((c = getopt_long(argc, argv, "c:tvh", opts, NULL)) != -1) {
    switch (c) {
    case 'c':
      config_path = optarg;
      break;
    case 't':
      test_only = true;
      break;
    case 'v':
      printf("sluice %s\n", SLUICE_VERSION);
      return 0;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 1;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "sluice: unexpected argument '%s'\n", argv[optind]);
    usage(stderr);
    return 1;
  }
  if (sl_config_load(config_path, &cfg, err, sizeof(err)) != 0) {
    fprintf(stderr, "%s\n", err);
    if (test_only)
      fprintf(stderr, "sluice: configuration file %s test failed\n", config_path);
    return 1;
  }
  if (test_only) {
    fprintf(stderr, "sluice: configuration file %s test is successful\n", config_path);
    sl_config_unref(cfg);
    return 0;
  }
  sl_log_set_level(cfg->log.level);
  signal(SIGPIPE, SIG_IGN);

  if (sl_metrics_register_process(sl_metrics_default()) != 0) {
    sl_log_error("out of memory");
    return 1;
  }
  lp = malloc(sizeof(*lp));
  if (lp == NULL) {
    sl_log_error("out of memory");
    sl_config_unref(cfg);
    return 1;
  }
  sl_loop_init(lp, loop);
  server = sl_server_create(lp, cfg);
  admin = sl_admin_create(lp, cfg, sl_metrics_default());
  sl_config_unref(cfg);
  if (server == NULL || admin == NULL || sl_server_register_admin(server, admin) != 0 ||
      sl_server_register_reload_admin(server, admin, config_path, on_reloaded, NULL) != 0 ||
      sl_server_start(server) != 0 || sl_admin_start(admin) != 0) {
    sl_server_destroy(server);
    sl_admin_destroy(admin);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    free(lp);
    sl_metrics_default_destroy();
    return 1;
  }
  uv_signal_init(loop, &sig_term);
  uv_signal_init(loop, &sig_int);
  uv_signal_init(loop, &sig_hup);
  uv_signal_start(&sig_term, on_signal, SIGTERM);
  uv_signal_start(&sig_int, on_signal, SIGINT);
  uv_signal_start(&sig_hup, on_signal, SIGHUP);
  sl_log_info("sluice %s started (config %s)", SLUICE_VERSION, config_path);

  uv_run(loop, UV_RUN_DEFAULT);
  uv_loop_close(loop);
  free(lp);
  sl_metrics_default_destroy();
  return 0;
}
