/*
 * crashfs: records the disk operations of the code under test and builds the
 * states a power cut may leave (see crashfs.h for the rules).
 *
 * The model replayed from the log keeps, per file, its data as of its last
 * sync plus the operations since; per directory, its entries as of its last
 * fsync, its current entries (to resolve paths) and the entry operations
 * since. Nodes are never freed before crashfs_free(): an unlinked file may
 * still come back in a crash state.
 *
 * @thread the I/O table: any, under <mu>; the rest: the test's thread
 */
#include "crashfs.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define GROW(arr, n, cap)                                                                          \
  do {                                                                                             \
    if ((n) == (cap)) {                                                                            \
      size_t c_ = (cap) ? (cap)*2 : 8;                                                             \
      void *p_ = realloc((arr), c_ * sizeof(*(arr)));                                              \
      if (p_ == NULL)                                                                              \
        abort();                                                                                   \
      (arr) = p_;                                                                                  \
      (cap) = c_;                                                                                  \
    }                                                                                              \
  } while (0)

/* ---- recording ---------------------------------------------------------------------------- */

struct init_ent {
  char *rel;
  bool dir;
  uint64_t ino;
  uint8_t *data;
  size_t len;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char root[PATH_MAX];
static size_t rootlen;
static uint64_t root_ino;
static struct crashfs_rec *recs;
static size_t nrecs, caprecs;
static bool recording;
static struct init_ent *inits;
static size_t ninits, capinits;
static uint64_t violations;

/* <path> relative to the root ("" for the root itself), or NULL outside it. */
static const char *rel_of(const char *path) {
  if (!recording || strncmp(path, root, rootlen) != 0)
    return NULL;
  if (path[rootlen] == '\0')
    return "";
  if (path[rootlen] != '/')
    return NULL;
  return path + rootlen + 1;
}

static struct crashfs_rec *rec_add(enum crashfs_op op) {
  struct crashfs_rec *r;

  GROW(recs, nrecs, caprecs);
  r = &recs[nrecs++];
  memset(r, 0, sizeof(*r));
  r->op = op;
  return r;
}

static char *xstrdup(const char *s) {
  char *p = strdup(s);
  if (p == NULL)
    abort();
  return p;
}

static int scan_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  struct init_ent *e;
  (void)ftw;

  if (strcmp(path, root) == 0)
    return 0;
  GROW(inits, ninits, capinits);
  e = &inits[ninits++];
  memset(e, 0, sizeof(*e));
  e->rel = xstrdup(path + rootlen + 1);
  e->ino = sb->st_ino;
  e->dir = flag == FTW_D;
  if (!e->dir) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    e->len = (size_t)sb->st_size;
    e->data = malloc(e->len ? e->len : 1);
    if (fd < 0 || e->data == NULL || pread(fd, e->data, e->len, 0) != (ssize_t)e->len)
      abort();
    close(fd);
  }
  return 0;
}

int crashfs_start(const char *dir) {
  struct stat sb;

  crashfs_free();
  if (realpath(dir, root) == NULL || stat(root, &sb) != 0)
    return -1;
  if (strcmp(root, dir) != 0) {
    /* The code under test must use the paths the test gives it: keep them as given. */
    snprintf(root, sizeof(root), "%s", dir);
  }
  rootlen = strlen(root);
  root_ino = sb.st_ino;
  if (nftw(root, scan_cb, 16, FTW_PHYS) != 0)
    return -1;
  recording = true;
  return 0;
}

void crashfs_stop(void) {
  pthread_mutex_lock(&mu);
  recording = false;
  pthread_mutex_unlock(&mu);
}

const struct crashfs_rec *crashfs_log(size_t *n) {
  *n = nrecs;
  return recs;
}

void crashfs_mark(uint32_t kind, uint64_t a, uint64_t b) {
  pthread_mutex_lock(&mu);
  if (recording) {
    struct crashfs_rec *r = rec_add(CRASHFS_MARK);
    r->kind = kind;
    r->a = a;
    r->b = b;
  }
  pthread_mutex_unlock(&mu);
}

