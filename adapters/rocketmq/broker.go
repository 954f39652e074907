package rocketmq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
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
	faulty map[string]time.Time // brokers keyless sends avoid, until when
	subs   map[*subscription]struct{}
	rr     atomic.Uint32
	nsub   atomic.Int64 // numbers the subscriptions, whose member IDs must differ
	closed atomic.Bool
}

// route is what the name server says of a topic.
type route struct {
	write []queueRef // queues messages are sent to, sorted
	read  []queueRef // queues consumers pull, sorted
	at    time.Time  // when the name servers said it
}

// routeFor is how long a cached route serves sends before the name
// servers are asked again (so that a broker group that comes back gets
// its share again); a route that fails is refreshed at once.
const routeFor = 30 * time.Second

type queueRef struct {
	broker string // broker name
	addr   string // the address sends (the master) or pulls (master or slave) go to
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
		faulty:   map[string]time.Time{},
		subs:     map[*subscription]struct{}{},
	}
	dctx, cancel := context.WithTimeout(ctx, opts.DialTimeout)
	defer cancel()
	masters, err := b.clusterMasters(dctx)
	if err != nil {
		b.Close(ctx)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: name servers %v: %w", bus.ErrUnreachable, opts.NameServers, ctx.Err())
		}
		return nil, fmt.Errorf("%w: name servers %v: %v", bus.ErrUnreachable, opts.NameServers, err)
	}
	if err := b.checkCredentials(dctx, masters); err != nil {
		b.Close(ctx)
		return nil, err
	}
	return &Broker{Broker: driver.New(b, driver.Options{Logger: opts.Logger, Name: "rocketmq"}), c: b}, nil
}

// checkCredentials asks a master broker for its runtime information, a
// signed request, so that credentials it refuses fail New (the name
// servers check none). Only a refusal of the credentials fails: a broker
// that cannot be reached now, or that refuses the user this request, is
// left to the calls that need it.
func (b *client) checkCredentials(ctx context.Context, masters []string) error {
	if b.opts.AccessKey == "" || len(masters) == 0 {
		return nil
	}
	c, err := b.brokers.get(ctx, masters[0])
	if err != nil {
		return nil
	}
	if _, err := c.callOK(ctx, codeGetBrokerRuntimeInfo, nil, nil); errors.Is(err, bus.ErrAuth) {
		return fmt.Errorf("rocketmq: broker %s: %w", masters[0], err)
	}
	return nil
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
	transport    transport // TLS and request signing
}

