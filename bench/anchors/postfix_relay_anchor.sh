#!/bin/sh
# A private Postfix instance that relays remote.test to an smtp-sink, as the anchor for
# bench/relay.py (its own config, queue and port, so the other anchors stay untouched).
#   bench/postfix_relay_anchor.sh start [SMTP_PORT] [SINK_PORT]   (default 10125, 10099)
#   python bench/relay.py --postfix 10125 --sink-port 10099
#   bench/postfix_relay_anchor.sh stop
set -e
ROOT=${PFRELAY_ROOT:-/tmp/mailsuite-pfrelay}
PORT=${2:-10125}
SINK=${3:-10099}
case "$1" in
start)
  mkdir -p "$ROOT/postfix" "$ROOT/queue" "$ROOT/data"
  chmod 755 "$ROOT"
  chown postfix "$ROOT/data"
  cat > "$ROOT/postfix/main.cf" <<CF
compatibility_level = 3.6
config_directory = $ROOT/postfix
queue_directory = $ROOT/queue
data_directory = $ROOT/data
daemon_directory = /usr/lib/postfix/sbin
command_directory = /usr/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = relay-anchor.test
mydomain = relay-anchor.test
myorigin = relay-anchor.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
transport_maps = texthash:$ROOT/postfix/transport
default_transport = error:relay anchor sends only remote.test
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_banner = \$myhostname ESMTP relay anchor
biff = no
append_dot_mydomain = no
alias_maps =
alias_database =
local_recipient_maps =
maillog_file = $ROOT/data/maillog
maillog_file_prefixes = $ROOT
CF
  echo "remote.test smtp:[127.0.0.1]:$SINK" > "$ROOT/postfix/transport"
  sed "s/^127.0.0.1:@POSTFIX_PORT@ /127.0.0.1:$PORT /" "$(dirname "$0")/anchor-configs/postfix/master.cf" > "$ROOT/postfix/master.cf"
  postfix -c "$ROOT/postfix" start
  ;;
stop)
  postfix -c "$ROOT/postfix" stop || true
  ;;
*)
  echo "usage: $0 start|stop [SMTP_PORT] [SINK_PORT]" >&2; exit 2 ;;
esac
