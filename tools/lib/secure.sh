# tools/stack secure-up | secure-down | secure-config: a single-node KRaft Kafka that takes
# clients only over SASL_SSL with SCRAM-SHA-512, with the StandardAuthorizer and one
# principal per taskbus role set (docs/deploy.md "Kafka with SASL_SSL and ACLs").
# Sourced by tools/stack after its own functions (it uses kafka_fetch, java_pid, stop_pidfile).
#
# Where: $TASKBUS_STACK_DIR/kafka-secure (certs/, secrets/, data, server.properties, kafka.log).
# Ports: TB_SECURE_KAFKA_PORT (SASL_SSL, default TASKBUS_KAFKA_PORT + 10) and the next one
# (the controller: SSL with client certificates, loopback only).
#
# Principals (SCRAM-SHA-512 users, created when the storage is formatted; passwords are
# random, one file each in secrets/, mode 0600):
#   broker           the broker itself (inter-broker traffic), super user
#   taskbus-admin    creates topics and ACLs (`taskbus admin topics ensure`), super user
#   taskbus-control  roles api, commands, projector, scheduler, archiver, notifier
#   taskbus-executor role executor
#   taskbus-external an outside producer: writes task-commands, reads task-replies
# Each principal gets the ACLs of tools/kafka/acls.txt for its roles, nothing else, and
# allow.everyone.if.no.acl.found=false denies the rest.

SKDIR=$TASKBUS_STACK_DIR/kafka-secure
: "${TB_SECURE_KAFKA_PORT:=$((TASKBUS_KAFKA_PORT + 10))}"
TB_SECURE_CONTROLLER_PORT=$((TB_SECURE_KAFKA_PORT + 1))
TB_SECURE_USERS=(broker taskbus-admin taskbus-control taskbus-executor taskbus-external)
# principal -> the roles of tools/kafka/acls.txt it gets
declare -A TB_SECURE_ROLES=(
  [taskbus-control]="api commands projector scheduler archiver notifier"
  [taskbus-executor]="executor"
  [taskbus-external]="external"
)

# A CA, and the broker's certificate for 127.0.0.1/localhost signed by it (server and
# client use: the broker shows it to the controller listener, which requires one).
secure_certs() {
  local c=$SKDIR/certs
  [[ -s $c/broker.pem && -s $c/ca.crt ]] && return 0
  mkdir -p "$c"; chmod 700 "$c"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$c/ca.key" -out "$c/ca.crt" -days 30 \
    -subj "/CN=taskbus-stack-ca" >/dev/null 2>&1 || tb_die "openssl: cannot make the CA"
  openssl req -newkey rsa:2048 -nodes -keyout "$c/broker.key" -out "$c/broker.csr" \
    -subj "/CN=taskbus-broker" >/dev/null 2>&1 || tb_die "openssl: cannot make the broker key"
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >"$c/ext.cnf"
  openssl x509 -req -in "$c/broker.csr" -CA "$c/ca.crt" -CAkey "$c/ca.key" -CAcreateserial \
    -days 30 -extfile "$c/ext.cnf" -out "$c/broker.crt" >/dev/null 2>&1 || tb_die "openssl: cannot sign the broker certificate"
  # Kafka's PEM keystore: an unencrypted PKCS#8 key, then the chain
  (umask 077; cat "$c/broker.key" "$c/broker.crt" "$c/ca.crt" >"$c/broker.pem")
}

secure_password() { cat "$SKDIR/secrets/$1.password"; }

secure_secrets() {
  local s=$SKDIR/secrets u
  mkdir -p "$s"; chmod 700 "$s"
  for u in "${TB_SECURE_USERS[@]}"; do
    [[ -s $s/$u.password ]] && continue
    (umask 077; od -An -N18 -tx1 /dev/urandom | tr -d ' \n' >"$s/$u.password")
  done
}

# The librdkafka properties of principal $1 (librdkafka names, for kcat -F / Java clients
# take the *.properties below).
secure_client_props() {  # user
  cat <<PROPS
bootstrap.servers=127.0.0.1:$TB_SECURE_KAFKA_PORT
security.protocol=SASL_SSL
sasl.mechanisms=SCRAM-SHA-512
sasl.username=$1
sasl.password=$(secure_password "$1")
ssl.ca.location=$SKDIR/certs/ca.crt
PROPS
}

# The Java admin client's properties of taskbus-admin (ACLs).
secure_java_admin_props() {
  cat <<PROPS
bootstrap.servers=127.0.0.1:$TB_SECURE_KAFKA_PORT
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="taskbus-admin" password="$(secure_password taskbus-admin)";
ssl.truststore.type=PEM
ssl.truststore.location=$SKDIR/certs/ca.crt
PROPS
}

# The `kafka = { ... };` group of a taskbus config for principal $1 (secure-config USER):
# the password stays in its own file (sasl_password_file, mode 0600).
secure_config() {  # user
  [[ -s $SKDIR/secrets/$1.password ]] || tb_die "secure-config: no principal '$1' (${TB_SECURE_USERS[*]})"
  cat <<CONF
kafka = {
        bootstrap_servers = "127.0.0.1:$TB_SECURE_KAFKA_PORT";
        security_protocol = "SASL_SSL";
        sasl_mechanisms = "SCRAM-SHA-512";
        sasl_username = "$1";
        sasl_password_file = "$SKDIR/secrets/$1.password";
        ssl_ca_location = "$SKDIR/certs/ca.crt";
};
CONF
}

