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
#
# The secure instance: `up`, `down` and `status` handle a second name
# server (127.0.0.1:9877) and broker (127.0.0.1:10921, and 10919, 10922)
# beside the first, each a JVM with -Xms128m -Xmx384m, with the same
# settings but these:
#   TLS only (tls.server.mode=enforcing, tls.test.mode.enable=false in
#   tls.properties), with the test certificate of scripts/brokers (its key
#   converted to PKCS#8 for Netty), client certificates not asked for;
#   the broker registers with its name server over TLS too (tls.enable),
#   verifying the name server's certificate against the test CA.
#   ACL 2.0 authentication on the broker (authenticationEnabled): every
#   request must be signed by the user omnibus (the access key) with the
#   password of security.env (the secret key), which initAuthenticationUser
#   creates; authorization stays off, so the user may do everything. The
#   name server authenticates nothing (RocketMQ's never does), so the
#   broker needs no credentials of its own to register
#   (innerClientAuthenticationCredentials stays unset). The user store is
#   made anew at each start, with the password of the time.
# Its URL is rocketmqs://omnibus@127.0.0.1:9877 (OMNIBUS_ROCKETMQ_SECURE_URL
# in security.env). Read from the environment:
#   OMNIBUS_ROCKETMQ_SECURE_NAMESRV_PORT  9877
#   OMNIBUS_ROCKETMQ_SECURE_BROKER_PORT   10921 (also this port - 2 and + 1)
#   OMNIBUS_ROCKETMQ_SECURE_DIR           <OMNIBUS_ROCKETMQ_DIR>/secure
# OMNIBUS_ROCKETMQ_JAVA_OPTS applies to its processes too.

rocketmq_version=${OMNIBUS_ROCKETMQ_VERSION:-5.5.0}
rocketmq_dist=$state/rocketmq/$rocketmq_version
rocketmq_plain_state=${OMNIBUS_ROCKETMQ_DIR:-$state/rocketmq}
rocketmq_plain_namesrv_port=${OMNIBUS_ROCKETMQ_NAMESRV_PORT:-9876}
rocketmq_plain_broker_port=${OMNIBUS_ROCKETMQ_BROKER_PORT:-10911}
rocketmq_secure_state=${OMNIBUS_ROCKETMQ_SECURE_DIR:-$rocketmq_plain_state/secure}
rocketmq_secure_namesrv_port=${OMNIBUS_ROCKETMQ_SECURE_NAMESRV_PORT:-9877}
rocketmq_secure_broker_port=${OMNIBUS_ROCKETMQ_SECURE_BROKER_PORT:-10921}
# shellcheck disable=SC2206 # split at spaces, as documented
rocketmq_java_opts=(${OMNIBUS_ROCKETMQ_JAVA_OPTS:-})

# rocketmq_use plain|secure: point the functions below at one instance,
# through rocketmq_state, rocketmq_namesrv_port, rocketmq_broker_port and
# rocketmq_broker_addr (the plain instance's values unless switched).
rocketmq_use() {
	rocketmq_instance=$1
	case $1 in
	plain)
		rocketmq_label=rocketmq rocketmq_record=rocketmq
		rocketmq_state=$rocketmq_plain_state
		rocketmq_namesrv_port=$rocketmq_plain_namesrv_port
		rocketmq_broker_port=$rocketmq_plain_broker_port
		rocketmq_cluster=DefaultCluster rocketmq_broker_name=broker-a
		rocketmq_heap=(-Xms256m -Xmx512m)
		;;
	secure)
		rocketmq_label="rocketmq (secure)" rocketmq_record=rocketmqs
		rocketmq_state=$rocketmq_secure_state
		rocketmq_namesrv_port=$rocketmq_secure_namesrv_port
		rocketmq_broker_port=$rocketmq_secure_broker_port
		rocketmq_cluster=SecureCluster rocketmq_broker_name=broker-secure
		rocketmq_heap=(-Xms128m -Xmx384m)
		;;
	*) die "rocketmq: no such instance: $1" ;;
	esac
	rocketmq_broker_addr=127.0.0.1:$rocketmq_broker_port
}
rocketmq_use plain