static int cf_open(const char *path, int flags, mode_t mode) {
  struct stat sb;
  const char *rel;
  bool existed;
  int fd, err;

  pthread_mutex_lock(&mu);
  rel = rel_of(path);
  existed = lstat(path, &sb) == 0;
  fd = open(path, flags | O_CLOEXEC, mode);
  err = errno;
  if (fd >= 0 && rel != NULL && fstat(fd, &sb) == 0) {
    struct crashfs_rec *r = rec_add(CRASHFS_OPEN);
    r->path = xstrdup(rel);
    r->ino = sb.st_ino;
    r->dir = S_ISDIR(sb.st_mode);
    r->created = !existed && (flags & O_CREAT);
    r->trunc = existed && (flags & O_TRUNC) && !r->dir;
  }
  pthread_mutex_unlock(&mu);
  errno = err;
  return fd;
}

static int cf_close(int fd) { return close(fd); }

/* The inode of <fd> and whether it is a directory; false if it cannot be told. */
static bool ino_of(int fd, uint64_t *ino, bool *dir) {
  struct stat sb;

  if (fstat(fd, &sb) != 0)
    return false;
  *ino = sb.st_ino;
  *dir = S_ISDIR(sb.st_mode);
  return true;
}

static ssize_t cf_pwrite(int fd, const void *buf, size_t len, off_t off) {
  ssize_t n;
  int err;
  uint64_t ino;
  bool dir;

  pthread_mutex_lock(&mu);
  n = pwrite(fd, buf, len, off);
  err = errno;
  if (n > 0 && recording && ino_of(fd, &ino, &dir)) {
    struct crashfs_rec *r = rec_add(CRASHFS_PWRITE);
    r->ino = ino;
    r->off = (uint64_t)off;
    r->len = (uint64_t)n;
    r->data = malloc((size_t)n);
    if (r->data == NULL)
      abort();
    memcpy(r->data, buf, (size_t)n);
  }
  pthread_mutex_unlock(&mu);
  errno = err;
  return n;
}

static int cf_sync(int fd) {
  uint64_t ino;
  bool dir;

  pthread_mutex_lock(&mu);
  if (recording && ino_of(fd, &ino, &dir)) {
    struct crashfs_rec *r = rec_add(CRASHFS_SYNC);
    r->ino = ino;
    r->dir = dir;
  }
  pthread_mutex_unlock(&mu);
  return 0;
}

static int cf_ftruncate(int fd, off_t len) {
  uint64_t ino;
  bool dir;
  int rc, err;

  pthread_mutex_lock(&mu);
  rc = ftruncate(fd, len);
  err = errno;
  if (rc == 0 && recording && ino_of(fd, &ino, &dir)) {
    struct crashfs_rec *r = rec_add(CRASHFS_TRUNCATE);
    r->ino = ino;
    r->len = (uint64_t)len;
  }
  pthread_mutex_unlock(&mu);
  errno = err;
  return rc;
}

static int cf_fallocate(int fd, int mode, off_t off, off_t len) {
  struct stat sb;
  uint64_t ino;
  bool dir;
  int rc, err;

  pthread_mutex_lock(&mu);
  rc = fstat(fd, &sb) == 0 ? fallocate(fd, mode, off, len) : -1;
  err = errno;
  /* Only the size is modelled: the blocks allocated read as zeros either way. */
  if (rc == 0 && recording && mode == 0 && (uint64_t)off + (uint64_t)len > (uint64_t)sb.st_size &&
      ino_of(fd, &ino, &dir)) {
    struct crashfs_rec *r = rec_add(CRASHFS_TRUNCATE);
    r->ino = ino;
    r->len = (uint64_t)off + (uint64_t)len;
  }
  pthread_mutex_unlock(&mu);
  errno = err;
  return rc;
}

