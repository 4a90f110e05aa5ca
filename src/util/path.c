#include "sluice/path.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

int sl_path_mkdir_p(const char *dir) {
  char tmp[4096];
  size_t n = strlen(dir);

  if (n == 0)
    return -EINVAL;
  if (n >= sizeof(tmp))
    return -ENAMETOOLONG;
  memcpy(tmp, dir, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (tmp[i] != '/' && tmp[i] != '\0')
      continue;
    tmp[i] = '\0';
    if (mkdir(tmp, 0750) != 0 && errno != EEXIST)
      return -errno;
    tmp[i] = i == n ? '\0' : '/';
  }
  return 0;
}
