package watermill_test

import (
	"testing"

	"github.com/omnibus-mq/omnibus/internal/leak"
)

// Every test, watermill's suite included, must leave no goroutine behind.
func TestMain(m *testing.M) {
	leak.Main(m)
}
