package rocketmq

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/omnibus-mq/omnibus/bus"
	"github.com/omnibus-mq/omnibus/internal/brokertest"
)

// The expected signatures were computed apart from this package, from
// the content string the algorithm builds (the ext field values sorted by
// name, then the body), with
//
//	printf '%s' 'omnibusgthello' | openssl dgst -sha1 -hmac secret -binary | base64
//
// and checked with jshell, for every case, against javax.crypto.Mac
// "HmacSHA1" over the same UTF-8 bytes, base64 by java.util.Base64's
// basic encoder, as RocketMQ's AclSigner does (it uses commons-codec's
// equivalent):
//
//	var mac = javax.crypto.Mac.getInstance("HmacSHA1");
//	mac.init(new javax.crypto.spec.SecretKeySpec("secret".getBytes("UTF-8"), "HmacSHA1"));
//	java.util.Base64.getEncoder().encodeToString(mac.doFinal("omnibusgthello".getBytes("UTF-8")));
//
// and against the Signature that AclClientRPCHook of rocketmq-client
// 5.5.0 adds to a RemotingCommand with the same ext fields and body.
func TestSignature(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cred    credentials
		ext     map[string]string
		body    string
		content string // what is signed, for the reader
		want    string
	}{
		{
			name: "ext fields and body", cred: credentials{accessKey: "omnibus", secretKey: "secret"},
			ext: map[string]string{"topic": "t", "consumerGroup": "g"}, body: "hello",
			content: "omnibus" + "g" + "t" + "hello", // AccessKey, consumerGroup, topic; body
			want:    "pCC7sGWB35iEmULuVQkWsuQIot8=",
		},
		{
			name: "security token, no body", cred: credentials{accessKey: "omnibus", secretKey: "s3cr3t-Key", securityToken: "token"},
			ext:     map[string]string{"topic": "t", "readQueueNums": "17", "order": "false"},
			content: "omnibus" + "token" + "false" + "17" + "t", // AccessKey, SecurityToken, order, readQueueNums, topic
			want:    "zq9TlKbfeK/pSrOFnaYsYzcos/Q=",
		},
		{
			name: "invalid UTF-8 is signed as the JSON header carries it", cred: credentials{accessKey: "omnibus", secretKey: "secret"},
			ext:     map[string]string{"k": "a\xff\xfeb"},
			content: "omnibus" + "a\uFFFD\uFFFDb",
			want:    "BSzxVwguJF9VpdrWkOZCNaRQbmA=",
		},
		{
			name: "a secret key that is not ASCII", cred: credentials{accessKey: "AKIDEXAMPLE", secretKey: "密钥"},
			content: "AKIDEXAMPLE",
			want:    "6NaApDjKkkAppe1ZIzXGcGg+IYw=",
		},
		{
			name: "a Signature field already there is replaced, not signed", cred: credentials{accessKey: "omnibus", secretKey: "secret"},
			ext: map[string]string{"topic": "t", "consumerGroup": "g", "Signature": "stale"}, body: "hello",
			content: "omnibus" + "g" + "t" + "hello",
			want:    "pCC7sGWB35iEmULuVQkWsuQIot8=",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := maps.Clone(tc.ext)
			got := tc.cred.sign(tc.ext, []byte(tc.body))
			if !maps.Equal(tc.ext, before) {
				t.Errorf("sign modified the caller's map: %v, was %v", tc.ext, before)
			}
			if got[extSignature] != tc.want {
				t.Errorf("Signature = %q, want %q (HMAC-SHA1 of %q)", got[extSignature], tc.want, tc.content)
			}
			if got[extAccessKey] != tc.cred.accessKey {
				t.Errorf("AccessKey = %q, want %q", got[extAccessKey], tc.cred.accessKey)
			}
			if tok, ok := got[extSecurityToken]; ok != (tc.cred.securityToken != "") || tok != tc.cred.securityToken {
				t.Errorf("SecurityToken = %q (present %v), want %q", tok, ok, tc.cred.securityToken)
			}
			for k, v := range tc.ext {
				if k != extSignature && got[k] != v {
					t.Errorf("field %s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
	ext := map[string]string{"topic": "t"}
	if got := (credentials{}).sign(ext, nil); len(got) != 1 || got["topic"] != "t" {
		t.Errorf("without an access key, sign = %v; want the fields as they were", got)
	}
}

// The broker checks the signature over the ext fields it decodes from the
// JSON header: the header this package writes must carry a signature
// that holds over what the other side reads.
func TestSignedHeaderVerifies(t *testing.T) {
	cred := credentials{accessKey: "omnibus", secretKey: "secret"}
	ext := map[string]string{"i": "KEYS\x01id\x02UNIQ\x01<x>&\u2028\xff", "b": "topic", "a": "group"}
	body := []byte{0, 1, 2, 0xff}
	cmd := &command{Code: codeSendMessage, Language: "GO", Version: 500, ExtFields: cred.sign(ext, body), body: body}
	h, err := json.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	var got command
	if err := json.Unmarshal(h, &got); err != nil {
		t.Fatal(err)
	}
	if got.ExtFields[extAccessKey] != "omnibus" || got.ExtFields[extSignature] == "" {
		t.Fatalf("header %s lacks the signature fields", h)
	}
	if want := signature(cred.secretKey, got.ExtFields, body); got.ExtFields[extSignature] != want {
		t.Errorf("signature in the header = %q; over the decoded fields it is %q", got.ExtFields[extSignature], want)
	}
	if strings.Contains(string(h), "secret") {
		t.Errorf("the header holds the secret key: %s", h)
	}
}

// Requests are signed on the wire; answers to the server's own requests
// are not.
func TestSignedCalls(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan *command, 2)
	go fakeServer(ln, got)
	tr := transport{cred: credentials{accessKey: "omnibus", secretKey: "secret"}}
	c, err := tr.dial(t.Context(), ln.Addr().String(), time.Second, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ext := map[string]string{"topic": "t", "consumerGroup": "g"}
	if _, err := c.callOK(t.Context(), codeGetConsumerList, ext, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	req := <-got
	if req.ExtFields[extSignature] != "pCC7sGWB35iEmULuVQkWsuQIot8=" || req.ExtFields[extAccessKey] != "omnibus" {
		t.Errorf("request ext fields %v: want AccessKey omnibus and the signature of TestSignature", req.ExtFields)
	}
	if _, ok := ext[extSignature]; ok {
		t.Error("call added the signature to the caller's map")
	}
	answer := <-got // the client's answer to the server's request
	if answer.Flag&flagResponse == 0 || len(answer.ExtFields) != 0 {
		t.Errorf("answer to the server's request = %+v; want an unsigned response", answer)
	}
}

// fakeServer answers the first request with success, sends a request of
// its own, and passes on the request and the client's answer.
func fakeServer(ln net.Listener, got chan<- *command) {
	nc, err := ln.Accept()
	if err != nil {
		return
	}
	defer nc.Close()
	r := bufio.NewReader(nc)
	w := &conn{nc: nc, raw: nc, done: make(chan struct{})}
	req, err := readCommand(r)
	if err != nil {
		return
	}
	got <- req
	w.write(&command{Code: respSuccess, Language: "JAVA", Opaque: req.Opaque, Flag: flagResponse})
	w.write(&command{Code: 99, Language: "JAVA", Opaque: 1000})
	answer, err := readCommand(r)
	if err != nil {
		return
	}
	got <- answer
}

// Over TLS the certificate is verified for the host dialled, and a
// server whose CA is not among the roots is refused at the handshake.
func TestTLSDial(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan *command, 2)
	go fakeServer(ln, got)
	front, roots := brokertest.TLSFront(t, ln.Addr().String()) // "localhost:port", a certificate for localhost
	tr := transport{tls: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}
	c, err := tr.dial(t.Context(), front, 5*time.Second, time.Second, nil)
	if err != nil {
		t.Fatalf("TLS dial with the right roots: %v", err)
	}
	defer c.Close()
	if _, err := c.callOK(t.Context(), codeGetClusterInfo, nil, nil); err != nil {
		t.Fatalf("call over TLS: %v", err)
	}
	if tr.tls.ServerName != "" {
		t.Error("dial set ServerName on the caller's configuration")
	}

	_, port, _ := net.SplitHostPort(front)
	for name, tc := range map[string]struct {
		addr string
		cfg  *tls.Config
		want string
	}{
		"unknown CA":        {front, &tls.Config{MinVersion: tls.VersionTLS12}, "certificate signed by unknown authority"},
		"other host":        {net.JoinHostPort("127.0.0.1", port), &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}, "127.0.0.1 because it doesn't contain any IP SANs"},
		"other server name": {front, &tls.Config{RootCAs: roots, ServerName: "example.com", MinVersion: tls.VersionTLS12}, "not example.com"},
	} {
		_, err := transport{tls: tc.cfg}.dial(t.Context(), tc.addr, 5*time.Second, time.Second, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "rocketmq: TLS handshake with ") {
			t.Errorf("%s: dial = %v; want a handshake error that mentions %q", name, err, tc.want)
		}
	}

	// A server that never answers the handshake: the dial timeout bounds it.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	start := time.Now()
	_, err = tr.dial(context.Background(), silent.Addr().String(), 300*time.Millisecond, time.Second, nil)
	if err == nil || time.Since(start) > 5*time.Second {
		t.Errorf("dial to a server that does not answer the handshake = %v after %v; want an error within the timeout", err, time.Since(start))
	}
}

func TestRefusal(t *testing.T) {
	for _, tc := range []struct {
		code   int
		remark string
		want   error
	}{
		{16, "check signature failed.", bus.ErrAuth},
		{16, "User:nobody is not found.", bus.ErrAuth},
		{16, "User:omnibus is disabled.", bus.ErrAuth},
		{16, "username cannot be null.", bus.ErrAuth},
		{16, "Authentication failed. Please verify the credentials and try again.", bus.ErrAuth},
		{16, "User:omnibus has no permission to access Topic:signature from 127.0.0.1, the decision is deny.", bus.ErrForbidden},
		{1, "org.apache.rocketmq.acl.common.AclException: Check signature failed for accessKey=omnibus", bus.ErrAuth},
		{1, "AclException: No accessKey is configured", bus.ErrAuth},
		{1, "AclException: No default permission for Topic:t", bus.ErrForbidden},
		{16, "the topic[t] sending message is forbidden", nil},
		{1, "java.lang.NullPointerException", nil},
		{17, "check signature failed.", nil},
	} {
		if got := refusal(tc.code, tc.remark); got != tc.want {
			t.Errorf("refusal(%d, %q) = %v, want %v", tc.code, tc.remark, got, tc.want)
		}
		err := fmt.Errorf("rocketmq: publish: %w", &ResponseError{Request: codeSendMessage, Code: tc.code, Remark: tc.remark})
		for _, target := range []error{bus.ErrAuth, bus.ErrForbidden} {
			if errors.Is(err, target) != (target == tc.want) {
				t.Errorf("errors.Is(%v, %v) = %v", err, target, !(target == tc.want))
			}
		}
	}
	err := &ResponseError{Request: codeSendMessage, Code: 16, Remark: "check signature failed."}
	if !strings.Contains(err.Error(), "refused the access key") {
		t.Errorf("Error() = %q; want it to say the credentials were refused", err)
	}
}
