package watermill_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test, watermill's suite included, must leave no goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
