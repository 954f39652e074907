package chaos

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// Ledger tracks every message ID of a scenario: sent, confirmed by the
// broker, processed by a handler (how often), and dead-lettered (with the
// dead-letter copy's reason). It is safe for concurrent use.
type Ledger struct {
	mu        sync.Mutex
	published map[string]bool
	confirmed map[string]bool
	processed map[string]int
	dead      map[string]Dead
	poison    map[string]bool
	pubErrors int
	errSample []string
}

// Dead is what a dead-letter copy said about its message.
type Dead struct {
	Reason   string // the HeaderError header
	Attempts string // the HeaderAttempts header
	Origin   string // the HeaderOriginTopic header
	Copies   int
}

// NewLedger returns an empty Ledger.
func NewLedger() *Ledger {
	return &Ledger{
		published: map[string]bool{},
		confirmed: map[string]bool{},
		processed: map[string]int{},
		dead:      map[string]Dead{},
		poison:    map[string]bool{},
	}
}

// Sent records messages handed to Publish; poison ones are expected in
// the dead-letter topic rather than processed.
func (l *Ledger) Sent(poison bool, ids ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, id := range ids {
		l.published[id] = true
		if poison {
			l.poison[id] = true
		}
	}
}

// Confirmed records messages whose Publish succeeded.
func (l *Ledger) Confirmed(ids ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, id := range ids {
		l.confirmed[id] = true
	}
}

// PublishFailed counts a Publish that returned an error.
func (l *Ledger) PublishFailed(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pubErrors++
	if len(l.errSample) < 3 {
		l.errSample = append(l.errSample, err.Error())
	}
}

// Processed records that a handler finished a message successfully.
func (l *Ledger) Processed(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.processed[id]++
}

// DeadLettered records a message read from the dead-letter topic.
func (l *Ledger) DeadLettered(id string, d Dead) {
	l.mu.Lock()
	defer l.mu.Unlock()
	d.Copies = l.dead[id].Copies + 1
	l.dead[id] = d
}

// ConfirmedCount is how many distinct messages have been confirmed.
func (l *Ledger) ConfirmedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.confirmed)
}

// ProcessedCount is how many distinct messages have been processed.
func (l *Ledger) ProcessedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.processed)
}

// Unprocessed is how many confirmed messages no handler has finished yet:
// those that sit in the broker (or in a consumer's hands).
func (l *Ledger) Unprocessed() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for id := range l.confirmed {
		if l.processed[id] == 0 {
			n++
		}
	}
	return n
}

// PublishErrors is how many Publish calls failed.
func (l *Ledger) PublishErrors() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pubErrors
}

// missing lists the confirmed messages not accounted for: not processed,
// and for poison ones not dead-lettered.
func (l *Ledger) missing() []string {
	var m []string
	for id := range l.confirmed {
		if l.poison[id] {
			if l.dead[id].Copies == 0 {
				m = append(m, id)
			}
		} else if l.processed[id] == 0 && l.dead[id].Copies == 0 {
			m = append(m, id)
		}
	}
	sort.Strings(m)
	return m
}

