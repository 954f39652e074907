package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Files WriteDir writes.
const (
	JSONFile     = "results.json"
	MarkdownFile = "summary.md"
	HTMLFile     = "report.html"
)

// WriteDir writes the report into dir (created when missing) as
// results.json, summary.md and report.html.
func WriteDir(dir string, r *Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, write := range map[string]func(io.Writer, *Report) error{
		JSONFile: WriteJSON, MarkdownFile: WriteMarkdown, HTMLFile: WriteHTML,
	} {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		err = write(f, r)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// WriteJSON writes the report as indented JSON.
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// ReadJSON reads a report written by WriteJSON. Histograms are not in the
// file: percentiles and curves are.
func ReadJSON(rd io.Reader) (*Report, error) {
	var r Report
	if err := json.NewDecoder(rd).Decode(&r); err != nil {
		return nil, err
	}
	return &r, nil
}

// fmtMs writes a latency in a unit that suits it.
func fmtMs(v float64) string {
	switch {
	case v <= 0:
		return "–"
	case v < 1:
		return fmt.Sprintf("%.0f µs", v*1000)
	case v < 10:
		return fmt.Sprintf("%.2f ms", v)
	case v < 100:
		return fmt.Sprintf("%.1f ms", v)
	case v < 1000:
		return fmt.Sprintf("%.0f ms", v)
	}
	return fmt.Sprintf("%.2f s", v/1000)
}

// spreadCell writes a median with its range when the repetitions differ.
func spreadCell(s Spread, f func(float64) string) string {
	if s.Min == s.Max {
		return f(s.Median)
	}
	return fmt.Sprintf("%s [%s–%s]", f(s.Median), f(s.Min), f(s.Max))
}

func rateCell(s Spread) string { return spreadCell(s, count) }
func mbCell(s Spread) string {
	return spreadCell(s, func(v float64) string { return fmt.Sprintf("%.1f", v) })
}
func latCell(l *Latency, pick func(*Latency) Spread) string {
	if l == nil || l.Merged.Count == 0 {
		return "–"
	}
	return spreadCell(pick(l), fmtMs)
}

func repsOf(r *Report) int {
	n := 0
	for _, res := range r.Results {
		n = max(n, len(res.Samples))
	}
	return n
}

// durabilityDiffers reports whether the brokers of a report acknowledge
// publishes under different durability rules.
func durabilityDiffers(r *Report) bool {
	var seen []string
	for _, b := range r.Brokers {
		if !slices.Contains(seen, b.Durability.Summary) {
			seen = append(seen, b.Durability.Summary)
		}
	}
	return len(seen) > 1
}

func machineLine(m Machine) string {
	s := fmt.Sprintf("%s, %d cores (GOMAXPROCS %d)", m.CPU, m.Cores, m.GOMAXPROCS)
	if m.MemoryMB > 0 {
		s += fmt.Sprintf(", %.1f GB RAM", float64(m.MemoryMB)/1024)
	}
	s += fmt.Sprintf(", %s/%s", m.OS, m.Arch)
	if m.Kernel != "" {
		s += " (kernel " + m.Kernel + ")"
	}
	return s + ", " + m.Go
}

func clientLine(c Client) string {
	s := "omnibus " + c.Adapter + " " + c.OmnibusVersion
	if c.Library != "" {
		s += " on " + c.Library + " " + c.LibraryVersion
	}
	return s
}

func md(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// WriteMarkdown writes a summary of the report: the machine, the brokers
// and their durability, then a table of maximum throughput and one of
// latency at fixed rates.
func WriteMarkdown(w io.Writer, r *Report) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# omnibus bench, %s\n\n", r.Started.Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "- Machine: %s\n", machineLine(r.Machine))
	if r.Note != "" {
		fmt.Fprintf(&b, "- Note: %s\n", r.Note)
	}
	if r.Command != "" {
		fmt.Fprintf(&b, "- Command: `%s`\n", r.Command)
	}
	fmt.Fprintf(&b, "- omnibus %s; ran %s\n", r.Version, r.Finished.Sub(r.Started).Round(1e9))
	fmt.Fprintf(&b, "\nEach figure is the median of %d repetitions, with the range [min–max] when they differ. "+
		"Throughput is messages per second, MB/s counts message bodies (10^6 bytes). Latencies run from the time "+
		"a message was due to be sent: in fixed-rate runs that is its place in the schedule, so a stalled "+
		"producer shows up in them (coordinated omission corrected); in max-rate runs it is the send time, and "+
		"end-to-end latency there includes the queue the closed loop builds.\n\n", repsOf(r))

	b.WriteString("## Brokers\n\n| target | broker | version | client | durability of an acknowledged publish |\n|---|---|---|---|---|\n")
	for _, br := range r.Brokers {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", md(br.Target), md(br.Product), md(br.Version),
			md(clientLine(br.Client)), md(br.Durability.Summary))
	}
	if durabilityDiffers(r) {
		b.WriteString("\n**Durability differs between these brokers**: an acknowledged publish means something else on each " +
			"(see the last column). Compare their figures with that in mind.\n")
	}
	b.WriteString("\n")

	b.WriteString("## Maximum throughput (closed loop)\n\n")
	b.WriteString("| broker | workload | publish msg/s | consume msg/s | consume MB/s | publish p50 | publish p99 | end-to-end p50 | end-to-end p99 |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, res := range r.Results {
		if res.Kind != KindMax {
			continue
		}
		if res.Error != "" && len(res.Samples) == 0 {
			fmt.Fprintf(&b, "| %s | %s | failed: %s | | | | | | |\n", md(res.Target), md(res.Workload.Name), md(res.Error))
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", md(res.Target), md(res.Workload.Name),
			rateCell(res.PublishRate), rateCell(res.ConsumeRate), mbCell(res.ConsumeMBps),
			latCell(res.PublishLatency, func(l *Latency) Spread { return l.P50 }),
			latCell(res.PublishLatency, func(l *Latency) Spread { return l.P99 }),
			latCell(res.EndToEnd, func(l *Latency) Spread { return l.P50 }),
			latCell(res.EndToEnd, func(l *Latency) Spread { return l.P99 }))
	}

	b.WriteString("\n## Latency at fixed rates (open loop)\n\n")
	b.WriteString("| broker | workload | target msg/s | achieved msg/s | e2e p50 | e2e p90 | e2e p99 | e2e p99.9 | e2e max | publish p99 | send delay p99 | e2e p99 from send |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, res := range r.Results {
		if res.Kind != KindFixed {
			continue
		}
		target := count(res.Workload.Rate)
		if res.Fraction > 0 {
			target += fmt.Sprintf(" (%.0f%% of max)", 100*res.Fraction)
		}
		if res.Error != "" && len(res.Samples) == 0 {
			fmt.Fprintf(&b, "| %s | %s | %s | failed: %s | | | | | | | | |\n", md(res.Target), md(res.Workload.Name), target, md(res.Error))
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", md(res.Target), md(res.Workload.Name),
			target, rateCell(res.ConsumeRate),
			latCell(res.EndToEnd, func(l *Latency) Spread { return l.P50 }),
			latCell(res.EndToEnd, func(l *Latency) Spread { return l.P90 }),
			latCell(res.EndToEnd, func(l *Latency) Spread { return l.P99 }),
			latCell(res.EndToEnd, func(l *Latency) Spread { return l.P999 }),
			latCell(res.EndToEnd, func(l *Latency) Spread { return l.Max }),
			latCell(res.PublishLatency, func(l *Latency) Spread { return l.P99 }),
			latCell(res.SendDelay, func(l *Latency) Spread { return l.P99 }),
			latCell(res.EndToEndFromSend, func(l *Latency) Spread { return l.P99 }))
	}
	b.WriteString("\n\"e2e p99 from send\" leaves out the time a message waited for its producer (the uncorrected figure); " +
		"the gap between it and e2e p99 is what coordinated omission would hide, including the lateness of the producer's own timer.\n")

	var notes []string
	for _, br := range r.Brokers {
		for _, n := range br.Notes {
			notes = append(notes, fmt.Sprintf("- %s: %s", br.Target, n))
		}
	}
	for _, res := range r.Results {
		for _, n := range res.Notes {
			notes = append(notes, fmt.Sprintf("- %s: %s", res.ID, n))
		}
		if res.Error != "" {
			notes = append(notes, fmt.Sprintf("- %s: **failed**: %s", res.ID, res.Error))
		}
	}
	if len(notes) > 0 {
		b.WriteString("\n## Notes\n\n" + strings.Join(notes, "\n") + "\n")
	}

	b.WriteString("\n## Settings\n\n")
	for _, br := range r.Brokers {
		fmt.Fprintf(&b, "- %s (%s): ", br.Target, md(br.URL))
		keys := make([]string, 0, len(br.Durability.Settings))
		for k := range br.Durability.Settings {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s=%s", k, br.Durability.Settings[k])
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
