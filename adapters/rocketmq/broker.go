package rocketmq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf16"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/bus/driver"
)

func init() { bus.Register(Scheme, open) }

func open(ctx context.Context, u *url.URL) (bus.Broker, error) {
	opts, err := ParseURL(u)
	if err != nil {
		return nil, err
	}
	return New(ctx, opts)
}

// Broker is a connection to a RocketMQ cluster through its name servers;
// it publishes and subscribes. It is safe for concurrent use, and
// implements bus.Broker on the driver layer (see package bus/driver).
type Broker struct {
	*driver.Broker
	c *client
}

// client is the driver of a Broker.
type client struct {
	opts     Options
	clientID string
	group    string // producer group

	ns      *pool // name server connections
	brokers *pool // broker connections for publishing and admin

	mu     sync.Mutex
	routes map[string]*route
	subs   map[*subscription]struct{}
	rr     atomic.Uint32
	nsub   atomic.Int64 // numbers the subscriptions, whose member IDs must differ
	closed atomic.Bool
}

// route is what the name server says of a topic.
type route struct {
	write []queueRef // queues messages are sent to, sorted
	read  []queueRef // queues consumers pull, sorted
}

type queueRef struct {
	broker string // broker name
	addr   string // master's address
	id     int
}

func (q queueRef) String() string { return q.broker + "/" + strconv.Itoa(q.id) }

// New connects to the name servers and checks that one answers.
// Errors match bus.ErrBadConfig or bus.ErrUnreachable.
func New(ctx context.Context, opts Options) (*Broker, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	var r [6]byte
	rand.Read(r[:])
	host, _ := os.Hostname()
	id := hex.EncodeToString(r[:])
	b := &client{
		opts:     opts,
		clientID: fmt.Sprintf("%s@omnibus-%d-%s", host, os.Getpid(), id),
		group:    "omnibus-producer-" + id,
		ns:       newPool(opts, nil),
		brokers:  newPool(opts, nil),
		routes:   map[string]*route{},
		subs:     map[*subscription]struct{}{},
	}
	dctx, cancel := context.WithTimeout(ctx, opts.DialTimeout)
	defer cancel()
	if _, err := b.clusterMasters(dctx); err != nil {
		b.Close(ctx)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: name servers %v: %w", bus.ErrUnreachable, opts.NameServers, ctx.Err())
		}
		return nil, fmt.Errorf("%w: name servers %v: %v", bus.ErrUnreachable, opts.NameServers, err)
	}
	return &Broker{Broker: driver.New(b, driver.Options{Logger: opts.Logger, Name: "rocketmq"}), c: b}, nil
}

// Features reports what this backend guarantees.
func (b *client) Features() bus.Features {
	return bus.Features{
		OrderedPerKey:  true,
		Persistent:     true,
		NackDelay:      true,
		MaxMessageSize: b.opts.MaxMessageSize,
	}
}

func (b *client) requestCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, b.opts.RequestTimeout)
}

// nsCall sends a request to the first name server that answers.
func (b *client) nsCall(ctx context.Context, code int, ext map[string]string) (*command, error) {
	var errs []error
	for _, addr := range b.opts.NameServers {
		c, err := b.ns.get(ctx, addr)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		resp, err := c.call(ctx, code, ext, nil)
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			errs = append(errs, err)
			continue
		}
		return resp, nil
	}
	return nil, errors.Join(errs...)
}

// pool holds one connection per address, dialed when first needed and
// again when broken.
type pool struct {
	mu           sync.Mutex
	conns        map[string]*conn
	closed       bool
	dialTimeout  time.Duration
	writeTimeout time.Duration
	onRequest    func(*command)
}

func newPool(opts Options, onRequest func(*command)) *pool {
	return &pool{conns: map[string]*conn{}, dialTimeout: opts.DialTimeout, writeTimeout: opts.RequestTimeout, onRequest: onRequest}
}

func (p *pool) get(ctx context.Context, addr string) (*conn, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, bus.ErrClosed
	}
	c := p.conns[addr]
	p.mu.Unlock()
	if c != nil && !c.broken() {
		return c, nil
	}
	nc, err := dial(ctx, addr, p.dialTimeout, p.writeTimeout, p.onRequest)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		nc.Close()
		return nil, bus.ErrClosed
	}
	if old := p.conns[addr]; old != nil && old != c && !old.broken() {
		nc.Close()
		return old, nil
	}
	if c != nil {
		go c.Close()
	}
	p.conns[addr] = nc
	return nc, nil
}

