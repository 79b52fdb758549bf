package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imagegate/imagegate/pkg/server"
)

// sumCounter adds up every series of the counter name in reg.
func sumCounter(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range families {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestSIGTERMDuringABurstAnswersEveryAcceptedReview sends the process a
// real SIGTERM while several clients post reviews as fast as they can. A
// review the server accepted (and so counted) must reach its client as a
// 200; a client may only see its connection refused or closed before the
// server read its request. Not parallel: it signals the test process.
func TestSIGTERMDuringABurstAnswersEveryAcceptedReview(t *testing.T) {
	f := newTLSFixture(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stopSignals()
	served := make(chan error, 1)
	go func() { served <- f.srv.Serve(ctx, ln) }()

	const (
		workers    = 8
		perWorker  = 500 // bounds the burst if the signal never lands
		signalFrom = 50  // answers before SIGTERM
	)
	url := "https://" + ln.Addr().String() + server.PathImagePolicy
	body := imageReview("", "registry.my.com/app:1")
	var answered, refused atomic.Int64
	burstUnderway := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			c := client(&tls.Config{RootCAs: f.ca.Pool(), MinVersion: tls.VersionTLS12})
			for range perWorker {
				resp, err := c.Post(url, "application/json", bytes.NewReader(body))
				if err != nil {
					refused.Add(1) // never accepted: the server is going away
					return
				}
				got, err := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || !strings.Contains(string(got), `"allowed":true`) {
					t.Errorf("an accepted review got %d %q (read error %v); want a 200 allow", resp.StatusCode, got, err)
					return
				}
				if answered.Add(1) == signalFrom {
					once.Do(func() { close(burstUnderway) })
				}
			}
		})
	}
	<-burstUnderway
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve returned %v after SIGTERM, want nil", err)
		}
	case <-time.After(time.Minute): // a hang, not a timing assertion
		t.Fatal("Serve did not return within a minute of SIGTERM")
	}
	wg.Wait()
	counted := sumCounter(t, f.rec.Registry(), "imagegate_reviews_total")
	if counted != float64(answered.Load()) {
		t.Errorf("the server decided %v reviews but clients got %d answers: some accepted reviews were lost", counted, answered.Load())
	}
	t.Logf("%d reviews answered, %d clients turned away after SIGTERM", answered.Load(), refused.Load())
}
