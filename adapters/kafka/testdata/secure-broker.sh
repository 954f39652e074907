#!/usr/bin/env bash
# Starts a throwaway single-node Kafka with SASL_PLAINTEXT (127.0.0.1:19092)
# and SASL_SSL (127.0.0.1:19095) listeners for TestSASL, from the jars that
# scripts/brokers fetched, and prints the environment TestSASL reads:
#
#   eval "$(adapters/kafka/testdata/secure-broker.sh /tmp/kafka-sec)"
#   go test -run TestSASL -v ./adapters/kafka/
#   kill "$(cat /tmp/kafka-sec/kafka.pid)"
#
# Users: alice (PLAIN), bob (SCRAM-SHA-256), carol (SCRAM-SHA-512); the
# certificate is for 127.0.0.1, signed by a CA made here.
set -euo pipefail
dir=${1:?usage: secure-broker.sh DIR}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
lib=$(ls -d "$repo"/.brokers/kafka/*/lib | tail -n 1)
cp="$lib/*"
rm -rf "$dir" && mkdir -p "$dir/data" && cd "$dir"

openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=omnibus-test-ca 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout broker.key -out broker.csr -subj /CN=127.0.0.1 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >san.ext
openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out broker.pem -days 2 -extfile san.ext 2>/dev/null
openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem -out broker.p12 -passout pass:changeit -name broker

jaas() {
	local l=$1
	cat <<EOT
listener.name.$l.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="alice-secret";
listener.name.$l.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.$l.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
EOT
}
{
	cat <<EOT
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:19093
listeners=SASL_PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093,INTERNAL://127.0.0.1:19094,SASL_SSL://127.0.0.1:19095
advertised.listeners=SASL_PLAINTEXT://127.0.0.1:19092,INTERNAL://127.0.0.1:19094,SASL_SSL://127.0.0.1:19095
controller.listener.names=CONTROLLER
inter.broker.listener.name=INTERNAL
listener.security.protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
ssl.keystore.type=PKCS12
ssl.keystore.location=$dir/broker.p12
ssl.keystore.password=changeit
ssl.key.password=changeit
log.dirs=$dir/data
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOT
	jaas sasl_plaintext
	jaas sasl_ssl
} >server.properties
printf 'status = warn\nappender.out.type = Console\nappender.out.name = OUT\nappender.out.layout.type = PatternLayout\nappender.out.layout.pattern = [%%d] %%p %%m (%%c)%%n\nrootLogger.level = INFO\nrootLogger.appenderRef.out.ref = OUT\n' >log4j2.properties

id=$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
java -Dlog4j2.configurationFile="$dir/log4j2.properties" -cp "$cp" kafka.tools.StorageTool format --standalone \
	-t "$id" -c server.properties \
	--add-scram 'SCRAM-SHA-256=[name=bob,password=bob-secret]' \
	--add-scram 'SCRAM-SHA-512=[name=carol,password=carol-secret]' >format.log 2>&1
setsid java -Xms256m -Xmx384m -Dlog4j2.configurationFile="$dir/log4j2.properties" -cp "$cp" \
	kafka.Kafka server.properties >kafka.log 2>&1 </dev/null &
echo $! >kafka.pid
for _ in $(seq 120); do
	grep -q 'Kafka Server started' kafka.log && break
	sleep 1
done
grep -q 'Kafka Server started' kafka.log || { tail -n 20 kafka.log >&2; exit 1; }
cat <<EOT
export OMNIBUS_KAFKA_SASL_BROKERS=127.0.0.1:19092
export OMNIBUS_KAFKA_SASL_SSL_BROKERS=127.0.0.1:19095
export OMNIBUS_KAFKA_TLS_CA=$dir/ca.pem
export OMNIBUS_KAFKA_SASL_PLAIN=alice:alice-secret
export OMNIBUS_KAFKA_SASL_SCRAM256=bob:bob-secret
export OMNIBUS_KAFKA_SASL_SCRAM512=carol:carol-secret
EOT
