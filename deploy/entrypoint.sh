#!/bin/sh
# Give the data volume to the unprivileged roost user, then run roost as it.
set -eu
data="${ROOST_DATA_DIR:-/data}"
if [ "$(id -u)" = "0" ]; then
  mkdir -p "$data"
  chown roost:roost "$data"
  exec setpriv --reuid=roost --regid=roost --init-groups /usr/local/bin/roost "$@"
fi
exec /usr/local/bin/roost "$@"