# rocketmq_cluster_info: ask the name server for the cluster table
# (remoting request GET_BROKER_CLUSTER_INFO, code 106, JSON header) and
# print the response. Frame: total length, header length (its top byte is
# the serialization type, 0 = JSON), header, body; lengths big-endian.
rocketmq_cluster_info() {
	if [[ $rocketmq_instance == secure ]]; then
		rocketmq_cluster_info_tls
		return
	fi
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

# rocketmq_cluster_info_tls: the same over TLS, the name server's
# certificate verified against the test CA for 127.0.0.1. openssl prints
# what the server sends until its input ends, a second after the request.
rocketmq_cluster_info_tls() {
	local h='{"code":106,"flag":0,"language":"JAVA","opaque":1,"serializeTypeCurrentRPC":"JSON","version":500}'
	# shellcheck disable=SC2059 # the format holds the frame's length bytes
	{
		printf "$(rocketmq_be32 $((4 + ${#h})))$(rocketmq_be32 ${#h})%s" "$h"
		sleep 1
	} | timeout 5 openssl s_client -quiet -no_ign_eof -connect "127.0.0.1:$rocketmq_namesrv_port" \
		-CAfile "$tls_dir/ca.pem" -verify_return_error -verify_ip 127.0.0.1 2>/dev/null
}

# rocketmq_be32 N: N as the printf escapes of 4 big-endian bytes.
rocketmq_be32() {
	printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 >> 24 & 255)) $(($1 >> 16 & 255)) $(($1 >> 8 & 255)) $(($1 & 255))
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
	# The secure broker's file holds the user's password.
	[[ $rocketmq_instance != secure ]] || install -m 600 /dev/null "$rocketmq_state/broker.properties"
	cat >"$rocketmq_state/broker.properties" <<EOF
# $header One master broker, loopback only.
brokerClusterName=$rocketmq_cluster
brokerName=$rocketmq_broker_name
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
	[[ $rocketmq_instance != secure ]] || rocketmq_configure_secure
}

