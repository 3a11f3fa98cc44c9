#!/usr/bin/env bash
# integration/pg_tls: taskbus against a PostgreSQL that takes only TLS connections with
# SCRAM-SHA-256 passwords (tools/pg-tls makes it: its own folder and port, as the postgres
# user, no network), the password only in a libpq passfile (mode 0600):
#   1. `taskbus admin migrate` and `admin topics ensure` with sslmode=verify-full (the
#      throwaway CA as sslrootcert, host 127.0.0.1 in the certificate's SAN) and passfile=;
#   2. a taskbusd with the projector and api roles on it: /healthz says postgres ok, and every
#      connection of user taskbus in pg_stat_activity is encrypted (pg_stat_ssl.ssl), the
#      pool's and the api's listener's alike; the server log says "SSL enabled" for each;
#   3. a wrong password (a passfile's, and one written in the URL) fails the CLI and taskbusd
#      with "password authentication failed", and the message does not hold the password;
#   4. sslmode=disable is refused by the server ("no encryption"); a CA that did not sign
#      the server's certificate fails verify-full; a passfile others can read is ignored;
#   5. a malformed URL with a password in it: the error names postgres.url, not the password;
#   6. the password is in no log line and no output of any of the above, and in no file
#      others can read.
# Kafka is the test stack's (TASKBUS_KAFKA, started by tools/test); the topics get a prefix of
# their own. Port: TB_TEST_PG_TLS_PORT, else TASKBUS_PG_PORT + 1.
set -euo pipefail
B=${TB_BUILD_DIR:?TB_BUILD_DIR: the build tree (set by ctest)}
S=${TB_SOURCE_DIR:?TB_SOURCE_DIR: the source tree (set by ctest)}
: "${TASKBUS_KAFKA:?TASKBUS_KAFKA: the test stack Kafka (tools/test sets it)}"
: "${TASKBUS_PG_PORT:?TASKBUS_PG_PORT: the test stack PostgreSQL port (tools/test sets it)}"
PORT=${TB_TEST_PG_TLS_PORT:-$((TASKBUS_PG_PORT + 1))}
t0=$(date +%s)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tb-pgtls.XXXXXX")
chmod 755 "$tmp"   # the postgres user walks into it
PGD=$tmp/pg
tbd_pid=
cleanup() {
  [[ -n $tbd_pid ]] && kill "$tbd_pid" 2>/dev/null && wait "$tbd_pid" 2>/dev/null || true
  TASKBUS_PG_TLS_DIR=$PGD TASKBUS_PG_TLS_PORT=$PORT "$S/tools/pg-tls" down >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fails=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }

# ---- the secure cluster --------------------------------------------------------
TASKBUS_PG_TLS_DIR=$PGD TASKBUS_PG_TLS_PORT=$PORT "$S/tools/pg-tls" up >"$tmp/pg-tls.out" 2>&1 \
  || { cat "$tmp/pg-tls.out"; echo "FAIL tools/pg-tls up"; exit 1; }
