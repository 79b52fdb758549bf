package imagereview

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/imagegate/imagegate/pkg/policy"
)

// requests are the golden ImageReview requests, which are what the
// apiserver sends.
func requests(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob("../server/testdata/imagereview/*.request.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden requests: %v", err)
	}
	out := map[string][]byte{}
	for _, file := range files {
		body, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(file)] = body
	}
	return out
}

// checkScan checks the scan against Decode and Input: whatever it reads,
// they read the same, and it accepts nothing Decode rejects.
func checkScan(t *testing.T, body []byte) (ok bool) {
	t.Helper()
	var got policy.Input
	if !scan(body, &got) {
		if !reflect.DeepEqual(got, policy.Input{}) {
			t.Fatalf("scan gave up on %q but left %#v", body, got)
		}
		return false
	}
	review, err := Decode(body)
	if err != nil {
		t.Fatalf("scan accepted a body Decode rejects (%v): %q", err, body)
	}
	if want := Input(review); !reflect.DeepEqual(got, want) {
		t.Fatalf("scan read %q as\n%#v\nDecode and Input as\n%#v", body, got, want)
	}
	return true
}

func TestScanReadsWhatTheAPIServerSends(t *testing.T) {
	t.Parallel()
	for name, body := range requests(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if !checkScan(t, body) {
				t.Errorf("scan left an apiserver request to encoding/json: %s", body)
			}
		})
	}
}

func TestScanLeavesTheRestToDecode(t *testing.T) {
	t.Parallel()
	const head = `{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1",`
	tests := []struct {
		name   string
		body   string
		wantOK bool // false: Decode reads it (or says what is wrong)
	}{
		{name: "no metadata or status", body: head + `"spec":{"containers":[{"image":"a:1"}]}}`, wantOK: true},
		{name: "null containers and annotations", body: head + `"spec":{"containers":null,"annotations":null}}`, wantOK: true},
		{name: "a null container", body: head + `"spec":{"containers":[null,{"image":"a:1"}]}}`, wantOK: true},
		{name: "simple metadata", body: head + `"metadata":{"name":"p","labels":{"a":"b"},"finalizers":["f"],"future":1},"spec":{}}`, wantOK: true},
		{name: "a status", body: head + `"spec":{},"status":{"allowed":true,"reason":"r","auditAnnotations":{"a":"b"}}}`, wantOK: true},
		{name: "a creation time is left to metav1.Time", body: head + `"metadata":{"creationTimestamp":"2026-01-01T00:00:00Z"},"spec":{}}`},
		{name: "a generation is left to encoding/json", body: head + `"metadata":{"generation":1},"spec":{}}`},
		{name: "wrong version", body: `{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1beta1"}`},
		{name: "no type", body: `{"spec":{}}`},
		{name: "a field matched ignoring case", body: head + `"Spec":{"containers":[{"image":"a:1"}]}}`},
		{name: "an image matched ignoring case", body: head + `"spec":{"containers":[{"Image":"a:1"}]}}`},
		{name: "a repeated spec", body: head + `"spec":{"containers":[{"image":"a:1"}]},"spec":{"namespace":"n"}}`},
		{name: "a status of the wrong type", body: head + `"spec":{},"status":{"allowed":"yes"}}`},
		{name: "an image of the wrong type", body: head + `"spec":{"containers":[{"image":5}]}}`},
		{name: "trailing data", body: head + `"spec":{}} {}`},
		{name: "not an object", body: `[]`},
		{name: "empty", body: ``},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if ok := checkScan(t, []byte(tc.body)); ok != tc.wantOK {
				t.Errorf("scan ok = %v, want %v", ok, tc.wantOK)
			}
		})
	}
}

// FuzzScanImageReview checks the one-pass scan against Decode and Input on
// arbitrary bodies: it never reads a body differently, nor accepts one
// Decode rejects.
func FuzzScanImageReview(f *testing.F) {
	for _, body := range requests(f) {
		f.Add(body)
	}
	f.Add([]byte(`{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","metadata":{"creationTimestamp":null,"name":"x"},"spec":{"containers":[{"image":"a\u0026b"},null],"annotations":{"k":null},"namespace":"n"},"status":{"allowed":false}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		checkScan(t, body)
	})
}

// BenchmarkReview compares Review, which scans what the apiserver sends,
// with Decode and Input, which read it with encoding/json, on a
// 3-container ImageReview.
func BenchmarkReview(b *testing.B) {
	body := []byte(`{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","metadata":{"creationTimestamp":null},"spec":{"containers":[` +
		`{"image":"registry.my.com/team-a/app:1.4.2"},{"image":"registry.my.com/platform/envoy:v1.31.2"},{"image":"registry.my.com/platform/otel:0.104"}],` +
		`"annotations":{"ops.image-policy.k8s.io/owner":"team-a"},"namespace":"team-a"},"status":{"allowed":false}}`)
	p, err := policy.New(policy.Options{RegistryWhitelist: []string{"registry.my.com"}, RejectLatest: true, AllowBreakGlass: true})
	if err != nil {
		b.Fatal(err)
	}
	decoded := func(p *policy.Policy, body []byte) (policy.Input, policy.Decision, Response, error) {
		review, err := Decode(body)
		if err != nil {
			return policy.Input{}, policy.Decision{}, Response{}, err
		}
		in := Input(review)
		d := p.Evaluate(in)
		return in, d, NewResponse(&d), nil
	}
	for _, bc := range []struct {
		name   string
		review func(*policy.Policy, []byte) (policy.Input, policy.Decision, Response, error)
	}{{"scan", Review}, {"Decode+Input", decoded}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, d, _, err := bc.review(p, body); err != nil || !d.Allowed {
					b.Fatal(err, d.Violations)
				}
			}
		})
	}
}
