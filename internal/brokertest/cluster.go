package brokertest

import (
	"os"
	"os/exec"
	"testing"
)

// ClusterCtlEnv names scripts/clusters for the tests that stop and start
// nodes of the cluster it runs; scripts/cluster-test sets it.
const ClusterCtlEnv = "OMNIBUS_CLUSTER_CTL"

// ClusterCtl returns a function that runs scripts/clusters with its
// arguments (such as "stop", "rabbitmq", "1"), failing the test when it
// fails. Without ClusterCtlEnv, the test is skipped: it needs a cluster of
// scripts/clusters, which scripts/cluster-test brings up.
func ClusterCtl(t *testing.T) func(args ...string) {
	t.Helper()
	ctl := os.Getenv(ClusterCtlEnv)
	if ctl == "" {
		t.Skipf("needs a cluster of scripts/clusters, named by %s (scripts/cluster-test sets it)", ClusterCtlEnv)
	}
	return func(args ...string) {
		t.Helper()
		out, err := exec.Command(ctl, args...).CombinedOutput()
		t.Logf("%s %v: %s", ctl, args, out)
		if err != nil {
			t.Fatalf("%s %v: %v", ctl, args, err)
		}
	}
}
