package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const (
	h2Conns   = 4
	h2Streams = 60
	h2Body    = 3 << 20
	h2Rounds  = 20 // new connections per slot, at most, as old ones end
)

// heldHTTP2: 4 HTTP/2 connections, each opening 60 streams that send all
// but the last byte of a 3 MiB review, as fast as the server's flow
// control lets them, then wait. Streams past the server's
// MaxConcurrentStreams may be refused; a connection whose streams have all
// ended is opened again, so the pressure lasts the deadline.
func heldHTTP2(ctx context.Context, t *target, o *outcome) {
	body := heldBody(h2Body - 1)
	var held gauge
	var opened, refused atomic.Int64
	var maxStreams atomic.Uint32
	var wg sync.WaitGroup
	for range h2Conns {
		wg.Go(func() {
			for round := 0; round < h2Rounds && ctx.Err() == nil; round++ {
				c, err := newH2Conn(ctx, t, o, &held)
				if err != nil {
					o.answer(dialFailure(err), 0)
					pause(ctx, 100*time.Millisecond)
					continue
				}
				maxStreams.Store(c.maxStreams)
				c.flood(ctx, t, body)
				o2, r := c.finish(ctx)
				opened.Add(o2)
				refused.Add(r)
			}
		})
	}
	wg.Wait()
	limit := "none"
	if n := maxStreams.Load(); n > 0 {
		limit = strconv.FormatUint(uint64(n), 10)
	}
	o.note("streams opened %d, refused %d (the server's SETTINGS_MAX_CONCURRENT_STREAMS: %s); at most %d of %d bodies held at once",
		opened.Load(), refused.Load(), limit, held.peak.Load(), h2Conns*h2Streams)
}

// h2Conn is one raw HTTP/2 client connection, written frame by frame so
// that its bodies can stop one byte short. One goroutine sends; another
// reads the server's frames and keeps the flow-control windows.
type h2Conn struct {
	conn *tls.Conn
	fr   *http2.Framer
	wmu  sync.Mutex // one frame write at a time
	o    *outcome
	held *gauge

	mu         sync.Mutex
	cond       *sync.Cond
	connWin    int64
	initWin    int64
	maxStreams uint32
	streams    map[uint32]*h2Stream
	ids        []uint32
	gone       bool // the connection is closed
}

type h2Stream struct {
	left    int64 // body bytes to send before the held last one
	win     int64
	begin   time.Time
	done    bool // answered or reset
	full    bool // all but the last byte sent
	refused bool // reset before the server took it
}

// newH2Conn dials, sends the preface and waits for the server's SETTINGS.
func newH2Conn(ctx context.Context, t *target, o *outcome, held *gauge) (*h2Conn, error) {
	conn, err := dialH2(ctx, t)
	if err != nil {
		return nil, err
	}
	c := &h2Conn{conn: conn, fr: http2.NewFramer(conn, conn), o: o, held: held,
		connWin: 65535, initWin: 65535, streams: map[uint32]*h2Stream{}}
	c.cond = sync.NewCond(&c.mu)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	settled := make(chan struct{})
	go c.read(settled)
	select {
	case <-settled:
		return c, nil
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
	}
	_ = conn.Close()
	return nil, context.DeadlineExceeded
}

// flood opens the streams and sends their bodies, then holds them until
// the deadline, the connection's end or the end of every stream.
func (c *h2Conn) flood(ctx context.Context, t *target, body []byte) {
	defer context.AfterFunc(ctx, func() { _ = c.conn.Close() })()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":authority", t.addr}, {":path", "/image-policy"},
		{"content-type", "application/json"}, {"content-length", strconv.Itoa(len(body) + 1)}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	for i := range uint32(h2Streams) {
		id := 2*i + 1
		c.mu.Lock()
		c.streams[id] = &h2Stream{left: int64(len(body)), win: c.initWin, begin: time.Now()}
		c.ids = append(c.ids, id)
		c.mu.Unlock()
		// The same block for every stream: encoded once into an empty
		// dynamic table, it holds only literals and static-table indexes,
		// so it means the same every time the server decodes it.
		if c.write(func() error {
			return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndHeaders: true})
		}) != nil {
			break
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for next := 0; ctx.Err() == nil && !c.gone; {
		id, n := c.sendable(&next)
		if n == 0 {
			if c.allSent() {
				break
			}
			c.cond.Wait()
			continue
		}
		st := c.streams[id]
		sent := int64(len(body)) - st.left
		st.left, st.win, c.connWin = st.left-n, st.win-n, c.connWin-n
		if st.left == 0 {
			st.full = true
			c.held.add(1)
		}
		c.mu.Unlock()
		err := c.write(func() error { return c.fr.WriteData(id, false, body[sent:sent+n]) })
		c.mu.Lock()
		if err != nil {
			break
		}
	}
	for ctx.Err() == nil && !c.gone && !c.allDone() {
		c.cond.Wait()
	}
}

