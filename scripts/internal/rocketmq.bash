# shellcheck shell=bash
# shellcheck disable=SC2154 # state, header, timeout_s: set by scripts/brokers
# RocketMQ for scripts/brokers, which sources this file and provides note,
# warn, die, fail, record, rotate, since, past, deadline, port_open,
# owned_pid, stop_pid, apt_install, $state, $timeout_s and $header.
#
# A name server (127.0.0.1:9876) and one broker (127.0.0.1:10911; its fast
# port 10909 and HA port 10912 are derived from it), each a JVM with
# -Xms256m -Xmx512m, from the Apache RocketMQ jars on Maven Central
# (org.apache.rocketmq:rocketmq-namesrv and rocketmq-broker with their
# runtime dependencies, gathered by mvn dependency:copy-dependencies).
#
# Durability, chosen here: flushDiskType=SYNC_FLUSH. The broker answers a
# send only after the message is forced to disk (group commit), as
# RabbitMQ confirms a persistent message on a durable queue after its
# fsync; a crash of the broker's machine loses no acknowledged message.
# ASYNC_FLUSH, RocketMQ's default, would answer from the page cache, as
# the single Kafka node here does (acks=all, no forced flush) and as Redis
# does between its once-a-second fsyncs. The benchmark reports the mode
# it finds (flushDiskType from the broker's configuration).
#
# Other settings: autoCreateTopicEnable=false (the omnibus adapter creates
# the topics it uses, with the queue count it wants; a mistyped name fails
# instead of making a topic), autoCreateSubscriptionGroup=true,
# timerWheelEnable=true with timerPrecisionMs=100 (arbitrary delivery
# times, which the adapter's delayed redelivery uses), commit log files of
# 128 MiB instead of 1 GiB; long polling stays on (the default).
#
# Read from the environment: OMNIBUS_ROCKETMQ_VERSION (5.5.0), and for a
# second instance beside the first (the chaos tests run one of their own):
#   OMNIBUS_ROCKETMQ_NAMESRV_PORT  9876
#   OMNIBUS_ROCKETMQ_BROKER_PORT   10911 (the broker also listens on this
#                                  port - 2 and + 1)
#   OMNIBUS_ROCKETMQ_DIR           <state>/rocketmq: configuration, data,
#                                  logs and pid files; the jars stay in
#                                  <state>/rocketmq/<version> either way
#   OMNIBUS_ROCKETMQ_JAVA_OPTS     further JVM options of both processes
#                                  (split at spaces), e.g.
#                                  -Drocketmq.broker.rebalance.lockMaxLiveTime=6000
#
# `scripts/brokers run rocketmq namesrv|broker` writes the configuration
# and runs one of the two JVMs in the foreground (bash execs java, so the
# JVM keeps the pid), for a harness that owns the process: it starts,
# SIGKILLs and restarts it itself.

rocketmq_version=${OMNIBUS_ROCKETMQ_VERSION:-5.5.0}
rocketmq_dist=$state/rocketmq/$rocketmq_version
rocketmq_state=${OMNIBUS_ROCKETMQ_DIR:-$state/rocketmq}
rocketmq_namesrv_port=${OMNIBUS_ROCKETMQ_NAMESRV_PORT:-9876}
rocketmq_broker_port=${OMNIBUS_ROCKETMQ_BROKER_PORT:-10911}
rocketmq_broker_addr=127.0.0.1:$rocketmq_broker_port
# shellcheck disable=SC2206 # split at spaces, as documented
rocketmq_java_opts=(${OMNIBUS_ROCKETMQ_JAVA_OPTS:-})

