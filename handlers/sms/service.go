package sms

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/task"
)

// Defaults of Config.
const (
	DefaultCodeTTL     = 5 * time.Minute
	DefaultResendAfter = 60 * time.Second
	DefaultMaxAttempts = 5
)

// Config configures a Service. Store and Publisher are required.
type Config struct {
	// Store keeps the codes and resend locks: a RedisStore shared by every
	// instance of the service, or a MemoryStore for a single process.
	Store CodeStore
	// Publisher enqueues the send tasks.
	Publisher bus.Publisher
	// CodeTTL is how long a code stays valid. Default DefaultCodeTTL
	// (5 min). The send task expires with the code.
	CodeTTL time.Duration
	// ResendAfter is how long a phone's resend lock is held after a code
	// is sent. Default DefaultResendAfter (60 s).
	ResendAfter time.Duration
	// MaxAttempts is how many verifications a code allows. Default
	// DefaultMaxAttempts (5).
	MaxAttempts int
	// Queue is the queue the send tasks go to. Default SendTask.Queue()
	// ("sms"); a worker consuming another queue lists it in
	// task.WorkerConfig.Queues.
	Queue string
	// Text renders the SMS that carries code. Default "Your code is <code>".
	Text func(code string) string
	// Rand is the source of the codes' randomness; it must be safe for
	// concurrent use. Default crypto/rand.Reader.
	Rand io.Reader
}

// Validate reports every problem of the configuration at once, as a
// *bus.ConfigError (errors.Is(err, bus.ErrBadConfig)).
func (c Config) Validate() error {
	var p []error
	if c.Store == nil {
		p = append(p, errors.New("sms: Config.Store is nil"))
	}
	if c.Publisher == nil {
		p = append(p, errors.New("sms: Config.Publisher is nil"))
	}
	if c.CodeTTL != 0 && c.CodeTTL < time.Millisecond {
		p = append(p, fmt.Errorf("sms: Config.CodeTTL %v: want at least 1ms", c.CodeTTL))
	}
	if c.ResendAfter != 0 && c.ResendAfter < time.Millisecond {
		p = append(p, fmt.Errorf("sms: Config.ResendAfter %v: want at least 1ms", c.ResendAfter))
	}
	if c.MaxAttempts < 0 {
		p = append(p, fmt.Errorf("sms: Config.MaxAttempts %d is negative", c.MaxAttempts))
	}
	if len(p) > 0 {
		return &bus.ConfigError{Problems: p}
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.CodeTTL == 0 {
		c.CodeTTL = DefaultCodeTTL
	}
	if c.ResendAfter == 0 {
		c.ResendAfter = DefaultResendAfter
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.Queue == "" {
		c.Queue = SendTask.Queue()
	}
	if c.Text == nil {
		c.Text = func(code string) string { return "Your code is " + code }
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	return c
}

// Service requests and verifies SMS codes. It is safe for concurrent use.
type Service struct {
	cfg Config
}

// New returns a Service, or the configuration's problems.
func New(cfg Config) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Service{cfg: cfg.withDefaults()}, nil
}

// Request sends a new code to phone: it draws a 6-digit code, saves it
// with the phone's resend lock (see CodeStore), and enqueues SendTask,
// returning the task's id. A phone whose lock is held gets a
// *TooSoonError (ErrTooSoon); an invalid number ErrInvalidPhone.
//
// When the task cannot be enqueued, the code and the lock are released
// before the error is returned, so the user can ask again at once. A
// broker that stored the task but failed to confirm it may still deliver
// it; that code then no longer verifies.
func (s *Service) Request(ctx context.Context, phone string) (taskID string, err error) {
	if err := ValidatePhone(phone); err != nil {
		return "", err
	}
	code, err := newCode(s.cfg.Rand)
	if err != nil {
		return "", err
	}
	if err := s.cfg.Store.Save(ctx, phone, code, s.cfg.CodeTTL, s.cfg.ResendAfter); err != nil {
		return "", err
	}
	id, err := SendTask.Apply(ctx, s.cfg.Publisher, Message{Phone: phone, Text: s.cfg.Text(code)},
		task.OnQueue(s.cfg.Queue),
		// An SMS that arrives after its code expired is of no use.
		task.ExpiresIn(s.cfg.CodeTTL))
	if err != nil {
		// The request's context may be what failed the enqueue.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if rerr := s.cfg.Store.Release(rctx, phone, code); rerr != nil {
			return "", errors.Join(err, rerr)
		}
		return "", err
	}
	return id, nil
}

// Verify checks guess against phone's code. nil means it matched and the
// code is used up. Otherwise the error matches ErrInvalidPhone, ErrNoCode,
// ErrWrongCode (a *WrongCodeError with the attempts left) or
// ErrTooManyAttempts, or is the store's failure.
func (s *Service) Verify(ctx context.Context, phone, guess string) error {
	if err := ValidatePhone(phone); err != nil {
		return err
	}
	return s.cfg.Store.Verify(ctx, phone, guess, s.cfg.MaxAttempts)
}

// codeSpace is the number of 6-digit codes; drawLimit the largest multiple
// of it that fits in 32 bits. Draws at or above the limit are rejected so
// that every code is equally likely (a plain modulo would favour the low
// codes).
const (
	codeSpace = 1_000_000
	drawLimit = (1 << 32) / codeSpace * codeSpace
)

// newCode returns a uniformly drawn 6-digit code, leading zeros included.
func newCode(r io.Reader) (string, error) {
	var b [4]byte
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return "", fmt.Errorf("sms: draw a code: %w", err)
		}
		if n := binary.BigEndian.Uint32(b[:]); n < drawLimit {
			return fmt.Sprintf("%06d", n%codeSpace), nil
		}
	}
}
