#!/usr/bin/env bash
# Installs (once, ~1 min: `mvn` fetches the pinned jars from Maven Central into
# LEAFSYNC_CACHE_DIR) and starts genuine Apache Kafka on 127.0.0.1: one KRaft node that is
# both broker and controller, with its storage formatted on first start. Then creates the
# LIMS topics and the dead-letter topic. Idempotent: if our broker already answers on the
# port, it only (re)checks the topics. Logs go to LEAFSYNC_RUN_DIR.
# Env: LEAFSYNC_KAFKA_PORT (9092), LEAFSYNC_KAFKA_CONTROLLER_PORT (port+1),
#      LEAFSYNC_DATA_DIR (.data/local), LEAFSYNC_RUN_DIR (.run), LEAFSYNC_CACHE_DIR (.cache),
#      LEAFSYNC_TOPICS ("potato tomato pepper"), LEAFSYNC_TOPIC_PARTITIONS (3),
#      LEAFSYNC_DLQ_TOPIC (leafsync-dead-letter), LEAFSYNC_KAFKA_HEAP (768m).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

port=$LEAFSYNC_KAFKA_PORT
controller_port=$LEAFSYNC_KAFKA_CONTROLLER_PORT
pidfile="$LEAFSYNC_RUN_DIR/kafka-$port.pid"
logfile="$LEAFSYNC_RUN_DIR/kafka-$port.log"
data="$LEAFSYNC_DATA_DIR/kafka-$port"
home="$LEAFSYNC_CACHE_DIR/kafka-$KAFKA_VERSION"
libs="$home/libs"
conf="$ROOT/scripts/kafka"
command -v java >/dev/null || die "java (17+) is needed to run Kafka; install OpenJDK 17"

# Install: the jars the pom names, copied into the cache; a stamp marks a complete copy.
stamp="$home/.installed"
if [[ ! -f $stamp ]] || ! cmp -s "$conf/pom.xml" "$stamp"; then
  command -v mvn >/dev/null || die "mvn (Apache Maven) is needed once to fetch Kafka's jars"
  log "installing Apache Kafka $KAFKA_VERSION from Maven Central into $home (once)"
  rm -rf "$libs"
  mkdir -p "$LEAFSYNC_RUN_DIR"
  install_log="$LEAFSYNC_RUN_DIR/kafka-install.log"
  if ! mvn -B -Dstyle.color=never -f "$conf/pom.xml" -Dmaven.repo.local="$LEAFSYNC_CACHE_DIR/m2" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$libs" \
    >"$install_log" 2>&1; then
    tail -n 30 "$install_log" >&2
    die "fetching Kafka's jars with mvn failed (log: $install_log)"
  fi
  cp "$conf/pom.xml" "$stamp"
fi

# kafka_tool CLASS ARGS...: one of Kafka's command-line tools, quiet unless it fails.
kafka_tool() {
  java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Dleafsync.log.level=WARN \
    -Dlog4j2.configurationFile="$conf/log4j2.properties" -cp "$libs/*" "$@"
}

mkdir -p "$LEAFSYNC_RUN_DIR" "$data"
if pid_alive "$pidfile" && port_open "$port"; then
  log "Kafka already listening on 127.0.0.1:$port (pid $(cat "$pidfile"))"
else
  for p in "$port" "$controller_port"; do
    port_open "$p" && die "127.0.0.1:$p is taken by a process this script did not start; set LEAFSYNC_KAFKA_PORT / LEAFSYNC_KAFKA_CONTROLLER_PORT"
  done
  properties="$data/server.properties"
  {
    cat "$conf/server.properties"
    echo "listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port"
    echo "advertised.listeners=PLAINTEXT://127.0.0.1:$port"
    echo "controller.quorum.bootstrap.servers=127.0.0.1:$controller_port"
    echo "log.dirs=$data/logs"
  } >"$properties"
  if [[ ! -f $data/logs/meta.properties ]]; then
    if ! kafka_tool kafka.tools.StorageTool format --standalone -t "$(kraft_cluster_id)" -c "$properties" \
      >>"$logfile" 2>&1; then
      tail -n 20 "$logfile" >&2 || true
      die "formatting Kafka storage in $data failed (log: $logfile)"
    fi
  fi
  # Heap for a 2-core / 24 GiB machine that also runs the database, the job and cargo.
  nohup java -Xms256m -Xmx"${LEAFSYNC_KAFKA_HEAP:-768m}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$conf/log4j2.properties" \
    -cp "$libs/*" kafka.Kafka "$properties" >>"$logfile" 2>&1 </dev/null &
  echo $! >"$pidfile"
  if ! wait_port "$port" 90 "$(cat "$pidfile")"; then
    tail -n 20 "$logfile" >&2 || true
    rm -f "$pidfile"
    die "Kafka did not start on 127.0.0.1:$port (log: $logfile)"
  fi
fi

# The broker answers once it lists topics; then create what is missing.
bootstrap="127.0.0.1:$port"
existing=$(kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" --list) ||
  die "Kafka on $bootstrap does not answer (log: $logfile)"
for topic in $LEAFSYNC_TOPICS "$LEAFSYNC_DLQ_TOPIC"; do
  grep -qx -- "$topic" <<<"$existing" && continue
  partitions=$LEAFSYNC_TOPIC_PARTITIONS
  [[ $topic == "$LEAFSYNC_DLQ_TOPIC" ]] && partitions=1
  kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" --create \
    --if-not-exists --topic "$topic" --partitions "$partitions" --replication-factor 1 >/dev/null ||
    die "could not create topic $topic on $bootstrap"
  log "created topic $topic ($partitions partitions)"
done
log "Kafka $KAFKA_VERSION listening on $bootstrap (pid $(cat "$pidfile"), data $data, log $logfile); topics: $LEAFSYNC_TOPICS $LEAFSYNC_DLQ_TOPIC ($(elapsed))"
