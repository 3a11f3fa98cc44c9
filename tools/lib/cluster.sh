# tools/stack up --brokers 3: a three-broker KRaft Kafka (each node broker+controller,
# a quorum of three) and two taskbusd processes with every role, as on two machines.
# Sourced by tools/stack after its own functions (it uses kafka_fetch, java_pid,
# stop_pidfile, taskbus_cli, pg_up, init_schema). The single-node stack does not use it.
#
# Ports: broker N (1..3) listens on TASKBUS_KAFKA_PORT+2(N-1), its controller on the next
# port; taskbusd N (1..2) serves the API on TASKBUS_API_PORT+N-1.
# Folders: $TASKBUS_STACK_DIR/kafka-N (data, server.properties, kafka.log, kafka.pid) and
# $TASKBUS_STACK_DIR/taskbusd-N (taskbus.conf, taskbusd.log, taskbusd.pid).

TB_CLUSTER_BROKERS=3
TB_CLUSTER_NODES=2

cluster_mode() { [[ -f $TASKBUS_STACK_DIR/brokers ]]; }
cluster_broker_port() { echo $((TASKBUS_KAFKA_PORT + 2 * ($1 - 1))); }
cluster_controller_port() { echo $((TASKBUS_KAFKA_PORT + 2 * ($1 - 1) + 1)); }
cluster_api_port() { echo $((TASKBUS_API_PORT + $1 - 1)); }

# Switch this shell's Kafka and taskbusd variables to the cluster's.
cluster_env() {
  local n bs=""
  for ((n = 1; n <= TB_CLUSTER_BROKERS; n++)); do bs+=${bs:+,}127.0.0.1:$(cluster_broker_port "$n"); done
  export TASKBUS_KAFKA=$bs
}

cluster_kafka_up() {
  local n voters="" cid
  kafka_fetch
  for ((n = 1; n <= TB_CLUSTER_BROKERS; n++)); do voters+=${voters:+,}$n@127.0.0.1:$(cluster_controller_port "$n"); done
  local cid_file=$TASKBUS_STACK_DIR/kafka-cluster-id
  [[ -s $cid_file ]] || java -cp "$TB_KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1 >"$cid_file"
  cid=$(cat "$cid_file")
  for ((n = 1; n <= TB_CLUSTER_BROKERS; n++)); do cluster_broker_up "$n" "$voters" "$cid"; done
  for ((n = 1; n <= TB_CLUSTER_BROKERS; n++)); do
    tb_wait_port "$(cluster_broker_port "$n")" 120 || { tail -20 "$TASKBUS_STACK_DIR/kafka-$n/kafka.log"; tb_die "kafka broker $n did not start"; }
  done
  # the quorum elects a leader and the brokers register: wait until all three are in the metadata
  local i; for ((i = 0; i < 120; i++)); do
    [[ $(kcat -b "$TASKBUS_KAFKA" -L -m 5 2>/dev/null | grep -c '^  broker [0-9]') == "$TB_CLUSTER_BROKERS" ]] && return 0
    sleep 0.5
  done
  tb_die "the Kafka cluster did not show $TB_CLUSTER_BROKERS brokers within 60 s (logs: $TASKBUS_STACK_DIR/kafka-N/kafka.log)"
}

