#!/usr/bin/env bash
# Installs the Debian packages hostpower's tests and lab need, when run as root
# and only those that are missing. Safe to run again; prints what it does.
set -euo pipefail

want_pkgs=(fence-agents ipmitool snmp iproute2 openssh-server)
# The oVirt SDK tests (tests/test_ovirt_*.py) use ovirt-engine-sdk-python, which
# PyPI has only as a source package: it builds a C extension against libxml2.
want_pkgs+=(gcc libxml2-dev)
# The web console's end-to-end tests (tests/test_web_console.py) drive Debian's
# chromium with Playwright; Playwright never downloads a browser of its own.
# On by default; HOSTPOWER_WITH_BROWSER=0 skips it (those tests then skip too).
[ "${HOSTPOWER_WITH_BROWSER:-1}" = 1 ] && want_pkgs+=(chromium)

missing=()
for p in "${want_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "system-deps: missing Debian packages: ${missing[*]} (not root: install them yourself)" >&2
    else
        echo "system-deps: installing ${missing[*]}"
        # The lab runs OpenSSH's sshd itself, one per simulated host inside the
        # host's namespace (src/hostpower/lab/ssh.py); the machine's own ssh
        # service is not wanted. A machine that had no sshd keeps having none:
        # Debian's ssh unit and init script do not start while this file exists.
        if [[ " ${missing[*]} " == *" openssh-server "* ]] && [ ! -e /usr/sbin/sshd ]; then
            mkdir -p /etc/ssh
            touch /etc/ssh/sshd_not_to_be_run
            echo "system-deps: created /etc/ssh/sshd_not_to_be_run (the machine's ssh service stays off)"
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

# The test machines run PostgreSQL on 127.0.0.1:5432; start it if it stopped.
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
    if [ "$(id -u)" = 0 ] && command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
        echo "system-deps: starting PostgreSQL"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    fi
fi
exit 0
