/*
 * sluicectl dead list|show|redrive|purge: the dead letters of one upstream or of all,
 * narrowed by the filters of filter.c.
 *
 * Listing pages through GET /admin/upstreams/<name>/dead (?limit=, then ?after= the "next"
 * of each page) and keeps what the filter matches. Redrive and purge first list what
 * matches, then act on each dead letter by its id (POST .../dead/redrive?id=), so that a
 * filter means exactly the dead letters listed, a progress line can count them on a
 * terminal ("redriven 120/500"), and Ctrl-C stops between two of them with a summary of
 * what was done. A dead letter that is gone by the time its turn comes (redriven or purged
 * by someone else meanwhile) is counted as such, not as an error.
 *
 * @thread main
 */
#include "ctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/clock.h"

#define PAGE 500
#define PROGRESS_EVERY_MS 100

/* Calls back for each dead letter that matches; non-zero stops the walk with that status. */
typedef int (*dead_cb)(struct sl_ctl *ctl, const char *upstream, json_t *dl, void *arg);

/* The upstreams a dead command covers, from GET /admin/upstreams: --upstream (which must be
 * one of them), else all. <*list> holds their names as strings. */
static int upstreams_covered(struct sl_ctl *ctl, json_t **list) {
  const char *only = ctl->args->filter.upstream;
  json_t *doc, *u;
  size_t i;
  int rc = sl_ctl_upstreams(ctl, &doc);

  if (rc != 0)
    return rc;
  *list = json_array();
  json_array_foreach(json_object_get(doc, "upstreams"), i, u) {
    json_t *name = json_object_get(u, "name");

    if (json_is_string(name) && (only == NULL || strcmp(json_string_value(name), only) == 0))
      json_array_append(*list, name);
  }
  json_decref(doc);
  if (only != NULL && json_array_size(*list) == 0) {
    sl_ctl_error("no upstream named %s", only);
    json_decref(*list);
    *list = NULL;
    return SL_CTL_ENOTFOUND;
  }
  return 0;
}

/* GET .../dead?id=<id> of <upstream>: the dead letter in <*dl> (a new reference), or NULL
 * when that upstream has none with that id. */
static int get_one(struct sl_ctl *ctl, const char *upstream, const char *id, json_t **dl) {
  char target[512];
  struct sl_ctl_call call = {.method = "GET", .target = target, .own_errors = true};
  json_t *doc;
  unsigned status;
  int rc;

  *dl = NULL;
  snprintf(target, sizeof(target), "/admin/upstreams/%s/dead?id=%s", upstream, id);
  rc = sl_ctl_call(ctl, &call, &doc, &status);
  if (rc != 0)
    return rc;
  if (status == 200) {
    *dl = json_incref(json_array_get(json_object_get(doc, "dead"), 0));
  } else if (status != 404) {
    sl_ctl_error("%s (%u from the admin listener %s)", sl_ctl_doc_error(doc, "failed"), status,
                 ctl->admin.host);
    rc = SL_CTL_EFAILED;
  }
  json_decref(doc);
  return rc;
}

/* Walks the dead letters of <upstream> that the filter matches, oldest first. */
static int each_dead(struct sl_ctl *ctl, const char *upstream, dead_cb cb, void *arg) {
  const struct sl_ctl_filter *f = &ctl->args->filter;
  char target[512], not_found[256], next[64] = "";
  struct sl_ctl_call call = {.method = "GET", .target = target, .not_found = not_found};
  int rc = 0;

  if (!sl_ctl_path_segment_ok(upstream))
    return 0; /* cannot be addressed; the server could not have one by such a name either */
  if (f->id != NULL) {
    json_t *dl;

    rc = get_one(ctl, upstream, f->id, &dl);
    if (rc == 0 && dl != NULL && sl_ctl_filter_match(f, dl))
      rc = cb(ctl, upstream, dl, arg);
    json_decref(dl);
    return rc;
  }
  snprintf(not_found, sizeof(not_found),
           "the dead letters of %s changed while they were listed (the one a page ended at was "
           "redriven or purged): run the command again",
           upstream);
  do {
    json_t *doc, *dl;
    const char *n;
    size_t i;

    snprintf(target, sizeof(target), "/admin/upstreams/%s/dead?limit=%d%s%s", upstream, PAGE,
             next[0] ? "&after=" : "", next);
    rc = sl_ctl_call(ctl, &call, &doc, NULL);
    if (rc != 0)
      return rc;
    json_array_foreach(json_object_get(doc, "dead"), i, dl) {
      if (rc == 0 && sl_ctl_filter_match(f, dl))
        rc = cb(ctl, upstream, dl, arg);
    }
    n = json_string_value(json_object_get(doc, "next"));
    snprintf(next, sizeof(next), "%s", n != NULL && rc == 0 ? n : "");
    json_decref(doc);
  } while (rc == 0 && next[0] != '\0');
  return rc;
}

