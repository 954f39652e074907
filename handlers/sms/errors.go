package sms

import (
	"errors"
	"fmt"
	"time"
)

// Errors of the package, matched with errors.Is.
var (
	// ErrInvalidPhone reports a phone number that is not in E.164 form.
	ErrInvalidPhone = errors.New("sms: invalid phone number")
	// ErrTooSoon reports a code requested while the phone's resend lock is
	// held. The concrete error is a *TooSoonError with the wait left.
	ErrTooSoon = errors.New("sms: code requested too soon")
	// ErrNoCode reports a verification for a phone that has no code: none
	// was requested, it expired, or it was already used.
	ErrNoCode = errors.New("sms: no code for this phone")
	// ErrWrongCode reports a guess that does not match the code. The
	// concrete error is a *WrongCodeError with the attempts left.
	ErrWrongCode = errors.New("sms: wrong code")
	// ErrTooManyAttempts reports a code invalidated because its attempts
	// ran out; a new code has to be requested.
	ErrTooManyAttempts = errors.New("sms: too many attempts")
)

// TooSoonError is the error of a code requested inside the resend lock
// window. It matches ErrTooSoon.
type TooSoonError struct {
	// RetryAfter is how long the lock is still held.
	RetryAfter time.Duration
}

func (e *TooSoonError) Error() string {
	return fmt.Sprintf("sms: code requested too soon: retry in %v", e.RetryAfter.Round(time.Millisecond))
}

// Is makes errors.Is(err, ErrTooSoon) true.
func (e *TooSoonError) Is(target error) bool { return target == ErrTooSoon }

// WrongCodeError is the error of a guess that does not match. It matches
// ErrWrongCode; the guess that uses up the last attempt (Remaining 0)
// matches ErrTooManyAttempts as well, since it invalidates the code.
type WrongCodeError struct {
	// Remaining is the number of attempts left for the code.
	Remaining int
}

func (e *WrongCodeError) Error() string {
	if e.Remaining == 0 {
		return "sms: wrong code; no attempts left, request a new code"
	}
	return fmt.Sprintf("sms: wrong code; %d attempt(s) left", e.Remaining)
}

// Is makes errors.Is(err, ErrWrongCode) true, and
// errors.Is(err, ErrTooManyAttempts) when no attempt is left.
func (e *WrongCodeError) Is(target error) bool {
	return target == ErrWrongCode || (e.Remaining == 0 && target == ErrTooManyAttempts)
}
