/*
 * sd_notify wrapper (sluice/notify.h). SLUICE_HAVE_LIBSYSTEMD comes from the
 * build when pkg-config found libsystemd.
 */
#include "sluice/notify.h"

#include <stdio.h>

#include "sluice/clock.h"

#ifdef SLUICE_HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

void sl_notify(const char *state) {
#ifdef SLUICE_HAVE_LIBSYSTEMD
  /* A failure (no manager listening any more) changes nothing for the service itself. */
  (void)sd_notify(0, state);
#else
  (void)state;
#endif
}

void sl_notify_reloading(void) {
  char state[64];

  snprintf(state, sizeof(state), "RELOADING=1\nMONOTONIC_USEC=%llu",
           (unsigned long long)(sl_clock_mono_ns() / 1000));
  sl_notify(state);
}