/* Runs each_dead over every upstream of <list>. */
static int each_dead_all(struct sl_ctl *ctl, const json_t *list, dead_cb cb, void *arg) {
  const json_t *name;
  size_t i;
  int rc = 0;

  json_array_foreach(list, i, name) {
    if (rc == 0)
      rc = each_dead(ctl, json_string_value(name), cb, arg);
  }
  return rc;
}

/* ---- list ---- */

struct listing {
  json_t *all; /* --json: every match, with its upstream */
  size_t n;
};

static int list_one(struct sl_ctl *ctl, const char *upstream, json_t *dl, void *arg) {
  struct listing *l = arg;

  l->n++;
  if (l->all != NULL) {
    json_t *copy = json_copy(dl);

    json_object_set_new(copy, "upstream", json_string(upstream));
    json_array_append_new(l->all, copy);
  } else {
    struct sl_buf out;

    sl_buf_init(&out);
    if (l->n == 1)
      sl_ctl_render_dead_header(&out);
    sl_ctl_render_dead_row(&out, upstream, dl);
    fwrite(out.base, 1, out.len, stdout);
    sl_buf_dispose(&out);
    (void)ctl;
  }
  return 0;
}

static int cmd_list(struct sl_ctl *ctl, const json_t *list) {
  struct listing l = {.all = ctl->args->json ? json_array() : NULL};
  int rc = each_dead_all(ctl, list, list_one, &l);

  if (rc == 0 && l.all != NULL) {
    json_t *doc = json_pack("{s:O}", "dead", l.all);

    sl_ctl_print_json(ctl, doc);
    json_decref(doc);
  } else if (rc == 0 && l.n == 0) {
    fprintf(ctl->tty ? stdout : stderr, "no dead letter matches\n");
  } else if (rc == 0 && ctl->tty) {
    printf("%zu dead letter%s\n", l.n, l.n == 1 ? "" : "s");
  }
  json_decref(l.all);
  return rc;
}

/* ---- show ---- */

static int cmd_show(struct sl_ctl *ctl, const json_t *list) {
  const json_t *name;
  size_t i;

  json_array_foreach(list, i, name) {
    json_t *dl;
    int rc = get_one(ctl, json_string_value(name), ctl->args->id, &dl);

    if (rc != 0)
      return rc;
    if (dl == NULL)
      continue;
    if (ctl->args->json) {
      json_t *copy = json_copy(dl);

      json_object_set_new(copy, "upstream", json_string(json_string_value(name)));
      sl_ctl_print_json(ctl, copy);
      json_decref(copy);
    } else {
      struct sl_buf out;

      sl_buf_init(&out);
      sl_ctl_render_dead_show(&out, json_string_value(name), dl);
      fwrite(out.base, 1, out.len, stdout);
      sl_buf_dispose(&out);
    }
    json_decref(dl);
    return 0;
  }
  sl_ctl_error("no dead letter with id %s%s%s", ctl->args->id,
               ctl->args->filter.upstream ? " in " : "",
               ctl->args->filter.upstream ? ctl->args->filter.upstream : "");
  return SL_CTL_ENOTFOUND;
}

/* ---- redrive, purge ---- */

struct target_list {
  struct {
    char *upstream;
    char id[40];
  } * v;
  size_t n, cap;
};

static int collect(struct sl_ctl *ctl, const char *upstream, json_t *dl, void *arg) {
  struct target_list *t = arg;
  const char *id = json_string_value(json_object_get(dl, "id"));

  (void)ctl;
  if (id == NULL)
    return 0;
  if (t->n == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 64;
    void *v = realloc(t->v, cap * sizeof(*t->v));

    if (v == NULL)
      goto nomem;
    t->v = v;
    t->cap = cap;
  }
  if ((t->v[t->n].upstream = strdup(upstream)) == NULL)
    goto nomem;
  snprintf(t->v[t->n].id, sizeof(t->v[t->n].id), "%s", id);
  t->n++;
  return 0;
nomem:
  sl_ctl_error("out of memory");
  return SL_CTL_EFAILED;
}