// close closes every connection and waits for their readers to end.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = map[string]*conn{}
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// clusterMasters returns the addresses of every master broker.
func (b *client) clusterMasters(ctx context.Context) ([]string, error) {
	resp, err := b.nsCall(ctx, codeGetClusterInfo, nil)
	if err != nil {
		return nil, err
	}
	if resp.Code != respSuccess {
		return nil, &ResponseError{Request: codeGetClusterInfo, Code: resp.Code, Remark: resp.Remark}
	}
	var info struct {
		BrokerAddrTable map[string]struct {
			BrokerAddrs map[string]string `json:"brokerAddrs"`
		} `json:"brokerAddrTable"`
	}
	if err := json.Unmarshal(fixJSON(resp.body), &info); err != nil {
		return nil, fmt.Errorf("rocketmq: cluster info: %w", err)
	}
	var out []string
	for _, bd := range info.BrokerAddrTable {
		if a := bd.BrokerAddrs["0"]; a != "" {
			out = append(out, a)
		}
	}
	sort.Strings(out)
	return out, nil
}

// errNoTopic reports a topic the name servers do not know.
var errNoTopic = errors.New("rocketmq: topic does not exist")

// fetchRoute asks the name servers for a topic's route.
func (b *client) fetchRoute(ctx context.Context, topic string) (*route, error) {
	resp, err := b.nsCall(ctx, codeGetRouteInfo, map[string]string{"topic": topic})
	if err != nil {
		return nil, err
	}
	if resp.Code == respTopicNotExist {
		return nil, fmt.Errorf("%w: %s", errNoTopic, topic)
	}
	if resp.Code != respSuccess {
		return nil, &ResponseError{Request: codeGetRouteInfo, Code: resp.Code, Remark: resp.Remark}
	}
	var data struct {
		BrokerDatas []struct {
			BrokerName  string            `json:"brokerName"`
			BrokerAddrs map[string]string `json:"brokerAddrs"`
		} `json:"brokerDatas"`
		QueueDatas []struct {
			BrokerName     string `json:"brokerName"`
			ReadQueueNums  int    `json:"readQueueNums"`
			WriteQueueNums int    `json:"writeQueueNums"`
			Perm           int    `json:"perm"`
		} `json:"queueDatas"`
	}
	if err := json.Unmarshal(fixJSON(resp.body), &data); err != nil {
		return nil, fmt.Errorf("rocketmq: route of %s: %w", topic, err)
	}
	masters := map[string]string{}
	for _, bd := range data.BrokerDatas {
		if a := bd.BrokerAddrs["0"]; a != "" {
			masters[bd.BrokerName] = a
		}
	}
	rt := &route{}
	for _, qd := range data.QueueDatas {
		addr := masters[qd.BrokerName]
		if addr == "" {
			continue
		}
		if qd.Perm&2 != 0 {
			for i := range qd.WriteQueueNums {
				rt.write = append(rt.write, queueRef{qd.BrokerName, addr, i})
			}
		}
		if qd.Perm&4 != 0 {
			for i := range qd.ReadQueueNums {
				rt.read = append(rt.read, queueRef{qd.BrokerName, addr, i})
			}
		}
	}
	less := func(q []queueRef) func(i, j int) bool {
		return func(i, j int) bool {
			if q[i].broker != q[j].broker {
				return q[i].broker < q[j].broker
			}
			return q[i].id < q[j].id
		}
	}
	sort.Slice(rt.write, less(rt.write))
	sort.Slice(rt.read, less(rt.read))
	if len(rt.write) == 0 && len(rt.read) == 0 {
		return nil, fmt.Errorf("%w: %s has no queues on a reachable master", errNoTopic, topic)
	}
	return rt, nil
}

