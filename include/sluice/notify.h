/*
 * Readiness notification to the service manager (sd_notify(3), systemd's
 * Type=notify): READY=1 once the listeners are bound and the spools open,
 * RELOADING=1 ... READY=1 around a reload, STOPPING=1 at a graceful stop.
 *
 * Each call is one datagram to $NOTIFY_SOCKET, a local socket that systemd
 * reads at once, so it does not hold the loop. Without a service manager (no
 * $NOTIFY_SOCKET), or in a build without libsystemd (the unit is then
 * Type=exec), the calls do nothing.
 *
 * @thread main
 */
#ifndef SLUICE_NOTIFY_H
#define SLUICE_NOTIFY_H

/* Sends <state>, newline-separated "NAME=value" assignments ("READY=1"). */
void sl_notify(const char *state);

/* Sends "RELOADING=1" with the MONOTONIC_USEC= that systemd pairs with it. */
void sl_notify_reloading(void);

#endif