/* The progress line on a terminal: "redriven 120/500", at most every PROGRESS_EVERY_MS. */
static void progress(struct sl_ctl *ctl, const char *done_word, size_t done, size_t total,
                     uint64_t *last_ms, bool last) {
  uint64_t now = sl_clock_mono_ns() / 1000000;

  if (!ctl->err_tty || (!last && now - *last_ms < PROGRESS_EVERY_MS))
    return;
  *last_ms = now;
  fprintf(stderr, "\r%s %zu/%zu%s", done_word, done, total, last ? "\n" : "");
  fflush(stderr);
}

static int cmd_act(struct sl_ctl *ctl, const json_t *list) {
  bool redrive = ctl->args->command == SL_CTL_DEAD_REDRIVE;
  const char *verb = redrive ? "redrive" : "purge";
  const char *done_word = redrive ? "redriven" : "purged";
  struct target_list t = {0};
  json_t *results = ctl->args->json ? json_array() : NULL;
  size_t done = 0, gone = 0, i;
  uint64_t last_ms = 0;
  int rc = each_dead_all(ctl, list, collect, &t);

  for (i = 0; rc == 0 && i < t.n; i++) {
    char target[512];
    struct sl_ctl_call call = {.method = "POST", .target = target, .own_errors = true};
    json_t *doc;
    unsigned status;

    snprintf(target, sizeof(target), "/admin/upstreams/%s/dead/%s?id=%s", t.v[i].upstream, verb,
             t.v[i].id);
    rc = sl_ctl_call(ctl, &call, &doc, &status);
    if (rc != 0)
      break;
    if (status == 202 || status == 200) {
      done++;
    } else if (status == 404) {
      gone++; /* redriven or purged meanwhile */
    } else {
      sl_ctl_error("%s of %s in %s: %s (%u from the admin listener %s)", verb, t.v[i].id,
                   t.v[i].upstream, sl_ctl_doc_error(doc, "failed"), status, ctl->admin.host);
      rc = SL_CTL_EFAILED;
    }
    if (results != NULL && rc == 0)
      json_array_append_new(results,
                            json_pack("{s:s,s:s,s:s}", "upstream", t.v[i].upstream, "id", t.v[i].id,
                                      "result", status == 404 ? "gone" : done_word));
    json_decref(doc);
    progress(ctl, done_word, done + gone, t.n, &last_ms, false);
  }
  if (t.n > 0)
    progress(ctl, done_word, done + gone, t.n, &last_ms, true);
  if (rc == 0 || rc == SL_CTL_EINTERRUPTED || rc == SL_CTL_EFAILED) {
    if (results != NULL) {
      json_t *doc =
          json_pack("{s:s,s:I,s:I,s:I,s:b,s:O}", "action", verb, "matched", (json_int_t)t.n,
                    done_word, (json_int_t)done, "gone", (json_int_t)gone, "interrupted",
                    rc == SL_CTL_EINTERRUPTED, "results", results);

      sl_ctl_print_json(ctl, doc);
      json_decref(doc);
    } else if (t.n == 0 && rc == 0) {
      printf("no dead letter matches: nothing %s\n", done_word);
    } else {
      printf("%s%s %zu of %zu dead letter%s", rc == SL_CTL_EINTERRUPTED ? "interrupted: " : "",
             done_word, done, t.n, t.n == 1 ? "" : "s");
      if (gone > 0)
        printf("; %zu %s no longer there (redriven or purged meanwhile)", gone,
               gone == 1 ? "was" : "were");
      printf("\n");
    }
  }
  for (i = 0; i < t.n; i++)
    free(t.v[i].upstream);
  free(t.v);
  json_decref(results);
  return rc;
}

int sl_ctl_cmd_dead(struct sl_ctl *ctl) {
  json_t *list;
  int rc = upstreams_covered(ctl, &list);

  if (rc != 0)
    return rc;
  switch (ctl->args->command) {
  case SL_CTL_DEAD_LIST:
    rc = cmd_list(ctl, list);
    break;
  case SL_CTL_DEAD_SHOW:
    rc = cmd_show(ctl, list);
    break;
  default:
    rc = cmd_act(ctl, list);
    break;
  }
  json_decref(list);
  return rc;
}
