package bench

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Progress shows a suite's progress: on a terminal, a bar redrawn in
// place with a line printed above it as each repetition ends; elsewhere
// (a CI log, a file), a line per repetition and one every LineInterval
// during long ones. A nil *Progress shows nothing.
type Progress struct {
	w   io.Writer
	tty bool
	now func() time.Time

	mu        sync.Mutex
	started   time.Time
	planned   time.Duration // the suite's estimated total
	done      time.Duration // estimated time of the finished repetitions
	label     string
	repPlan   time.Duration
	repStart  time.Time
	live      Live
	rate      float64 // received per second, smoothed
	lastRecv  int64
	lastAt    time.Time
	lastLine  time.Time
	drawnOnce bool
}

// LineInterval is how often a Progress that is not on a terminal prints
// a line during a repetition.
const LineInterval = 10 * time.Second

// NewProgress writes progress to w, as a bar redrawn in place when tty.
func NewProgress(w io.Writer, tty bool) *Progress {
	return &Progress{w: w, tty: tty, now: time.Now}
}

// Start begins a suite estimated to take planned.
func (p *Progress) Start(planned time.Duration) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.started, p.planned = p.now(), planned
}

// Begin starts a repetition estimated to take d, under label.
func (p *Progress) Begin(label string, d time.Duration) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.label, p.repPlan, p.repStart = label, d, p.now()
	p.live, p.rate, p.lastRecv, p.lastAt = Live{Phase: "connect"}, 0, 0, p.now()
	p.lastLine = p.now()
	p.draw()
}

// Update reports the running repetition's state.
func (p *Progress) Update(l Live) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if dt := now.Sub(p.lastAt).Seconds(); dt > 0 && l.Received >= p.lastRecv {
		inst := float64(l.Received-p.lastRecv) / dt
		if p.rate == 0 {
			p.rate = inst
		} else {
			p.rate = 0.7*p.rate + 0.3*inst
		}
	}
	p.lastRecv, p.lastAt, p.live = l.Received, now, l
	if p.tty {
		p.draw()
		return
	}
	if now.Sub(p.lastLine) >= LineInterval {
		p.lastLine = now
		fmt.Fprintf(p.w, "%s %s: %s %s, %s msg/s\n", p.percent(), p.label, l.Phase, elapsedLabel(l), count(p.rate))
	}
}

// End finishes the running repetition with a line saying how it went.
func (p *Progress) End(line string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += p.repPlan + time.Second
	p.repPlan = 0
	p.clear()
	fmt.Fprintf(p.w, "%s %s\n", p.percent(), line)
	p.draw()
}

// Skip counts planned work that will not run (after a failure).
func (p *Progress) Skip(d time.Duration) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += d
}

// Finish ends the display.
func (p *Progress) Finish() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
	fmt.Fprintf(p.w, "done in %s\n", p.now().Sub(p.started).Round(time.Second))
}

// fraction is the share of planned work done, counting the running
// repetition by its elapsed time.
func (p *Progress) fraction() float64 {
	if p.planned <= 0 {
		return 0
	}
	cur := min(p.now().Sub(p.repStart), p.repPlan)
	return min(float64(p.done+cur)/float64(p.planned), 1)
}

func (p *Progress) percent() string { return fmt.Sprintf("[%3.0f%%]", 100*p.fraction()) }

func elapsedLabel(l Live) string {
	if l.Planned == 0 {
		return ""
	}
	return fmt.Sprintf("%.1fs/%gs", min(l.Elapsed, l.Planned).Seconds(), round(l.Planned.Seconds(), 1))
}

const barWidth = 24

func (p *Progress) draw() {
	if !p.tty {
		return
	}
	f := p.fraction()
	full := int(f * barWidth)
	bar := strings.Repeat("█", full) + strings.Repeat("░", barWidth-full)
	eta := "?"
	if el := p.now().Sub(p.started); f > 0.01 {
		eta = (time.Duration(float64(el)/f) - el).Round(time.Second).String()
	}
	line := fmt.Sprintf("%s %3.0f%% ETA %s  %s  %s %s  %s msg/s", bar, 100*f, eta, p.label,
		p.live.Phase, elapsedLabel(p.live), count(p.rate))
	fmt.Fprint(p.w, "\r\x1b[K"+line)
	p.drawnOnce = true
}

func (p *Progress) clear() {
	if p.tty && p.drawnOnce {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}