static int cf_rename(const char *from, const char *to) {
  const char *rf, *rt;
  int rc, err;

  pthread_mutex_lock(&mu);
  rf = rel_of(from);
  rt = rel_of(to);
  rc = rename(from, to);
  err = errno;
  if (rc == 0 && (rf != NULL || rt != NULL)) {
    if (rf == NULL || rt == NULL) {
      violations++; /* a file moved into or out of the modelled tree */
    } else {
      struct crashfs_rec *r = rec_add(CRASHFS_RENAME);
      r->path = xstrdup(rf);
      r->path2 = xstrdup(rt);
    }
  }
  pthread_mutex_unlock(&mu);
  errno = err;
  return rc;
}

static int cf_unlink(const char *path) {
  const char *rel;
  int rc, err;

  pthread_mutex_lock(&mu);
  rel = rel_of(path);
  rc = unlink(path);
  err = errno;
  if (rc == 0 && rel != NULL)
    rec_add(CRASHFS_UNLINK)->path = xstrdup(rel);
  pthread_mutex_unlock(&mu);
  errno = err;
  return rc;
}

static int cf_mkdir(const char *path, mode_t mode) {
  struct stat sb;
  const char *rel;
  int rc, err;

  pthread_mutex_lock(&mu);
  rel = rel_of(path);
  rc = mkdir(path, mode);
  err = errno;
  if (rc == 0 && rel != NULL && stat(path, &sb) == 0) {
    struct crashfs_rec *r = rec_add(CRASHFS_MKDIR);
    r->path = xstrdup(rel);
    r->ino = sb.st_ino;
    r->dir = true;
  }
  pthread_mutex_unlock(&mu);
  errno = err;
  return rc;
}

static const struct sl_io recording_io = {
    .open = cf_open,
    .close = cf_close,
    .pwrite = cf_pwrite,
    .fdatasync = cf_sync,
    .fsync = cf_sync,
    .ftruncate = cf_ftruncate,
    .fallocate = cf_fallocate,
    .rename = cf_rename,
    .unlink = cf_unlink,
    .mkdir = cf_mkdir,
};

const struct sl_io *crashfs_io(void) { return &recording_io; }

static int nosync(int fd) {
  (void)fd;
  return 0;
}

static const struct sl_io nosync_io = {.fdatasync = nosync, .fsync = nosync};

const struct sl_io *crashfs_nosync_io(void) { return &nosync_io; }

uint64_t crashfs_violations(void) { return violations; }

/* ---- the model ---------------------------------------------------------------------------- */

enum { F_WRITE, F_TRUNC };
enum { D_LINK, D_UNLINK, D_RENAME };

struct node;

struct fop {
  int kind;
  uint64_t off, len;
  const uint8_t *data;
};

struct ent {
  char *name;
  struct node *node;
};

struct entv {
  struct ent *v;
  size_t n, cap;
};

struct dop {
  int kind;
  char *name, *name2;
  struct node *node;
};

struct node {
  bool dir;
  struct node *all_next;
  /* files */
  uint8_t *dur;
  size_t dlen;
  struct fop *pend;
  size_t npend, cpend;
  /* directories */
  struct entv cur, dent;
  struct dop *dp;
  size_t ndp, cdp;
};

struct binding {
  uint64_t ino;
  struct node *node;
};

static struct node *all_nodes, *root_node;
static struct binding *binds;
static size_t nbinds, capbinds;

static struct node *node_new(bool dir) {
  struct node *n = calloc(1, sizeof(*n));
  if (n == NULL)
    abort();
  n->dir = dir;
  n->all_next = all_nodes;
  all_nodes = n;
  return n;
}

static void bind(uint64_t ino, struct node *n) {
  GROW(binds, nbinds, capbinds);
  binds[nbinds].ino = ino;
  binds[nbinds].node = n;
  nbinds++;
}

static struct node *by_ino(uint64_t ino) {
  for (size_t i = nbinds; i-- > 0;)
    if (binds[i].ino == ino)
      return binds[i].node;
  return NULL;
}

