package rocketmq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
)

func TestName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"orders", "orders"},
		{"orders.eu", "orders_2Eeu"},
		{"a_b", "a_5Fb"},
		{"Kebab-Case9", "Kebab-Case9"},
		{"ключ", "_D0_BA_D0_BB_D1_8E_D1_87"},
		{"a/b c", "a_2Fb_20c"},
	} {
		if got := Name(tc.in, maxTopicLen); got != tc.want {
			t.Errorf("Name(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// Different names never meet: '_' is escaped too.
	if Name("a.b", 127) == Name("a_2Eb", 127) {
		t.Error("Name is not injective on a.b and a_2Eb")
	}
	long := strings.Repeat("x.", 100)
	a, b := Name(long, maxTopicLen), Name(long+"y", maxTopicLen)
	if len(a) != maxTopicLen || len(b) != maxTopicLen || a == b {
		t.Errorf("long names: %q (%d), %q (%d): want %d bytes each and different", a, len(a), b, len(b), maxTopicLen)
	}
	for _, r := range a {
		if !strings.ContainsRune("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_%|-", r) {
			t.Fatalf("Name gave %q, with %q outside RocketMQ's alphabet", a, r)
		}
	}
	if g := groupName(strings.Repeat("g", 300), strings.Repeat("t.", 300)); len(g) > maxGroupLen || len(g+"|retry") > maxTopicLen {
		t.Errorf("groupName is %d bytes, over %d", len(g), maxGroupLen)
	}
}

func TestFixJSON(t *testing.T) {
	in := `{"brokerAddrTable":{"broker-a":{"brokerAddrs":{0:"127.0.0.1:10911",1:"127.0.0.1:10921"},"note":"{0:x}, 7:y"}},"n":[1,2],-1:"neg"}`
	var v struct {
		BrokerAddrTable map[string]struct {
			BrokerAddrs map[string]string `json:"brokerAddrs"`
			Note        string            `json:"note"`
		} `json:"brokerAddrTable"`
		N   []int  `json:"n"`
		Neg string `json:"-1"`
	}
	if err := json.Unmarshal(fixJSON([]byte(in)), &v); err != nil {
		t.Fatalf("fixJSON(%s) = %s: %v", in, fixJSON([]byte(in)), err)
	}
	ba := v.BrokerAddrTable["broker-a"]
	if ba.BrokerAddrs["0"] != "127.0.0.1:10911" || ba.BrokerAddrs["1"] != "127.0.0.1:10921" || ba.Note != "{0:x}, 7:y" ||
		!reflect.DeepEqual(v.N, []int{1, 2}) || v.Neg != "neg" {
		t.Errorf("decoded %+v", v)
	}
}

func TestAllocate(t *testing.T) {
	qs := make([]queueRef, 5)
	for i := range qs {
		qs[i] = queueRef{broker: "b", id: i}
	}
	members := []string{"a", "b", "c"}
	seen := map[int]string{}
	for _, m := range members {
		for _, q := range allocate(qs, members, m) {
			if prev, dup := seen[q.id]; dup {
				t.Fatalf("queue %d goes to %s and %s", q.id, prev, m)
			}
			seen[q.id] = m
		}
	}
	if len(seen) != len(qs) {
		t.Fatalf("allocated %d of %d queues: %v", len(seen), len(qs), seen)
	}
	if got := allocate(qs, members, "z"); got != nil {
		t.Errorf("a non-member got %v", got)
	}
	if got := allocate(qs[:2], members, "c"); len(got) != 0 {
		t.Errorf("third member of two queues got %v", got)
	}
}

func TestProperties(t *testing.T) {
	m := &bus.Message{ID: "id-1", Key: "k", Headers: bus.Headers{"a": "1", "ключ": "✓"}, Body: []byte("b"),
		PublishedAt: time.Unix(1, 123456789)}
	props, err := encodeProperties(m, PropAttempt, "3")
	if err != nil {
		t.Fatal(err)
	}
	w := &wireMessage{body: m.Body, props: decodeProperties(props)}
	got := w.toBus()
	if got.ID != m.ID || got.Key != m.Key || !got.PublishedAt.Equal(m.PublishedAt) || got.Attempt != 3 ||
		!reflect.DeepEqual(got.Headers, m.Headers) {
		t.Errorf("round trip gave %+v, want %+v with attempt 3", got, m)
	}
	for _, bad := range []bus.Headers{{"x\x01": "v"}, {"x": "v\x02"}, {"big": strings.Repeat("v", maxPropertiesLen)}} {
		if _, err := encodeProperties(&bus.Message{ID: "i", Headers: bad}); !errors.Is(err, bus.ErrInvalidMessage) {
			t.Errorf("headers %.40q: %v, want ErrInvalidMessage", bad, err)
		}
	}
}

func TestDecodeMalformed(t *testing.T) {
	for _, b := range [][]byte{{0, 0, 0}, {0, 0, 0, 9, 1, 2, 3}, {0, 0, 0, 8, 0, 0, 0, 0}} {
		if _, err := decodeMessages(b, 0); err == nil {
			t.Errorf("decodeMessages(%v) succeeded", b)
		}
	}
}

// A delivery that a pull loop has given to Receive counts as handed at
// once: a release of its queue that follows waits for its settlement
// instead of passing the queue on with the delivery's offset uncommitted
// (the next owner would read the message again).
func TestOfferedCountsAsHanded(t *testing.T) {
	s := &subscription{ready: make(chan *delivery), unsettled: map[*delivery]struct{}{}}
	qs := &queueState{pending: map[int64]struct{}{7: {}}, done: make(chan struct{})}
	handed := func() int {
		qs.mu.Lock()
		defer qs.mu.Unlock()
		return qs.handed
	}
	sent := make(chan bool)
	go func() { sent <- s.offer(t.Context(), &delivery{s: s, qs: qs, offset: 7, msg: &bus.Message{ID: "m"}}) }()
	d := <-s.ready // taken off the channel, not yet counted by Receive
	if n := handed(); n != 1 {
		t.Fatalf("a delivery taken off the channel counts %d handed, want 1", n)
	}
	if !<-sent {
		t.Fatal("offer reports the delivery not sent")
	}
	s.unsettled[d] = struct{}{}
	d.settle()
	d.settle() // a second settlement does not count it off twice
	if n := handed(); n != 0 {
		t.Fatalf("after settling, %d handed, want 0", n)
	}
	if off := qs.commitOffset(); off != 0 {
		t.Errorf("commit offset %d with nothing pending and next 0", off)
	}

	// An offer that ctx ends before Receive takes it does not count.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if s.offer(ctx, &delivery{s: s, qs: qs, offset: 8, msg: &bus.Message{ID: "n"}}) {
		t.Fatal("offer with an ended context reports it sent")
	}
	if n := handed(); n != 0 {
		t.Errorf("after an offer that was not taken, %d handed, want 0", n)
	}
}

// A peer that stops reading breaks the connection once a write has waited
// writeFor: the caller in the write and the one queued behind its lock
// both get an error instead of hanging.
func TestStalledWriteBreaksConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		nc, err := ln.Accept()
		if err == nil {
			accepted <- nc // held open, never read
		}
	}()
	c, err := transport{}.dial(t.Context(), ln.Addr().String(), time.Second, 200*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	defer func() {
		select {
		case nc := <-accepted:
			nc.Close()
		default:
		}
	}()
	big := make([]byte, 64<<20) // more than the socket buffers take in
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := c.call(context.Background(), codeHeartbeat, nil, big)
			errs <- err
		}()
	}
	for range 2 {
		select {
		case err := <-errs:
			if err == nil {
				t.Fatal("a call on a connection whose peer does not read succeeded")
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a call on a connection whose peer does not read did not return")
		}
	}
	if !c.broken() {
		t.Error("the connection is not marked broken after a stalled write")
	}
}

