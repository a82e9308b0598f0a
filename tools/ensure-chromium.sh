#!/usr/bin/env bash
# Headless Chromium renders the lab's HTML report in one test. Install it through the system's
# package manager where that is possible; otherwise say what to do (the test then fails, naming it).
set -u
for name in chromium chromium-browser google-chrome; do
  command -v "$name" >/dev/null 2>&1 && exit 0
done
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; fi
  fi
  if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
    echo "installing headless Chromium (apt-get) for the browser test..." >&2
    if $SUDO apt-get update -qq >/dev/null && \
       DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null; then
      exit 0
    fi
  fi
fi
if command -v brew >/dev/null 2>&1; then
  brew install --cask chromium >/dev/null 2>&1 && exit 0
fi
echo "warning: could not install Chromium (no root or no apt-get/brew);" \
  "install it by hand (e.g. 'sudo apt-get install chromium') for the browser test" >&2
exit 0
