/*
 * The web console on the admin listener: GET /ui answers one page (console.html) and
 * GET /ui/<name> the files it loads (console.css, console.js, icon.svg), all of them from
 * src/admin/console/, compiled into the binary by scripts/embed.cmake (sl__admin_files).
 *
 * The page is a client of this listener and nothing else: it reads /metrics every second
 * and calls the admin API (/admin/upstreams/...) with the token the operator types in. So
 * the routes here are not behind the token: they hand out files that hold no secret, and
 * everything the page reads or changes passes the API's own token check.
 *
 * Every answer forbids what the page does not need, so that a page injected into it (a
 * dead letter's target shown in the list, say) could not run: a Content-Security-Policy
 * that takes scripts, styles, images and requests from this origin only (no inline script
 * or style, no eval, no frames, no forms posted elsewhere), nosniff, and no Referer. The
 * listener marks every answer "Cache-Control: no-store" (server.c), which also keeps a
 * browser from running an old console against an upgraded sluice.
 *
 * @thread loop
 */
#include "admin_int.h"

#include <string.h>

#include "sluice/util.h"

#define CONSOLE_PAGE "console.html"

static const char csp[] = "default-src 'none'; script-src 'self'; style-src 'self'; "
                          "img-src 'self'; connect-src 'self'; base-uri 'none'; "
                          "form-action 'none'; frame-ancestors 'none'";

/* The Content-Type of a file by the end of its name. */
static const char *content_type(const char *name) {
  static const struct {
    const char *ext, *type;
  } types[] = {
      {".html", "text/html; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".svg", "image/svg+xml"},
  };
  size_t n = strlen(name);

  for (size_t i = 0; i < sl_countof(types); i++) {
    size_t e = strlen(types[i].ext);

    if (n > e && strcmp(name + n - e, types[i].ext) == 0)
      return types[i].type;
  }
  return "application/octet-stream";
}

/* The embedded file called <name> (<len> bytes, not NUL-terminated), or NULL. */
static const struct sl__admin_file *find_file(const char *name, size_t len) {
  for (size_t i = 0; i < sl__admin_n_files; i++) {
    if (strlen(sl__admin_files[i].name) == len && memcmp(sl__admin_files[i].name, name, len) == 0)
      return &sl__admin_files[i];
  }
  return NULL;
}

/* Answers <resp> with file <f> and the console's security headers. */
static void serve(struct sl_admin_response *resp, const struct sl__admin_file *f) {
  int r = 0;

  resp->content_type = content_type(f->name);
  r |= sl_admin_response_header(resp, "Content-Security-Policy", csp);
  r |= sl_admin_response_header(resp, "X-Content-Type-Options", "nosniff");
  r |= sl_admin_response_header(resp, "Referrer-Policy", "no-referrer");
  r |= sl_buf_append(&resp->body, f->data, f->len);
  if (r != 0) {
    sl_buf_reset(&resp->headers);
    sl_admin_response_error(resp, 500, "out of memory");
  }
}

/* GET /ui: the page. */
static void on_page(const struct sl_admin_request *req, struct sl_admin_response *resp, void *arg) {
  const struct sl__admin_file *f = find_file(CONSOLE_PAGE, strlen(CONSOLE_PAGE));

  (void)req;
  (void)arg;
  if (f == NULL) { /* a build whose console directory lost its page */
    sl_admin_response_error(resp, 500, "the console page is missing from this build");
    return;
  }
  serve(resp, f);
}

/* GET /ui/<name>: a file of the page; /ui/ itself sends the browser to /ui. The names are
 * compared whole with those of the embedded files, so no path can reach anything else. */
static void on_file(const struct sl_admin_request *req, struct sl_admin_response *resp, void *arg) {
  static const char base[] = "/ui/";
  const char *name = req->path + sizeof(base) - 1;
  size_t len = req->path_len - (sizeof(base) - 1);
  const struct sl__admin_file *f;

  (void)arg;
  if (len == 0) {
    /* Relative, so that it also holds behind a proxy that serves the listener below a
     * prefix (as the page's own links are). */
    resp->status = 308;
    sl_admin_response_header(resp, "Location", "../ui");
    return;
  }
  f = find_file(name, len);
  if (f == NULL) {
    sl_admin_response_error(resp, 404, "no such console file");
    return;
  }
  serve(resp, f);
}

int sl__admin_console_routes(struct sl_admin *a) {
  int r = 0;

  r |= sl_admin_route(a, SL_METHOD_GET, "/ui", 0, on_page, NULL);
  r |= sl_admin_route(a, SL_METHOD_GET, "/ui/", 0, on_file, NULL);
  r |= sl_admin_describe(a, SL_METHOD_GET, "/ui", 0,
                         "the web console: upstreams, live chart, pause, rate, dead letters");
  return r ? UV_ENOMEM : 0;
}