static struct ent *ent_find(struct entv *v, const char *name) {
  for (size_t i = 0; i < v->n; i++)
    if (strcmp(v->v[i].name, name) == 0)
      return &v->v[i];
  return NULL;
}

static struct node *ent_get(struct entv *v, const char *name) {
  struct ent *e = ent_find(v, name);
  return e ? e->node : NULL;
}

static void ent_set(struct entv *v, const char *name, struct node *n) {
  struct ent *e = ent_find(v, name);

  if (e != NULL) {
    e->node = n;
    return;
  }
  GROW(v->v, v->n, v->cap);
  v->v[v->n].name = xstrdup(name);
  v->v[v->n].node = n;
  v->n++;
}

static void ent_del(struct entv *v, const char *name) {
  struct ent *e = ent_find(v, name);

  if (e == NULL)
    return;
  free(e->name);
  *e = v->v[--v->n];
}

static void entv_free(struct entv *v) {
  for (size_t i = 0; i < v->n; i++)
    free(v->v[i].name);
  free(v->v);
  memset(v, 0, sizeof(*v));
}

static void entv_copy(struct entv *dst, const struct entv *src) {
  entv_free(dst);
  for (size_t i = 0; i < src->n; i++)
    ent_set(dst, src->v[i].name, src->v[i].node);
}

static void node_free(struct node *n) {
  free(n->dur);
  free(n->pend);
  entv_free(&n->cur);
  entv_free(&n->dent);
  for (size_t i = 0; i < n->ndp; i++) {
    free(n->dp[i].name);
    free(n->dp[i].name2);
  }
  free(n->dp);
  free(n);
}

static void model_free(void) {
  while (all_nodes != NULL) {
    struct node *n = all_nodes;
    all_nodes = n->all_next;
    node_free(n);
  }
  root_node = NULL;
  free(binds);
  binds = NULL;
  nbinds = capbinds = 0;
}

/* The directory node holding <rel> (its current entries) and the last component in <name>;
 * NULL if a component is missing. */
static struct node *parent_of(const char *rel, char *name, size_t cap) {
  char buf[PATH_MAX];
  struct node *d = root_node;
  char *save = NULL, *tok, *next;

  snprintf(buf, sizeof(buf), "%s", rel);
  tok = strtok_r(buf, "/", &save);
  if (tok == NULL)
    return NULL;
  while ((next = strtok_r(NULL, "/", &save)) != NULL) {
    d = ent_get(&d->cur, tok);
    if (d == NULL || !d->dir)
      return NULL;
    tok = next;
  }
  snprintf(name, cap, "%s", tok);
  return d;
}

static void dop_add(struct node *d, int kind, const char *name, const char *name2, struct node *n) {
  GROW(d->dp, d->ndp, d->cdp);
  d->dp[d->ndp].kind = kind;
  d->dp[d->ndp].name = xstrdup(name);
  d->dp[d->ndp].name2 = name2 ? xstrdup(name2) : NULL;
  d->dp[d->ndp].node = n;
  d->ndp++;
}

static void fop_add(struct node *n, int kind, uint64_t off, uint64_t len, const uint8_t *data) {
  GROW(n->pend, n->npend, n->cpend);
  n->pend[n->npend].kind = kind;
  n->pend[n->npend].off = off;
  n->pend[n->npend].len = len;
  n->pend[n->npend].data = data;
  n->npend++;
}

/* Applies <op> to the <*len> bytes at <*buf>. */
static void fop_apply(uint8_t **buf, size_t *len, const struct fop *op, uint64_t write_len) {
  uint64_t end = op->kind == F_WRITE ? op->off + write_len : op->len;

  if (op->kind == F_TRUNC || end > *len) {
    uint8_t *p = realloc(*buf, end ? end : 1);
    if (p == NULL)
      abort();
    if (end > *len)
      memset(p + *len, 0, end - *len);
    *buf = p;
    if (op->kind == F_TRUNC || end > *len)
      *len = end;
  }
  if (op->kind == F_WRITE && write_len > 0)
    memcpy(*buf + op->off, op->data, write_len);
}

