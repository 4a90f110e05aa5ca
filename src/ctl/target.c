/*
 * Where sluicectl talks to, and with which token: the flags, then the environment, then the
 * config file that sluice itself reads, through the project's config loader (so both read
 * admin.listen, admin.token, listen and status_prefix the same way, defaults included).
 *
 * Which file: the one -c names, which must load; else the default file when it exists
 * (SL_CTL_DEFAULT_CONFIG, as sluice's) and the flags and environment leave something to
 * take from it; else nothing, and the built-in defaults apply, which are sluice's own:
 * admin on 127.0.0.1:9464 without a token, the listener on 127.0.0.1:8080. A file in the
 * working directory is never picked up on its own: what sluicectl talks to does not depend
 * on where it was started.
 *
 * @thread main
 */
#include "ctl.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sluice/config.h"

#define BUILTIN_ADMIN "127.0.0.1:9464"
#define BUILTIN_LISTEN "127.0.0.1:8080"
#define BUILTIN_STATUS_PREFIX "/_sluice/requests/"

/*
 * Turns an address a server listens on into one a client connects to: every interface
 * (0.0.0.0, [::]) is reached on loopback. Writes the address as text into <text>.
 */
static void connectable(struct sockaddr_storage *sa, char *text, size_t len) {
  char host[INET6_ADDRSTRLEN];

  if (sa->ss_family == AF_INET) {
    struct sockaddr_in *s4 = (struct sockaddr_in *)sa;

    if (s4->sin_addr.s_addr == htonl(INADDR_ANY))
      s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
    snprintf(text, len, "%s:%u", host, ntohs(s4->sin_port));
  } else {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)sa;

    if (IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr))
      s6->sin6_addr = in6addr_loopback;
    inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
    snprintf(text, len, "[%s]:%u", host, ntohs(s6->sin6_port));
  }
}

/* Reads address <text> (<what> and <from> for the message) into <sa> and <out>. */
static int read_addr(const char *text, const char *what, const char *from,
                     struct sockaddr_storage *sa, char *out, size_t outlen, char *err,
                     size_t errlen) {
  const char *why = NULL;

  if (sl_config_parse_addr(text, true, sa, &why) != 0) {
    snprintf(err, errlen, "%s '%s' (%s): %s", what, text, from, why);
    return -1;
  }
  if ((sa->ss_family == AF_INET ? ((struct sockaddr_in *)sa)->sin_port
                                : ((struct sockaddr_in6 *)sa)->sin6_port) == 0) {
    snprintf(err, errlen,
             "%s '%s' (%s) has port 0, which sluice picks when it starts: give the port it "
             "logged with %s",
             what, text, from, strcmp(what, "the admin address") == 0 ? "--admin" : "--listen");
    return -1;
  }
  connectable(sa, out, outlen);
  return 0;
}

/* Whether the command talks to the client listener (status URLs). */
static bool uses_listener(const struct sl_ctl_args *a) {
  return a->command == SL_CTL_REQUEST || a->command == SL_CTL_CANCEL;
}

/* Whether the file is needed: something that neither a flag nor the environment gives (the
 * status URLs' prefix only the file gives). */
static bool needs_file(const struct sl_ctl_args *a, const char *env_token) {
  return a->admin == NULL || (a->token == NULL && env_token == NULL) || uses_listener(a);
}

int sl_ctl_target_resolve(const struct sl_ctl_args *args, char *(*getenv_fn)(const char *),
                          struct sl_ctl_target *t, char *err, size_t errlen) {
  const char *env_token = getenv_fn(SL_CTL_TOKEN_ENV);
  const char *path = args->config;
  const char *admin = BUILTIN_ADMIN, *listen = BUILTIN_LISTEN;
  const char *admin_from = "built-in default", *listen_from = "built-in default";
  const char *token = NULL, *prefix = BUILTIN_STATUS_PREFIX;
  struct sl_config *cfg = NULL;
  char cfg_err[1024];
  int rc = SL_CTL_ECONFIG;

  memset(t, 0, sizeof(*t));
  if (env_token != NULL && env_token[0] == '\0')
    env_token = NULL;
  if (path == NULL && needs_file(args, env_token) && access(SL_CTL_DEFAULT_CONFIG, F_OK) == 0)
    path = SL_CTL_DEFAULT_CONFIG;
  if (path != NULL) {
    if (sl_config_load(path, &cfg, cfg_err, sizeof(cfg_err)) != 0) {
      bool unreadable = access(path, R_OK) != 0;

      snprintf(err, errlen, "%s%s", cfg_err,
               unreadable ? " (run as a user who may read it, or give --admin and --token)" : "");
      return SL_CTL_ECONFIG;
    }
    if ((t->config = strdup(path)) == NULL)
      goto nomem;
    admin = cfg->admin.listen.text;
    listen = cfg->listen.text;
    admin_from = "admin.listen in the config";
    listen_from = "listen in the config";
    token = cfg->admin.token[0] != '\0' ? cfg->admin.token : NULL;
    t->token_from = "admin.token in the config";
    prefix = cfg->status_prefix;
  }
  if (env_token != NULL) {
    token = env_token;
    t->token_from = "$" SL_CTL_TOKEN_ENV;
  }
  if (args->token != NULL) {
    token = args->token[0] != '\0' ? args->token : NULL;
    t->token_from = "--token";
  }
  if (args->admin != NULL) {
    admin = args->admin;
    admin_from = "--admin";
  }
  if (args->listen != NULL) {
    listen = args->listen;
    listen_from = "--listen";
  }
  rc = SL_CTL_EUSAGE;
  if (read_addr(admin, "the admin address", admin_from, &t->admin_sa, t->admin, sizeof(t->admin),
                err, errlen) != 0 ||
      (uses_listener(args) && read_addr(listen, "the listener address", listen_from, &t->listen_sa,
                                        t->listen, sizeof(t->listen), err, errlen) != 0))
    goto fail;
  if ((token != NULL && (t->token = strdup(token)) == NULL) ||
      (t->status_prefix = strdup(prefix)) == NULL)
    goto nomem;
  sl_config_unref(cfg);
  return 0;
nomem:
  snprintf(err, errlen, "out of memory");
  rc = SL_CTL_EFAILED;
fail:
  sl_config_unref(cfg);
  sl_ctl_target_dispose(t);
  return rc;
}

void sl_ctl_target_dispose(struct sl_ctl_target *t) {
  free(t->token);
  free(t->status_prefix);
  free(t->config);
  t->token = t->status_prefix = t->config = NULL;
}
