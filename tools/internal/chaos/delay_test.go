package chaos

import (
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	a, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// The relay holds every chunk back for the delay, keeps the bytes in
// order, and passes the end of the stream on.
func TestDelayPipe(t *testing.T) {
	p := &DelayProxy{}
	const delay = 150 * time.Millisecond
	p.SetDelay(delay)
	srcW, src := tcpPair(t) // written by the test, read by the pipe
	dst, dstR := tcpPair(t) // written by the pipe, read by the test
	go p.pipe(dst, src)
	start := time.Now()
	if _, err := srcW.Write([]byte("hello ")); err != nil {
		t.Fatal(err)
	}
	if _, err := srcW.Write([]byte("world")); err != nil {
		t.Fatal(err)
	}
	srcW.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(dstR)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "hello world" {
		t.Fatalf("relayed %q, want %q", got, "hello world")
	}
	if d := time.Since(start); d < delay {
		t.Fatalf("the bytes arrived after %v, before the %v delay", d, delay)
	}
}
