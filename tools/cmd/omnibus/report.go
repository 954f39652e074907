package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/omnibus-mq/omnibus/tools/internal/bench"
)

// reportCmd renders the Markdown and HTML of a results.json again, for
// results from an older version or merged by hand.
func reportCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "directory to write summary.md and report.html to (default: the file's)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: omnibus report [flags] RESULTS.json

Writes summary.md and report.html from a results.json of omnibus bench.

flags:
`)
		fs.PrintDefaults()
	}
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErr(fs, "want one results file")
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return err
	}
	rep, err := bench.ReadJSON(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", pos[0], err)
	}
	dir := *out
	if dir == "" {
		dir = filepath.Dir(pos[0])
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, write := range map[string]func(io.Writer, *bench.Report) error{
		bench.MarkdownFile: bench.WriteMarkdown, bench.HTMLFile: bench.WriteHTML,
	} {
		path := filepath.Join(dir, name)
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		err = write(f, rep)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		fmt.Fprintln(stdout, path)
	}
	return nil
}