// sendable picks, round robin from *next, a stream with bytes to send and
// window to send them; n is how many, 0 if none can send now.
func (c *h2Conn) sendable(next *int) (id uint32, n int64) {
	for k := range c.ids {
		id = c.ids[(*next+k)%len(c.ids)]
		st := c.streams[id]
		if st.done || st.left == 0 || st.win <= 0 || c.connWin <= 0 {
			continue
		}
		*next = (*next + k + 1) % len(c.ids)
		return id, min(16<<10, st.left, st.win, c.connWin)
	}
	return 0, 0
}

func (c *h2Conn) allSent() bool {
	return !slices.ContainsFunc(c.ids, func(id uint32) bool { st := c.streams[id]; return !st.done && st.left > 0 })
}

func (c *h2Conn) allDone() bool {
	return !slices.ContainsFunc(c.ids, func(id uint32) bool { return !c.streams[id].done })
}

// finish closes the connection, counts every stream still open as held
// (at the deadline) or closed, and returns how many were opened and
// refused.
func (c *h2Conn) finish(ctx context.Context) (opened, refused int64) {
	_ = c.conn.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range c.ids {
		st := c.streams[id]
		switch {
		case st.refused:
			refused++
		case st.done:
		case ctx.Err() != nil:
			c.end(st, "held")
		default:
			c.end(st, "closed")
		}
	}
	return int64(len(c.ids)), refused
}

// end marks a stream answered or reset, with status; the caller holds mu.
func (c *h2Conn) end(st *h2Stream, status string) {
	if st.done {
		return
	}
	st.done = true
	if st.full {
		c.held.add(-1)
	}
	took := time.Since(st.begin)
	if status == "held" || st.refused {
		took = 0 // no answer to time
	}
	c.o.answer(status, took)
}

func (c *h2Conn) write(f func() error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(webhookTimeout))
	return f()
}

// read handles the server's frames until the connection ends. settled is
// closed at the server's first SETTINGS.
func (c *h2Conn) read(settled chan struct{}) {
	defer func() {
		c.mu.Lock()
		c.gone = true
		c.cond.Broadcast()
		c.mu.Unlock()
	}()
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return
		}
		c.mu.Lock()
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.settings(f)
				go func() { _ = c.write(c.fr.WriteSettingsAck) }()
				if settled != nil {
					close(settled)
					settled = nil
				}
			}
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				c.connWin += int64(f.Increment)
			} else if st := c.streams[f.StreamID]; st != nil {
				st.win += int64(f.Increment)
			}
		case *http2.RSTStreamFrame:
			if st := c.streams[f.StreamID]; st != nil {
				status := "reset " + f.ErrCode.String()
				if f.ErrCode == http2.ErrCodeRefusedStream || (f.ErrCode == http2.ErrCodeProtocol && !st.full) {
					status, st.refused = "refused", true
				}
				c.end(st, status)
			}
		case *http2.MetaHeadersFrame:
			if st := c.streams[f.StreamID]; st != nil {
				c.end(st, f.PseudoValue("status"))
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				data := f.Data
				go func() { _ = c.write(func() error { return c.fr.WritePing(true, data) }) }()
			}
		}
		c.cond.Broadcast()
		c.mu.Unlock()
	}
}

// settings applies the server's SETTINGS; the caller holds mu.
func (c *h2Conn) settings(f *http2.SettingsFrame) {
	_ = f.ForeachSetting(func(s http2.Setting) error {
		switch s.ID {
		case http2.SettingInitialWindowSize:
			for _, st := range c.streams {
				st.win += int64(s.Val) - c.initWin
			}
			c.initWin = int64(s.Val)
		case http2.SettingMaxConcurrentStreams:
			c.maxStreams = s.Val
		}
		return nil
	})
}
