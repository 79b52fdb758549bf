package server_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/pkg/server"
)

// oversized returns a review whose start is head and whose object carries
// an annotation that takes it past MaxRequestBytes, as the apiserver would
// write it (each '<' escaped to six bytes).
func oversized(head, tail string) []byte {
	pad := strings.Repeat(`\u003c`, server.MaxRequestBytes/6+1)
	return []byte(head + `"big":"` + pad + `"` + tail)
}

// TestReviewsLargerThanTheLimitAreDeniedInTheirOwnFormat holds the promise
// that every review gets a verdict: a body over the hard limit is not an
// error the apiserver would resolve by defaultAllow or failurePolicy, but a
// denial it accepts (the version sent, the uid echoed).
func TestReviewsLargerThanTheLimitAreDeniedInTheirOwnFormat(t *testing.T) {
	t.Parallel()
	f := mutateFixture(t)
	h := f.srv.Handler()
	admissionHead := func(version string) string {
		return `{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/` + version + `","request":{"uid":"0d1e0000-0000-4000-8000-0000000000ff",` +
			`"kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"name":"huge","namespace":"team-a","operation":"UPDATE",` +
			`"userInfo":{"username":"alice"},"object":{"metadata":{"annotations":{`
	}
	tests := []struct {
		name, path string
		body       []byte
	}{
		{name: "imagereview", path: server.PathImagePolicy, body: oversized(`{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"annotations":{`, `}}}`)},
		{name: "admission-v1", path: server.PathValidate, body: oversized(admissionHead("v1"), `}}}}}`)},
		{name: "admission-v1beta1", path: server.PathValidate, body: oversized(admissionHead("v1beta1"), `}}}}}`)},
		{name: "mutate-v1", path: server.PathMutate, body: oversized(admissionHead("v1"), `}}}}}`)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := post(h, tc.path, "application/json", tc.body)
			if rec.Code != 200 {
				t.Fatalf("status %d, want 200: %.300s", rec.Code, rec.Body)
			}
			checkGolden(t, rec, filepath.Join("testdata", "limits", "too-large-"+tc.name+".response.json"))
		})
	}
}

func TestBodiesOverTheLimitThatAreNotReviewsAre413(t *testing.T) {
	t.Parallel()
	h := mutateFixture(t).srv.Handler()
	tests := []struct{ name, path, head string }{
		{name: "an ImageReview path given an AdmissionReview", path: server.PathImagePolicy, head: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u",`},
		{name: "an AdmissionReview without a uid at its start", path: server.PathValidate, head: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"object":{`},
		{name: "not a review", path: server.PathMutate, head: `{"x":{`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := post(h, tc.path, "application/json", oversized(tc.head, `}}}`))
			if rec.Code != 413 || !strings.Contains(rec.Body.String(), fmt.Sprintf("larger than the %d MiB", server.MaxRequestBytes>>20)) {
				t.Errorf("status %d %q, want 413 saying the limit", rec.Code, rec.Body)
			}
		})
	}
}
