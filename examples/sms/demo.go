package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"regexp"
	"time"
)

// demo plays a user against the server at base: it asks for a code, asks
// again too soon, reads the code off the SMS the worker sent, tries a
// wrong code, the right one, and the right one again.
func demo(ctx context.Context, base string, sent <-chan string, out io.Writer) error {
	phone, err := fictionalPhone()
	if err != nil {
		return err
	}
	c := &http.Client{Timeout: 10 * time.Second}
	step := func(path string, body map[string]string, want int) (*http.Response, map[string]any, error) {
		b, _ := json.Marshal(body)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(b))
		if err != nil {
			return nil, nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		fmt.Fprintf(out, "POST %s %s -> %s %s", path, b, resp.Status, raw)
		var got map[string]any
		json.Unmarshal(raw, &got)
		if resp.StatusCode != want {
			return resp, got, fmt.Errorf("demo: POST %s answered %s, want %d", path, resp.Status, want)
		}
		return resp, got, nil
	}

	if _, _, err := step("/codes", map[string]string{"phone": phone}, http.StatusAccepted); err != nil {
		return err
	}
	resp, _, err := step("/codes", map[string]string{"phone": phone}, http.StatusTooManyRequests)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "  (Retry-After: %s)\n", resp.Header.Get("Retry-After"))

	var text string
	select {
	case text = <-sent:
	case <-time.After(60 * time.Second):
		return fmt.Errorf("demo: no SMS sent within 60s")
	case <-ctx.Done():
		return ctx.Err()
	}
	code := regexp.MustCompile(`\b\d{6}\b`).FindString(text)
	if code == "" {
		return fmt.Errorf("demo: no code in the SMS %q", text)
	}
	wrong := "000000"
	if code == wrong {
		wrong = "000001"
	}
	if _, _, err := step("/codes/verify", map[string]string{"phone": phone, "code": wrong}, http.StatusUnauthorized); err != nil {
		return err
	}
	if _, _, err := step("/codes/verify", map[string]string{"phone": phone, "code": code}, http.StatusOK); err != nil {
		return err
	}
	if _, _, err := step("/codes/verify", map[string]string{"phone": phone, "code": code}, http.StatusUnauthorized); err != nil {
		return err
	}
	fmt.Fprintln(out, "demo: ok")
	return nil
}

// fictionalPhone returns a +1 555 number, an area code that is never
// assigned, different on each run so that runs sharing a Redis do not hit
// each other's resend locks.
func fictionalPhone() (string, error) {
	n, err := rand.Int(rand.Reader, big.NewInt(1e7))
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("+1555%07d", n), nil
}
