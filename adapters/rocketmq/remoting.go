package rocketmq

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
)

// RocketMQ remoting request codes used here.
const (
	codeSendMessage          = 310 // SEND_MESSAGE_V2
	codeSendBatchMessage     = 320
	codePullMessage          = 11
	codeQueryConsumerOffset  = 14
	codeUpdateConsumerOffset = 15
	codeCreateTopic          = 17 // UPDATE_AND_CREATE_TOPIC
	codeHeartbeat            = 34
	codeUnregisterClient     = 35
	codeGetConsumerList      = 38
	codeNotifyConsumerIDs    = 40
	codeLockBatchMQ          = 41
	codeUnlockBatchMQ        = 42
	codeGetRouteInfo         = 105
	codeGetClusterInfo       = 106
)

// RocketMQ response codes used here.
const (
	respSuccess             = 0
	respNotSupported        = 3
	respFlushDiskTimeout    = 10
	respFlushSlaveTimeout   = 11
	respSlaveNotAvailable   = 12
	respMessageIllegal      = 13
	respTopicNotExist       = 17
	respPullNotFound        = 19
	respPullRetryImmediate  = 20
	respPullOffsetMoved     = 21
	respQueryNotFound       = 22
	respSubscriptionMissing = 26 // SUBSCRIPTION_GROUP_NOT_EXIST
)

const (
	flagResponse = 1
	flagOneway   = 2
	// maxFrame bounds a frame read from the server (a pull response holds
	// at most a batch of messages of at most the broker's size limit each).
	maxFrame = 256 << 20
)

// command is one remoting frame: a JSON header and an optional body.
type command struct {
	Code      int               `json:"code"`
	Language  string            `json:"language"`
	Version   int               `json:"version"`
	Opaque    int32             `json:"opaque"`
	Flag      int               `json:"flag"`
	Remark    string            `json:"remark,omitempty"`
	ExtFields map[string]string `json:"extFields,omitempty"`
	body      []byte
}

// ResponseError is a response whose code is not success. A broker's
// refusal of the credentials (Options.AccessKey, Options.SecretKey)
// matches bus.ErrAuth with errors.Is, and its refusal of an operation
// the user has no permission for matches bus.ErrForbidden.
type ResponseError struct {
	Request int    // request code
	Code    int    // response code
	Remark  string // the server's explanation
}

func (e *ResponseError) Error() string {
	msg := fmt.Sprintf("rocketmq: request %d answered with code %d: %s", e.Request, e.Code, e.Remark)
	switch refusal(e.Code, e.Remark) {
	case bus.ErrAuth:
		msg += " (the broker refused the access key or its signature: check Options.AccessKey and SecretKey)"
	case bus.ErrForbidden:
		msg += " (the broker's ACL does not allow this user the operation)"
	}
	return msg
}

// Is makes errors.Is(err, bus.ErrAuth) and errors.Is(err, bus.ErrForbidden)
// true for the refusals they name.
func (e *ResponseError) Is(target error) bool {
	return (target == bus.ErrAuth || target == bus.ErrForbidden) && refusal(e.Code, e.Remark) == target
}

// errConnClosed reports a connection that is closed or broke.
var errConnClosed = errors.New("rocketmq: connection closed")

// conn is one TCP connection to a name server or broker, with requests
// matched to responses by their opaque number. Requests from the server
// (a broker notifying consumers, asking for their status) go to onRequest;
// two-way ones are answered "not supported" unless onRequest answers.
// Requests to the server are signed with cred; answers to the server's
// requests are not (the Java client signs its requests only).
type conn struct {
	addr      string
	nc        net.Conn // raw, or a TLS client of raw
	raw       net.Conn // the TCP connection
	cred      credentials
	wmu       sync.Mutex
	writeFor  time.Duration // a write not done in this long breaks the connection
	next      atomic.Int32
	mu        sync.Mutex
	pending   map[int32]chan *command
	err       error
	done      chan struct{}
	readDone  chan struct{}
	onRequest func(*command)
}

// transport is how connections reach the servers: over TLS when tls is
// set (a name server's or broker's certificate is verified for the host
// of the address dialled unless tls.ServerName names another), with
// requests signed by cred.
type transport struct {
	tls  *tls.Config
	cred credentials
}

// transport returns the transport the options describe.
func (o Options) transport() transport {
	return transport{tls: o.TLS, cred: credentials{accessKey: o.AccessKey, secretKey: o.SecretKey, securityToken: o.SecurityToken}}
}

// dial connects to addr, and completes the TLS handshake, within timeout
// and ctx. A write to the connection that has not finished after writeFor
// (a peer that stopped reading, a cut link) breaks the connection, so that
// it fails every request waiting on it rather than holding them behind its
// write lock.
func (t transport) dial(ctx context.Context, addr string, timeout, writeFor time.Duration, onRequest func(*command)) (*conn, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	nc := raw
	if t.tls != nil {
		cfg := t.tls
		if cfg.ServerName == "" {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				host = addr
			}
			cfg = cfg.Clone()
			cfg.ServerName = host
		}
		tc := tls.Client(raw, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("rocketmq: TLS handshake with %s: %w", addr, err)
		}
		nc = tc
	}
	c := &conn{
		addr:      addr,
		nc:        nc,
		raw:       raw,
		cred:      t.cred,
		writeFor:  writeFor,
		pending:   map[int32]chan *command{},
		done:      make(chan struct{}),
		readDone:  make(chan struct{}),
		onRequest: onRequest,
	}
	go c.readLoop()
	return c, nil
}

