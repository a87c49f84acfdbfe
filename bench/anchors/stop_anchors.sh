#!/bin/bash
# stop_anchors.sh : stop every anchor server started by setup_anchors.sh, by PID file only.
# Uses the same ANCHOR_ROOT as setup_anchors.sh (default ${TMPDIR:-/tmp}/mailsuite-anchors).
A=${ANCHOR_ROOT:-${TMPDIR:-/tmp}/mailsuite-anchors}
case $A in /*) ;; *) A=$PWD/$A ;; esac
A=${A%/}
[ -d "$A" ] || { echo "no $A (set ANCHOR_ROOT to the directory setup_anchors.sh used)" >&2; exit 1; }
stop_pidfile() {  # name pidfile
  [ -s "$2" ] || return 0
  local pid; pid=$(tr -d ' \n' < "$2")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" && echo "stopped $1 (pid $pid)"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$2"
}
# Postfix: its own stop command signals the master named in its pid file
if [ -s "$A/postfix-queue/pid/master.pid" ]; then
  script -qc "postfix -c '$A/postfix' stop" /dev/null
fi
# Dovecot: SIGTERM to the master (it takes its children down)
stop_pidfile dovecot "$A/dovecot-run/master.pid"
for f in "$A"/aiosmtpd.pid "$A"/aiosmtpd-nosync.pid "$A"/aiosmtpd-inline.pid \
         "$A"/twistd.pid "$A"/twistd-nodelay.pid "$A"/mailsuite.pid; do
  stop_pidfile "$(basename "$f" .pid)" "$f"
done
exit 0
