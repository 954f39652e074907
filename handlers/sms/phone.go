package sms

import "fmt"

// E.164 allows at most 15 digits after the '+'. The lower bound keeps out
// strings too short to be a country code and a subscriber number; the
// shortest numbers in service (a 3-digit country code and 4 digits, as in
// Niue or Saint Helena) have 7.
const (
	minPhoneDigits = 7
	maxPhoneDigits = 15
)

// ValidatePhone reports whether phone is an E.164 number: '+', then a
// country code starting with 1-9, then the subscriber number, 7 to 15
// digits in all, with no spaces or punctuation. Errors match
// ErrInvalidPhone.
//
// The phone becomes part of the store's keys, so nothing else is accepted:
// callers that take numbers as people type them normalise them first.
func ValidatePhone(phone string) error {
	if phone == "" {
		return fmt.Errorf("%w: empty", ErrInvalidPhone)
	}
	if len(phone) > 1+maxPhoneDigits+1 {
		// Long input is reported without echoing it.
		return fmt.Errorf("%w: more than %d digits", ErrInvalidPhone, maxPhoneDigits)
	}
	if phone[0] != '+' {
		return fmt.Errorf("%w: %q does not start with '+' and a country code", ErrInvalidPhone, phone)
	}
	digits := phone[1:]
	for i := 0; i < len(digits); i++ {
		if c := digits[i]; c < '0' || c > '9' {
			return fmt.Errorf("%w: %q has a character other than a digit after the '+'", ErrInvalidPhone, phone)
		}
	}
	switch {
	case len(digits) > 0 && digits[0] == '0':
		return fmt.Errorf("%w: %q: country codes do not start with 0", ErrInvalidPhone, phone)
	case len(digits) < minPhoneDigits:
		return fmt.Errorf("%w: %q has fewer than %d digits", ErrInvalidPhone, phone, minPhoneDigits)
	case len(digits) > maxPhoneDigits:
		return fmt.Errorf("%w: %q has more than %d digits", ErrInvalidPhone, phone, maxPhoneDigits)
	}
	return nil
}