# rocketmq_cluster_info: ask the name server for the cluster table
# (remoting request GET_BROKER_CLUSTER_INFO, code 106, JSON header) and
# print the response. Frame: total length, header length (its top byte is
# the serialization type, 0 = JSON), header, body; lengths big-endian.
rocketmq_cluster_info() {
	# shellcheck disable=SC2016 # expands in the inner shell
	timeout 5 bash -c '
		exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 1
		h="{\"code\":106,\"flag\":0,\"language\":\"JAVA\",\"opaque\":1,\"serializeTypeCurrentRPC\":\"JSON\",\"version\":500}"
		be32() { printf "\\x%02x\\x%02x\\x%02x\\x%02x" $(($1 >> 24 & 255)) $(($1 >> 16 & 255)) $(($1 >> 8 & 255)) $(($1 & 255)); }
		printf "$(be32 $((4 + ${#h})))$(be32 ${#h})%s" "$h" >&3
		n=$(head -c 4 <&3 | od -An -tu1 | awk "{ print \$1 * 16777216 + \$2 * 65536 + \$3 * 256 + \$4 }")
		[[ $n =~ ^[0-9]+$ && $n -gt 4 ]] || exit 1
		head -c "$n" <&3 | tail -c +5' "$rocketmq_namesrv_port" 2>/dev/null
}

# The name server answers with code 0 and lists our broker's address.
rocketmq_answers() {
	local out
	out=$(rocketmq_cluster_info | tr -d '\0') || return 1
	[[ $out == *'"code":0'* && $out == *"\"$rocketmq_broker_addr\""* ]]
}

rocketmq_namesrv_answers() {
	local out
	out=$(rocketmq_cluster_info | tr -d '\0') || return 1
	[[ $out == *'"code":0'* ]]
}

rocketmq_namesrv_pid() { owned_pid "$rocketmq_state/namesrv.pid" org.apache.rocketmq.namesrv.NamesrvStartup; }
rocketmq_broker_pid() { owned_pid "$rocketmq_state/broker.pid" org.apache.rocketmq.broker.BrokerStartup; }

rocketmq_install() {
	[[ -f $rocketmq_dist/lib/.complete ]] && return 0
	local pkgs=()
	command -v java >/dev/null || pkgs+=(openjdk-17-jre-headless)
	command -v mvn >/dev/null || pkgs+=(maven)
	((${#pkgs[@]} == 0)) || apt_install "${pkgs[@]}"

	mkdir -p "$rocketmq_dist"
	cat >"$rocketmq_dist/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- $header Gathers the RocketMQ name server's and broker's runtime jars. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.omnibus</groupId>
  <artifactId>rocketmq-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.rocketmq</groupId>
      <artifactId>rocketmq-namesrv</artifactId>
      <version>$rocketmq_version</version>
    </dependency>
    <dependency>
      <groupId>org.apache.rocketmq</groupId>
      <artifactId>rocketmq-broker</artifactId>
      <version>$rocketmq_version</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>3.8.1</version>
      </plugin>
    </plugins>
  </build>
</project>
EOF
	rm -rf "${rocketmq_dist:?}/lib"
	note "rocketmq: fetching org.apache.rocketmq:rocketmq-namesrv and rocketmq-broker $rocketmq_version and their runtime jars (mvn)"
	mvn -B -q -f "$rocketmq_dist/pom.xml" dependency:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory="$rocketmq_dist/lib" </dev/null >"$rocketmq_dist/mvn.log" 2>&1 ||
		fail rocketmq "mvn dependency:copy-dependencies failed" "$rocketmq_dist/mvn.log"
	local jar
	for jar in "rocketmq-namesrv-$rocketmq_version" "rocketmq-broker-$rocketmq_version" "rocketmq-store-$rocketmq_version" rocketmq-logback-classic-; do
		compgen -G "$rocketmq_dist/lib/$jar*.jar" >/dev/null ||
			fail rocketmq "no $jar*.jar among the copied jars" "$rocketmq_dist/mvn.log"
	done
	touch "$rocketmq_dist/lib/.complete"
}

rocketmq_configure() {
	mkdir -p "$rocketmq_state/store/commitlog" "$rocketmq_state/home"
	cat >"$rocketmq_state/namesrv.properties" <<EOF
# $header Loopback only.
listenPort=$rocketmq_namesrv_port
bindAddress=127.0.0.1
EOF
	cat >"$rocketmq_state/broker.properties" <<EOF
# $header One master broker, loopback only.
brokerClusterName=DefaultCluster
brokerName=broker-a
brokerId=0
brokerRole=ASYNC_MASTER
namesrvAddr=127.0.0.1:$rocketmq_namesrv_port
brokerIP1=127.0.0.1
bindAddress=127.0.0.1
listenPort=$rocketmq_broker_port
storePathRootDir=$rocketmq_state/store
storePathCommitLog=$rocketmq_state/store/commitlog
# Acknowledge a send only once the message is on disk.
flushDiskType=SYNC_FLUSH
mappedFileSizeCommitLog=134217728
autoCreateTopicEnable=false
autoCreateSubscriptionGroup=true
timerWheelEnable=true
timerPrecisionMs=100
deleteWhen=04
fileReservedTime=48
EOF
}

# rocketmq_java ROLE: the JVM command line of the name server or the
# broker (ROLE namesrv or broker), in the array rocketmq_cmd.
rocketmq_java() {
	local main
	case $1 in
	namesrv) main=org.apache.rocketmq.namesrv.NamesrvStartup ;;
	broker) main=org.apache.rocketmq.broker.BrokerStartup ;;
	*) die "rocketmq: no such process: $1 (want namesrv or broker)" ;;
	esac
	rocketmq_cmd=(java -Xms256m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true
		--add-opens=java.base/java.nio=ALL-UNNAMED
		--add-opens=java.base/sun.nio.ch=ALL-UNNAMED
		--add-exports=java.base/jdk.internal.ref=ALL-UNNAMED
		-Drocketmq.home.dir="$rocketmq_state/home"
		-Duser.home="$rocketmq_state/home"
		"${rocketmq_java_opts[@]}"
		-cp "$rocketmq_dist/lib/*" "$main" -c "$rocketmq_state/$1.properties")
}

