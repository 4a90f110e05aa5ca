/*
 * Directory helpers for start-up code (blocking: never call them from a
 * running event loop).
 *
 * @thread any
 */
#ifndef SLUICE_PATH_H
#define SLUICE_PATH_H

/*
 * Creates directory <dir> and any missing parents (mode 0750), like
 * `mkdir -p`, and makes every created name durable (sl_durable_mkdir_p in
 * sluice/durable.h: each new level's parent is fsynced). Returns 0 (also if
 * it exists), -EINVAL for an empty path, -ENAMETOOLONG, or the negative
 * errno of the call that failed.
 */
int sl_path_mkdir_p(const char *dir);

#endif
