/*
 * sluice: wiring only. Parses the command line, loads the config, starts the
 * server on one libuv loop and maps signals: SIGTERM/SIGINT to a graceful
 * shutdown, SIGHUP to a reload (parsed on the threadpool, so the loop never
 * waits on the file).
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
#include "sluice/metrics.h"
#include "sluice/server.h"

#define DEFAULT_CONFIG "/etc/sluice/sluice.conf"

struct reload_job {
  uv_work_t req;
  char *path;
  struct sl_config *cfg;
  char err[512];
};

static struct sl_server *server;
static struct sl_admin *admin;
static uv_signal_t sig_term, sig_int, sig_hup;
static const char *config_path = DEFAULT_CONFIG;
static bool reload_running;
static struct sl_metric *reloads_ok, *reloads_failed;
static bool reload_again;

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

static void start_reload(void);

static void reload_work(uv_work_t *req) {
  struct reload_job *job = req->data;

  if (sl_config_load(job->path, &job->cfg, job->err, sizeof(job->err)) != 0)
    job->cfg = NULL;
}

static void reload_done(uv_work_t *req, int status) {
  struct reload_job *job = req->data;

  reload_running = false;
  if (status == 0 && job->cfg != NULL && server != NULL) {
    sl_log_set_level(job->cfg->log.level);
    sl_server_reload(server, job->cfg);
    sl_admin_set_config(admin, job->cfg);
    sl_metrics_inc(reloads_ok);
    sl_log_info("reloaded %s", job->path);
  } else if (job->cfg == NULL) {
    sl_metrics_inc(reloads_failed);
    sl_log_error("reload failed, keeping the running config: %s", job->err);
  }
  sl_config_unref(job->cfg);
  free(job->path);
  free(job);
  if (reload_again) {
    reload_again = false;
    start_reload();
  }
}

static void start_reload(void) {
  struct reload_job *job;

  if (reload_running) {
    reload_again = true; /* a HUP during a reload: read the file once more after */
    return;
  }
  job = calloc(1, sizeof(*job));
  if (job == NULL || (job->path = strdup(config_path)) == NULL) {
    free(job);
    sl_log_error("reload: out of memory");
    return;
  }
  job->req.data = job;
  if (uv_queue_work(uv_default_loop(), &job->req, reload_work, reload_done) != 0) {
    free(job->path);
    free(job);
    return;
  }
  reload_running = true;
}

static void on_signal(uv_signal_t *h, int signum) {
  (void)h;
  if (signum == SIGHUP) {
    sl_log_info("SIGHUP: reloading %s", config_path);
    start_reload();
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

  {
    static const char *const result[] = {"result", NULL};
    struct sl_metric_family *f =
        sl_metrics_family(sl_metrics_default(), SL_METRIC_COUNTER, "sluice_config_reloads_total",
                          "Config reloads (SIGHUP) by result.", result);
    reloads_ok = f ? sl_metrics_series(f, (const char *[]){"success"}) : NULL;
    reloads_failed = f ? sl_metrics_series(f, (const char *[]){"failure"}) : NULL;
  }
  if (reloads_ok == NULL || reloads_failed == NULL ||
      sl_metrics_register_process(sl_metrics_default()) != 0) {
    sl_log_error("out of memory");
    return 1;
  }
  server = sl_server_create(loop, cfg);
  admin = sl_admin_create(loop, cfg, sl_metrics_default());
  sl_config_unref(cfg);
  if (server == NULL || admin == NULL || sl_server_register_admin(server, admin) != 0 ||
      sl_server_start(server) != 0 || sl_admin_start(admin) != 0) {
    sl_server_destroy(server);
    sl_admin_destroy(admin);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
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
  sl_metrics_default_destroy();
  return 0;
}