func newPool(opts Options, onRequest func(*command)) *pool {
	return &pool{conns: map[string]*conn{}, dialTimeout: opts.DialTimeout, writeTimeout: opts.RequestTimeout, onRequest: onRequest,
		transport: opts.transport()}
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
	nc, err := p.transport.dial(ctx, addr, p.dialTimeout, p.writeTimeout, p.onRequest)
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

// BrokerGroup is one broker group of a RocketMQ cluster, as the name
// servers list it: a master (broker id 0) and its slaves.
type BrokerGroup struct {
	Cluster string         // the cluster the group belongs to
	Name    string         // the broker name, shared by the group's nodes
	Addrs   map[int]string // address by broker id; 0 is the master
}

// Master returns the address of the group's master, "" while the name
// servers list none (it is down, or has not registered yet).
func (g BrokerGroup) Master() string { return g.Addrs[0] }

// reader returns the address consumers pull the group's queues from: the
// master, or while it is missing the slave with the lowest id.
func (g BrokerGroup) reader() string {
	if a := g.Addrs[0]; a != "" {
		return a
	}
	ids := make([]int, 0, len(g.Addrs))
	for id := range g.Addrs {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	if len(ids) == 0 {
		return ""
	}
	return g.Addrs[ids[0]]
}

// Cluster returns the broker groups the name servers list, sorted by
// name.
func (b *Broker) Cluster(ctx context.Context) ([]BrokerGroup, error) {
	ctx, cancel := b.c.requestCtx(ctx)
	defer cancel()
	return b.c.clusterGroups(ctx)
}

func (b *client) clusterGroups(ctx context.Context) ([]BrokerGroup, error) {
	resp, err := b.nsCall(ctx, codeGetClusterInfo, nil)
	if err != nil {
		return nil, err
	}
	if resp.Code != respSuccess {
		return nil, &ResponseError{Request: codeGetClusterInfo, Code: resp.Code, Remark: resp.Remark}
	}
	var info struct {
		BrokerAddrTable map[string]struct {
			Cluster     string            `json:"cluster"`
			BrokerAddrs map[string]string `json:"brokerAddrs"`
		} `json:"brokerAddrTable"`
	}
	if err := json.Unmarshal(fixJSON(resp.body), &info); err != nil {
		return nil, fmt.Errorf("rocketmq: cluster info: %w", err)
	}
	var out []BrokerGroup
	for name, bd := range info.BrokerAddrTable {
		out = append(out, BrokerGroup{Cluster: bd.Cluster, Name: name, Addrs: brokerIDs(bd.BrokerAddrs)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// brokerIDs reads a brokerAddrs table of the name servers (broker id, as
// a string, to address).
func brokerIDs(table map[string]string) map[int]string {
	out := map[int]string{}
	for id, a := range table {
		if n, err := strconv.Atoi(id); err == nil && a != "" {
			out[n] = a
		}
	}
	return out
}

// clusterMasters returns the addresses of every master broker.
func (b *client) clusterMasters(ctx context.Context) ([]string, error) {
	return b.clusterNodes(ctx, true)
}

// clusterNodes returns the addresses of every broker, or of the masters
// only, sorted.
func (b *client) clusterNodes(ctx context.Context, mastersOnly bool) ([]string, error) {
	groups, err := b.clusterGroups(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, g := range groups {
		for id, a := range g.Addrs {
			if id == 0 || !mastersOnly {
				out = append(out, a)
			}
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
	// Sends go to masters only; pulls go to the master, or to a slave
	// while the master is down, so that consumption goes on.
	masters, readers := map[string]string{}, map[string]string{}
	for _, bd := range data.BrokerDatas {
		g := BrokerGroup{Name: bd.BrokerName, Addrs: brokerIDs(bd.BrokerAddrs)}
		masters[g.Name], readers[g.Name] = g.Master(), g.reader()
	}
	rt := &route{at: time.Now()}
	for _, qd := range data.QueueDatas {
		if addr := masters[qd.BrokerName]; addr != "" && qd.Perm&2 != 0 {
			for i := range qd.WriteQueueNums {
				rt.write = append(rt.write, queueRef{qd.BrokerName, addr, i})
			}
		}
		if addr := readers[qd.BrokerName]; addr != "" && qd.Perm&4 != 0 {
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
		return nil, fmt.Errorf("%w: %s has no queues on a broker the name servers list", errNoTopic, topic)
	}
	return rt, nil
}

// route returns topic's route, from the cache or the name servers,
// creating the topic when it is missing and queues > 0 (and creation is
// allowed).
func (b *client) route(ctx context.Context, topic string, queues int, fresh bool) (*route, error) {
	b.mu.Lock()
	cached := b.routes[topic]
	b.mu.Unlock()
	if !fresh && cached != nil && time.Since(cached.at) < routeFor {
		return cached, nil
	}
	rt, err := b.fetchRoute(ctx, topic)
	if errors.Is(err, errNoTopic) && queues > 0 && !b.opts.NoTopicCreation {
		rt, err = b.createTopic(ctx, topic, queues)
	}
	if err != nil {
		if !fresh && cached != nil && !errors.Is(err, errNoTopic) && ctx.Err() == nil {
			// The name servers cannot be asked just now: the route
			// they gave last serves on.
			return cached, nil
		}
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
	groups, err := b.clusterGroups(ctx)
	if err != nil {
		return nil, err
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
	create := func(addr string) error {
		c, err := b.brokers.get(ctx, addr)
		if err == nil {
			_, err = c.callOK(ctx, codeCreateTopic, ext, nil)
		}
		if err != nil {
			return fmt.Errorf("rocketmq: creating topic %s on %s: %w", topic, addr, err)
		}
		return nil
	}
	masters := 0
	for _, g := range groups {
		if a := g.Master(); a != "" {
			if err := create(a); err != nil {
				return nil, err
			}
			masters++
		}
	}
	if masters == 0 {
		return nil, errors.New("rocketmq: the name servers know no master broker")
	}
	// The slaves too: a slave copies its master's topics only every few
	// seconds, and refuses pulls of a topic it does not know, so that a
	// master lost right after the creation would leave its messages
	// unreadable until it came back.
	for _, g := range groups {
		for id, a := range g.Addrs {
			if id != 0 && g.Master() != "" {
				if err := create(a); err != nil && ctx.Err() == nil {
					b.opts.Logger.Warn("rocketmq: creating a topic on a slave failed; it copies it from its master later", "err", err)
				}
			}
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
	key   string
	body  []byte // compressed when flag says so
	flag  int32  // system flag bits of the body's compression
	props string
}

// outgoing makes a message ready to send, its body compressed as the
// options ask.
func (b *client) outgoing(index int, key string, body []byte, props string) (outgoing, error) {
	body, flag, err := compressBody(body, b.opts.Compression, b.opts.CompressOver)
	if err != nil {
		return outgoing{}, err
	}
	return outgoing{index: index, key: key, body: body, flag: flag, props: props}, nil
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
		if out[i], err = b.outgoing(i, m.Key, m.Body, props); err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
	}
	return b.send(ctx, Name(topic, maxTopicLen), out)
}

// send delivers out to rtopic, over the route without the queues of the
// brokers that could not be reached or could not confirm a send durable
// in the last faultyFor (unless no queue would be left). Messages whose
// broker cannot be reached (or does not answer within SendTimeout) go
// once more, on a fresh route without those brokers: a keyless one to a
// queue of another broker group, a keyed one to the queue its key picks
// among the queues left (as the Java client's hash selection does, which
// moves keys when a group leaves the route). A send that a broker
// answered, even with an error, is not sent again here.
func (b *client) send(ctx context.Context, rtopic string, out []outgoing) error {
	ctx, cancel := b.requestCtx(ctx)
	defer cancel()
	rt, err := b.route(ctx, rtopic, b.opts.Queues, false)
	if err != nil {
		return b.publishErr(ctx, err)
	}
	moved, failed, firstErr := b.sendRoute(ctx, rtopic, b.reachable(rt), out, true)
	if len(moved) > 0 {
		var f []int
		rt, err = b.route(ctx, rtopic, 0, true)
		if err == nil {
			_, f, err = b.sendRoute(ctx, rtopic, b.reachable(rt), moved, false)
		} else {
			for _, o := range moved {
				f = append(f, o.index)
			}
		}
		failed = append(failed, f...)
		if firstErr == nil {
			firstErr = err
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

// sendRoute sends out along rt. With mayMove, the messages of a broker
// that cannot be reached are returned as moved instead of failed; once a
// send failed otherwise, the rest fail unsent.
func (b *client) sendRoute(ctx context.Context, rtopic string, rt *route, out []outgoing, mayMove bool) (moved []outgoing, failed []int, firstErr error) {
	if len(rt.write) == 0 {
		for _, o := range out {
			failed = append(failed, o.index)
		}
		return nil, failed, fmt.Errorf("rocketmq: topic %s has no writable queue", rtopic)
	}
	n := uint32(len(rt.write))
	keyless := b.pickKeyless(rt)
	byQueue := map[uint32][]outgoing{}
	var order []uint32
	for _, o := range out {
		q := keyless
		if o.key != "" {
			q = keyQueue(o.key, n)
		}
		if _, seen := byQueue[q]; !seen {
			order = append(order, q)
		}
		byQueue[q] = append(byQueue[q], o)
	}
	down := map[string]bool{} // brokers found unreachable in this call
	for _, q := range order {
		group := byQueue[q]
		ref := rt.write[q]
		for len(group) > 0 {
			if firstErr != nil {
				for _, o := range group {
					failed = append(failed, o.index)
				}
				break
			}
			if mayMove && down[ref.addr] {
				moved = append(moved, group...)
				break
			}
			batch := cutBatch(group)
			err := b.sendAttempt(ctx, rtopic, ref, batch)
			if err != nil && isStaleRoute(err) {
				// The topic moved or was recreated: once more with a
				// fresh route.
				if rt2, err2 := b.route(ctx, rtopic, 0, true); err2 == nil && len(rt2.write) > int(q) {
					ref = rt2.write[q]
					err = b.sendAttempt(ctx, rtopic, ref, batch)
				}
			}
			b.noteSend(ctx, ref.addr, err)
			switch {
			case err == nil:
				group = group[len(batch):]
			case mayMove && ctx.Err() == nil && unreachable(err):
				down[ref.addr] = true
			default:
				firstErr = err
			}
		}
	}
	return moved, failed, firstErr
}

var (
	// errNoAnswer: a broker did not answer a send within SendTimeout.
	errNoAnswer = errors.New("no answer")
	// errNotDurable: a master stored a send but could not have its slave
	// or its disk confirm it in time (a master cut off from its slave
	// answers so to every send).
	errNotDurable = errors.New("not confirmed durable")
)

// sendAttempt is sendBatch bounded by SendTimeout: a broker that does not
// answer in time is reported as unreachable (errNoAnswer) while ctx
// still runs.
func (b *client) sendAttempt(ctx context.Context, rtopic string, q queueRef, batch []outgoing) error {
	actx, cancel := context.WithTimeout(ctx, b.opts.SendTimeout)
	defer cancel()
	err := b.sendBatch(actx, rtopic, q, batch)
	if err != nil && ctx.Err() == nil && actx.Err() != nil {
		return fmt.Errorf("rocketmq: %s did not answer within %v: %w", q.addr, b.opts.SendTimeout, errNoAnswer)
	}
	return err
}

// reachable returns rt with the write queues of the brokers found
// unreachable lately left out, or rt itself when that would leave none.
func (b *client) reachable(rt *route) *route {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	var keep []queueRef
	for _, q := range rt.write {
		if until, bad := b.faulty[q.addr]; !bad || now.After(until) {
			keep = append(keep, q)
		}
	}
	if len(keep) == 0 || len(keep) == len(rt.write) {
		return rt
	}
	r := *rt
	r.write = keep
	return &r
}

// pickKeyless returns the queue for the keyless messages of one send:
// the next in turn. send hands sendRoute routes without the queues of the
// brokers that failed lately (reachable), unless no other is left.
func (b *client) pickKeyless(rt *route) uint32 {
	return b.rr.Add(1) % uint32(len(rt.write))
}

// faultyFor is how long sends avoid a broker that could not be reached
// or could not confirm a send durable.
const faultyFor = 10 * time.Second

// noteSend records whether a send to addr reached the broker, and
// whether the broker could confirm it durable.
func (b *client) noteSend(ctx context.Context, addr string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case err == nil:
		delete(b.faulty, addr)
	case ctx.Err() == nil && (unreachable(err) || errors.Is(err, errNotDurable)):
		b.faulty[addr] = time.Now().Add(faultyFor)
	}
}

// unreachable reports an error of the connection to a broker rather than
// an answer of the broker: the broker may be down or cut off.
func unreachable(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, errConnClosed) || errors.Is(err, errNoAnswer) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
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

// cutBatch returns the first messages of group that go in one request:
// the broker gives a batch's system flag to each of its messages, so the
// messages of one batch share their compression bits.
func cutBatch(group []outgoing) []outgoing {
	const maxBytes, maxCount = 1 << 20, 256
	size := 0
	for i, o := range group {
		size += len(o.body) + len(o.props) + 32
		if i > 0 && (size > maxBytes || i >= maxCount || o.flag != group[0].flag) {
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
		"f": strconv.Itoa(int(batch[0].flag)),
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
		return fmt.Errorf("rocketmq: %s stored the message but did not confirm it durable (code %d: %s): %w", q.addr, resp.Code, resp.Remark, errNotDurable)
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
