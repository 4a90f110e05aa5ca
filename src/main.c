/*
 * sluice: wiring only. Parses the command line, loads the config, starts the
 * server on one libuv loop and maps signals: SIGTERM/SIGINT to a graceful
 * shutdown, SIGHUP to a reload (the server reads the file and opens new
 * spools on the threadpool, so the loop never waits on the disk), SIGUSR1 to
 * reopening the log files (on the threadpool too: opening a file may block).
 * Around them: the pid file, and the service manager's notifications
 * (READY, RELOADING, STOPPING) for systemd's Type=notify.
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
#include "sluice/notify.h"
#include "sluice/pidfile.h"
#include "sluice/server.h"

/* The build's SLUICE_CONFIG_FILE (CMakeLists.txt), which the systemd unit names too. */
#ifndef DEFAULT_CONFIG
#define DEFAULT_CONFIG "/etc/sluice/sluice.conf"
#endif

static struct sl_server *server;
static struct sl_admin *admin;
static uv_signal_t sig_term, sig_int, sig_hup, sig_usr1;
static const char *config_path = DEFAULT_CONFIG;
static char *pid_file; /* the one written at start-up, removed at exit; NULL: none */

/* ---- log files ---------------------------------------------------------- */

/* One reopening of both log outputs at the paths it copied when it was asked for; one runs
 * at a time, and a request that comes meanwhile runs once after it. */
struct log_job {
  uv_work_t req;
  char *paths[2]; /* log.file, log.access_file; NULL: the standard stream */
};
static char *log_paths[2]; /* those of the running config */
static bool log_job_busy, log_job_again;

/* Replaces the two paths <dst> by copies of <src> (NULL stays NULL). Returns 0, or -1 when
 * out of memory, leaving <dst> as it was. */
static int copy_paths(char *dst[2], char *const src[2]) {
  char *copy[2] = {NULL, NULL};

  for (int i = 0; i < 2; i++) {
    if (src[i] != NULL && (copy[i] = strdup(src[i])) == NULL) {
      free(copy[0]);
      return -1;
    }
  }
  for (int i = 0; i < 2; i++) {
    free(dst[i]);
    dst[i] = copy[i];
  }
  return 0;
}

static int set_log_paths(const struct sl_config *cfg) {
  return copy_paths(log_paths, (char *const[2]){cfg->log.file, cfg->log.access_file});
}

static void log_job_free(struct log_job *job) {
  free(job->paths[0]);
  free(job->paths[1]);
  free(job);
}

static void log_job_work(uv_work_t *req) {
  struct log_job *job = req->data;
  static const char *const names[] = {"error log (log.file)", "access log (log.access_file)"};
  char err[512];
  int failed = 0;

  for (int i = 0; i < 2; i++) {
    if (sl_log_output_set((enum sl_log_output)i, job->paths[i], err, sizeof(err)) != 0) {
      sl_log_error("cannot reopen the %s, it goes on where it was: %s", names[i], err);
      failed++;
    }
  }
  if (failed == 0)
    sl_log_info("log files reopened");
}

static void reopen_logs(void);

static void log_job_done(uv_work_t *req, int status) {
  (void)status;
  log_job_free(req->data);
  log_job_busy = false;
  if (log_job_again) {
    log_job_again = false;
    reopen_logs();
  }
}

static void reopen_logs(void) {
  struct log_job *job;

  if (log_job_busy) {
    log_job_again = true;
    return;
  }
  job = calloc(1, sizeof(*job));
  if (job == NULL || copy_paths(job->paths, log_paths) != 0) {
    sl_log_error("cannot reopen the log files: out of memory");
    if (job != NULL)
      log_job_free(job);
    return;
  }
  job->req.data = job;
  if (uv_queue_work(uv_default_loop(), &job->req, log_job_work, log_job_done) != 0) {
    sl_log_error("cannot reopen the log files: the threadpool refused the job");
    log_job_free(job);
    return;
  }
  log_job_busy = true;
}

/* At start-up, before the loop runs: both outputs to the config's files. */
static int open_logs(const struct sl_config *cfg) {
  char err[512];

  if (set_log_paths(cfg) != 0) {
    fprintf(stderr, "sluice: out of memory\n");
    return -1;
  }
  if (sl_log_output_set(SL_LOG_OUTPUT_ERROR, cfg->log.file, err, sizeof(err)) != 0 ||
      sl_log_output_set(SL_LOG_OUTPUT_ACCESS, cfg->log.access_file, err, sizeof(err)) != 0) {
    fprintf(stderr, "sluice: cannot open a log file: %s\n", err);
    return -1;
  }
  return 0;
}

/* ---- start-up and exit ----------------------------------------------------- */

/* Before anything is opened: the pid file is free for this process, the log files open. */
static int claim_files(const struct sl_config *cfg) {
  char err[512];

  if (cfg->pid_file != NULL) {
    if (sl_pidfile_check(cfg->pid_file, err, sizeof(err)) != 0) {
      fprintf(stderr, "sluice: %s\n", err);
      return -1;
    }
    if ((pid_file = strdup(cfg->pid_file)) == NULL) {
      fprintf(stderr, "sluice: out of memory\n");
      return -1;
    }
  }
  return open_logs(cfg);
}

