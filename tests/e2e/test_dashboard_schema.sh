#!/usr/bin/env bash
# grafana/sluice-dashboard.json matches the dashboard schema Grafana publishes in the
# @grafana/schema npm package: the Dashboard type, and the Options and FieldConfig types of the
# panel plugins it uses (tests/dashboard/check-dashboard.js derives JSON schemas from those
# TypeScript types with ts-json-schema-generator and validates with ajv). And the check fails
# for broken copies: a wrong type, a value outside an enumeration, a misspelled key, an unknown
# override property, a panel type without a schema, a missing required field.
#
# The npm packages are pinned by tests/dashboard/package-lock.json and installed with
# "npm ci" into the build directory (next to the sluice binary), once per lockfile; the
# generated schemas are kept there too. node and npm come from Debian (nodejs, npm: the "test"
# profile of scripts/install-deps), the packages from the npm registry.
set -euo pipefail
. "$E2E_DIR/lib.sh"

root=$(cd "$E2E_DIR/../.." && pwd)
src=$root/tests/dashboard
dash=$root/grafana/sluice-dashboard.json

for tool in node npm python3; do
  command -v "$tool" >/dev/null 2>&1 || e2e_fail "$tool not found (./scripts/install-deps test installs it)"
done

# npm trusts the certificates the system trusts (curl's and apt's), as well as its own.
if [ -z "${NODE_EXTRA_CA_CERTS:-}" ] && [ -r /etc/ssl/certs/ca-certificates.crt ]; then
  export NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
fi
key=$(cat "$src/package-lock.json" "$src/check-dashboard.js" "$src/tsconfig.json" | sha256sum | cut -c1-16)
cache=${DASHBOARD_SCHEMA_CACHE:-$(dirname "$SLUICE")/dashboard-schema}
mods=$cache/$key
mkdir -p "$cache"
exec 9>"$cache/lock"
flock -w 60 9 || e2e_fail "another run holds $cache/lock"
if [ ! -e "$mods/.installed" ]; then
  find "$cache" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} + # older lockfiles' trees
  mkdir -p "$mods"
  cp "$src/package.json" "$src/package-lock.json" "$mods/"
  if ! (cd "$mods" && timeout 80 npm ci --no-audit --no-fund --ignore-scripts) >"$E2E_WORK/npm.log" 2>&1; then
    # No way to the registry (no network, no name service, or a TLS proxy whose certificate
    # this machine does not trust) is not a fault of the dashboard: the check is reported as
    # skipped, not passed. Any other failure of npm fails the test.
    net=$(grep -Eo 'code (ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT_LOCALLY|UNABLE_TO_VERIFY_LEAF_SIGNATURE|DEPTH_ZERO_SELF_SIGNED_CERT|CERT_[A-Z_]+)' \
      "$E2E_WORK/npm.log" | head -n 1 || true)
    [ -z "$net" ] || e2e_skip "the npm registry cannot be reached from this machine (npm: ${net#code }); the dashboard's schema check did not run"
    e2e_fail "npm ci of tests/dashboard/package-lock.json failed:
$(tail -n 20 "$E2E_WORK/npm.log")"
  fi
  touch "$mods/.installed"
fi
exec 9>&-
e2e_log "node $(node --version), npm $(npm --version), @grafana/schema $(node -p "require('$mods/node_modules/@grafana/schema/package.json').version") in $mods"

# check FILE...: runs the checker; its output in $E2E_WORK/check.out, its status returned.
check() {
  NODE_PATH=$mods/node_modules timeout 60 node "$src/check-dashboard.js" --schemas "$mods/schemas" "$@" \
    >"$E2E_WORK/check.out" 2>&1
}

if ! check "$dash"; then
  e2e_fail "grafana/sluice-dashboard.json does not match the schema:
$(cat "$E2E_WORK/check.out")"
fi
e2e_log "$(tail -n 1 "$E2E_WORK/check.out")"

# broken NAME PYTHON ERE: a copy of the dashboard changed by the Python statements (d is the
# dashboard, p(i) its panel i) must fail the check with a line matching ERE.
broken() {
  local name=$1 change=$2 want=$3 copy=$E2E_WORK/$1.json
  python3 - "$dash" "$copy" "$change" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
def p(i):
    return d["panels"][i]
def title(t):
    return next(x for x in d["panels"] if x.get("title") == t)
exec(sys.argv[3])
json.dump(d, open(sys.argv[2], "w"), indent=2)
PY
  if check "$copy"; then
    e2e_fail "$name: the check passed a broken dashboard ($change)"
  fi
  e2e_assert_file_match "$want" "$E2E_WORK/check.out" "$name: the check's report"
  e2e_log "ok: $name fails: $(grep -E -m 1 -- "$want" "$E2E_WORK/check.out")"
}

broken wrong-type 'p(0)["gridPos"]["w"] = "24"' '/panels/0/gridPos/w: must be number'
broken enum 'title("Up")["options"]["graphMode"] = "sparkline"' \
  '\("Up", stat\)/options/graphMode: must be equal to one of the allowed values \["area","line","none"\]'
broken misspelled-key 'd["refesh"] = d.pop("refresh")' 'must NOT have additional properties "refesh"'
broken panel-key 'title("Backlog by state")["titel"] = "x"' '/panels/[0-9]+: must NOT have additional properties "titel"'
broken custom-field 'title("Backlog by state")["fieldConfig"]["defaults"]["custom"]["drawStyle"] = "curve"' \
  '\("Backlog by state", timeseries\)/fieldConfig/defaults/custom/drawStyle: must be equal to one of the allowed values'
broken override 'title("Ingress by outcome")["fieldConfig"]["overrides"][0]["properties"].append({"id": "custom.lineWidht", "value": 2})' \
  'no field config property "custom.lineWidht" for panel type "timeseries"'
broken override-value 'title("Ingress by outcome")["fieldConfig"]["overrides"][0]["properties"][0]["value"] = {"mode": "fixed", "fixedColour": "red"}' \
  '/fieldConfig/overrides/0/properties/0/value: must NOT have additional properties "fixedColour"'
broken no-schema 'title("Uptime")["type"] = "graph"' 'no panelcfg schema for panel type "graph"'
broken missing-required 'del d["annotations"]["list"][1]["iconColor"]' \
  "/annotations/list/1: must have required property 'iconColor'"
broken stat-required 'del title("Up")["options"]["wideLayout"]' \
  "\\(\"Up\", stat\\)/options: must have required property 'wideLayout'"

# Annotations and variables are open in Grafana's own schema (data sources add their fields):
# an extra field there passes.
python3 - "$dash" "$E2E_WORK/open.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["annotations"]["list"][1]["legendFormat"] = "{{instance}}"
d["templating"]["list"][1]["queryValue"] = ""
json.dump(d, open(sys.argv[2], "w"), indent=2)
PY
check "$E2E_WORK/open.json" || e2e_fail "extra fields in an annotation and a variable were refused:
$(cat "$E2E_WORK/check.out")"
e2e_log "ok: data-source fields in annotations and variables pass, as in Grafana"