# rocketmq_start ROLE: start the name server or the broker in its own
# session; its pid file holds the JVM's pid because bash execs java.
rocketmq_start() {
	local pidfile=$rocketmq_state/$1.pid log=$rocketmq_state/$1.log
	rocketmq_java "$1"
	rotate "$log"
	rm -f "$pidfile"
	# shellcheck disable=SC2016 # expands in the inner shell
	setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' "rocketmq-$1" "$pidfile" \
		"${rocketmq_cmd[@]}" </dev/null >>"$log" 2>&1 9>&- &
	local i
	for ((i = 0; i < 100; i++)); do
		[[ -s $pidfile ]] && break
		sleep 0.1
	done
}

up_rocketmq() {
	local npid bpid t0 end
	mkdir -p "$rocketmq_state"
	npid=$(rocketmq_namesrv_pid) || npid=""
	bpid=$(rocketmq_broker_pid) || bpid=""
	if [[ -z $npid && -z $bpid ]] && port_open "$rocketmq_namesrv_port"; then
		rocketmq_answers || die "rocketmq: 127.0.0.1:$rocketmq_namesrv_port is in use by something that is not a RocketMQ name server listing a broker at $rocketmq_broker_addr"
		note "rocketmq: 127.0.0.1:$rocketmq_namesrv_port already answers with a broker at $rocketmq_broker_addr; not started by scripts/brokers with state in $state; using it as it is"
		record rocketmq up "already answering, not started here; used as it is"
		return 0
	fi
	if [[ -n $npid && -n $bpid ]] && rocketmq_answers; then
		note "rocketmq: already running (started by scripts/brokers, name server pid $npid, broker pid $bpid)"
		record rocketmq up "already running, left as it is"
		return 0
	fi
	if [[ -z $bpid ]] && port_open "$rocketmq_broker_port"; then
		die "rocketmq: 127.0.0.1:$rocketmq_broker_port is in use by a process scripts/brokers did not start"
	fi

	t0=$EPOCHREALTIME
	if [[ ! -f $rocketmq_dist/lib/.complete ]]; then
		rocketmq_install
		note "rocketmq: installed in $(since "$t0") s (jars in $rocketmq_dist/lib)"
		record rocketmq install "$(since "$t0") s"
	fi
	rocketmq_configure

	t0=$EPOCHREALTIME
	end=$(deadline "$timeout_s")
	if [[ -z $npid ]]; then
		note "rocketmq: starting the name server $rocketmq_version (127.0.0.1:$rocketmq_namesrv_port)"
		rocketmq_start namesrv
	fi
	until rocketmq_namesrv_answers; do
		rocketmq_namesrv_pid >/dev/null || fail rocketmq "the name server exited while starting" "$rocketmq_state/namesrv.log"
		past "$end" && fail rocketmq "the name server did not answer within $timeout_s s" "$rocketmq_state/namesrv.log"
		sleep 0.3
	done
	if [[ -z $bpid ]]; then
		note "rocketmq: starting the broker $rocketmq_version ($rocketmq_broker_addr, flushDiskType=SYNC_FLUSH, data in $rocketmq_state/store)"
		rocketmq_start broker
	fi
	local broker_logs=("$rocketmq_state/broker.log" "$rocketmq_state/home/logs/rocketmqlogs/broker.log")
	until rocketmq_answers && port_open "$rocketmq_broker_port"; do
		rocketmq_broker_pid >/dev/null || fail rocketmq "the broker exited while starting" "${broker_logs[@]}"
		past "$end" && fail rocketmq "the broker did not register with the name server within $timeout_s s" "${broker_logs[@]}"
		sleep 0.3
	done
	note "rocketmq: ready in $(since "$t0") s (the name server lists the broker at $rocketmq_broker_addr)"
	record rocketmq start "$(since "$t0") s"
}

