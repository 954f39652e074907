package sms

import (
	"errors"
	"strings"
	"testing"
)

func TestValidatePhone(t *testing.T) {
	for _, ok := range []string{
		"+15555550100",
		"+442079460000",
		"+6834002",         // 7 digits: Niue
		"+123456789012345", // 15 digits
	} {
		if err := ValidatePhone(ok); err != nil {
			t.Errorf("ValidatePhone(%q) = %v, want nil", ok, err)
		}
	}
	for bad, why := range map[string]string{
		"":                        "empty",
		"15555550100":             "start with '+'",
		"+1 555 555 0100":         "other than a digit",
		"+1-555-555-0100":         "other than a digit",
		"+01555550100":            "do not start with 0",
		"+123456":                 "fewer than 7",
		"+1234567890123456":       "more than 15",
		"+1555555010a":            "other than a digit",
		"++15555550100":           "other than a digit",
		"+15555550100\n":          "other than a digit",
		strings.Repeat("9", 4096): "more than 15",
		"+1555٥550100":            "other than a digit", // an Arabic-Indic digit
	} {
		err := ValidatePhone(bad)
		if !errors.Is(err, ErrInvalidPhone) || !strings.Contains(err.Error(), why) {
			t.Errorf("ValidatePhone(%.20q) = %v, want ErrInvalidPhone saying %q", bad, err, why)
		}
	}
}
