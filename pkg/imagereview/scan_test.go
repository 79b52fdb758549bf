package imagereview

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
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
	got, ok := scan(body)
	if !ok {
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
