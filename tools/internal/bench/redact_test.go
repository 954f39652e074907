package bench

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// A URL's password stays out of the report whether or not the URL parses,
// and in name=URL targets on the command line.
func TestPasswordsRedacted(t *testing.T) {
	const secret = "s3cret-Pa55"
	urls := []string{
		"amqp://u:" + secret + "@h:badport/",
		"amqp://u:" + secret + "@h/%zz",
		"amqp://u:" + secret + "@h/",
		"amqp://u:" + secret + "@ss@h/",
		"quorum=amqp://u:" + secret + "@h/?queue_type=quorum",
		"kafka://u:" + secret + "@k1:9092,k2:9092?sasl=plain",
	}
	for _, raw := range urls {
		info := Probe(context.Background(), Target{Name: "x", URL: raw})
		j, err := json.Marshal(info)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(j), secret) || strings.Contains(string(j), "ss@h") {
			t.Errorf("Probe(%q) shows the password: %s", raw, j)
		}
	}
	args := os.Args
	defer func() { os.Args = args }()
	os.Args = append([]string{"omnibus", "bench"}, urls...)
	if c := CommandLine(); strings.Contains(c, secret) || !strings.Contains(c, "quorum=amqp://u:xxxxx@h/") {
		t.Errorf("CommandLine() = %s; want every password redacted", c)
	}
	if got := RedactText("see amqp://guest@h/ and redis://:" + secret + "@r:6379/0"); got != "see amqp://guest@h/ and redis://:xxxxx@r:6379/0" {
		t.Errorf("RedactText = %q", got)
	}
}
