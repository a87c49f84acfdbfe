#!/bin/bash
# setup_anchors.sh [install|configure|start|mailsuite|variants|all]...   (default: all)   -- run as root
# Builds the anchor servers under $ANCHOR_ROOT (default ${TMPDIR:-/tmp}/mailsuite-anchors) from
# the templates in anchor-configs/ and starts them, all on 127.0.0.1:
#   Postfix  smtpd $ANCHOR_POSTFIX_PORT (10025) -> virtual Maildir $ANCHOR_ROOT/postfix-mail/<user>/
#   Dovecot  IMAP $ANCHOR_DOVECOT_IMAP_PORT (11143), POP3 $ANCHOR_DOVECOT_POP3_PORT (11110),
#            Maildir $ANCHOR_ROOT/dovecot-mail/<user>
#   aiosmtpd $ANCHOR_AIOSMTPD_PORT (10026) -> $ANCHOR_ROOT/aiosmtpd-mail/<user>/ (tmp/, fsync, rename new/)
#   twistd mail (via twmail.tac) SMTP $ANCHOR_TWMAIL_SMTP_PORT (10027), POP3 $ANCHOR_TWMAIL_POP3_PORT
#            (10111) -> $ANCHOR_ROOT/twmail/<user>/
#   mailsuite from this checkout (its .venv, made if missing): SMTP $ANCHOR_MAILSUITE_SMTP_PORT (10028),
#            IMAP $ANCHOR_MAILSUITE_IMAP_PORT (11144), POP3 $ANCHOR_MAILSUITE_POP3_PORT (11111)
#            -> $ANCHOR_ROOT/mailsuite/data/mail/example.test/<user>/
#   `variants` (not part of `all`): aiosmtpd --mode inline on $ANCHOR_AIOSMTPD_INLINE_PORT (10030)
#            and --mode nosync on $ANCHOR_AIOSMTPD_NOSYNC_PORT (10029), for aiosmtpd-variants.servers.
# Users: alice/alicepw, bob/bobpw, carol/carolpw (twistd/POP3 login is user@example.test).
# Ports: the ANCHOR_*_PORT environment variables, else those recorded in $ANCHOR_ROOT/anchors.env
# by an earlier `configure`, else the defaults above.  `configure` writes them into the live
# configs and anchors.env (which `start` and `variants` read back), and writes the servers
# files $ANCHOR_ROOT/anchors.servers and $ANCHOR_ROOT/aiosmtpd-variants.servers for
# run_smtp_matrix.sh.
# $ANCHOR_ROOT and every directory above it must be searchable by other users (Postfix,
# Dovecot and the mail uid 5000 work in it).  Nothing is installed as a system service;
# stop everything with stop_anchors.sh (same ANCHOR_ROOT).
set -euo pipefail
A=${ANCHOR_ROOT:-${TMPDIR:-/tmp}/mailsuite-anchors}
case $A in /*) ;; *) A=$PWD/$A ;; esac
A=${A%/}
export ANCHOR_ROOT=$A
HERE=$(cd "$(dirname "$0")" && pwd)
CFG=$HERE/anchor-configs
REPO=$(cd "$HERE/../.." && pwd)

# name of the placeholder in the templates  <->  environment variable  <->  default
PORT_VARS="POSTFIX_PORT:ANCHOR_POSTFIX_PORT:10025
AIOSMTPD_PORT:ANCHOR_AIOSMTPD_PORT:10026
TWMAIL_SMTP_PORT:ANCHOR_TWMAIL_SMTP_PORT:10027
TWMAIL_POP3_PORT:ANCHOR_TWMAIL_POP3_PORT:10111
DOVECOT_IMAP_PORT:ANCHOR_DOVECOT_IMAP_PORT:11143
DOVECOT_POP3_PORT:ANCHOR_DOVECOT_POP3_PORT:11110
AIOSMTPD_INLINE_PORT:ANCHOR_AIOSMTPD_INLINE_PORT:10030
AIOSMTPD_NOSYNC_PORT:ANCHOR_AIOSMTPD_NOSYNC_PORT:10029
MAILSUITE_SMTP_PORT:ANCHOR_MAILSUITE_SMTP_PORT:10028
MAILSUITE_IMAP_PORT:ANCHOR_MAILSUITE_IMAP_PORT:11144
MAILSUITE_POP3_PORT:ANCHOR_MAILSUITE_POP3_PORT:11111"

load_ports() {  # ports: the environment, else anchors.env, else the default ("saved": anchors.env first)
  local ph var def saved val
  if [ "${1:-}" = saved ] && [ ! -s "$A/anchors.env" ]; then
    echo "no $A/anchors.env: run '$0 configure' first (with the same ANCHOR_ROOT)" >&2; exit 1
  fi
  while IFS=: read -r ph var def; do
    saved=
    [ -s "$A/anchors.env" ] && saved=$(sed -n "s/^$var=//p" "$A/anchors.env" | tail -1)
    if [ "${1:-}" = saved ]; then val=${saved:-${!var:-$def}}; else val=${!var:-${saved:-$def}}; fi
    case $val in ''|*[!0-9]*) echo "$var=$val is not a port number" >&2; exit 2 ;; esac
    export "$var=$val"
  done <<<"$PORT_VARS"
}

port_busy() { ss -ltnH "sport = :$1" 2>/dev/null | grep -q .; }

check_ports() {  # VAR... : fail if any of these ports is already taken
  local v bad=0
  for v in "$@"; do
    if port_busy "${!v}"; then
      echo "port ${!v} ($v) is already in use on this host; stop what holds it, or choose another," \
           "e.g. $v=$(( ${!v} + 100 )) $0 configure start" >&2
      bad=1
    fi
  done
  [ $bad = 0 ] || exit 1
}

render() {  # TEMPLATE OUTPUT : fill in @ANCHOR_ROOT@ and the @..._PORT@ placeholders
  local args=() ph var def root
  root=$(printf '%s' "$A" | sed 's/[|&\\]/\\&/g')
  args+=(-e "/^# Template:/d" -e "s|@ANCHOR_ROOT@|$root|g")
  while IFS=: read -r ph var def; do args+=(-e "s|@$ph@|${!var}|g"); done <<<"$PORT_VARS"
  sed "${args[@]}" "$1" > "$2"
  if grep -n '@[A-Z][A-Z0-9_]*@' "$2" >&2; then echo "unfilled placeholder in $2" >&2; exit 1; fi
}

install() {
  local missing=() p
  for p in postfix dovecot-imapd dovecot-pop3d swaks gcc iproute2; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
  if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    echo "postfix postfix/mailname string anchor.test" | debconf-set-selections
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  mkdir -p "$A"
  [ -x "$A/venv/bin/python" ] || python3 -m venv "$A/venv"
  "$A/venv/bin/pip" install -q twisted aiosmtpd
}

configure() {
  load_ports
  check_ports ANCHOR_POSTFIX_PORT ANCHOR_AIOSMTPD_PORT ANCHOR_TWMAIL_SMTP_PORT ANCHOR_TWMAIL_POP3_PORT \
              ANCHOR_DOVECOT_IMAP_PORT ANCHOR_DOVECOT_POP3_PORT
  mkdir -p "$A"/{postfix,postfix-queue,postfix-data,postfix-mail,dovecot,dovecot-run,dovecot-state} \
           "$A"/{dovecot-mail,aiosmtpd-mail,twmail}
  chmod 755 "$A"
  local d=$A
  while d=$(dirname "$d"); [ "$d" != / ]; do
    [ -n "$(find "$d" -maxdepth 0 -perm -o+x)" ] ||
      echo "warning: $d is not searchable by other users; Postfix/Dovecot deliveries will fail" >&2
  done
  render "$CFG/postfix/main.cf" "$A/postfix/main.cf"
  render "$CFG/postfix/master.cf" "$A/postfix/master.cf"
  cp "$CFG/postfix/vmailbox" "$A/postfix/vmailbox"
  render "$CFG/dovecot/dovecot.conf" "$A/dovecot/dovecot.conf"
  render "$CFG/dovecot/users" "$A/dovecot/users"
  chmod 644 "$A/dovecot/users"
  mkdir -p "$A/mailsuite"
  render "$CFG/mailsuite/mailsuite.toml" "$A/mailsuite/mailsuite.toml"
  printf 'alice@example.test:{PLAIN}alicepw\nbob@example.test:{PLAIN}bobpw\ncarol@example.test:{PLAIN}carolpw\n' \
    > "$A/mailsuite/users"
  : > "$A/mailsuite/aliases"
  render "$HERE/anchors.servers" "$A/anchors.servers"
  render "$HERE/aiosmtpd-variants.servers" "$A/aiosmtpd-variants.servers"
  local ph var def
  { echo "# ports chosen by setup_anchors.sh configure"
    while IFS=: read -r ph var def; do echo "$var=${!var}"; done <<<"$PORT_VARS"
  } > "$A/anchors.env"
  chown 5000:5000 "$A/postfix-mail" "$A/dovecot-mail"
  chown -R postfix:postfix "$A/postfix-data"
  # postfix logs fatal errors to syslog unless stderr is a tty: use `script` to see them
  script -qc "postfix -c '$A/postfix' set-permissions" /dev/null >/dev/null 2>&1 || true
  # twistd mail: `-u user=pass` is broken on py3 (DirDBM key must be bytes) -> write the dirdbm
  PASSWD_DIR=$A/twmail/passwd "$A/venv/bin/python" - <<'PY'
import os
from twisted.persisted import dirdbm
p = os.environ["PASSWD_DIR"]
os.makedirs(p, exist_ok=True)
d = dirdbm.open(p)
for u, pw in ((b"alice", b"alicepw"), (b"bob", b"bobpw"), (b"carol", b"carolpw"), (b"bench", b"benchpw")):
    d[u] = pw
PY
  echo "configured $A (servers file: $A/anchors.servers)"
}

wait_ports() {  # PORT... : up to 20 s for each to accept connections
  local p
  for p in "$@"; do
    for _ in $(seq 1 100); do port_busy "$p" && break; sleep 0.2; done
    port_busy "$p" || echo "warning: nothing listens on 127.0.0.1:$p" >&2
  done
}

start() {
  load_ports saved
  check_ports ANCHOR_POSTFIX_PORT ANCHOR_AIOSMTPD_PORT ANCHOR_TWMAIL_SMTP_PORT ANCHOR_TWMAIL_POP3_PORT \
              ANCHOR_DOVECOT_IMAP_PORT ANCHOR_DOVECOT_POP3_PORT
  script -qc "postfix -c '$A/postfix' start" /dev/null
  # dovecot keeps the stderr it was started with open for good: give it a file, not ours
  if ! dovecot -c "$A/dovecot/dovecot.conf" < /dev/null > /dev/null 2> "$A/dovecot.stderr"; then
    cat "$A/dovecot.stderr" >&2; exit 1
  fi
  # setsid -f: detached, in its own session, holding none of this script's fds
  (cd "$A" && setsid -f "$A/venv/bin/python" "$HERE/aiosmtpd_maildir.py" --root "$A/aiosmtpd-mail" \
      --port "$ANCHOR_AIOSMTPD_PORT" --pidfile "$A/aiosmtpd.pid" > "$A/aiosmtpd.log" 2>&1 < /dev/null)
  # twmail.tac reads ANCHOR_ROOT and ANCHOR_TWMAIL_{SMTP,POP3}_PORT from the environment
  (cd "$A" && "$A/venv/bin/twistd" --pidfile "$A/twistd.pid" -l "$A/twistd.log" -y "$HERE/twmail.tac")
  wait_ports "$ANCHOR_POSTFIX_PORT" "$ANCHOR_AIOSMTPD_PORT" "$ANCHOR_TWMAIL_SMTP_PORT" \
             "$ANCHOR_TWMAIL_POP3_PORT" "$ANCHOR_DOVECOT_IMAP_PORT" "$ANCHOR_DOVECOT_POP3_PORT"
  echo "postfix master $(tr -d ' \n' < "$A/postfix-queue/pid/master.pid")  dovecot $(cat "$A/dovecot-run/master.pid")" \
       " aiosmtpd $(cat "$A/aiosmtpd.pid")  twistd $(cat "$A/twistd.pid")"
  echo "listening: postfix $ANCHOR_POSTFIX_PORT, aiosmtpd $ANCHOR_AIOSMTPD_PORT," \
       "twistd $ANCHOR_TWMAIL_SMTP_PORT/POP3 $ANCHOR_TWMAIL_POP3_PORT," \
       "dovecot IMAP $ANCHOR_DOVECOT_IMAP_PORT/POP3 $ANCHOR_DOVECOT_POP3_PORT; servers file $A/anchors.servers"
}

mailsuite() {  # mailsuite of this checkout, beside the anchors (after configure)
  load_ports saved
  check_ports ANCHOR_MAILSUITE_SMTP_PORT ANCHOR_MAILSUITE_IMAP_PORT ANCHOR_MAILSUITE_POP3_PORT
  [ -s "$A/mailsuite/mailsuite.toml" ] || { echo "no $A/mailsuite/mailsuite.toml: run '$0 configure' first" >&2; exit 1; }
  (cd "$REPO" && . scripts/_common.sh && make_venv "")
  "$REPO/.venv/bin/mailsuite" check-config "$A/mailsuite/mailsuite.toml" > /dev/null
  (cd "$A/mailsuite" && "$REPO/.venv/bin/twistd" --pidfile "$A/mailsuite.pid" -l "$A/mailsuite.log" \
      mailsuite --config "$A/mailsuite/mailsuite.toml")
  wait_ports "$ANCHOR_MAILSUITE_SMTP_PORT" "$ANCHOR_MAILSUITE_IMAP_PORT" "$ANCHOR_MAILSUITE_POP3_PORT"
  echo "mailsuite $(cat "$A/mailsuite.pid"): SMTP $ANCHOR_MAILSUITE_SMTP_PORT, IMAP $ANCHOR_MAILSUITE_IMAP_PORT," \
       "POP3 $ANCHOR_MAILSUITE_POP3_PORT (log $A/mailsuite.log)"
}

variants() {  # the two diagnostic aiosmtpd handlers of aiosmtpd-variants.servers
  load_ports saved
  check_ports ANCHOR_AIOSMTPD_INLINE_PORT ANCHOR_AIOSMTPD_NOSYNC_PORT
  local m v
  for m in inline nosync; do
    v=ANCHOR_AIOSMTPD_${m^^}_PORT
    mkdir -p "$A/aiosmtpd-$m"
    (cd "$A" && setsid -f "$A/venv/bin/python" "$HERE/aiosmtpd_maildir.py" --root "$A/aiosmtpd-$m" \
        --mode "$m" --port "${!v}" --pidfile "$A/aiosmtpd-$m.pid" > "$A/aiosmtpd-$m.log" 2>&1 < /dev/null)
  done
  wait_ports "$ANCHOR_AIOSMTPD_INLINE_PORT" "$ANCHOR_AIOSMTPD_NOSYNC_PORT"
  echo "aiosmtpd-inline $(cat "$A/aiosmtpd-inline.pid") on $ANCHOR_AIOSMTPD_INLINE_PORT," \
       "aiosmtpd-nosync $(cat "$A/aiosmtpd-nosync.pid") on $ANCHOR_AIOSMTPD_NOSYNC_PORT"
}

[ $# -gt 0 ] || set -- all
for step in "$@"; do
  case $step in
    install) install ;;
    configure) configure ;;
    start) start ;;
    variants) variants ;;
    mailsuite) mailsuite ;;
    all) install; configure; start; mailsuite ;;
    *) echo "usage: [ANCHOR_ROOT=DIR] [ANCHOR_..._PORT=N] $0 [install|configure|start|mailsuite|variants|all]..." >&2; exit 2 ;;
  esac
done
