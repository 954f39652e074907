package watermill_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// fakeSub is a watermill subscriber whose messages the test feeds by
// hand, so that it can watch what the bridge does with each one.
type fakeSub struct {
	mu     sync.Mutex
	feeds  map[string]chan *message.Message // by topic
	ctxs   map[string]context.Context
	closes int
}

func newFakeSub() *fakeSub {
	return &fakeSub{feeds: map[string]chan *message.Message{}, ctxs: map[string]context.Context{}}
}

// Subscribe returns the topic's feed, closed when ctx is done, as
// watermill's contract asks.
func (f *fakeSub) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	in := make(chan *message.Message, 64)
	out := make(chan *message.Message)
	f.feeds[topic] = in
	f.ctxs[topic] = ctx
	go func() {
		defer close(out)
		for {
			select {
			case m := <-in:
				select {
				case out <- m:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

func (f *fakeSub) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closes++
	return nil
}

func (f *fakeSub) closed() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closes
}

// feed queues m for the subscription of topic.
func (f *fakeSub) feed(t *testing.T, topic string, m *message.Message) {
	t.Helper()
	f.mu.Lock()
	in := f.feeds[topic]
	f.mu.Unlock()
	if in == nil {
		t.Fatalf("no subscription to %q", topic)
	}
	select {
	case in <- m:
	case <-time.After(5 * time.Second):
		t.Fatalf("the feed of %q is full", topic)
	}
}

// fakePub records what is published and fails topics it is told to.
type fakePub struct {
	mu        sync.Mutex
	published map[string][]*message.Message
	failing   map[string]error
	closes    int
}

func newFakePub() *fakePub {
	return &fakePub{published: map[string][]*message.Message{}, failing: map[string]error{}}
}

func (p *fakePub) Publish(topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.failing[topic]; err != nil {
		return err
	}
	p.published[topic] = append(p.published[topic], msgs...)
	return nil
}

func (p *fakePub) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closes++
	return nil
}

func (p *fakePub) fail(topic string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil {
		delete(p.failing, topic)
		return
	}
	p.failing[topic] = err
}

func (p *fakePub) messages(topic string) []*message.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*message.Message(nil), p.published[topic]...)
}

var errInjected = errors.New("injected failure")

// settlement waits for m to be acked or nacked and says which.
func settlement(t *testing.T, m *message.Message, within time.Duration) string {
	t.Helper()
	select {
	case <-m.Acked():
		return "ack"
	case <-m.Nacked():
		return "nack"
	case <-time.After(within):
		return "none"
	}
}

// unsettled checks that m stays unsettled for a while.
func unsettled(t *testing.T, m *message.Message, d time.Duration) {
	t.Helper()
	if got := settlement(t, m, d); got != "none" {
		t.Fatalf("message %s was settled (%s), want it unsettled", m.UUID, got)
	}
}
