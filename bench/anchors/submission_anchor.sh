#!/usr/bin/env bash
# A Postfix instance with TLS, as the anchor for bench/submission.py.
#
#   bench/submission_anchor.sh start|stop
#
# Needs the anchors configured first (bench/anchors/setup_anchors.sh configure):
# it copies their live Postfix main.cf/master.cf from $ANCHOR_ROOT/postfix and adds
#   127.0.0.1:$ANCHOR_POSTFIX_TLS_PORT    (10045) smtpd, STARTTLS offered (security level may)
#   127.0.0.1:$ANCHOR_POSTFIX_WRAP_PORT   (10465) smtpd, TLS from the first byte
# with a self-signed P-256 certificate, TLS >= 1.2 and Postfix's default ciphers, into
# its own config, queue and data folders ($ANCHOR_ROOT/postfix-tls*); mail goes to the
# same virtual Maildirs as the plain anchor ($ANCHOR_ROOT/postfix-mail/<user>/).
# No SASL (that would need a Dovecot auth socket): compare the "starttls" and
# "handshake" modes, e.g.
#   python3 bench/submission.py --server 127.0.0.1:10045 --tls-port 10465 \
#       --maildir $ANCHOR_ROOT/postfix-mail/alice --modes starttls handshake --label postfix
# Postfix CPU: bench/submission.py --pid $(cat $ANCHOR_ROOT/postfix-tls-queue/pid/master.pid)
set -euo pipefail
A=${ANCHOR_ROOT:-${TMPDIR:-/tmp}/mailsuite-anchors}
TLS_PORT=${ANCHOR_POSTFIX_TLS_PORT:-10045}
WRAP_PORT=${ANCHOR_POSTFIX_WRAP_PORT:-10465}
C=$A/postfix-tls
Q=$A/postfix-tls-queue
D=$A/postfix-tls-data

case "${1:-start}" in
start)
  [ -f "$A/postfix/main.cf" ] || { echo "configure the anchors first (bench/anchors/setup_anchors.sh configure) ($A/postfix/main.cf)"; exit 1; }
  mkdir -p "$C" "$Q" "$D"
  sed -e "s#^config_directory = .*#config_directory = $C#" \
      -e "s#^queue_directory = .*#queue_directory = $Q#" \
      -e "s#^data_directory = .*#data_directory = $D#" \
      -e "s#^maillog_file = .*#maillog_file = $D/maillog#" \
      -e "s#texthash:$A/postfix/vmailbox#texthash:$C/vmailbox#" \
      "$A/postfix/main.cf" > "$C/main.cf"
  cp "$A/postfix/vmailbox" "$C/vmailbox"
  if [ ! -f "$C/key.pem" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
      -subj /CN=mail.example.test -keyout "$C/key.pem" -out "$C/cert.pem" 2>/dev/null
  fi
  cat >> "$C/main.cf" <<EOF
# TLS for the submission benchmark
smtpd_tls_cert_file = $C/cert.pem
smtpd_tls_key_file = $C/key.pem
smtpd_tls_security_level = may
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_tls_loglevel = 0
EOF
  # Same services, but listening on the TLS ports instead of the plain anchor port.
  grep -v '^127\.0\.0\.1:' "$A/postfix/master.cf" > "$C/master.cf"
  cat >> "$C/master.cf" <<EOF
127.0.0.1:$TLS_PORT inet n - n - - smtpd
127.0.0.1:$WRAP_PORT inet n - n - - smtpd
  -o smtpd_tls_wrappermode=yes
EOF
  chown -R postfix:postfix "$D"
  script -qc "postfix -c '$C' set-permissions" /dev/null >/dev/null 2>&1 || true
  script -qc "postfix -c '$C' start" /dev/null
  echo "postfix-tls: STARTTLS on $TLS_PORT, implicit TLS on $WRAP_PORT, master pid $(tr -d ' \n' < "$Q/pid/master.pid")"
  ;;
stop)
  script -qc "postfix -c '$C' stop" /dev/null || true
  ;;
*)
  echo "usage: $0 start|stop"; exit 2 ;;
esac