# rocketmq_configure_secure: TLS for both processes (tls.properties, read
# through -Dtls.config.file) and ACL 2.0 authentication for the broker.
rocketmq_configure_secure() {
	local password
	password=$(security_password)
	[[ $password =~ ^[0-9a-f]{32}$ ]] || fail rocketmq "no password for $secure_user in $security_env"
	install -d -m 700 "$rocketmq_state/tls"
	# Netty reads PKCS#8 keys only.
	openssl pkcs8 -topk8 -nocrypt -in "$tls_dir/server.key" -out "$rocketmq_state/tls/server.key" \
		</dev/null >"$rocketmq_state/tls/openssl.log" 2>&1 ||
		fail rocketmq "openssl pkcs8 of $tls_dir/server.key failed" "$rocketmq_state/tls/openssl.log"
	chmod 600 "$rocketmq_state/tls/server.key"
	cat >"$rocketmq_state/tls.properties" <<EOF
# $header TLS of the secure instance (tls.server.mode=enforcing
# and tls.enable=true are system properties): the test certificate, no
# client certificate asked for; as a client (the broker to its name
# server), verify the server's certificate against the test CA.
tls.test.mode.enable=false
tls.server.certPath=$tls_dir/server.pem
tls.server.keyPath=$rocketmq_state/tls/server.key
tls.server.need.client.auth=none
tls.server.authClient=false
tls.client.authServer=true
tls.client.trustCertPath=$tls_dir/ca.pem
EOF
	cat >>"$rocketmq_state/broker.properties" <<EOF
# ACL 2.0: every request is authenticated (the signature of the user's
# password); users live in RocksDB under storePathRootDir/config/users.
# Authorization is off: an authenticated user may do everything.
authenticationEnabled=true
authenticationProvider=org.apache.rocketmq.auth.authentication.provider.DefaultAuthenticationProvider
authenticationMetadataProvider=org.apache.rocketmq.auth.authentication.provider.LocalAuthenticationMetadataProvider
initAuthenticationUser={"username":"$secure_user","password":"$password"}
authorizationEnabled=false
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
	local tls=()
	if [[ $rocketmq_instance == secure ]]; then
		tls=(-Dtls.server.mode=enforcing -Dtls.enable=true -Dtls.config.file="$rocketmq_state/tls.properties")
	fi
	rocketmq_cmd=(java "${rocketmq_heap[@]}" -XX:+UseG1GC -Djava.awt.headless=true
		--add-opens=java.base/java.nio=ALL-UNNAMED
		--add-opens=java.base/sun.nio.ch=ALL-UNNAMED
		--add-exports=java.base/jdk.internal.ref=ALL-UNNAMED
		-Drocketmq.home.dir="$rocketmq_state/home"
		-Duser.home="$rocketmq_state/home"
		"${tls[@]}"
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

# up_rocketmq: the plain instance, then the secure one.
up_rocketmq() {
	rocketmq_use plain
	rocketmq_up
	rocketmq_use secure
	rocketmq_up
}

# rocketmq_up: start the instance rocketmq_use chose, unless it runs.
rocketmq_up() {
	local npid bpid t0 end what=""
	mkdir -p "$rocketmq_state"
	[[ $rocketmq_instance != secure ]] || what=", TLS only, ACL user $secure_user"
	npid=$(rocketmq_namesrv_pid) || npid=""
	bpid=$(rocketmq_broker_pid) || bpid=""
	if [[ -z $npid && -z $bpid ]] && port_open "$rocketmq_namesrv_port"; then
		rocketmq_answers || die "$rocketmq_label: 127.0.0.1:$rocketmq_namesrv_port is in use by something that is not a RocketMQ name server listing a broker at $rocketmq_broker_addr"
		note "$rocketmq_label: 127.0.0.1:$rocketmq_namesrv_port already answers with a broker at $rocketmq_broker_addr; not started by scripts/brokers with state in $state; using it as it is"
		record "$rocketmq_record" up "already answering, not started here; used as it is"
		return 0
	fi
	if [[ -n $npid && -n $bpid ]] && rocketmq_answers; then
		note "$rocketmq_label: already running (started by scripts/brokers, name server pid $npid, broker pid $bpid)"
		record "$rocketmq_record" up "already running, left as it is"
		return 0
	fi
	if [[ -z $bpid ]] && port_open "$rocketmq_broker_port"; then
		die "$rocketmq_label: 127.0.0.1:$rocketmq_broker_port is in use by a process scripts/brokers did not start"
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
		note "$rocketmq_label: starting the name server $rocketmq_version (127.0.0.1:$rocketmq_namesrv_port$what)"
		rocketmq_start namesrv
	fi
	until rocketmq_namesrv_answers; do
		rocketmq_namesrv_pid >/dev/null || fail "$rocketmq_label" "the name server exited while starting" "$rocketmq_state/namesrv.log"
		past "$end" && fail "$rocketmq_label" "the name server did not answer within $timeout_s s" "$rocketmq_state/namesrv.log"
		sleep 0.3
	done
	if [[ -z $bpid ]]; then
		# The user store is made anew, with the password of security.env
		# (initAuthenticationUser creates a user that is missing only).
		[[ $rocketmq_instance != secure ]] || rm -rf "$rocketmq_state/store/config/users"
		note "$rocketmq_label: starting the broker $rocketmq_version ($rocketmq_broker_addr, flushDiskType=SYNC_FLUSH, data in $rocketmq_state/store$what)"
		rocketmq_start broker
	fi
	local broker_logs=("$rocketmq_state/broker.log" "$rocketmq_state/home/logs/rocketmqlogs/broker.log")
	until rocketmq_answers && port_open "$rocketmq_broker_port"; do
		rocketmq_broker_pid >/dev/null || fail "$rocketmq_label" "the broker exited while starting" "${broker_logs[@]}"
		past "$end" && fail "$rocketmq_label" "the broker did not register with the name server within $timeout_s s" "${broker_logs[@]}"
		sleep 0.3
	done
	note "$rocketmq_label: ready in $(since "$t0") s (the name server lists the broker at $rocketmq_broker_addr)"
	record "$rocketmq_record" start "$(since "$t0") s"
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

# down_rocketmq: stop the secure instance, then the plain one.
down_rocketmq() {
	rocketmq_use secure
	rocketmq_down
	rocketmq_use plain
	rocketmq_down
}

rocketmq_down() {
	local pid stopped=""
	if pid=$(rocketmq_broker_pid); then
		note "$rocketmq_label: stopping the broker (pid $pid)"
		stop_pid "$rocketmq_record-broker" "$pid" 60
		rm -f "$rocketmq_state/broker.pid"
		stopped=1
	fi
	if pid=$(rocketmq_namesrv_pid); then
		note "$rocketmq_label: stopping the name server (pid $pid)"
		stop_pid "$rocketmq_record-namesrv" "$pid" 30
		rm -f "$rocketmq_state/namesrv.pid"
		stopped=1
	fi
	if [[ -n $stopped ]]; then
		note "$rocketmq_label: stopped"
	elif port_open "$rocketmq_namesrv_port"; then
		note "$rocketmq_label: running but not started by scripts/brokers with state in $state; leaving it alone"
	else
		note "$rocketmq_label: not running"
	fi
}

# status_rocketmq: both instances; it fails when either does not answer.
status_rocketmq() {
	local rc=0
	rocketmq_use plain
	rocketmq_status || rc=1
	rocketmq_use secure
	rocketmq_status || rc=1
	return "$rc"
}

rocketmq_status() {
	local npid bpid url who="not started by scripts/brokers with state in $state"
	npid=$(rocketmq_namesrv_pid) || npid=""
	bpid=$(rocketmq_broker_pid) || bpid=""
	if [[ -n $npid || -n $bpid ]]; then
		who="started by scripts/brokers, name server pid ${npid:-none}, broker pid ${bpid:-none}, RocketMQ $rocketmq_version, flushDiskType=SYNC_FLUSH"
	fi
	url=rocketmq://127.0.0.1:$rocketmq_namesrv_port
	if [[ $rocketmq_instance == secure ]]; then
		url=rocketmqs://$secure_user@127.0.0.1:$rocketmq_namesrv_port
		who+="; TLS only, ACL authentication"
	fi
	if rocketmq_answers; then
		note "$rocketmq_label: answers at $url, broker $rocketmq_broker_addr ($who)"
	elif [[ -n $npid || -n $bpid ]]; then
		note "$rocketmq_label: does NOT answer ($who)"
		return 1
	else
		note "$rocketmq_label: not running"
		return 1
	fi
}
