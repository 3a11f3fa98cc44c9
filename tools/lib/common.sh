# Shared by tools/*: paths, ports and helpers. Source it; it defines no side effects
# beyond variables and functions.
# Every port and folder comes from the environment so that a second stack (for
# tests) can run beside a user's.

TB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
: "${TASKBUS_STACK_DIR:=$TB_ROOT/.stack}"
: "${TASKBUS_CACHE_DIR:=${XDG_CACHE_HOME:-$HOME/.cache}/taskbus}"
: "${TASKBUS_BUILD_DIR:=$TB_ROOT/build}"
: "${TASKBUS_KAFKA_PORT:=9092}"
: "${TASKBUS_KAFKA_CONTROLLER_PORT:=$((TASKBUS_KAFKA_PORT + 1))}"
: "${TASKBUS_PG_PORT:=55432}"
: "${TASKBUS_API_PORT:=8080}"
: "${TASKBUS_REGION:=local}"
: "${TASKBUS_CONFIG:=$TB_ROOT/config/taskbus.conf}"
# The region's internal key (security.key_file): taskbusd signs and checks commands with it.
: "${TASKBUS_KEY_FILE:=$TASKBUS_STACK_DIR/taskbus.key}"
TB_KAFKA_VERSION=3.9.1
# The cache is keyed by the pom's content: adding a jar to tools/kafka/pom.xml
# fetches a new set instead of reusing an incomplete one.
TB_KAFKA_LIBS="$TASKBUS_CACHE_DIR/kafka-$TB_KAFKA_VERSION-$(md5sum <"$TB_ROOT/tools/kafka/pom.xml" | cut -c1-8)/libs"
TB_PG_BIN=/usr/lib/postgresql/15/bin
export TASKBUS_STACK_DIR TASKBUS_CACHE_DIR TASKBUS_BUILD_DIR TASKBUS_KAFKA_PORT \
       TASKBUS_KAFKA_CONTROLLER_PORT TASKBUS_PG_PORT TASKBUS_API_PORT TASKBUS_CONFIG TASKBUS_REGION \
       TASKBUS_KEY_FILE
export TASKBUS_KAFKA="127.0.0.1:$TASKBUS_KAFKA_PORT"
export TASKBUS_PG="postgresql://taskbus@127.0.0.1:$TASKBUS_PG_PORT/taskbus"
export TASKBUS_API_LISTEN="127.0.0.1:$TASKBUS_API_PORT"
export TASKBUS_API="http://127.0.0.1:$TASKBUS_API_PORT"
export TASKBUS_BIN="$TASKBUS_BUILD_DIR/bin"

tb_say()  { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
tb_warn() { printf 'warning: %s\n' "$*" >&2; }
tb_die()  { printf 'error: %s\n' "$*" >&2; exit 1; }

# Keep the kernel from handing a stack's port to an outgoing connection while the
# service that listens on it is down (PostgreSQL's 5543x ports are inside Linux's
# ephemeral range, 32768-60999): a restart would otherwise fail to bind. Needs root;
# without it the ports are merely unreserved, as before.
tb_reserve_ports() {
  local f=/proc/sys/net/ipv4/ip_local_reserved_ports cur p
  [[ -w $f ]] || return 0
  cur=$(<"$f")
  for p in "$@"; do
    [[ ,$cur, == *,$p,* ]] && continue
    cur=${cur:+$cur,}$p
  done
  echo "$cur" >"$f" 2>/dev/null || true
}

# Debian packages the project needs to build, run and test.
TB_PACKAGES=(build-essential cmake pkg-config git curl ca-certificates
  librdkafka-dev libpq-dev libavro-dev libconfig-dev libcriterion-dev
  libmicrohttpd-dev libjansson-dev libssh-dev libcurl4-openssl-dev libssl-dev libicu-dev
  postgresql-15 postgresql-client-15 openjdk-17-jre-headless maven
  python3 python3-venv python3-avro python3-confluent-kafka kcat podman runc uidmap busybox-static openssh-server openssh-client
  gnuplot-nox procps iproute2 util-linux tzdata dpkg-dev fakeroot systemd
  chromium chromium-driver python3-selenium)

# Create the internal key file (32 random bytes, hex, mode 0600) unless it exists.
tb_key_ensure() {
  [[ -s $TASKBUS_KEY_FILE ]] && return 0
  mkdir -p "$(dirname "$TASKBUS_KEY_FILE")"
  (umask 077; od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$TASKBUS_KEY_FILE"; echo >>"$TASKBUS_KEY_FILE")
  tb_say "created the internal key $TASKBUS_KEY_FILE (mode 0600)"
}

# Install what is missing (as root with apt-get; otherwise print the line and stop).
tb_install_packages() {
  local missing=() p
  for p in "${TB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  if [[ $(id -u) -ne 0 ]]; then
    tb_die "missing Debian packages; run: sudo apt-get install -y ${missing[*]}"
  fi
  tb_say "installing ${#missing[@]} Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q || tb_die "apt-get update failed"
  apt-get install -y -q --no-install-recommends "${missing[@]}" || tb_die "apt-get install failed"
}

# Build taskbus (sanitizers on when TB_SANITIZE=ON). The install prefix is
# /usr, the .deb's (tests/packaging makes one from the test tree; only
# the compiled code, plugin_host.c depends on it).
tb_build() {
  local san=${TB_SANITIZE:-OFF}
  tb_say "building taskbus in $TASKBUS_BUILD_DIR (sanitizers: $san)"
  cmake -S "$TB_ROOT" -B "$TASKBUS_BUILD_DIR" -DTB_SANITIZE="$san" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_INSTALL_PREFIX="${TB_INSTALL_PREFIX:-/usr}" >/dev/null \
    || tb_die "cmake configure failed"
  cmake --build "$TASKBUS_BUILD_DIR" -j"$(nproc)" || tb_die "build failed"
}

# Is the process in pid file $1 alive?
tb_pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Wait until TCP port $1 on 127.0.0.1 accepts connections (timeout $2 s).
tb_wait_port() {
  local port=$1 t=${2:-60} i
  for ((i = 0; i < t * 10; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
