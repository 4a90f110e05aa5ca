#!/usr/bin/env bash
# Expiry (issue 12): a spilled request whose queue_ttl or X-Sluice-Expires-After passes before
# the drain reaches it is never sent. With on_expire "dead" (the default) it becomes a dead
# letter with the reason "expired"; with "drop" it is settled and counted; either way its
# status URL reads "expired" and sluice_expired_total{upstream,outcome} counts it. The shorter
# of the route's queue_ttl and the header wins; a request delayed past its expiry expires; a
# request that does not expire is delivered; a bad header gets 400; and the deadline, kept
# with the spooled record, survives a kill -9 and a restart.
#
# sluice: one upstream, paused while the records are spilled (rate 0.01/s, burst 1: the primer
# goes live, every later POST spills), then rate 50/s and resumed at run time. Routes: /drop
# (queue_ttl 1s, on_expire drop), /ttl (queue_ttl 1h, dead) and / (no queue_ttl);
# limits.max_delay 1d.
set -euo pipefail
. "$E2E_DIR/lib.sh"
. "$E2E_DIR/shaping_lib.sh"

sh_backend_start
conf=$(e2e_write_config sluice.conf <<EOF
$(e2e_config_base batch)
limits = { max_delay = "1d"; };
upstreams = ( { name = "b"; address = "127.0.0.1:$REC_PORT"; rate = 0.01; burst = 1;
                paused = true; } );
routes = ( { prefix = "/drop"; upstream = "b"; spill = true; queue_ttl = "1s";
             on_expire = "drop"; },
           { prefix = "/ttl"; upstream = "b"; spill = true; queue_ttl = "1h"; },
           { prefix = "/"; upstream = "b"; spill = true; } );
EOF
)
e2e_sluice_start "$conf"
sh_require_admin

python3 "$E2E_DIR/expiry.py" before "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$REC_LOG"

e2e_kill sluice
e2e_log "sluice killed with SIGKILL with two records queued; restarting on the same spool"
e2e_sluice_start -n sluice2 "$conf"

python3 "$E2E_DIR/expiry.py" after "$SLUICE_PORT" "$SLUICE_ADMIN_PORT" "$REC_LOG"
e2e_sluice_stop sluice2