/* Once start-up succeeded. */
static int write_pid_file(void) {
  char err[512];

  if (pid_file == NULL)
    return 0;
  if (sl_pidfile_write(pid_file, err, sizeof(err)) != 0) {
    sl_log_error("%s", err);
    return -1;
  }
  return 0;
}

static void free_files(void) {
  free(pid_file);
  free(log_paths[0]);
  free(log_paths[1]);
}

static void usage(FILE *out) {
  fprintf(out, "usage: sluice [-t] [-c FILE]\n"
               "  -c, --config FILE  configuration file (default " DEFAULT_CONFIG ")\n"
               "  -t, --test         check the configuration and exit (0 valid, 1 not)\n"
               "  -v, --version      print the version and exit\n"
               "  -h, --help         print this help and exit\n"
               "signals: TERM/INT graceful shutdown, HUP reload the configuration,\n"
               "         USR1 reopen the log files\n");
}

/* ---- signals ------------------------------------------------------------ */

static void close_signals(void) {
  uv_close((uv_handle_t *)&sig_term, NULL);
  uv_close((uv_handle_t *)&sig_int, NULL);
  uv_close((uv_handle_t *)&sig_hup, NULL);
  uv_close((uv_handle_t *)&sig_usr1, NULL);
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
  sl_notify("READY=1");
  if (status != 0)
    return;
  sl_log_set_level(cfg->log.level);
  if (sl_admin_set_config(admin, cfg) != 0)
    sl_log_error("reload: the admin listener keeps its previous token (out of memory)");
  /* The log files follow the config (a new path applies now); the pid file, like listen,
   * stays the one written at start-up. */
  if (set_log_paths(cfg) != 0)
    sl_log_error("reload: the log files stay where they are (out of memory)");
  else
    reopen_logs();
  if ((pid_file == NULL) != (cfg->pid_file == NULL) ||
      (pid_file != NULL && strcmp(pid_file, cfg->pid_file) != 0))
    sl_log_warn("reload: a changed pid_file applies at the next restart; the pid file stays %s",
                pid_file != NULL ? pid_file : "(none)");
}

static void shut_down(const char *why);

static void on_signal(uv_signal_t *h, int signum) {
  (void)h;
  if (server == NULL)
    return;
  if (signum == SIGUSR1) {
    sl_log_info("SIGUSR1: reopening the log files");
    reopen_logs();
    return;
  }
  if (signum == SIGHUP) {
    sl_log_info("SIGHUP: reloading %s", config_path);
    sl_notify_reloading();
    sl_server_reload(server, config_path, on_reloaded, NULL);
    return;
  }
  shut_down(signum == SIGINT ? "SIGINT" : "SIGTERM");
}

static void shut_down(const char *why) {
  sl_log_info("%s: graceful shutdown", why);
  sl_notify("STOPPING=1");
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
  int status = 0;
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
  if (claim_files(cfg) != 0) {
    sl_config_unref(cfg);
    free_files();
    return 1;
  }

  if (sl_metrics_register_process(sl_metrics_default()) != 0) {
    sl_log_error("out of memory");
    sl_config_unref(cfg);
    free_files();
    return 1;
  }
  lp = malloc(sizeof(*lp));
  if (lp == NULL) {
    sl_log_error("out of memory");
    sl_config_unref(cfg);
    free_files();
    return 1;
  }
  sl_loop_init(lp, loop);
  server = sl_server_create(lp, cfg);
  admin = sl_admin_create(lp, cfg, sl_metrics_default());
  if (cfg->admin.token[0] == '\0')
    sl_log_warn("admin.token is empty: every local process may use the admin API on %s "
                "(set admin.token or admin.token_file)",
                cfg->admin.listen.text);
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
    free_files();
    return 1;
  }
  uv_signal_init(loop, &sig_term);
  uv_signal_init(loop, &sig_int);
  uv_signal_init(loop, &sig_hup);
  uv_signal_init(loop, &sig_usr1);
  uv_signal_start(&sig_term, on_signal, SIGTERM);
  uv_signal_start(&sig_int, on_signal, SIGINT);
  uv_signal_start(&sig_hup, on_signal, SIGHUP);
  uv_signal_start(&sig_usr1, on_signal, SIGUSR1);
  /* Only now that SIGUSR1 has its handler: a pid file read by logrotate must not name a
   * process that the signal would still kill. */
  if (write_pid_file() != 0) {
    status = 1;
    shut_down("no pid file");
  } else {
    sl_log_info("sluice %s started (config %s)", SLUICE_VERSION, config_path);
    /* The listeners are bound and the spools open: systemd may start what depends on us. */
    sl_notify("READY=1");
  }

  uv_run(loop, UV_RUN_DEFAULT);
  uv_loop_close(loop);
  free(lp);
  sl_metrics_default_destroy();
  if (pid_file != NULL)
    sl_pidfile_remove(pid_file);
  free_files();
  return status;
}
