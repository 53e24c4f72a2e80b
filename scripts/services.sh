#!/usr/bin/env bash
# Makes sure the servers the tests use answer: PostgreSQL, MariaDB and Redis on 127.0.0.1.
# A server that is installed but down is started with its usual command. With CI=true a
# server that still does not answer fails the run; elsewhere its tests are skipped.
set -u

answers() { # host port
  timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

wait_for() { # name port
  for _ in $(seq 1 30); do
    answers 127.0.0.1 "$2" && return 0
    sleep 1
  done
  return 1
}

start_postgres() {
  command -v pg_ctlcluster >/dev/null || return 1
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
}

start_redis() {
  command -v redis-server >/dev/null || return 1
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
}

start_mariadb() {
  [ -x /usr/sbin/mariadbd ] || return 1
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
}

failed=0
for entry in "postgres 5432 start_postgres" "mariadb 3306 start_mariadb" "redis 6379 start_redis"; do
  set -- $entry
  name=$1 port=$2 starter=$3
  if answers 127.0.0.1 "$port"; then
    echo "services: $name answers on 127.0.0.1:$port"
    continue
  fi
  echo "services: $name is down on 127.0.0.1:$port, starting it"
  if $starter >/dev/null 2>&1 && wait_for "$name" "$port"; then
    echo "services: $name started"
  else
    echo "services: $name could not be started" >&2
    failed=1
  fi
done

if [ "$failed" = 1 ] && [ "${CI:-}" = "true" ]; then
  echo "services: CI=true and a server is unreachable: failing the run" >&2
  exit 1
fi
exit 0
