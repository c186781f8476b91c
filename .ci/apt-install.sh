#!/bin/sh
# Install Debian packages when apt-get is usable (root or passwordless sudo); otherwise say what is lost and go on.
# usage: apt-install.sh "what happens without them" PACKAGE...
without="$1"; shift
missing=""
for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
[ -z "$missing" ] && { echo "Debian packages present:$(printf ' %s' "$@")"; exit 0; }
if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  echo "installing Debian packages:$missing"
  if $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null; then
    exit 0
  fi
  echo "WARNING: apt-get could not install$missing; $without."
else
  echo "NOTE: apt-get is not usable here (no root or sudo), so$missing not installed; $without."
  echo "      To install them: sudo apt-get install$missing"
fi
exit 0
