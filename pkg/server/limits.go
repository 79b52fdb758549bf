package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"
)

// What callers can make imagegate hold is bounded by these limits, sized
// so that its resident memory stays under the shipped Deployment's 160Mi
// whatever they send (config/README.md works the sum out):
//
//   - bodies in flight: at most SmallBodyBudget for the first
//     SmallBodyBytes of every body and LargeBodyBudget for the rest;
//   - one body: at most MaxRequestBytes;
//   - connections: MaxConnections, each with at most MaxConcurrentStreams
//     HTTP/2 streams and a receive window of MaxReceiveBuffer.
//
// A review that is larger than MaxRequestBytes, or that cannot get its
// share of the budget within the request timeout, is still answered with
// a denial in its own format, read from the start of its body.
const (
	// MaxRequestBytes bounds one review's body. The apiserver's own limit
	// is 3 MiB of request, and etcd's 1.5 MiB per object, but it encodes
	// reviews with encoding/json, which writes each '<', '>' and '&' (and
	// control character) as six bytes, and an UPDATE carries the object
	// twice: 2 × 6 × 1.5 MiB plus the review is under 24 MiB.
	MaxRequestBytes = 24 << 20
	// SmallBodyBytes is how much of a body comes from the small budget,
	// which large bodies held open by slow senders cannot take: every
	// review the apiserver sends for an ordinary pod or workload fits.
	SmallBodyBytes = 64 << 10
	// SmallBodyBudget is for the first SmallBodyBytes of every body in
	// flight: at least 128 reviews at once, thousands of typical ones.
	SmallBodyBudget = 8 << 20
	// LargeBodyBudget is for what bodies hold beyond SmallBodyBytes,
	// growth included: room for one review of MaxRequestBytes while its
	// buffer doubles.
	LargeBodyBudget = 40 << 20
	// MaxConnections bounds open connections to the review listener. At
	// the cap, a new connection closes the one idle longest (see connLimit).
	MaxConnections = 128
	// MaxConcurrentStreams bounds the reviews in flight on one HTTP/2
	// connection; an apiserver that wants more opens another connection.
	MaxConcurrentStreams = 16
	// MaxReceiveBuffer is the HTTP/2 flow-control window per connection
	// and per stream, the least HTTP/2 allows: what a connection can make
	// imagegate buffer before a handler reads it.
	MaxReceiveBuffer = 64 << 10
	// IdleTimeout closes a connection with no request in flight.
	IdleTimeout = 60 * time.Second
	// MaxBudgetWait bounds how long a review waits for its share of the
	// budget before it is refused: well inside the webhooks' timeouts, so
	// the refusal is what the apiserver sees.
	MaxBudgetWait = 2 * time.Second
)

// Why a body was not read whole; each is answered with a denial when the
// start of the body says which review it is.
var (
	errTooLarge   = fmt.Errorf("the review is larger than the %d MiB imagegate reads, so it is refused unread; no pod needs that much: look for a huge annotation, command or env value", MaxRequestBytes>>20)
	errOverloaded = errors.New("imagegate is at its memory budget for reviews in flight and could not read this one in time; it is refused rather than left undecided")
)

// bodyBudget hands out the bytes request bodies may hold.
type bodyBudget struct {
	small, large *semaphore.Weighted
}

func newBodyBudget() *bodyBudget {
	return &bodyBudget{small: semaphore.NewWeighted(SmallBodyBudget), large: semaphore.NewWeighted(LargeBodyBudget)}
}

// lane is the budget a buffer of capacity n is charged to.
func (b *bodyBudget) lane(n int) *semaphore.Weighted {
	if n <= SmallBodyBytes {
		return b.small
	}
	return b.large
}

// body is a request body read under the budget.
type body struct {
	budget *bodyBudget
	buf    []byte // charged at cap(buf)
}

// Bytes returns what was read: all of the body, or its start when read
// failed with errTooLarge or errOverloaded.
func (b *body) Bytes() []byte { return b.buf }

// release returns the body's bytes to the budget (and a small buffer to
// the pool); the body must not be used after.
func (b *body) release() {
	if b.buf == nil {
		return
	}
	b.budget.lane(cap(b.buf)).Release(int64(cap(b.buf)))
	if cap(b.buf) == pooledBuffer {
		buf := b.buf[:0]
		buffers.Put(&buf)
	}
	b.buf = nil
}

// pooledBuffer is the capacity of the pooled buffers every body starts in:
// larger than nearly every review, so most reviews allocate no body.
const pooledBuffer = 16 << 10

var buffers = sync.Pool{New: func() any { buf := make([]byte, 0, pooledBuffer); return &buf }}

