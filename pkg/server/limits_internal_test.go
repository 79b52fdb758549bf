package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func TestBodyBudgetReadsWhatIsSentAndGivesItBack(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		size     int
		declared bool // Content-Length sent
		wantErr  error
		wantLen  int
	}{
		{name: "a small review", size: 300, declared: true, wantLen: 300},
		{name: "exactly the pooled buffer", size: pooledBuffer, declared: true, wantLen: pooledBuffer},
		{name: "a large review of unknown length", size: 5 << 20, wantLen: 5 << 20},
		{name: "exactly the limit, unknown length", size: MaxRequestBytes, wantLen: MaxRequestBytes},
		{name: "over the limit, unknown length: its start", size: MaxRequestBytes + 1, wantErr: errTooLarge, wantLen: MaxRequestBytes},
		{name: "declared over the limit: only its start is read", size: MaxRequestBytes + 1, declared: true, wantErr: errTooLarge, wantLen: pooledBuffer},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBodyBudget()
			data := bytes.Repeat([]byte("x"), tc.size)
			n := int64(-1)
			if tc.declared {
				n = int64(tc.size)
			}
			// One byte at a time up to 64 KiB, so growth happens mid-read.
			r := io.MultiReader(iotest.OneByteReader(bytes.NewReader(data[:min(len(data), 64<<10)])), bytes.NewReader(data[min(len(data), 64<<10):]))
			body, err := b.read(context.Background(), r, n)
			if !errors.Is(err, tc.wantErr) || len(body.Bytes()) != tc.wantLen {
				t.Fatalf("read = %d bytes, %v; want %d bytes, %v", len(body.Bytes()), err, tc.wantLen, tc.wantErr)
			}
			body.release()
			// Everything is back: the whole of each lane can be taken again.
			if !b.small.TryAcquire(SmallBodyBudget) || !b.large.TryAcquire(LargeBodyBudget) {
				t.Error("the budget was not given back whole")
			}
		})
	}
}

func TestBodyBudgetRefusesWhatItCannotHoldInTime(t *testing.T) {
	t.Parallel()
	b := newBodyBudget()
	if !b.large.TryAcquire(LargeBodyBudget - 100<<10) { // held by slow senders
		t.Fatal("cannot take the budget")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	big := bytes.Repeat([]byte("x"), 1<<20)
	body, err := b.read(ctx, bytes.NewReader(big), int64(len(big)))
	if !errors.Is(err, errOverloaded) || len(body.Bytes()) == 0 {
		t.Fatalf("read = %d bytes, %v; want its start and errOverloaded", len(body.Bytes()), err)
	}
	body.release()
	// A small review does not wait for the large lane.
	small, err := b.read(context.Background(), strings.NewReader(`{"kind":"ImageReview"}`), 22)
	if err != nil {
		t.Fatalf("small review: %v, want it read", err)
	}
	small.release()
}

// pipeListener hands out the server ends of net.Pipe connections.
type pipeListener struct{ conns chan net.Conn }

func (l pipeListener) Accept() (net.Conn, error) {
	c, ok := <-l.conns
	if !ok {
		return nil, net.ErrClosed
	}
	return c, nil
}
func (l pipeListener) Close() error   { return nil }
func (l pipeListener) Addr() net.Addr { return &net.TCPAddr{} }

func TestConnLimitShedsConnectionsInOrderAtTheCap(t *testing.T) {
	t.Parallel()
	pl := pipeListener{conns: make(chan net.Conn, 8)}
	l := newConnLimit(pl, 2)
	accept := func() (server, client net.Conn) {
		t.Helper()
		s, c := net.Pipe()
		pl.conns <- s
		got, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return got, c
	}
	closed := func(c net.Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		_, err := c.Read(make([]byte, 1))
		return errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe)
	}
	// The apiserver's: it has carried a review and is idle now.
	apiserver, apiserverClient := accept()
	l.connState(apiserver, http.StateActive)
	l.connState(apiserver, http.StateIdle)
	// A flood's: idle since before the apiserver's, never a review.
	flood, floodClient := accept()
	l.connState(flood, http.StateIdle)
	l.mu.Lock()
	l.open[flood].idleSince = time.Now().Add(-time.Minute)
	l.mu.Unlock()

	opening, openingClient := accept()
	if !closed(floodClient) || closed(apiserverClient) {
		t.Fatal("at the cap, want the flood's connection closed and the apiserver's kept")
	}
	// A connection still opening after openGrace goes before the apiserver's.
	l.mu.Lock()
	l.open[opening].accepted = time.Now().Add(-openGrace)
	l.mu.Unlock()
	accept()
	if !closed(openingClient) || closed(apiserverClient) {
		t.Fatal("want the connection still opening closed and the apiserver's kept")
	}
	// With the others in a request, the apiserver's goes last.
	l.connState(opening, http.StateActive)
	for c := range l.open {
		l.connState(c, http.StateActive)
	}
	l.connState(apiserver, http.StateIdle)
	accept() // after shedWait
	if !closed(apiserverClient) {
		t.Error("with no other candidate, want the one idle longest closed")
	}
}

func TestConnLimitWaitsWhenEveryConnectionIsBusy(t *testing.T) {
	t.Parallel()
	pl := pipeListener{conns: make(chan net.Conn, 4)}
	l := newConnLimit(pl, 1)
	s, _ := net.Pipe()
	pl.conns <- s
	busy, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	l.connState(busy, http.StateActive)
	s2, _ := net.Pipe()
	pl.conns <- s2
	accepted := make(chan struct{})
	go func() {
		if _, err := l.Accept(); err == nil {
			close(accepted)
		}
	}()
	select {
	case <-accepted:
		t.Fatal("accepted over the cap with every connection busy")
	case <-time.After(100 * time.Millisecond):
	}
	l.connState(busy, http.StateClosed)
	select {
	case <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("a closed connection did not make room")
	}
}