// Keys pick queues as the Java client's SelectMessageQueueByHash does;
// the hashes are Java's String.hashCode values.
func TestKeyQueueMatchesJava(t *testing.T) {
	for _, tc := range []struct {
		key  string
		hash int32
	}{
		{"", 0},
		{"abc", 96354},
		{"hello", 99162322},
		{"Hello", 69609650},
		{"polygenelubricants", -2147483648}, // overflows to Integer.MIN_VALUE
		{"😀", 1772899},                      // a surrogate pair: two code units
	} {
		if got := javaStringHash(tc.key); got != tc.hash {
			t.Errorf("javaStringHash(%q) = %d, want %d", tc.key, got, tc.hash)
		}
	}
	for _, tc := range []struct {
		key  string
		n    uint32
		want uint32
	}{
		{"hello", 8, 99162322 % 8},
		{"polygenelubricants", 3, 2}, // |MIN_VALUE % 3|
		{"polygenelubricants", 8, 0},
		{"Hello", 5, 69609650 % 5},
	} {
		if got := keyQueue(tc.key, tc.n); got != tc.want {
			t.Errorf("keyQueue(%q, %d) = %d, want %d", tc.key, tc.n, got, tc.want)
		}
	}
}

// A group's queues are pulled from its master, or from its lowest slave
// while the name servers list no master.
func TestGroupReader(t *testing.T) {
	for _, tc := range []struct {
		addrs map[string]string
		want  string
	}{
		{map[string]string{"0": "m:1", "1": "s:1"}, "m:1"},
		{map[string]string{"2": "s:2", "1": "s:1"}, "s:1"},
		{map[string]string{"x": "bad:1", "3": ""}, ""},
	} {
		g := BrokerGroup{Addrs: brokerIDs(tc.addrs)}
		if got := g.reader(); got != tc.want {
			t.Errorf("reader of %v = %q, want %q", tc.addrs, got, tc.want)
		}
	}
}