# run_rocketmq ROLE: write the configuration and run the name server or
# the broker (ROLE namesrv or broker) in the foreground, logging to
# stdout. The jars must be installed already (scripts/brokers up
# rocketmq); nothing is installed here.
run_rocketmq() {
	[[ -f $rocketmq_dist/lib/.complete ]] ||
		die "rocketmq: no jars in $rocketmq_dist/lib (scripts/brokers up rocketmq installs them)"
	command -v java >/dev/null || die "rocketmq: java not installed (scripts/brokers up rocketmq installs it)"
	rocketmq_java "$1"
	mkdir -p "$rocketmq_state"
	rocketmq_configure
	exec "${rocketmq_cmd[@]}" </dev/null 9>&-
}

down_rocketmq() {
	local pid stopped=""
	if pid=$(rocketmq_broker_pid); then
		note "rocketmq: stopping the broker (pid $pid)"
		stop_pid rocketmq-broker "$pid" 60
		rm -f "$rocketmq_state/broker.pid"
		stopped=1
	fi
	if pid=$(rocketmq_namesrv_pid); then
		note "rocketmq: stopping the name server (pid $pid)"
		stop_pid rocketmq-namesrv "$pid" 30
		rm -f "$rocketmq_state/namesrv.pid"
		stopped=1
	fi
	if [[ -n $stopped ]]; then
		note "rocketmq: stopped"
	elif port_open "$rocketmq_namesrv_port"; then
		note "rocketmq: running but not started by scripts/brokers with state in $state; leaving it alone"
	else
		note "rocketmq: not running"
	fi
}

status_rocketmq() {
	local npid bpid who="not started by scripts/brokers with state in $state"
	npid=$(rocketmq_namesrv_pid) || npid=""
	bpid=$(rocketmq_broker_pid) || bpid=""
	if [[ -n $npid || -n $bpid ]]; then
		who="started by scripts/brokers, name server pid ${npid:-none}, broker pid ${bpid:-none}, RocketMQ $rocketmq_version, flushDiskType=SYNC_FLUSH"
	fi
	if rocketmq_answers; then
		note "rocketmq: answers at rocketmq://127.0.0.1:$rocketmq_namesrv_port, broker $rocketmq_broker_addr ($who)"
	elif [[ -n $npid || -n $bpid ]]; then
		note "rocketmq: does NOT answer ($who)"
		return 1
	else
		note "rocketmq: not running"
		return 1
	fi
}
