package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// Scenarios of connections that never finish: bodies held one byte short,
// and HTTP/2 connections that say hello and nothing more. Their answers
// are what became of each: an HTTP status, "closed" by the server,
// "refused" at connect, or "held" until the deadline.

// gauge counts what is held now and remembers the most at once.
type gauge struct{ now, peak atomic.Int64 }

func (g *gauge) add(d int64) {
	n := g.now.Add(d)
	for {
		p := g.peak.Load()
		if n <= p || g.peak.CompareAndSwap(p, n) {
			return
		}
	}
}

const (
	heldConns  = 30  // HTTP/1.1 connections holding a body
	heldRounds = 100 // reconnections per held connection, at most
)

// heldHTTP1: 30 HTTP/1.1 connections each send the headers of a review of
// size bytes and all of its body but the last byte, then wait; each one
// the server drops is opened again, so the pressure lasts the deadline.
func heldHTTP1(size int64) func(ctx context.Context, t *target, o *outcome) {
	return func(ctx context.Context, t *target, o *outcome) {
		body := heldBody(size - 1)
		var held gauge
		var wg sync.WaitGroup
		for range heldConns {
			wg.Go(func() {
				for round := 0; round < heldRounds && ctx.Err() == nil; round++ {
					holdHTTP1(ctx, t, size, body, o, &held)
				}
			})
		}
		wg.Wait()
		o.note("bodies of %s: at most %d of %d held at once (all but the last byte sent)", size64(size), held.peak.Load(), heldConns)
	}
}

func holdHTTP1(ctx context.Context, t *target, size int64, body []byte, o *outcome, held *gauge) {
	conf := t.tls.Clone()
	conf.NextProtos = []string{"http/1.1"}
	begin := time.Now()
	conn, err := (&tls.Dialer{Config: conf}).DialContext(ctx, "tcp", t.addr)
	if err != nil {
		if ctx.Err() == nil {
			o.answer("refused", 0)
			pause(ctx, 100*time.Millisecond)
		}
		return
	}
	defer conn.Close()
	defer context.AfterFunc(ctx, func() { _ = conn.Close() })() // the deadline ends the hold
	_, err = fmt.Fprintf(conn, "POST /image-policy HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", t.addr, size)
	if err == nil {
		if _, err = conn.Write(body); err == nil {
			held.add(1)
			defer held.add(-1)
		}
	}
	// Even a failed write may have an answer waiting (a 413 before the end).
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	switch {
	case err == nil:
		_ = resp.Body.Close()
		o.answer(strconv.Itoa(resp.StatusCode), time.Since(begin))
	case ctx.Err() != nil:
		o.answer("held", 0)
	default:
		o.answer("closed", time.Since(begin))
	}
}

// idleConns is how many HTTP/2 connections idle-http2 opens, dialing
// at most idleDialers at a time.
const (
	idleConns   = 2500
	idleDialers = 100
)

// idleHTTP2: 2,500 TLS connections that send the HTTP/2 preface and a
// SETTINGS frame, then nothing; each reads (and drops) whatever the server
// sends until the server closes it or the deadline. The time of each is
// its dial, handshake and preface; the real apiserver's fresh connections
// show whether a new client still gets in.
func idleHTTP2(ctx context.Context, t *target, o *outcome) {
	var open gauge
	var mu sync.Mutex
	var closedAfter []time.Duration
	sem := make(chan struct{}, idleDialers)
	var wg sync.WaitGroup
	dialled := 0
	for dialled < idleConns && ctx.Err() == nil {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		dialled++
		wg.Go(func() {
			begin := time.Now()
			conn, err := dialH2(ctx, t)
			<-sem
			took := time.Since(begin)
			if err != nil {
				o.answer(dialFailure(err), 0)
				return
			}
			defer conn.Close()
			defer context.AfterFunc(ctx, func() { _ = conn.Close() })()
			open.add(1)
			_, _ = io.Copy(io.Discard, conn)
			open.add(-1)
			if ctx.Err() != nil {
				o.answer("held", took)
				return
			}
			o.answer("closed", took)
			mu.Lock()
			closedAfter = append(closedAfter, time.Since(begin))
			mu.Unlock()
		})
	}
	wg.Wait()
	o.note("connections dialled %d of %d; open at once: at most %d", dialled, idleConns, open.peak.Load())
	if len(closedAfter) > 0 {
		o.note("closed by the server: %d, after p50 %s, max %s", len(closedAfter), ms(quantile(closedAfter, 0.5)), ms(quantile(closedAfter, 1)))
	}
}

// dialH2 opens a TLS connection that negotiated h2 and sends the client
// preface and an empty SETTINGS frame, within 5 s.
func dialH2(ctx context.Context, t *target) (*tls.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conf := t.tls.Clone()
	conf.NextProtos = []string{http2.NextProtoTLS}
	c, err := (&tls.Dialer{Config: conf}).DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, err
	}
	conn := c.(*tls.Conn)
	if p := conn.ConnectionState().NegotiatedProtocol; p != http2.NextProtoTLS {
		_ = conn.Close()
		return nil, fmt.Errorf("negotiated %q, not h2", p)
	}
	_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		_ = conn.Close()
		return nil, err
	}
	if err := http2.NewFramer(conn, nil).WriteSettings(); err != nil {
		_ = conn.Close()
		return nil, err
	}
	_ = conn.SetWriteDeadline(time.Time{})
	return conn, nil
}

// dialFailure names why a connection could not be opened.
func dialFailure(err error) string {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return "timeout"
	}
	return "refused"
}

func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func size64(n int64) string { return size(int(n)) }
