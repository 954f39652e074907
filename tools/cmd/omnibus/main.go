// Command omnibus works with message brokers through omnibus: it
// benchmarks them, publishes and consumes by hand, and checks that a
// broker is reachable and how it is set up.
//
//	omnibus bench [flags] BROKER...          throughput and latency; see omnibus bench -h
//	omnibus pub [flags] URL TOPIC [BODY]     publish BODY, or each line of stdin
//	omnibus sub [flags] URL TOPIC            print messages as they arrive, acking each
//	omnibus doctor URL                       connect, round-trip a message, print version and settings
//	omnibus report RESULTS.json              write summary.md and report.html again from results
//
// A BROKER is a URL (mem://, amqp://, redis://, kafka://) or one of the
// names memory, rabbitmq, redis, kafka, rocketmq and all, which stand for the
// brokers on loopback that scripts/brokers starts (OMNIBUS_AMQP_URL,
// OMNIBUS_REDIS_URL and OMNIBUS_KAFKA_BROKERS override their addresses).
// Flags may come before or after the other arguments.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage:
  omnibus bench [flags] BROKER...          measure throughput and latency (omnibus bench -h)
  omnibus pub [flags] URL TOPIC [BODY]     publish BODY, or each line of stdin
  omnibus sub [flags] URL TOPIC            print messages as they arrive, acking each
  omnibus doctor URL                       connect, round-trip a message, print version and settings
  omnibus report RESULTS.json              write summary.md and report.html again from results

BROKER is a URL (mem://, amqp://, redis://, kafka://, rocketmq://) or memory, rabbitmq, redis, kafka, rocketmq or all.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// errUsage marks errors whose message is already printed with the usage.
var errUsage = errors.New("usage")

// run executes one command line and returns the process's exit code: 0 on
// success, 1 when the command failed, 2 on a usage error.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "bench":
		err = benchCmd(ctx, args[1:], stdout, stderr)
	case "pub":
		err = pubCmd(ctx, args[1:], stdin, stdout, stderr)
	case "sub":
		err = subCmd(ctx, args[1:], stdout, stderr)
	case "doctor":
		err = doctorCmd(ctx, args[1:], stdout, stderr)
	case "report":
		err = reportCmd(ctx, args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "omnibus: unknown command %q\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	fmt.Fprintf(stderr, "omnibus %s: %v\n", args[0], err)
	return 1
}

// parse parses flags that may be mixed with positional arguments, and
// returns the positional ones. A usage problem is printed to fs's output
// and returned as errUsage.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, errUsage
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func usageErr(fs *flag.FlagSet, format string, a ...any) error {
	fmt.Fprintf(fs.Output(), "omnibus %s: %s\n", fs.Name(), fmt.Sprintf(format, a...))
	fs.Usage()
	return errUsage
}
