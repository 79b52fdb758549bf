package server_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/imagegate/imagegate/pkg/server"
)

// Profiles are served on the metrics listener only when asked for, and
// never on the review listener.
func TestPprofIsOptIn(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string // what the operator did
		enable  bool   // --enable-pprof
		metrics int    // status of GET /debug/pprof/heap on the metrics listener
	}{
		{name: "profiles are off by default", enable: false, metrics: http.StatusNotFound},
		{name: "--enable-pprof serves them on the metrics listener", enable: true, metrics: http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, testPolicy, func(o *server.Options) { o.EnablePprof = tc.enable })
			get := func(h http.Handler) int {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/debug/pprof/heap?debug=1", nil))
				return rec.Code
			}
			if got := get(f.srv.MetricsHandler()); got != tc.metrics {
				t.Errorf("metrics listener: got %d, want %d", got, tc.metrics)
			}
			if got := get(f.srv.Handler()); got == http.StatusOK {
				t.Errorf("review listener: got %d, want profiles never served there", got)
			}
		})
	}
}