void crashfs_replay_begin(void) {
  model_free();
  root_node = node_new(true);
  bind(root_ino, root_node);
  for (size_t i = 0; i < ninits; i++) {
    const struct init_ent *e = &inits[i];
    char name[NAME_MAX + 1];
    struct node *d = parent_of(e->rel, name, sizeof(name));
    struct node *n = node_new(e->dir);

    if (d == NULL)
      abort(); /* nftw lists parents first */
    ent_set(&d->cur, name, n);
    ent_set(&d->dent, name, n);
    bind(e->ino, n);
    if (!e->dir) {
      n->dur = malloc(e->len ? e->len : 1);
      if (n->dur == NULL)
        abort();
      if (e->len > 0)
        memcpy(n->dur, e->data, e->len);
      n->dlen = e->len;
    }
  }
}

void crashfs_replay_apply(size_t i) {
  const struct crashfs_rec *r = &recs[i];
  char name[NAME_MAX + 1], name2[NAME_MAX + 1];
  struct node *d, *d2, *n;

  switch (r->op) {
  case CRASHFS_OPEN:
  case CRASHFS_MKDIR:
    if (r->path[0] == '\0') {
      bind(r->ino, root_node);
      break;
    }
    d = parent_of(r->path, name, sizeof(name));
    if (d == NULL) {
      violations++;
      break;
    }
    n = ent_get(&d->cur, name);
    if (r->op == CRASHFS_MKDIR || r->created || n == NULL) {
      if (!(r->op == CRASHFS_MKDIR || r->created))
        violations++; /* a file the model never saw created */
      n = node_new(r->dir);
      ent_set(&d->cur, name, n);
      dop_add(d, D_LINK, name, NULL, n);
    }
    bind(r->ino, n);
    if (r->trunc)
      fop_add(n, F_TRUNC, 0, 0, NULL);
    break;
  case CRASHFS_PWRITE:
  case CRASHFS_TRUNCATE:
    n = by_ino(r->ino);
    if (n == NULL || n->dir) {
      violations++;
      break;
    }
    if (r->op == CRASHFS_PWRITE)
      fop_add(n, F_WRITE, r->off, r->len, r->data);
    else
      fop_add(n, F_TRUNC, 0, r->len, NULL);
    break;
  case CRASHFS_SYNC:
    n = by_ino(r->ino);
    if (n == NULL) {
      if (!r->dir)
        violations++; /* a directory outside the tree is fine: nothing to model */
      break;
    }
    if (n->dir) {
      entv_copy(&n->dent, &n->cur);
      for (size_t k = 0; k < n->ndp; k++) {
        free(n->dp[k].name);
        free(n->dp[k].name2);
      }
      n->ndp = 0;
    } else {
      for (size_t k = 0; k < n->npend; k++)
        fop_apply(&n->dur, &n->dlen, &n->pend[k], n->pend[k].len);
      n->npend = 0;
    }
    break;
  case CRASHFS_RENAME:
    d = parent_of(r->path, name, sizeof(name));
    d2 = parent_of(r->path2, name2, sizeof(name2));
    n = d ? ent_get(&d->cur, name) : NULL;
    if (n == NULL || d2 == NULL) {
      violations++;
      break;
    }
    ent_del(&d->cur, name);
    ent_set(&d2->cur, name2, n);
    if (d == d2) {
      dop_add(d, D_RENAME, name, name2, n);
    } else {
      dop_add(d, D_UNLINK, name, NULL, n);
      dop_add(d2, D_LINK, name2, NULL, n);
    }
    break;
  case CRASHFS_UNLINK:
    d = parent_of(r->path, name, sizeof(name));
    if (d == NULL || ent_get(&d->cur, name) == NULL) {
      violations++;
      break;
    }
    ent_del(&d->cur, name);
    dop_add(d, D_UNLINK, name, NULL, NULL);
    break;
  case CRASHFS_MARK:
    break;
  }
}