// WaitSettled returns once want messages are confirmed and every confirmed
// one is processed or, if poison, dead-lettered; or, when ctx ends first,
// an error saying what is missing.
func (l *Ledger) WaitSettled(ctx context.Context, want int) error {
	for {
		l.mu.Lock()
		miss := l.missing()
		conf := len(l.confirmed)
		l.mu.Unlock()
		if conf >= want && len(miss) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			sample := miss
			if len(sample) > 5 {
				sample = sample[:5]
			}
			return fmt.Errorf("gave up waiting (%v): %d of %d messages confirmed, %d confirmed ones neither processed nor dead-lettered (first: %s)",
				context.Cause(ctx), conf, want, len(miss), strings.Join(sample, " "))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Result is a scenario's count of messages.
type Result struct {
	Scenario, Broker string
	// Published is how many distinct messages were handed to Publish.
	Published int
	// Confirmed is how many of them a Publish call returned success for.
	Confirmed int
	// PublishErrors counts Publish calls that returned an error (and were
	// retried).
	PublishErrors int
	// Processed is how many distinct messages a handler finished.
	Processed int
	// Lost counts confirmed messages neither processed nor dead-lettered.
	Lost int
	// Duplicated counts the extra successful handlings: a message processed
	// three times counts two.
	Duplicated int
	// DeadLettered is how many distinct messages reached the dead-letter
	// topic.
	DeadLettered int
	// Duration of the scenario.
	Duration time.Duration
	// Note says what happened beyond the counts.
	Note string
	// PublishErrorSample holds up to three of the Publish errors.
	PublishErrorSample []string
	// Err is why the scenario failed, empty when it passed.
	Err string
}

// Result counts the ledger.
func (l *Ledger) Result() Result {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := Result{
		Published:     len(l.published),
		Confirmed:     len(l.confirmed),
		PublishErrors: l.pubErrors,
		Processed:     len(l.processed),
		Lost:          len(l.missing()),
		DeadLettered:  len(l.dead),

		PublishErrorSample: append([]string(nil), l.errSample...),
	}
	for _, n := range l.processed {
		r.Duplicated += n - 1
	}
	return r
}

// Check returns the problems the ledger shows: lost messages, processed
// poison messages, healthy messages dead-lettered, and poison messages
// whose dead-letter copy lacks the reason (wantReason in HeaderError) or
// the attempt count.
func (l *Ledger) Check(wantReason, wantAttempts string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var p []string
	if miss := l.missing(); len(miss) > 0 {
		p = append(p, fmt.Sprintf("%d confirmed messages lost (first %s)", len(miss), miss[0]))
	}
	for id, d := range l.dead {
		switch {
		case !l.poison[id]:
			p = append(p, fmt.Sprintf("healthy message %s dead-lettered: %q", id, d.Reason))
		case !strings.Contains(d.Reason, wantReason):
			p = append(p, fmt.Sprintf("poison message %s dead-lettered with reason %q, want it to contain %q", id, d.Reason, wantReason))
		case d.Attempts != wantAttempts:
			p = append(p, fmt.Sprintf("poison message %s dead-lettered after %q attempts, want %s", id, d.Attempts, wantAttempts))
		}
	}
	for id := range l.poison {
		if l.processed[id] > 0 {
			p = append(p, fmt.Sprintf("poison message %s processed", id))
		}
	}
	sort.Strings(p)
	if len(p) > 10 {
		p = append(p[:10], fmt.Sprintf("... and %d more", len(p)-10))
	}
	return p
}

// Notes returns the results' notes and publish errors as a Markdown list.
func Notes(rs []Result) string {
	var b strings.Builder
	for _, r := range rs {
		if r.Note != "" {
			fmt.Fprintf(&b, "- %s / %s: %s\n", r.Broker, r.Scenario, r.Note)
		}
		if len(r.PublishErrorSample) > 0 {
			fmt.Fprintf(&b, "- %s / %s: publish errors, first %d: %q\n", r.Broker, r.Scenario, len(r.PublishErrorSample), r.PublishErrorSample)
		}
	}
	return b.String()
}

// Table renders results as a Markdown table.
func Table(rs []Result) string {
	var b strings.Builder
	b.WriteString("| broker | scenario | published | confirmed | publish errors | processed | lost | duplicated | dead-lettered | time | result |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")
	for _, r := range rs {
		res := "ok"
		if r.Err != "" {
			res = "FAIL: " + strings.ReplaceAll(r.Err, "|", "/")
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %d | %d | %d | %d | %.1fs | %s |\n",
			r.Broker, r.Scenario, r.Published, r.Confirmed, r.PublishErrors, r.Processed,
			r.Lost, r.Duplicated, r.DeadLettered, r.Duration.Seconds(), res)
	}
	return b.String()
}
