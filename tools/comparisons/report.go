package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/omnibus-mq/omnibus/tools/internal/bench"
)

func rate(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	case v >= 1e3:
		return fmt.Sprintf("%.2fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func pct(a, b float64) string {
	if b <= 0 || a <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f %%", 100*a/b)
}

func times(a, b float64) string {
	if b <= 0 || a <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f×", a/b)
}

func ms(s bench.Spread) string {
	return fmt.Sprintf("%.2f [%.2f–%.2f]", s.Median, s.Min, s.Max)
}

// writeComparison writes the Markdown comparison of one broker's run.
func writeComparison(w io.Writer, p brokerPlan, cs []contender, run Run, rep *bench.Report) {
	m := run.Machine
	fmt.Fprintf(w, "# %s: omnibus, raw clients and watermill, one run\n\n", p.name)
	fmt.Fprintf(w, "- Command: `%s`\n", run.Command)
	fmt.Fprintf(w, "- Started %s, finished %s\n", run.Started.UTC().Format("2006-01-02 15:04:05 MST"), run.Finished.UTC().Format("15:04:05 MST"))
	fmt.Fprintf(w, "- Machine: %d cores (%s), GOMAXPROCS %d, %d MB, %s; load average at start %s, at end %s\n",
		m.Cores, m.CPU, m.GOMAXPROCS, m.MemoryMB, m.Go, run.LoadStart, run.LoadEnd)
	if run.Note != "" {
		fmt.Fprintf(w, "- Note: %s\n", run.Note)
	}
	if rep != nil {
		for _, b := range rep.Brokers {
			fmt.Fprintf(w, "- `%s`: %s %s; client %s %s %s; %s\n", b.Target, b.Product, b.Version,
				b.Client.Adapter, b.Client.Library, b.Client.LibraryVersion, b.Durability.Summary)
		}
	}
	fmt.Fprintln(w)

	// Phases: publish alone, consume alone.
	phaseNames := []string{}
	val := map[string]map[string]float64{} // phase → contender → rate
	errs := map[string]string{}
	for _, x := range run.Phases {
		if val[x.Name] == nil {
			val[x.Name] = map[string]float64{}
			phaseNames = append(phaseNames, x.Name)
		}
		val[x.Name][x.Contender] = x.Rate
		if x.Error != "" {
			errs[x.Contender+" / "+x.Name] = x.Error
		}
	}
	best := func(phase, role string) (float64, string) {
		var v float64
		var who string
		for _, k := range cs {
			if k.role == role && val[phase][k.name] > v {
				v, who = val[phase][k.name], k.name
			}
		}
		return v, who
	}
	fmt.Fprintf(w, "## Publish alone, then consume alone (%s messages, msg/s)\n\n", bench.SizeLabel(run.Size))
	fmt.Fprintf(w, "Each contender publishes to a fresh topic (acknowledged by the broker), then drains it. ")
	fmt.Fprintf(w, "\"of raw\" is the share of the best raw client's rate in the same phase.\n\n")
	fmt.Fprintf(w, "| contender | %s |\n", strings.Join(phaseNames, " | "))
	fmt.Fprintf(w, "|---|%s\n", strings.Repeat("---|", len(phaseNames)))
	for _, k := range cs {
		cells := []string{}
		for _, ph := range phaseNames {
			v := val[ph][k.name]
			cell := rate(v)
			if r, who := best(ph, "raw"); k.role != "raw" && r > 0 {
				cell += fmt.Sprintf(" (%s of %s)", pct(v, r), who)
			}
			cells = append(cells, cell)
		}
		fmt.Fprintf(w, "| %s (%s) | %s |\n", k.name, k.role, strings.Join(cells, " | "))
	}
	if slices.ContainsFunc(cs, func(k contender) bool { return k.role == "watermill" }) {
		var ratio []string
		for _, ph := range phaseNames {
			wm, _ := best(ph, "watermill")
			ratio = append(ratio, times(val[ph]["omnibus"], wm))
		}
		fmt.Fprintf(w, "| **omnibus ÷ watermill** | %s |\n", strings.Join(ratio, " | "))
	}
	fmt.Fprintln(w)
	for k, e := range errs {
		fmt.Fprintf(w, "- error, %s: %s\n", k, e)
	}

	if len(run.Tasks) > 0 {
		writeTasks(w, run.Tasks)
	}
	if len(run.Pipelines) > 0 {
		writePipelines(w, run.Pipelines)
	}
	if rep == nil {
		return
	}
	// End to end through the bench engine.
	fmt.Fprintf(w, "\n## End to end: 4 producers × up to 100 messages per call, 4 consumers (bench engine)\n\n")
	fmt.Fprintf(w, "Max is a closed loop (producers pause above %d unconsumed); half is an open loop at half of that contender's own maximum, latency corrected for coordinated omission. Medians of the repetitions [range]; latency in ms.\n\n", bench.DefaultMaxBacklog)
	fmt.Fprintln(w, "| contender | max sustained msg/s | e2e p50 at max | e2e p99 at max | half rate | e2e p50 at half | e2e p99 at half | e2e p99.9 at half | notes |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	maxOf := map[string]float64{}
	for _, r := range rep.Results {
		if r.Kind == bench.KindMax {
			maxOf[r.Target] = r.Sustained()
		}
	}
	for _, k := range cs {
		name := p.name + "/" + k.name
		row := []string{fmt.Sprintf("%s (%s)", k.name, k.role), "–", "–", "–", "–", "–", "–", "–", ""}
		var notes []string
		for _, r := range rep.Results {
			if r.Target != name {
				continue
			}
			if r.Error != "" {
				notes = append(notes, r.Error)
			}
			for _, n := range r.Notes {
				if !strings.HasPrefix(n, "closed loop:") {
					notes = append(notes, n)
				}
			}
			if r.EndToEnd == nil {
				continue
			}
			switch r.Kind {
			case bench.KindMax:
				s := bench.Spread{Median: r.Sustained()}
				var lo, hi float64
				for i, x := range r.Samples {
					v := min(x.PublishRate, x.ConsumeRate)
					if i == 0 || v < lo {
						lo = v
					}
					hi = max(hi, v)
				}
				s.Min, s.Max = lo, hi
				row[1] = fmt.Sprintf("%s [%s–%s]", rate(s.Median), rate(s.Min), rate(s.Max))
				row[2], row[3] = ms(r.EndToEnd.P50), ms(r.EndToEnd.P99)
			case bench.KindFixed:
				row[4] = rate(r.Workload.Rate)
				row[5], row[6], row[7] = ms(r.EndToEnd.P50), ms(r.EndToEnd.P99), ms(r.EndToEnd.P999)
			}
		}
		row[8] = strings.ReplaceAll(strings.Join(notes, "; "), "|", "/")
		fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
	}
	var bestRaw, bestWm float64
	for _, k := range cs {
		v := maxOf[p.name+"/"+k.name]
		switch k.role {
		case "raw":
			bestRaw = max(bestRaw, v)
		case "watermill":
			bestWm = max(bestWm, v)
		}
	}
	o := maxOf[p.name+"/omnibus"]
	fmt.Fprintf(w, "\nomnibus end to end: %s of the best raw client's maximum", pct(o, bestRaw))
	if bestWm > 0 {
		fmt.Fprintf(w, ", %s watermill's", times(o, bestWm))
	}
	fmt.Fprintln(w, ".")
	writeGoals(w, p.name, val, best, o, bestRaw, halfP99(rep, p.name+"/omnibus"))
	fmt.Fprintf(w, "\nFull engine results: results.json, summary.md, report.html beside this file; phases: phases.json.\n")
}

// halfP99 is the median p99 end-to-end latency of target's run at half its
// maximum, or -1.
func halfP99(rep *bench.Report, target string) float64 {
	for _, r := range rep.Results {
		if r.Target == target && r.Kind == bench.KindFixed && r.EndToEnd != nil {
			return r.EndToEnd.P99.Median
		}
	}
	return -1
}

// goal is one line of the goals table.
type goal struct {
	text     string
	measured string
	met      bool
	known    bool
}

// writeGoals checks the run against the project's stated goals (2-core
// machine, loopback, 1 KB, equal durability).
func writeGoals(w io.Writer, broker string, val map[string]map[string]float64,
	best func(phase, role string) (float64, string), e2e, e2eRaw, p99 float64) {
	var gs []goal
	ratioGoal := func(text string, a, b, want float64, asPct bool) {
		g := goal{text: text, known: a > 0 && b > 0}
		if g.known {
			g.met = a/b >= want
			if asPct {
				g.measured = pct(a, b)
			} else {
				g.measured = times(a, b)
			}
		}
		gs = append(gs, g)
	}
	phases := make([]string, 0, len(val))
	for ph := range val {
		phases = append(phases, ph)
	}
	slices.Sort(phases)
	for _, ph := range phases {
		r, who := best(ph, "raw")
		ratioGoal(fmt.Sprintf("omnibus ≥ 90 %% of the best raw client (%s), %s", who, ph), val[ph]["omnibus"], r, 0.9, true)
	}
	ratioGoal("omnibus ≥ 90 % of the best raw client, end to end maximum", e2e, e2eRaw, 0.9, true)
	for _, ph := range phases {
		wm, who := best(ph, "watermill")
		switch {
		case broker == "rabbitmq" && strings.HasPrefix(ph, "publish"):
			ratioGoal(fmt.Sprintf("omnibus ≥ 2.5× %s publishing with confirms, %s", who, ph), val[ph]["omnibus"], wm, 2.5, false)
		case broker == "redis" && strings.HasPrefix(ph, "consume"):
			ratioGoal(fmt.Sprintf("omnibus ≥ 10× %s consuming, %s", who, ph), val[ph]["omnibus"], wm, 10, false)
		case broker == "kafka" && strings.HasPrefix(ph, "publish"):
			ratioGoal(fmt.Sprintf("omnibus ≥ 5× %s producing, %s", who, ph), val[ph]["omnibus"], wm, 5, false)
		}
	}
	// The latency goals name RabbitMQ, Redis Streams and Kafka only.
	if limit, ok := map[string]float64{"rabbitmq": 5, "redis": 5, "kafka": 20}[broker]; ok {
		g := goal{text: fmt.Sprintf("omnibus e2e p99 < %.0f ms at half its maximum", limit), known: p99 >= 0}
		if g.known {
			g.met, g.measured = p99 < limit, fmt.Sprintf("%.2f ms", p99)
		}
		gs = append(gs, g)
	}
	fmt.Fprintf(w, "\n## Goals\n\n| goal | measured | met |\n|---|---|---|\n")
	for _, g := range gs {
		met := "no"
		switch {
		case !g.known:
			met, g.measured = "not measured", "–"
		case g.met:
			met = "yes"
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", g.text, g.measured, met)
	}
}
