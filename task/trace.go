package task

import (
	"context"
	"sync/atomic"

	"github.com/omnibus-mq/omnibus/bus"
)

// Propagator carries trace context from the code that enqueues a task to
// the handler that runs it, through the message headers. OpenTelemetry's
// propagators fit in a few lines, since bus.Headers converts to
// propagation.MapCarrier:
//
//	type otelPropagator struct{ p propagation.TextMapPropagator }
//
//	func (o otelPropagator) Inject(ctx context.Context, h bus.Headers) {
//		o.p.Inject(ctx, propagation.MapCarrier(h))
//	}
//	func (o otelPropagator) Extract(ctx context.Context, h bus.Headers) context.Context {
//		return o.p.Extract(ctx, propagation.MapCarrier(h))
//	}
//
//	task.SetPropagator(otelPropagator{otel.GetTextMapPropagator()})
type Propagator interface {
	Inject(ctx context.Context, h bus.Headers)
	Extract(ctx context.Context, h bus.Headers) context.Context
}

var current atomic.Pointer[Propagator]

func init() { SetPropagator(W3C{}) }

// SetPropagator replaces the process's propagator; nil turns propagation
// off. The default is W3C.
func SetPropagator(p Propagator) {
	if p == nil {
		current.Store(nil)
		return
	}
	current.Store(&p)
}

func propagator() Propagator {
	if p := current.Load(); p != nil {
		return *p
	}
	return nil
}

// W3C passes W3C trace context (traceparent, tracestate) through a
// context without a tracing library: WithTraceParent puts it in, and a
// handler reads it back with TraceParent.
type W3C struct{}

type traceKey struct{}

type traceContext struct{ parent, state string }

// WithTraceParent returns ctx carrying a W3C traceparent (and tracestate).
func WithTraceParent(ctx context.Context, traceparent, tracestate string) context.Context {
	return context.WithValue(ctx, traceKey{}, traceContext{traceparent, tracestate})
}

// TraceParent returns the W3C traceparent and tracestate ctx carries.
func TraceParent(ctx context.Context) (traceparent, tracestate string) {
	tc, _ := ctx.Value(traceKey{}).(traceContext)
	return tc.parent, tc.state
}

// Inject writes ctx's trace context into h.
func (W3C) Inject(ctx context.Context, h bus.Headers) {
	if tc, ok := ctx.Value(traceKey{}).(traceContext); ok && tc.parent != "" {
		h[bus.HeaderTraceParent] = tc.parent
		if tc.state != "" {
			h[bus.HeaderTraceState] = tc.state
		}
	}
}

// Extract returns ctx carrying h's trace context.
func (W3C) Extract(ctx context.Context, h bus.Headers) context.Context {
	if tp := h.Get(bus.HeaderTraceParent); tp != "" {
		return WithTraceParent(ctx, tp, h.Get(bus.HeaderTraceState))
	}
	return ctx
}
