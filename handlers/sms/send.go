package sms

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/task"
)

// Message is the argument of SendTask: one SMS.
type Message struct {
	Phone string `json:"phone"`
	Text  string `json:"text"`
}

// SendTask sends one SMS through the worker's Provider. It goes to the
// "sms" queue; a failed send is retried 5 times, after about 1, 2, 4, 8
// and 16 seconds, then dead-lettered to "sms.dlq".
var SendTask = task.Define[Message]("sms.send",
	task.OnQueue("sms"),
	task.MaxRetries(5),
	task.RetryBackoff(bus.ExponentialBackoff(time.Second, 30*time.Second)),
)

// Provider delivers SMS. Send returns nil once the provider accepted the
// message; an error retries the task, unless it wraps bus.NoRetry (the
// message can never be sent, say a number the gateway refuses), which
// dead-letters it at once. Implementations are safe for concurrent use.
type Provider interface {
	Send(ctx context.Context, phone, text string) error
}

// ProviderFunc adapts a function to the Provider interface.
type ProviderFunc func(ctx context.Context, phone, text string) error

// Send calls f.
func (f ProviderFunc) Send(ctx context.Context, phone, text string) error { return f(ctx, phone, text) }

// Handler returns SendTask's handler, sending through p.
func Handler(p Provider) func(context.Context, Message) error {
	return func(ctx context.Context, m Message) error {
		if err := ValidatePhone(m.Phone); err != nil {
			return bus.NoRetry(err)
		}
		return p.Send(ctx, m.Phone, m.Text)
	}
}

// Register makes w run SendTask through p. w consumes SendTask's queue
// unless its WorkerConfig.Queues says otherwise (see Config.Queue). It
// fails as task.Handle does.
func Register(w *task.Worker, p Provider) error { return task.Handle(w, SendTask, Handler(p)) }

// Console is the Provider for development: it writes each SMS, code
// included, as a line to a writer instead of sending it.
type Console struct {
	mu sync.Mutex
	w  io.Writer
}

var _ Provider = (*Console)(nil)

// NewConsole returns a console provider that writes to w (os.Stdout when
// nil).
func NewConsole(w io.Writer) *Console {
	if w == nil {
		w = os.Stdout
	}
	return &Console{w: w}
}

// Send writes "SMS to <phone>: <text>".
func (c *Console) Send(_ context.Context, phone, text string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := fmt.Fprintf(c.w, "SMS to %s: %s\n", phone, text)
	return err
}

// DefaultGatewayTimeout bounds each gateway request when
// HTTPConfig.Timeout is zero.
const DefaultGatewayTimeout = 10 * time.Second

// HTTPConfig configures an HTTP provider. URL is required.
type HTTPConfig struct {
	// URL of the gateway endpoint that takes the POSTs (http or https).
	URL string
	// Timeout bounds each request. Default DefaultGatewayTimeout (10 s).
	Timeout time.Duration
	// Header is added to every request, e.g. Authorization.
	Header http.Header
	// Client sends the requests. Default a client on
	// http.DefaultTransport.
	Client *http.Client
}

// HTTP is a Provider that POSTs each SMS to a gateway as JSON,
// {"phone": "+15555550100", "text": "Your code is 123456"}.
//
// A 2xx answer is success. 5xx, 408 and 429 answers and network errors
// and timeouts are retried (the error is a *GatewayError or the transport's
// error); other answers, such as 400 for a number the gateway refuses,
// dead-letter the task at once (bus.NoRetry). Errors never carry the text.
type HTTP struct {
	url     string
	host    string // names the gateway in errors, which the URL's query (a token?) must stay out of
	timeout time.Duration
	header  http.Header
	client  *http.Client
}

var _ Provider = (*HTTP)(nil)

// NewHTTP returns an HTTP provider, or the configuration's problems as a
// *bus.ConfigError.
func NewHTTP(cfg HTTPConfig) (*HTTP, error) {
	var p []error
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		p = append(p, errors.New("sms: HTTPConfig.URL: want an http:// or https:// gateway address"))
	}
	if cfg.Timeout < 0 {
		p = append(p, fmt.Errorf("sms: HTTPConfig.Timeout %v is negative", cfg.Timeout))
	}
	if len(p) > 0 {
		return nil, &bus.ConfigError{Problems: p}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultGatewayTimeout
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	return &HTTP{url: cfg.URL, host: u.Host, timeout: cfg.Timeout, header: cfg.Header.Clone(), client: cfg.Client}, nil
}

// GatewayError is a gateway's answer other than 2xx.
type GatewayError struct {
	StatusCode int
}

func (e *GatewayError) Error() string {
	return fmt.Sprintf("sms: gateway answered %d %s", e.StatusCode, http.StatusText(e.StatusCode))
}

// Temporary reports whether the request may succeed when repeated.
func (e *GatewayError) Temporary() bool {
	return e.StatusCode >= 500 || e.StatusCode == http.StatusRequestTimeout || e.StatusCode == http.StatusTooManyRequests
}

// Send implements Provider.
func (h *HTTP) Send(ctx context.Context, phone, text string) error {
	body, err := json.Marshal(Message{Phone: phone, Text: text})
	if err != nil {
		return bus.NoRetry(err)
	}
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return bus.NoRetry(fmt.Errorf("sms: gateway request to %s: %w", h.host, err))
	}
	for k, v := range h.header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("sms: POST to gateway %s: %w", h.host, err)
	}
	// Drained so that the connection can be reused.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	gerr := &GatewayError{StatusCode: resp.StatusCode}
	if gerr.Temporary() {
		return gerr
	}
	return bus.NoRetry(gerr)
}
