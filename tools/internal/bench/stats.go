package bench

import (
	"math"
	"slices"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histograms hold nanoseconds from 1ns to an hour at three significant
// digits: a resolution of 0.1 % at every scale, so microsecond latencies
// keep their precision beside multi-second stalls.
const (
	histMax    = int64(time.Hour)
	histDigits = 3
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, histMax, histDigits) }

// record adds n values of v, clamped into the histogram's range: a value
// that does not fit is still a sample, and dropping it would flatter the
// tail.
func record(h *hdrhistogram.Histogram, v time.Duration, n int) {
	x := int64(v)
	if x < 1 {
		x = 1
	}
	if x > histMax {
		x = histMax
	}
	_ = h.RecordValues(x, int64(n)) // cannot fail: x is in range
}

// mergeHists returns a new histogram holding the values of all hs. Every
// goroutine records into a histogram of its own, so recording needs no
// lock, and the run merges them once at the end.
func mergeHists(hs ...*hdrhistogram.Histogram) *hdrhistogram.Histogram {
	m := newHist()
	for _, h := range hs {
		if h != nil {
			m.Merge(h)
		}
	}
	return m
}

// Percentiles summarise one latency distribution, in milliseconds.
type Percentiles struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	P9999 float64 `json:"p99_99_ms"`
	Max   float64 `json:"max_ms"`
}

func ms(ns int64) float64 { return float64(ns) / 1e6 }

func percentilesOf(h *hdrhistogram.Histogram) Percentiles {
	if h == nil || h.TotalCount() == 0 {
		return Percentiles{}
	}
	return Percentiles{
		Count: h.TotalCount(),
		Mean:  h.Mean() / 1e6,
		P50:   ms(h.ValueAtPercentile(50)),
		P90:   ms(h.ValueAtPercentile(90)),
		P99:   ms(h.ValueAtPercentile(99)),
		P999:  ms(h.ValueAtPercentile(99.9)),
		P9999: ms(h.ValueAtPercentile(99.99)),
		Max:   ms(h.Max()),
	}
}

// CurvePoint is one point of a percentile curve: [percentile, milliseconds].
type CurvePoint [2]float64

// curveOf samples h for a percentile plot whose x axis is
// log10(1/(1-p)): evenly on that axis from the median on, and only as far
// as the sample count resolves (the 99.99th of 1000 values is their max).
func curveOf(h *hdrhistogram.Histogram) []CurvePoint {
	n := h.TotalCount()
	if n == 0 {
		return nil
	}
	limit := math.Min(5, math.Log10(float64(n)))
	var pts []CurvePoint
	at := func(x float64) {
		p := 100 * (1 - math.Pow(10, -x))
		pts = append(pts, CurvePoint{round(p, 6), ms(h.ValueAtPercentile(p))})
	}
	x := math.Log10(2)
	for ; x < limit-1e-9; x += 0.05 {
		at(x)
	}
	at(limit)
	return pts
}

func round(v float64, digits int) float64 {
	f := math.Pow(10, float64(digits))
	return math.Round(v*f) / f
}

// Spread is the median of the repetitions' values and their range.
type Spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

func spreadOf(vals []float64) Spread {
	if len(vals) == 0 {
		return Spread{}
	}
	s := slices.Clone(vals)
	slices.Sort(s)
	mid := len(s) / 2
	med := s[mid]
	if len(s)%2 == 0 {
		med = (s[mid-1] + s[mid]) / 2
	}
	return Spread{Median: med, Min: s[0], Max: s[len(s)-1]}
}

// Latency summarises a latency across repetitions: each percentile's
// median and range over the repetitions, the distribution of all of them
// merged, and the merged distribution's percentile curve.
type Latency struct {
	P50    Spread       `json:"p50_ms"`
	P90    Spread       `json:"p90_ms"`
	P99    Spread       `json:"p99_ms"`
	P999   Spread       `json:"p99_9_ms"`
	Max    Spread       `json:"max_ms"`
	Merged Percentiles  `json:"merged"`
	Curve  []CurvePoint `json:"curve"`
}

func latencyOf(reps []Percentiles, merged *hdrhistogram.Histogram) *Latency {
	var l Latency
	get := func(f func(Percentiles) float64) Spread {
		var v []float64
		for _, r := range reps {
			if r.Count > 0 {
				v = append(v, f(r))
			}
		}
		return spreadOf(v)
	}
	l.P50 = get(func(p Percentiles) float64 { return p.P50 })
	l.P90 = get(func(p Percentiles) float64 { return p.P90 })
	l.P99 = get(func(p Percentiles) float64 { return p.P99 })
	l.P999 = get(func(p Percentiles) float64 { return p.P999 })
	l.Max = get(func(p Percentiles) float64 { return p.Max })
	l.Merged = percentilesOf(merged)
	l.Curve = curveOf(merged)
	return &l
}