cluster_broker_up() {  # n voters cluster-id
  local n=$1 voters=$2 cid=$3 d=$TASKBUS_STACK_DIR/kafka-$1 port ctl
  port=$(cluster_broker_port "$n"); ctl=$(cluster_controller_port "$n")
  if tb_pid_alive "$d/kafka.pid"; then echo "kafka-$n: already running (pid $(cat "$d/kafka.pid"))"; return 0; fi
  tb_reserve_ports "$port" "$ctl"
  local p; for p in "$port" "$ctl"; do
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && tb_die "port $p (kafka-$n) is already in use: choose another TASKBUS_KAFKA_PORT"
  done
  mkdir -p "$d/data"
  cat >"$d/server.properties" <<PROPS
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$ctl
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$d/data
num.partitions=1
auto.create.topics.enable=false
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
transaction.state.log.num.partitions=10
group.initial.rebalance.delay.ms=0
transaction.abort.timed.out.transaction.cleanup.interval.ms=10000
log.retention.check.interval.ms=60000
unclean.leader.election.enable=false
PROPS
  cat >"$d/log4j.properties" <<PROPS
log4j.rootLogger=WARN, file
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File=$d/kafka.log
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
PROPS
  if [[ ! -f $d/data/meta.properties ]]; then
    java -cp "$TB_KAFKA_LIBS/*" -Dlog4j.configuration="file:$d/log4j.properties" kafka.tools.StorageTool \
      format -t "$cid" -c "$d/server.properties" >"$d/format.log" 2>&1 \
      || { cat "$d/format.log"; tb_die "kafka-$n storage format failed"; }
  fi
  tb_say "starting Kafka broker $n on 127.0.0.1:$port (controller $ctl)"
  (cd "$d" && exec setsid nohup java -Xmx384m -Xms128m -XX:+UseG1GC \
      -Dlog4j.configuration="file:$d/log4j.properties" -Dkafka.logs.dir="$d" \
      -cp "$TB_KAFKA_LIBS/*" kafka.Kafka "$d/server.properties") </dev/null >"$d/stdout.log" 2>&1 &
  echo $! >"$d/kafka.pid"
  java_pid "$d/server.properties" "$d/kafka.pid"
}

# The config of taskbusd N: the stack's, with replication 3, all brokers, its node name and port.
# session.timeout.ms 30 s: a broker's failover (9 s to fence it, then the elections and the
# group coordinator's move) outlasts the executor's own 10 s, which would give up its
# partitions and rejoin for another 13 s (docs/reliability.md, the broker kill).
cluster_node_config() {  # n
  local n=$1 d=$TASKBUS_STACK_DIR/taskbusd-$1 src
  mkdir -p "$d"
  src=$(stack_config)
  { sed -e 's|^\([[:space:]]*replication = \)[0-9]*;|\13;|' \
        -e "s|^\\([[:space:]]*bootstrap_servers = \\)\"[^\"]*\";|\\1\"$TASKBUS_KAFKA\";\\n        session_timeout_ms = \"30000\";\\n        transaction_timeout_ms = \"30000\";|" \
        -e "s|^\\([[:space:]]*url = \\)\"postgresql://[^\"]*\";|\\1\"$TASKBUS_PG\";|" \
        -e "s|^\\([[:space:]]*listen = \\)\"127.0.0.1:[0-9]*\";|\\1\"127.0.0.1:$(cluster_api_port "$n")\";|" \
        -e "s|^node = .*|node = \"node-$n\";|" "$src"
    grep -q '^node = ' "$src" || printf '\n# Added by tools/stack --brokers: this process'"'"'s name.\nnode = "node-%s";\n' "$n"
  } >"$d/taskbus.conf.tmp" && mv "$d/taskbus.conf.tmp" "$d/taskbus.conf"
  echo "$d/taskbus.conf"
}

cluster_taskbusd_up() {
  local n d cfg port
  tb_key_ensure
  for ((n = 1; n <= TB_CLUSTER_NODES; n++)); do
    d=$TASKBUS_STACK_DIR/taskbusd-$n; port=$(cluster_api_port "$n")
    cfg=$(cluster_node_config "$n")
    if tb_pid_alive "$d/taskbusd.pid"; then echo "taskbusd-$n: already running (pid $(cat "$d/taskbusd.pid"))"; continue; fi
    tb_say "starting taskbusd-$n (all roles, node node-$n), API on http://127.0.0.1:$port"
    # the environment overrides would replace the file's values: each process has its own
    TASKBUS_API_LISTEN=127.0.0.1:$port TASKBUS_NODE=node-$n \
      setsid nohup "$TASKBUS_BIN/taskbusd" --config "$cfg" </dev/null >>"$d/taskbusd.log" 2>&1 &
    echo $! >"$d/taskbusd.pid"
  done
  for ((n = 1; n <= TB_CLUSTER_NODES; n++)); do
    d=$TASKBUS_STACK_DIR/taskbusd-$n
    tb_wait_port "$(cluster_api_port "$n")" 60 || { tail -30 "$d/taskbusd.log"; tb_die "taskbusd-$n did not start (log: $d/taskbusd.log)"; }
  done
}