func (c *conn) readLoop() {
	defer close(c.readDone)
	r := bufio.NewReaderSize(c.nc, 64<<10)
	for {
		cmd, err := readCommand(r)
		if err != nil {
			c.fail(err)
			return
		}
		if cmd.Flag&flagResponse == 0 {
			if c.onRequest != nil {
				c.onRequest(cmd)
			}
			if cmd.Flag&flagOneway == 0 {
				resp := &command{Code: respNotSupported, Language: "GO", Version: 500, Opaque: cmd.Opaque, Flag: flagResponse,
					Remark: "not supported by the omnibus client"}
				// A failed write breaks the connection, which fail reports.
				go c.write(resp)
			}
			continue
		}
		c.mu.Lock()
		ch := c.pending[cmd.Opaque]
		delete(c.pending, cmd.Opaque)
		c.mu.Unlock()
		if ch != nil {
			ch <- cmd
		}
	}
}

// fail closes the connection and wakes every waiting request.
func (c *conn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
		close(c.done)
	}
	c.mu.Unlock()
	// Closing the TCP connection, not the TLS client, ends a write in
	// progress at once (a TLS close waits for it, to send close_notify).
	c.raw.Close()
}

// Close closes the connection and waits for its reader to end.
func (c *conn) Close() error {
	c.fail(errConnClosed)
	<-c.readDone
	return nil
}

func (c *conn) broken() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func readCommand(r io.Reader) (*command, error) {
	var lens [8]byte
	if _, err := io.ReadFull(r, lens[:4]); err != nil {
		return nil, err
	}
	total := binary.BigEndian.Uint32(lens[:4])
	if total < 4 || total > maxFrame {
		return nil, fmt.Errorf("rocketmq: frame of %d bytes", total)
	}
	buf := make([]byte, total)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	hword := binary.BigEndian.Uint32(buf[:4])
	if hword>>24 != 0 {
		return nil, fmt.Errorf("rocketmq: header serialization %d is not JSON", hword>>24)
	}
	hlen := hword & 0xffffff
	if uint64(hlen)+4 > uint64(total) {
		return nil, fmt.Errorf("rocketmq: header of %d bytes in a %d-byte frame", hlen, total)
	}
	cmd := &command{}
	if err := json.Unmarshal(buf[4:4+hlen], cmd); err != nil {
		return nil, fmt.Errorf("rocketmq: header: %w", err)
	}
	cmd.body = buf[4+hlen:]
	return cmd, nil
}

func (c *conn) write(cmd *command) error {
	h, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	frame := make([]byte, 8, 8+len(h)+len(cmd.body))
	binary.BigEndian.PutUint32(frame[0:4], uint32(4+len(h)+len(cmd.body)))
	binary.BigEndian.PutUint32(frame[4:8], uint32(len(h)))
	frame = append(frame, h...)
	frame = append(frame, cmd.body...)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.writeFor > 0 {
		c.nc.SetWriteDeadline(time.Now().Add(c.writeFor))
	}
	if _, err := c.nc.Write(frame); err != nil {
		c.fail(err)
		return err
	}
	return nil
}

// call sends a request and waits for its response, ctx's end or the
// connection's failure. A response with a code other than success is
// returned as it is: callers interpret the codes.
func (c *conn) call(ctx context.Context, code int, ext map[string]string, body []byte) (*command, error) {
	req := &command{Code: code, Language: "GO", Version: 500, Opaque: c.next.Add(1), ExtFields: c.cred.sign(ext, body), body: body}
	ch := make(chan *command, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", c.addr, err)
	}
	c.pending[req.Opaque] = ch
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		delete(c.pending, req.Opaque)
		c.mu.Unlock()
	}
	if err := c.write(req); err != nil {
		forget()
		return nil, fmt.Errorf("%s: %w", c.addr, err)
	}
	select {
	case resp := <-ch:
		return resp, nil
	case <-ctx.Done():
		forget()
		return nil, ctx.Err()
	case <-c.done:
		select {
		case resp := <-ch: // answered before the connection broke
			return resp, nil
		default:
		}
		forget()
		c.mu.Lock()
		err := c.err
		c.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", c.addr, err)
	}
}

// callOK is call that turns a response code other than success into a
// *ResponseError.
func (c *conn) callOK(ctx context.Context, code int, ext map[string]string, body []byte) (*command, error) {
	resp, err := c.call(ctx, code, ext, body)
	if err != nil {
		return nil, err
	}
	if resp.Code != respSuccess {
		return resp, &ResponseError{Request: code, Code: resp.Code, Remark: resp.Remark}
	}
	return resp, nil
}

// fixJSON quotes the integer map keys of RocketMQ's JSON ({0:"addr"}),
// which encoding/json refuses, outside strings.
func fixJSON(b []byte) []byte {
	out := make([]byte, 0, len(b)+16)
	inStr, esc := false, false
	for i := 0; i < len(b); i++ {
		ch := b[i]
		if inStr {
			out = append(out, ch)
			switch {
			case esc:
				esc = false
			case ch == '\\':
				esc = true
			case ch == '"':
				inStr = false
			}
			continue
		}
		if ch == '"' {
			inStr = true
			out = append(out, ch)
			continue
		}
		if (ch == '{' || ch == ',') && i+1 < len(b) {
			j := i + 1
			if j < len(b) && b[j] == '-' {
				j++
			}
			k := j
			for k < len(b) && b[k] >= '0' && b[k] <= '9' {
				k++
			}
			if k > j && k < len(b) && b[k] == ':' {
				out = append(out, ch, '"')
				out = append(out, b[i+1:k]...)
				out = append(out, '"')
				i = k - 1
				continue
			}
		}
		out = append(out, ch)
	}
	return out
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