echo "secure cluster up on 127.0.0.1:$PORT in $(( $(date +%s) - t0 )) s"
PW=$(head -n1 "$PGD/passfile" | cut -d: -f5-)
[[ ${#PW} -ge 32 ]] || { echo "FAIL no password in $PGD/passfile"; exit 1; }
# SQL as the server's owner over its socket (peer): postgres when we are root, else ourselves
sqldb() {
  local db=$1; shift
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- psql -h "$PGD/run" -p "$PORT" -d "$db" -tAF'|' -c "$1"
  else psql -h "$PGD/run" -p "$PORT" -U "$(id -un)" -d "$db" -tAF'|' -c "$1"; fi
}
sql() { sqldb postgres "$1"; }
owner=postgres; [[ $(id -u) -eq 0 ]] || owner=$(id -un)
check "passfile is mode 0600" test "$(stat -c %a "$PGD/passfile")" = 600
check "server key in the data folder is mode 0600, owned by $owner" \
  test "$(stat -c %a:%U "$PGD/data/server.key")" = "600:$owner"
check "pg_hba.conf has no plain 'host' line" bash -c '! grep -Eq "^host[[:space:]]" "$1"' _ "$PGD/data/pg_hba.conf"
check "password_encryption = scram-sha-256 in effect" test "$(sql "show password_encryption")" = scram-sha-256
check "role taskbus has a SCRAM verifier, not a plain or md5 password" \
  test "$(sql "select left(rolpassword, 14) from pg_authid where rolname = 'taskbus'")" = 'SCRAM-SHA-256$'

BASE="postgresql://taskbus@127.0.0.1:$PORT/taskbus"
URL="$BASE?sslmode=verify-full&sslrootcert=$PGD/ca.pem&passfile=$PGD/passfile"
key=$tmp/taskbus.key
(umask 077; openssl rand -hex 32 >"$key")
api_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
prefix="tbt-pgtls-$$-$RANDOM."
cat >"$tmp/taskbus.conf" <<CONF
region = "local";
topics = { prefix = "$prefix"; partitions = 1; };
api = { listen = "127.0.0.1:$api_port"; };
security = { key_file = "$key"; };
kafka = { bootstrap_servers = "$TASKBUS_KAFKA"; };
CONF
unset TASKBUS_CONFIG TASKBUS_API_LISTEN TASKBUS_REGION PGPASSFILE PGSSLROOTCERT PGPASSWORD
cli() { "$B/bin/taskbus" "$@" --config "$tmp/taskbus.conf"; }
outs=()   # every output and log, for the password check at the end
run() {   # name expected-rc cmd...: run, keep its output in $tmp/NAME.out
  local name=$1 want=$2 rc=0; shift 2
  "$@" >"$tmp/$name.out" 2>&1 || rc=$?
  outs+=("$tmp/$name.out")
  if [[ $want == 0 && $rc != 0 ]] || [[ $want != 0 && $rc == 0 ]]; then
    bad "$name: exit $rc (expected $( [[ $want == 0 ]] && echo 0 || echo non-zero))"; sed 's/^/     /' "$tmp/$name.out"
    return 1
  fi
  ok "$name: exit $rc"
}

# ---- 1. schema and topics over TLS --------------------------------------------
run migrate 0 env TASKBUS_PG="$URL" "$B/bin/taskbus" admin migrate --config "$tmp/taskbus.conf" || true
run migrate-status 0 env TASKBUS_PG="$URL" "$B/bin/taskbus" admin migrate --status --config "$tmp/taskbus.conf" || true
version=$(sqldb taskbus "select max(version) from schema_migrations" || true)
check "schema version > 0 after migrate (got ${version:-none})" test "${version:-0}" -gt 0
run topics 0 env TASKBUS_PG="$URL" "$B/bin/taskbus" admin topics ensure --config "$tmp/taskbus.conf" || true

# ---- 2. taskbusd (projector, api) over TLS ------------------------------------
TASKBUS_PG="$URL" "$B/bin/taskbusd" --config "$tmp/taskbus.conf" --roles projector,api \
  >"$tmp/taskbusd.log" 2>&1 &
tbd_pid=$!
outs+=("$tmp/taskbusd.log")
pg_ok() { python3 -c 'import json, sys; sys.exit(0 if json.loads(sys.argv[1])["postgres"]["ok"] is True else 1)' "$1" 2>/dev/null; }
health=""
for ((i = 0; i < 300; i++)); do
  kill -0 "$tbd_pid" 2>/dev/null || break
  health=$(curl -s "http://127.0.0.1:$api_port/healthz" || true)
  pg_ok "$health" && break
  sleep 0.2
done
check "taskbusd /healthz: postgres ok (got: ${health:-nothing})" pg_ok "$health"
# the projector's pool, the api's pool and the api's LISTEN connection: wait for them
for ((i = 0; i < 100; i++)); do
  n=$(sql "select count(*) from pg_stat_activity where usename = 'taskbus'")
  ((n >= 3)) && break
  sleep 0.2
done
echo "connections of user taskbus (pid|application_name|ssl|version|cipher):"
sql "select a.pid, a.application_name, s.ssl, s.version, s.cipher from pg_stat_activity a
     join pg_stat_ssl s using (pid) where a.usename = 'taskbus' order by a.pid" | sed 's/^/     /'
IFS='|' read -r total enc apps < <(sql "select count(*), count(*) filter (where s.ssl),
  string_agg(distinct a.application_name, ',') from pg_stat_activity a join pg_stat_ssl s using (pid)
  where a.usename = 'taskbus'")
check "taskbusd holds >= 3 connections as taskbus (got $total: $apps)" test "${total:-0}" -ge 3
check "all $total of them encrypted (pg_stat_ssl.ssl; $enc are)" test "${enc:-x}" = "${total:-y}"
check "all named application_name=taskbus (got $apps)" test "$apps" = taskbus
check "psql with the same URL: select ssl from pg_stat_ssl where pid = pg_backend_pid() is true" \
  bash -c '[[ $(psql "$1" -tAc "select ssl from pg_stat_ssl where pid = pg_backend_pid()") == t ]]' _ "$URL"
n_ssl_log=$(grep -c 'connection authorized: user=taskbus database=taskbus .*SSL enabled' "$PGD/postgres.log" || true)
n_auth_log=$(grep -c 'connection authorized: user=taskbus' "$PGD/postgres.log" || true)
check "server log: every authorized taskbus connection has SSL enabled ($n_ssl_log of $n_auth_log)" \
  test "$n_ssl_log" -eq "$n_auth_log" -a "$n_auth_log" -ge 3
kill "$tbd_pid"; wait "$tbd_pid" 2>/dev/null || true; tbd_pid=

# ---- 3. a wrong password ------------------------------------------------------
WRONG=$(openssl rand -hex 20)
(umask 077; sed "s/:$PW\$/:$WRONG/" "$PGD/passfile" >"$tmp/wrong.passfile")
WURL="$BASE?sslmode=verify-full&sslrootcert=$PGD/ca.pem&passfile=$tmp/wrong.passfile"
INLINE="postgresql://taskbus:$WRONG@127.0.0.1:$PORT/taskbus?sslmode=verify-full&sslrootcert=$PGD/ca.pem"
run wrong-passfile-cli 1 env TASKBUS_PG="$WURL" "$B/bin/taskbus" admin migrate --status --config "$tmp/taskbus.conf" || true
run wrong-inline-cli 1 env TASKBUS_PG="$INLINE" "$B/bin/taskbus" admin migrate --status --config "$tmp/taskbus.conf" || true
run wrong-inline-taskbusd 1 env TASKBUS_PG="$INLINE" timeout 60 "$B/bin/taskbusd" --config "$tmp/taskbus.conf" --roles projector,api || true
run wrong-inline-replay 1 "$B/bin/taskbus" replay --into "$INLINE" --config "$tmp/taskbus.conf" || true
for f in wrong-passfile-cli wrong-inline-cli wrong-inline-taskbusd wrong-inline-replay; do
  check "$f: says password authentication failed for user \"taskbus\"" \
    grep -q 'password authentication failed for user "taskbus"' "$tmp/$f.out"
  check "$f: the wrong password is not in the message" bash -c '! grep -qF -- "$1" "$2"' _ "$WRONG" "$tmp/$f.out"
done
check "taskbusd's message names postgres.url and the target by its parts" \
  grep -q 'postgres.url.*cannot connect to PostgreSQL (host 127.0.0.1, port '"$PORT"', database taskbus, user taskbus)' \
  "$tmp/wrong-inline-taskbusd.out"

# ---- 4. no plaintext, no unverified server, no loose passfile ------------------
run plaintext-cli 1 env TASKBUS_PG="$BASE?sslmode=disable&passfile=$PGD/passfile" "$B/bin/taskbus" admin migrate --status --config "$tmp/taskbus.conf" || true
check "sslmode=disable: the server refuses (pg_hba.conf rejects ... no encryption)" \
  grep -q 'pg_hba.conf rejects connection for host "127.0.0.1", user "taskbus", database "taskbus", no encryption' "$tmp/plaintext-cli.out"
check "server log: the plaintext attempt was rejected" grep -q 'no encryption' "$PGD/postgres.log"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$tmp/other-ca.key" \
  -out "$tmp/other-ca.pem" -days 1 -subj /CN=not-the-servers-ca >/dev/null 2>&1
run other-ca-cli 1 env TASKBUS_PG="$BASE?sslmode=verify-full&sslrootcert=$tmp/other-ca.pem&passfile=$PGD/passfile" "$B/bin/taskbus" admin migrate --status --config "$tmp/taskbus.conf" || true
check "verify-full with another CA: certificate verify failed" grep -q 'certificate verify failed' "$tmp/other-ca-cli.out"
run localhost-cli 0 env TASKBUS_PG="postgresql://taskbus@localhost:$PORT/taskbus?sslmode=verify-full&sslrootcert=$PGD/ca.pem&passfile=$PGD/passfile" "$B/bin/taskbus" admin migrate --status --config "$tmp/taskbus.conf" || true
cp "$PGD/passfile" "$tmp/loose.passfile"; chmod 644 "$tmp/loose.passfile"
run loose-passfile-cli 1 env TASKBUS_PG="$BASE?sslmode=verify-full&sslrootcert=$PGD/ca.pem&passfile=$tmp/loose.passfile" "$B/bin/taskbus" admin migrate --status --config "$tmp/taskbus.conf" || true
check "a passfile others can read is ignored (libpq: group or world access)" \
  grep -q 'has group or world access' "$tmp/loose-passfile-cli.out"
rm -f "$tmp/loose.passfile"
# PGPASSFILE and PGSSLROOTCERT instead of URL parameters
run env-vars-cli 0 env TASKBUS_PG="$BASE?sslmode=verify-full" PGPASSFILE="$PGD/passfile" PGSSLROOTCERT="$PGD/ca.pem" "$B/bin/taskbus" admin migrate --status --config "$tmp/taskbus.conf" || true

# ---- 5. a malformed URL holding the password ----------------------------------
run malformed-check-config 1 env TASKBUS_PG="postgresql://taskbus:$PW@[::1/taskbus" "$B/bin/taskbusd" --check-config "$tmp/taskbus.conf" || true
check "malformed URL: the message names postgres.url and masks the password" \
  grep -q 'postgres.url (from environment variable TASKBUS_PG): not a valid libpq connection string: .*taskbus:\*\*\*\*@' "$tmp/malformed-check-config.out"
run malformed-percent-cli 1 env TASKBUS_PG="postgresql://taskbus:${PW:0:8}%zz${PW:8}@127.0.0.1:$PORT/taskbus" "$B/bin/taskbus" admin migrate --status --config "$tmp/taskbus.conf" || true
check "bad percent-encoding in the password: the token is masked" grep -q 'invalid percent-encoded token: "\*\*\*\*"' "$tmp/malformed-percent-cli.out"
check "bad percent-encoding: no part of the password shown" bash -c '! grep -qF -- "${1:8}" "$2"' _ "$PW" "$tmp/malformed-percent-cli.out"

# ---- 6. the password nowhere it should not be ---------------------------------
cp "$PGD/postgres.log" "$tmp/postgres.log"; outs+=("$tmp/postgres.log")
for f in "${outs[@]}"; do
  check "password not in $(basename "$f") ($(wc -l <"$f") lines)" bash -c '! grep -qF -- "$1" "$2" && ! grep -qF -- "$3" "$2"' _ "$PW" "$f" "$WRONG"
done
leaks=$(find "$tmp" -type f -perm -o=r -exec grep -lF -- "$PW" {} + 2>/dev/null || true)
check "no file others can read holds the password${leaks:+: $leaks}" test -z "$leaks"
verifiers=$(sql "select rolpassword from pg_authid where rolpassword is not null")
check "the server holds only a SCRAM verifier, not the password (pg_authid)" \
  bash -c '[[ -n $1 && $1 != *"$2"* ]]' _ "$verifiers" "$PW"

echo "pg_tls: $(( $(date +%s) - t0 )) s, $fails failure(s)"
exit $((fails > 0))
