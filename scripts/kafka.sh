#!/usr/bin/env bash
# kafka.sh - a real Apache Kafka broker (KRaft mode) for tests and benchmarks,
# built from Maven Central's org.apache.kafka artifacts (no Debian package exists).
#
#   scripts/kafka.sh fetch            resolve kafka_2.13 + dependencies into the cache (once)
#   scripts/kafka.sh classpath        print the classpath (fetches first if needed)
#   scripts/kafka.sh start DIR PORT   format DIR as a one-node KRaft cluster (first time) and run
#                                     the broker in the foreground on 127.0.0.1:PORT (controller PORT+1)
#
# Cache: $LUMKEY_KAFKA_CACHE (default ~/.cache/lumkey/kafka-$KAFKA_VERSION). Needs java >= 17
# and maven (scripts/deps.sh installs both).
set -euo pipefail

KAFKA_VERSION=${LUMKEY_KAFKA_VERSION:-4.1.1}
CACHE=${LUMKEY_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lumkey/kafka-$KAFKA_VERSION}

fetch() {
  [ -f "$CACHE/.done" ] && return 0
  mkdir -p "$CACHE/lib"
  local pom
  pom=$(mktemp -d)
  cat >"$pom/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>lumkey</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>
  </dependencies>
</project>
POM
  echo "kafka.sh: resolving org.apache.kafka:kafka_2.13:$KAFKA_VERSION into $CACHE" >&2
  (cd "$pom" && mvn -q -B dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$CACHE/lib") >&2
  rm -rf "$pom"
  cat >"$CACHE/log4j2.properties" <<'L4J'
status = error
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka.server.KafkaRaftServer
logger.kafka.level = INFO
L4J
  touch "$CACHE/.done"
}

classpath() { fetch; printf '%s' "$CACHE/lib/*"; }

start() {
  local dir=$1 port=$2 cport=$(($2 + 1))
  fetch
  mkdir -p "$dir"
  cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.flush.interval.messages=1
PROPS
  local java=(java -Xms128m -Xmx384m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto
    "-Dlog4j2.configurationFile=$CACHE/log4j2.properties" -cp "$CACHE/lib/*")
  if [ ! -f "$dir/data/meta.properties" ]; then
    "${java[@]}" kafka.tools.StorageTool format -t lumkeyTestCluster0001a -c "$dir/server.properties" >&2
  fi
  exec "${java[@]}" kafka.Kafka "$dir/server.properties"
}

case "${1:-}" in
  fetch) fetch ;;
  classpath) classpath ;;
  start) shift; start "$@" ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