cluster_up() {  # with_taskbusd
  echo "$TB_CLUSTER_BROKERS" >"$TASKBUS_STACK_DIR/brokers"
  cluster_env
  cluster_kafka_up
  pg_up
  TASKBUS_CONFIG=$(cluster_node_config 1) init_schema
  (($1)) && cluster_taskbusd_up
  cluster_status
}

cluster_down() {
  local n
  for ((n = 1; n <= TB_CLUSTER_NODES; n++)); do stop_pidfile "taskbusd-$n" "$TASKBUS_STACK_DIR/taskbusd-$n/taskbusd.pid"; done
  for ((n = 1; n <= TB_CLUSTER_BROKERS; n++)); do stop_pidfile "kafka-$n" "$TASKBUS_STACK_DIR/kafka-$n/kafka.pid"; done
}

cluster_status() {
  local n d
  cluster_env
  echo "stack: $TASKBUS_STACK_DIR ($TB_CLUSTER_BROKERS Kafka brokers, $TB_CLUSTER_NODES taskbusd)"
  echo "kafka brokers (bootstrap $TASKBUS_KAFKA):"
  printf '  %-4s %-6s %-8s %s\n' ID PORT STATE PID
  for ((n = 1; n <= TB_CLUSTER_BROKERS; n++)); do
    d=$TASKBUS_STACK_DIR/kafka-$n
    if tb_pid_alive "$d/kafka.pid"; then
      printf '  %-4s %-6s %-8s %s\n' "$n" "$(cluster_broker_port "$n")" alive "$(cat "$d/kafka.pid")"
    else
      printf '  %-4s %-6s %-8s %s\n' "$n" "$(cluster_broker_port "$n")" dead -
    fi
  done
  echo "topics (partition: replication factor, leader, in-sync replicas):"
  # kcat -L: 'topic "x" with N partitions:' then
  # '    partition P, leader L, replicas: 1,2,3, isrs: 1,2,3'
  kcat -b "$TASKBUS_KAFKA" -L -m 10 2>/dev/null | awk -v pre="$TASKBUS_TOPIC_PREFIX" '
    /^  topic "/ { t = $2; gsub(/"/, "", t); show = index(t, pre) == 1; if (show) printf "  %s\n", t; next }
    show && /^    partition / {
      p = $2; sub(/,/, "", p); l = $4; sub(/,/, "", l)
      r = $6; sub(/,$/, "", r); i = $8
      printf "    partition %-3s replication %d leader %-3s isr %d (%s)\n", p, split(r, a, ","), l, split(i, b, ","), i
    }' || echo "  (no metadata: no broker answers)"
  local pd; pd=""; [[ -f $PGDIR_FILE ]] && pd=$(cat "$PGDIR_FILE")
  if [[ -n $pd ]] && as_pg "$TB_PG_BIN/pg_ctl" -D "$pd/data" status >/dev/null 2>&1; then
    echo "postgres: running on 127.0.0.1:$TASKBUS_PG_PORT"
  else
    echo "postgres: stopped"
  fi
  for ((n = 1; n <= TB_CLUSTER_NODES; n++)); do
    d=$TASKBUS_STACK_DIR/taskbusd-$n
    if tb_pid_alive "$d/taskbusd.pid"; then
      echo "taskbusd-$n: running (pid $(cat "$d/taskbusd.pid")), node node-$n, API http://127.0.0.1:$(cluster_api_port "$n"), log $d/taskbusd.log"
    else
      echo "taskbusd-$n: stopped"
    fi
  done
}
