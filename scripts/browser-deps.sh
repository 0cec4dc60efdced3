#!/usr/bin/env bash
# Make sure the tools of the end-to-end tests exist: Debian's Chromium (driven by Playwright for
# Python), Node's `ws` package for the independent protocol client and `axe-core` for the
# accessibility checks (both into gitignored node_modules). Idempotent.
#
# Browsers come from Debian's packages, never from `playwright install`: only package registries
# are reachable. Under CI=true a missing tool fails loudly (the test command must never pass by
# skipping); elsewhere the tests that need it skip with a loud reason.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CHROMIUM=/usr/bin/chromium
NODE_CLIENT_DIR=tests/protocol/node
AXE_DIR=tests/browser/node

say() { printf 'browser-deps: %s\n' "$*"; }
shout() {
  printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
  printf '!!! browser-deps: %s\n' "$@" >&2
  printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n' >&2
}
in_ci() { [ "${CI:-}" = "true" ]; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    say "need root to run: $*"; return 1; fi
}

status=0

# --- Chromium -----------------------------------------------------------------------------------
if [ -x "$CHROMIUM" ]; then
  say "Chromium present: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
else
  say "Chromium missing; installing Debian's chromium package"
  if as_root apt-get update -q && \
     as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium fonts-noto-color-emoji && \
     [ -x "$CHROMIUM" ]; then
    say "Chromium installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
  else
    shout "could not install Chromium ($CHROMIUM is missing)." \
          "The browser end-to-end tests (tests/browser) cannot run."
    if in_ci; then status=1; else say "outside CI: the browser tests will skip"; fi
  fi
fi

# --- Node's ws package --------------------------------------------------------------------------
if [ -d "$NODE_CLIENT_DIR/node_modules/ws" ]; then
  say "node ws package present"
elif command -v npm >/dev/null; then
  say "installing node's ws package in $NODE_CLIENT_DIR"
  if ! (cd "$NODE_CLIENT_DIR" && npm install --no-audit --no-fund --loglevel=error); then
    shout "npm install failed in $NODE_CLIENT_DIR: the Node protocol client cannot run."
    if in_ci; then status=1; fi
  fi
else
  if in_ci; then
    shout "npm is missing: the Node protocol client (tests/protocol) cannot run."
    status=1
  else
    say "npm missing; outside CI the Node protocol client tests will skip"
  fi
fi

# --- axe-core (accessibility rules injected into pages by tests/browser) -------------------------
if [ -f "$AXE_DIR/node_modules/axe-core/axe.min.js" ]; then
  say "axe-core present"
elif command -v npm >/dev/null; then
  say "installing axe-core in $AXE_DIR"
  if ! (cd "$AXE_DIR" && npm install --no-audit --no-fund --loglevel=error); then
    shout "npm install failed in $AXE_DIR: the accessibility checks cannot run."
    if in_ci; then status=1; fi
  fi
elif in_ci; then
  shout "npm is missing: the accessibility checks (tests/browser) cannot run."
  status=1
fi

exit "$status"