// A broker that takes the connection and never answers counts as
// unreachable once SendTimeout passes, while the caller's context still
// runs: the send moves on, and the broker's queues are left out of the
// next route.
func TestSilentBrokerIsUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	held := make(chan net.Conn, 16)
	defer func() {
		ln.Close()
		for len(held) > 0 {
			(<-held).Close()
		}
	}()
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			held <- nc // read nothing, answer nothing
		}
	}()
	opts := Options{SendTimeout: 300 * time.Millisecond}.withDefaults()
	b := &client{opts: opts, brokers: newPool(opts, nil), faulty: map[string]time.Time{}}
	defer b.brokers.close()
	silent := queueRef{broker: "broker-a", addr: ln.Addr().String(), id: 0}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	err = b.sendAttempt(ctx, "t", silent, []outgoing{{body: []byte("x")}})
	if !errors.Is(err, errNoAnswer) || !unreachable(err) {
		t.Fatalf("sendAttempt to a silent broker = %v, want errNoAnswer, counted unreachable", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("sendAttempt took %v, want about SendTimeout", d)
	}
	b.noteSend(ctx, silent.addr, err)
	other := queueRef{broker: "broker-b", addr: "127.0.0.1:1", id: 0}
	rt := &route{write: []queueRef{silent, other}}
	if got := b.reachable(rt).write; len(got) != 1 || got[0] != other {
		t.Fatalf("reachable route = %v, want only %v", got, other)
	}
	// The caller's own deadline is not the broker's fault.
	short, cancelShort := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelShort()
	if err := b.sendAttempt(short, "t", silent, []outgoing{{body: []byte("x")}}); errors.Is(err, errNoAnswer) {
		t.Fatalf("sendAttempt past the caller's deadline = %v, want the context's error", err)
	}
	// A master that stored a send but could not confirm it durable is
	// passed over too.
	notDurable := queueRef{broker: "broker-c", addr: "127.0.0.1:2", id: 0}
	b.noteSend(ctx, notDurable.addr, fmt.Errorf("code 12: %w", errNotDurable))
	if got := b.reachable(&route{write: []queueRef{notDurable, other}}).write; len(got) != 1 || got[0] != other {
		t.Fatalf("reachable route = %v, want only %v", got, other)
	}
	// Every queue's broker unreachable: the route stays whole.
	if got := b.reachable(&route{write: []queueRef{silent}}).write; len(got) != 1 {
		t.Fatalf("reachable of a route of silent brokers only = %v, want it unchanged", got)
	}
}
