#!/usr/bin/env bash
# The test command: installs what the tests need, then runs the whole suite on CPU.
# Extra arguments go to pytest (e.g. `bash test.sh -k prompts`).
set -euo pipefail
cd "$(dirname "$0")"
bash setup.sh
# The web app's tests (tests/app/test_browser.py) drive Debian's headless Chromium through Selenium; Playwright's own
# browser download cannot work on these machines. Installed here when missing, as setup.sh does for Python packages
# (CI runs as root on a fresh machine); apt's output is shown only when the install fails. Without them the browser
# tests fail, naming what is missing: they are never skipped.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if [ "$(id -u)" = 0 ]; then
    apt_log="$(mktemp)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
        >"$apt_log" 2>&1; then
      cat "$apt_log" >&2
      echo "test.sh: could not install chromium and chromium-driver (apt-get's output above); the browser tests will fail" >&2
    fi
    rm -f "$apt_log"
  else
    echo "test.sh: the browser tests need Debian's chromium and chromium-driver: sudo apt-get install chromium chromium-driver" >&2
  fi
fi
exec "${PYTHON:-python3}" -m pytest "$@"
