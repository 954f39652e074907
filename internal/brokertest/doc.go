// Package brokertest finds the real brokers that omnibus tests run against.
//
// Each helper reads an environment variable, falls back to the loopback
// address that scripts/brokers serves, and dials the broker (2 s) before the
// test uses it:
//
//	AMQP(t)   OMNIBUS_AMQP_URL       amqp://guest:guest@127.0.0.1:5672/
//	Redis(t)  OMNIBUS_REDIS_URL      redis://127.0.0.1:6379/0
//	Kafka(t)  OMNIBUS_KAFKA_BROKERS  127.0.0.1:9092 (comma-separated)
//
// Secure(t) describes the TLS listeners, the test CA and the user omnibus
// that scripts/brokers sets up (from .brokers/security.env, or
// $OMNIBUS_BROKERS_DIR/security.env); CountingProxy counts a client's
// connections, Logs captures a logger's records.
//
// When the broker cannot be reached, the test is skipped with a message that
// says how to start it (make up, or scripts/brokers up NAME). Under CI=true
// (or CI=1) it fails instead: a CI run must never turn green by skipping the
// tests it exists to run.
//
// A test that talks to a broker names its queues, streams and topics with
// Name, so that runs and tests never see each other's messages:
//
//	func TestRoundTrip(t *testing.T) {
//		url := brokertest.AMQP(t)
//		queue := brokertest.Name(t)
//		...
//	}
//
// The smoke tests in this package are a raw-client round trip per broker;
// when an adapter's test fails, they tell whether the broker itself works.
package brokertest