// route returns topic's route, from the cache or the name servers,
// creating the topic when it is missing and queues > 0 (and creation is
// allowed).
func (b *client) route(ctx context.Context, topic string, queues int, fresh bool) (*route, error) {
	if !fresh {
		b.mu.Lock()
		rt := b.routes[topic]
		b.mu.Unlock()
		if rt != nil {
			return rt, nil
		}
	}
	rt, err := b.fetchRoute(ctx, topic)
	if errors.Is(err, errNoTopic) && queues > 0 && !b.opts.NoTopicCreation {
		rt, err = b.createTopic(ctx, topic, queues)
	}
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.routes[topic] = rt
	b.mu.Unlock()
	return rt, nil
}

// createTopic creates topic on every master broker and waits until the
// name servers route it.
func (b *client) createTopic(ctx context.Context, topic string, queues int) (*route, error) {
	masters, err := b.clusterMasters(ctx)
	if err != nil {
		return nil, err
	}
	if len(masters) == 0 {
		return nil, errors.New("rocketmq: the name servers know no master broker")
	}
	ext := map[string]string{
		"topic":           topic,
		"defaultTopic":    "TBW102",
		"readQueueNums":   strconv.Itoa(queues),
		"writeQueueNums":  strconv.Itoa(queues),
		"perm":            "6",
		"topicFilterType": "SINGLE_TAG",
		"topicSysFlag":    "0",
		"order":           "false",
	}
	for _, addr := range masters {
		c, err := b.brokers.get(ctx, addr)
		if err != nil {
			return nil, err
		}
		if _, err := c.callOK(ctx, codeCreateTopic, ext, nil); err != nil {
			return nil, fmt.Errorf("rocketmq: creating topic %s on %s: %w", topic, addr, err)
		}
	}
	for {
		rt, err := b.fetchRoute(ctx, topic)
		if err == nil && len(rt.write) > 0 {
			return rt, nil
		}
		if err != nil && !errors.Is(err, errNoTopic) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("rocketmq: topic %s created, but the name servers do not route it yet: %w", topic, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// outgoing is one message ready to send.
type outgoing struct {
	index int // in the caller's batch
	body  []byte
	props string
}

// Send sends msgs to topic and returns when the broker has stored them
// (flushed them to disk, when it runs with SYNC_FLUSH). Messages with a
// key go to the queue the key's hash picks; the keyless messages of one
// call share one queue, taken in turn.
func (b *client) Send(ctx context.Context, topic string, msgs []*bus.Message) error {
	out := make([]outgoing, len(msgs))
	for i, m := range msgs {
		props, err := encodeProperties(m)
		if err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
		out[i] = outgoing{index: i, body: m.Body, props: props}
	}
	keys := make([]string, len(msgs))
	for i, m := range msgs {
		keys[i] = m.Key
	}
	return b.send(ctx, Name(topic, maxTopicLen), out, keys)
}

// send delivers out to rtopic; keys[i] picks the queue of out[i].
func (b *client) send(ctx context.Context, rtopic string, out []outgoing, keys []string) error {
	ctx, cancel := b.requestCtx(ctx)
	defer cancel()
	rt, err := b.route(ctx, rtopic, b.opts.Queues, false)
	if err != nil {
		return b.publishErr(ctx, err)
	}
	if len(rt.write) == 0 {
		return fmt.Errorf("rocketmq: topic %s has no writable queue", rtopic)
	}
	n := uint32(len(rt.write))
	keyless := b.rr.Add(1) % n
	byQueue := map[uint32][]outgoing{}
	var order []uint32
	for i, o := range out {
		q := keyless
		if keys != nil && keys[i] != "" {
			q = keyQueue(keys[i], n)
		}
		if _, seen := byQueue[q]; !seen {
			order = append(order, q)
		}
		byQueue[q] = append(byQueue[q], o)
	}
	var failed []int
	var firstErr error
	for _, q := range order {
		group := byQueue[q]
		for len(group) > 0 {
			batch := cutBatch(group)
			group = group[len(batch):]
			if firstErr == nil {
				err := b.sendBatch(ctx, rtopic, rt.write[q], batch)
				if err != nil && isStaleRoute(err) {
					// The topic moved or was recreated: once more with a
					// fresh route.
					if rt2, err2 := b.route(ctx, rtopic, 0, true); err2 == nil && len(rt2.write) > int(q) {
						err = b.sendBatch(ctx, rtopic, rt2.write[q], batch)
					}
				}
				if err == nil {
					continue
				}
				firstErr = err
			}
			for _, o := range batch {
				failed = append(failed, o.index)
			}
		}
	}
	if firstErr == nil {
		return nil
	}
	if len(failed) < len(out) {
		sort.Ints(failed)
		return &bus.PublishError{Unconfirmed: failed, Err: b.publishErr(ctx, firstErr)}
	}
	return b.publishErr(ctx, firstErr)
}

// keyQueue is the queue of n that key picks: |hashCode(key) % n| with
// Java's String.hashCode, as the Java client's SelectMessageQueueByHash
// computes it.
func keyQueue(key string, n uint32) uint32 {
	q := javaStringHash(key) % int32(n)
	if q < 0 {
		q = -q
	}
	return uint32(q)
}

// javaStringHash is Java's String.hashCode of s: the sum of its UTF-16
// code units times powers of 31, in 32-bit arithmetic.
func javaStringHash(s string) int32 {
	var h int32
	for _, u := range utf16.Encode([]rune(s)) {
		h = 31*h + int32(u)
	}
	return h
}

func isStaleRoute(err error) bool {
	var re *ResponseError
	return errors.As(err, &re) && re.Code == respTopicNotExist
}

func (b *client) publishErr(ctx context.Context, err error) error {
	if b.closed.Load() {
		return bus.ErrClosed
	}
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		return fmt.Errorf("rocketmq: publish: %w (%v)", ctx.Err(), err)
	}
	return fmt.Errorf("rocketmq: publish: %w", err)
}

// cutBatch returns the first messages of group that go in one request.
func cutBatch(group []outgoing) []outgoing {
	const maxBytes, maxCount = 1 << 20, 256
	size := 0
	for i, o := range group {
		size += len(o.body) + len(o.props) + 32
		if i > 0 && (size > maxBytes || i >= maxCount) {
			return group[:i]
		}
	}
	return group
}

// sendBatch sends messages to one queue in one request.
func (b *client) sendBatch(ctx context.Context, rtopic string, q queueRef, batch []outgoing) error {
	c, err := b.brokers.get(ctx, q.addr)
	if err != nil {
		return err
	}
	ext := map[string]string{
		"a": b.group,
		"b": rtopic,
		"c": "TBW102",
		"d": "4",
		"e": strconv.Itoa(q.id),
		"f": "0",
		"g": itoa(time.Now().UnixMilli()),
		"h": "0",
		"j": "0",
		"k": "false",
		"l": "16",
		"n": q.broker,
	}
	code := codeSendMessage
	var body []byte
	if len(batch) == 1 {
		ext["i"] = batch[0].props
		ext["m"] = "false"
		body = batch[0].body
	} else {
		code = codeSendBatchMessage
		ext["i"] = ""
		ext["m"] = "true"
		for _, o := range batch {
			body = append(body, encodeBatchEntry(o.body, o.props)...)
		}
	}
	resp, err := c.call(ctx, code, ext, body)
	if err != nil {
		return err
	}
	switch resp.Code {
	case respSuccess:
		return nil
	case respFlushDiskTimeout, respFlushSlaveTimeout, respSlaveNotAvailable:
		return fmt.Errorf("rocketmq: %s stored the message but did not confirm it durable (code %d: %s)", q.addr, resp.Code, resp.Remark)
	case respMessageIllegal:
		return fmt.Errorf("%w: the broker refused it: %s", bus.ErrInvalidMessage, resp.Remark)
	}
	return &ResponseError{Request: code, Code: resp.Code, Remark: resp.Remark}
}

// Subscribe opens a subscription to topic for opts.Group. See the package
// documentation for how groups, retries and dead letters map to RocketMQ.
func (b *client) Subscribe(ctx context.Context, topic string, opts bus.SubscribeOptions) (driver.Subscription, error) {
	return b.subscribe(ctx, topic, opts)
}

// Close closes the connections; the portable side has closed the
// subscriptions.
func (b *client) Close(context.Context) error {
	b.closed.Store(true)
	b.ns.close()
	b.brokers.close()
	return nil
}

var (
	_ bus.Broker          = (*Broker)(nil)
	_ bus.FeatureReporter = (*Broker)(nil)
	_ driver.Driver       = (*client)(nil)
)
