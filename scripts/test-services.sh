#!/usr/bin/env bash
# Make sure the server binaries the test suite runs privately are installed: PostgreSQL (initdb,
# postgres), redis-server and nginx, from Debian's packages when missing. Idempotent.
#
# This script starts nothing and configures nothing. The suite starts its own PostgreSQL and
# Redis (tests/support/services.py: own data directory, free port, stopped at the end of the
# session) and its own nginx (tests/deploy), so the machine's services, pg_hba.conf and ports
# stay as they were. Debian's packages start a machine-wide server from their install script;
# a policy-rc.d (the mechanism Docker images use) keeps them from doing so while we install,
# unless the machine already has one.
set -euo pipefail

say() { printf 'test-services: %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    say "need root to run: $*"; return 1; fi
}

POLICY=/usr/sbin/policy-rc.d
our_policy=""
remove_policy() { if [ -n "$our_policy" ]; then as_root rm -f "$POLICY"; fi; }
trap remove_policy EXIT

apt_updated=""
apt_install() {
  if [ ! -e "$POLICY" ]; then
    say "holding back service starts during the install ($POLICY, removed afterwards)"
    printf '#!/bin/sh\n# test-services.sh: install only, start nothing.\nexit 101\n' |
      as_root tee "$POLICY" >/dev/null
    as_root chmod 755 "$POLICY"
    our_policy=1
  fi
  [ -n "$apt_updated" ] || { as_root apt-get update -q; apt_updated=1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

have_postgres() {
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null
}
have_redis() { command -v redis-server >/dev/null; }
have_nginx() { command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; }

missing=()
have_postgres || missing+=(postgresql)
have_redis || missing+=(redis-server)
have_nginx || missing+=(nginx)

if [ "${#missing[@]}" -gt 0 ]; then
  say "installing Debian's ${missing[*]}"
  apt_install "${missing[@]}"
fi

have_postgres && have_redis && have_nginx || { say "a server binary is still missing"; exit 1; }
say "PostgreSQL, redis-server and nginx binaries present (the suite runs private instances)"
