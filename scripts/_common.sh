# Shared by scripts/test and scripts/demo (sourced, not run): Debian packages and .venv.

# need_debs PKG...: install the packages that are missing (as root: apt-get update
# first, only then; no Recommends; no service started), or stop naming them.
need_debs() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  if [ "$(id -u)" != 0 ]; then
    echo "$0: missing Debian packages: ${missing[*]}" >&2
    echo "  install them as root: apt-get install --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  echo "$0: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Postfix, slapd and Dovecot ship daemons the tests never use (they start their own
  # instances on loopback): no mail system configuration, and no service started now.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  local policy=/usr/sbin/policy-rc.d ours="" rc=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && ours=1
  fi
  { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } || rc=$?
  [ -z "$ours" ] || rm -f "$policy"
  [ $rc = 0 ] || { echo "$0: apt-get failed ($rc) installing ${missing[*]}" >&2; exit $rc; }
}

# make_venv EXTRAS: .venv with mailsuite installed editable (EXTRAS e.g. "[test]" or "").
make_venv() {
  local py=${PYTHON:-python3}
  command -v "$py" > /dev/null || { echo "$0: no $py: install python3 (3.11 or later)" >&2; exit 1; }
  if [ ! -x .venv/bin/python ]; then
    # Debian's python3 has no ensurepip (hence no venv) without python3-venv.
    "$py" -c 'import ensurepip' 2>/dev/null || need_debs python3-venv
    "$py" -m venv .venv
  fi
  .venv/bin/pip install -q -e ".$1"
}
