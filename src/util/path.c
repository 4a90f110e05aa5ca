#include "sluice/path.h"

#include "sluice/durable.h"

int sl_path_mkdir_p(const char *dir) { return sl_durable_mkdir_p(NULL, dir, 0750); }