// read reads r, of declared length n (-1 when unknown), growing its buffer
// as bytes arrive and charging every capacity to the budget before it is
// allocated, so a slow sender holds only what it has sent (at most twice
// over, while the buffer doubles). Waiting for budget ends with ctx. The
// body is to be released whatever the error.
func (b *bodyBudget) read(ctx context.Context, r io.Reader, n int64) (*body, error) {
	if err := b.small.Acquire(ctx, pooledBuffer); err != nil {
		return &body{budget: b}, errOverloaded
	}
	bd := &body{budget: b, buf: *buffers.Get().(*[]byte)}
	if n > MaxRequestBytes {
		// Refused whatever it holds: only its start is read, for the answer.
		m, err := io.ReadFull(r, bd.buf[:cap(bd.buf)])
		bd.buf = bd.buf[:m]
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			return bd, err
		}
		return bd, errTooLarge
	}
	for {
		switch {
		case int64(len(bd.buf)) == n: // net/http ends a body at its declared length
			return bd, nil
		case len(bd.buf) == MaxRequestBytes: // of unknown length: is there more?
			var probe [1]byte
			if m, err := r.Read(probe[:]); m > 0 {
				return bd, errTooLarge
			} else if !errors.Is(err, io.EOF) {
				return bd, err
			}
			return bd, nil
		case len(bd.buf) == cap(bd.buf):
			if err := bd.grow(ctx, n); err != nil {
				return bd, err
			}
		}
		m, err := r.Read(bd.buf[len(bd.buf):cap(bd.buf)])
		bd.buf = bd.buf[:len(bd.buf)+m]
		if errors.Is(err, io.EOF) {
			return bd, nil
		}
		if err != nil {
			return bd, err
		}
	}
}

// grow doubles the buffer, up to the declared length n and MaxRequestBytes.
func (b *body) grow(ctx context.Context, n int64) error {
	size := min(2*cap(b.buf), MaxRequestBytes)
	if n >= 0 && int64(size) > n {
		size = int(n)
	}
	if err := b.budget.lane(size).Acquire(ctx, int64(size)); err != nil {
		return errOverloaded
	}
	grown := append(make([]byte, 0, size), b.buf...)
	b.release()
	b.buf = grown
	return nil
}

// discard reads what is left of a body too large to keep, so the caller
// can answer on a connection still in step, giving up after limit bytes
// (the connection is then closed after the reply).
func discard(r io.Reader, limit int64) {
	_, _ = io.CopyN(io.Discard, r, limit)
}

// connLimit caps the review listener's open connections. At the cap, a new
// connection closes another, in this order: one idle for idleGrace that
// has never carried a review (a flood of HTTP/2 prefaces and nothing else
// is shed as it grows), then one still opening (TLS handshake, first
// request) after openGrace, the longest first (a flood of handshakes sheds
// itself). A real client is past both in milliseconds. Only when neither
// comes within shedWait does it close the one idle longest, even one that
// carried reviews: that is how the apiserver's connections stay through a
// flood. With every connection in a request, Accept waits.
type connLimit struct {
	net.Listener
	max    int
	mu     sync.Mutex
	open   map[net.Conn]*connInfo
	closed bool
}

type connInfo struct {
	accepted  time.Time
	state     http.ConnState
	idleSince time.Time
	served    bool // has carried a review
}

const (
	idleGrace = 100 * time.Millisecond
	openGrace = 250 * time.Millisecond
	shedWait  = 200 * time.Millisecond
)

func newConnLimit(ln net.Listener, limit int) *connLimit {
	return &connLimit{Listener: ln, max: limit, open: map[net.Conn]*connInfo{}}
}

// Accept returns the next connection once there is room for it.
func (l *connLimit) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for start := time.Now(); len(l.open) >= l.max && !l.closed; {
		now := time.Now()
		if victim := l.victim(now, now.Sub(start) >= shedWait); victim != nil {
			delete(l.open, victim)
			_ = victim.Close()
			break
		}
		// Connections finish opening, go idle or close: look again soon.
		l.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		l.mu.Lock()
	}
	if l.closed {
		_ = c.Close()
		return nil, net.ErrClosed
	}
	l.open[c] = &connInfo{accepted: time.Now(), state: http.StateNew}
	return c, nil
}

// victim picks the connection to close for a new one, or nil; as a last
// resort, also one idle that has carried reviews or is within its grace.
func (l *connLimit) victim(now time.Time, lastResort bool) net.Conn {
	var victim net.Conn
	rank, since := 0, time.Time{}
	for c, i := range l.open {
		r, t := 0, time.Time{}
		switch {
		case i.state == http.StateIdle && !i.served && now.Sub(i.idleSince) >= idleGrace:
			r, t = 3, i.idleSince
		case i.state == http.StateNew && now.Sub(i.accepted) >= openGrace:
			r, t = 2, i.accepted
		case i.state == http.StateIdle && lastResort:
			r, t = 1, i.idleSince
		}
		if r > rank || r == rank && r > 0 && t.Before(since) {
			victim, rank, since = c, r, t
		}
	}
	return victim
}

// Close stops Accept, including one waiting for room.
func (l *connLimit) Close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	return l.Listener.Close()
}

// connState is the http.Server's ConnState hook: it tracks which
// connections are idle and which have carried a review, and frees the room
// of those closed.
func (l *connLimit) connState(c net.Conn, state http.ConnState) {
	var tc *tls.Conn
	if t, ok := c.(*tls.Conn); ok {
		tc, c = t, t.NetConn()
	}
	// Only once active is the handshake done: ConnectionState would wait
	// for it, and StateNew is reported from the accept loop.
	h2 := state == http.StateActive && tc != nil && tc.ConnectionState().NegotiatedProtocol == "h2"
	l.mu.Lock()
	defer l.mu.Unlock()
	i, ok := l.open[c]
	if !ok {
		return // closed for another already
	}
	switch state {
	case http.StateActive:
		// HTTP/1 turns active on a request; HTTP/2 once when it starts
		// serving, then on each stream after an idle spell.
		i.served = i.served || i.state == http.StateIdle || !h2
	case http.StateIdle:
		i.idleSince = time.Now()
	case http.StateClosed, http.StateHijacked:
		delete(l.open, c)
		return
	}
	i.state = state
}