secure_kafka_up() {
  if tb_pid_alive "$SKDIR/kafka.pid"; then echo "kafka (secure): already running (pid $(cat "$SKDIR/kafka.pid"))"; return 0; fi
  kafka_fetch
  mkdir -p "$SKDIR/data"
  secure_certs
  secure_secrets
  local c=$SKDIR/certs
  (umask 077; cat >"$SKDIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$TB_SECURE_CONTROLLER_PORT
listeners=SASL_SSL://127.0.0.1:$TB_SECURE_KAFKA_PORT,CONTROLLER://127.0.0.1:$TB_SECURE_CONTROLLER_PORT
advertised.listeners=SASL_SSL://127.0.0.1:$TB_SECURE_KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=CONTROLLER:SSL,SASL_SSL:SASL_SSL
# clients: SCRAM-SHA-512 over TLS; the broker talks to itself as user "broker"
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="$(secure_password broker)";
ssl.keystore.type=PEM
ssl.keystore.location=$c/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$c/ca.crt
# the controller listener takes only certificates of this CA (the broker's own)
listener.name.controller.ssl.client.auth=required
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:broker;User:taskbus-admin;User:CN=taskbus-broker
allow.everyone.if.no.acl.found=false
log.dirs=$SKDIR/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
default.replication.factor=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
transaction.abort.timed.out.transaction.cleanup.interval.ms=10000
PROPS
  )
  cat >"$SKDIR/log4j.properties" <<PROPS
log4j.rootLogger=WARN, file
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
log4j.logger.kafka.authorizer.logger=INFO
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File=$SKDIR/kafka.log
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
PROPS
  if [[ ! -f $SKDIR/data/meta.properties ]]; then
    tb_say "formatting the secure Kafka's storage (KRaft) with ${#TB_SECURE_USERS[@]} SCRAM-SHA-512 users"
    local cid u scram=()
    cid=$(java -cp "$TB_KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)
    for u in "${TB_SECURE_USERS[@]}"; do
      scram+=(--add-scram "SCRAM-SHA-512=[name=$u,password=$(secure_password "$u")]")
    done
    java -cp "$TB_KAFKA_LIBS/*" -Dlog4j.configuration="file:$SKDIR/log4j.properties" kafka.tools.StorageTool \
      format -t "$cid" -c "$SKDIR/server.properties" "${scram[@]}" >"$SKDIR/format.log" 2>&1 \
      || { cat "$SKDIR/format.log"; tb_die "secure kafka storage format failed"; }
  fi
  local port; for port in "$TB_SECURE_KAFKA_PORT" "$TB_SECURE_CONTROLLER_PORT"; do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && tb_die "port $port is already in use: choose another TB_SECURE_KAFKA_PORT"
  done
  tb_say "starting the secure Kafka (SASL_SSL) on 127.0.0.1:$TB_SECURE_KAFKA_PORT"
  (cd "$SKDIR" && exec setsid nohup java -Xmx384m -Xms128m -XX:+UseG1GC \
      -Dlog4j.configuration="file:$SKDIR/log4j.properties" -Dkafka.logs.dir="$SKDIR" \
      -cp "$TB_KAFKA_LIBS/*" kafka.Kafka "$SKDIR/server.properties") </dev/null >"$SKDIR/stdout.log" 2>&1 &
  echo $! >"$SKDIR/kafka.pid"
  java_pid "$SKDIR/server.properties" "$SKDIR/kafka.pid"
  tb_wait_port "$TB_SECURE_KAFKA_PORT" 120 || { tail -20 "$SKDIR/stdout.log" "$SKDIR/kafka.log" 2>/dev/null; tb_die "the secure kafka did not start"; }
  # the port opens before the broker serves: wait until the admin principal gets metadata
  secure_client_props taskbus-admin >"$SKDIR/secrets/taskbus-admin.librdkafka"
  chmod 600 "$SKDIR/secrets/taskbus-admin.librdkafka"
  local i; for ((i = 0; i < 120; i++)); do
    kcat -F "$SKDIR/secrets/taskbus-admin.librdkafka" -L -m 5 2>/dev/null | grep -q '^  broker 1' && break
    sleep 0.5
  done
  ((i < 120)) || { tail -20 "$SKDIR/kafka.log"; tb_die "the secure kafka gives no metadata to taskbus-admin within 60 s"; }
  secure_acls
}

# The ACLs of every principal: tools/kafka/acls.txt expanded for its roles, applied in one
# JVM by tools/kafka/AclApply.java (the admin client, as taskbus-admin).
secure_acls() {
  local p r lines=""
  for p in "${!TB_SECURE_ROLES[@]}"; do
    for r in ${TB_SECURE_ROLES[$p]}; do
      lines+=$(awk -v role="$r" -v pr="User:$p" -v pre="$TASKBUS_TOPIC_PREFIX" '
        /^[[:space:]]*(#|$)/ { next }
        $1 == role { print pr, $2, $3, pre $4, $5 }' "$TB_ROOT/tools/kafka/acls.txt")$'\n'
    done
  done
  secure_java_admin_props >"$SKDIR/secrets/admin.properties"; chmod 600 "$SKDIR/secrets/admin.properties"
  printf '%s' "$lines" >"$SKDIR/acls.applied"
  java -cp "$TB_KAFKA_LIBS/*" -Dlog4j.configuration="file:$SKDIR/log4j.properties" \
    "$TB_ROOT/tools/kafka/AclApply.java" "$SKDIR/secrets/admin.properties" "$SKDIR/acls.applied" \
    >"$SKDIR/acls.log" 2>&1 || { cat "$SKDIR/acls.log"; tb_die "creating the ACLs failed"; }
  tb_say "ACLs: $(grep -c . "$SKDIR/acls.applied") bindings for ${#TB_SECURE_ROLES[@]} principals (list: $SKDIR/acls.applied)"
}

secure_kafka_down() { stop_pidfile "kafka (secure)" "$SKDIR/kafka.pid"; }