/* ---- materializing a crash state ---------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s) {
  uint64_t x = *s += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static bool keep(enum crashfs_mode mode, uint64_t *rng) {
  return mode == CRASHFS_KEEP_ALL || (mode == CRASHFS_RANDOM && (rng_next(rng) & 1));
}

static int write_file(const char *path, const struct node *n, enum crashfs_mode mode,
                      uint64_t *rng) {
  uint8_t *buf = malloc(n->dlen ? n->dlen : 1);
  size_t len = n->dlen, k = 0;
  int fd, rc = 0;

  if (buf == NULL)
    abort();
  if (n->dlen > 0)
    memcpy(buf, n->dur, n->dlen);
  if (mode == CRASHFS_KEEP_ALL) {
    k = n->npend;
  } else if (mode == CRASHFS_RANDOM && n->npend > 0) {
    uint64_t r = rng_next(rng) % 4;
    k = r == 0 ? 0 : r == 1 ? n->npend : (size_t)(rng_next(rng) % (n->npend + 1));
  }
  for (size_t i = 0; i < k; i++)
    fop_apply(&buf, &len, &n->pend[i], n->pend[i].len);
  if (mode == CRASHFS_RANDOM && k < n->npend && n->pend[k].kind == F_WRITE && (rng_next(rng) & 1)) {
    /* The next write torn: its first sectors made it, the rest did not. */
    const struct fop *op = &n->pend[k];
    uint64_t first = (op->off / 512 + 1) * 512;
    if (first < op->off + op->len) {
      uint64_t steps = (op->off + op->len - 1 - first) / 512 + 1;
      uint64_t cut = first + 512 * (rng_next(rng) % steps);
      fop_apply(&buf, &len, op, cut - op->off);
    }
  }
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0 || (len > 0 && write(fd, buf, len) != (ssize_t)len))
    rc = -1;
  if (fd >= 0)
    close(fd);
  free(buf);
  return rc;
}

static int materialize_dir(const struct node *d, const char *path, enum crashfs_mode mode,
                           uint64_t *rng) {
  struct entv v = {0};
  int rc = 0;

  entv_copy(&v, &d->dent);
  for (size_t i = 0; i < d->ndp; i++) {
    const struct dop *op = &d->dp[i];
    if (!keep(mode, rng))
      continue;
    if (op->kind == D_LINK)
      ent_set(&v, op->name, op->node);
    else if (op->kind == D_UNLINK)
      ent_del(&v, op->name);
    else if (ent_get(&v, op->name) == op->node) {
      ent_del(&v, op->name);
      ent_set(&v, op->name2, op->node);
    }
  }
  for (size_t i = 0; i < v.n && rc == 0; i++) {
    char child[PATH_MAX];
    const struct node *n = v.v[i].node;
    snprintf(child, sizeof(child), "%s/%s", path, v.v[i].name);
    if (n->dir)
      rc = mkdir(child, 0755) != 0 ? -1 : materialize_dir(n, child, mode, rng);
    else
      rc = write_file(child, n, mode, rng);
  }
  entv_free(&v);
  return rc;
}

int crashfs_materialize(const char *dst, enum crashfs_mode mode, uint64_t seed) {
  uint64_t rng = seed;

  return materialize_dir(root_node, dst, mode, &rng);
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(p);
}

void crashfs_rm_rf(const char *path) { nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

void crashfs_free(void) {
  pthread_mutex_lock(&mu);
  recording = false;
  for (size_t i = 0; i < nrecs; i++) {
    free(recs[i].path);
    free(recs[i].path2);
    free(recs[i].data);
  }
  free(recs);
  recs = NULL;
  nrecs = caprecs = 0;
  for (size_t i = 0; i < ninits; i++) {
    free(inits[i].rel);
    free(inits[i].data);
  }
  free(inits);
  inits = NULL;
  ninits = capinits = 0;
  violations = 0;
  pthread_mutex_unlock(&mu);
  model_free();
}
