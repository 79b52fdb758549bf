package admission

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/internal/jsonscan"
	"github.com/imagegate/imagegate/pkg/policy"
)

// goldenRequests are the golden AdmissionReview requests, the load test's
// Deployment and the examples: what the apiserver sends, and some requests
// it never would.
func goldenRequests(t testing.TB) map[string][]byte {
	t.Helper()
	var files []string
	for _, glob := range []string{"../server/testdata/admission/*.request.json", "../server/testdata/bench/*.request.json", "../../examples/admission/*.json"} {
		more, err := filepath.Glob(glob)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, more...)
	}
	if len(files) == 0 {
		t.Fatal("no golden requests")
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

func scanPolicy(t testing.TB) *policy.Policy {
	t.Helper()
	p, err := policy.New(policy.Options{RegistryWhitelist: []string{"registry.my.com"}, RejectLatest: true, AllowBreakGlass: true})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// wrap wraps a request (JSON) in an AdmissionReview of version.
func wrap(version, request string) []byte {
	return []byte(`{"apiVersion":"admission.k8s.io/` + version + `","kind":"AdmissionReview","request":` + request + `}`)
}

// podRequest builds a request JSON for kind (group/version/kind) and
// operation with the given object and old object (JSON, or "null").
func podRequest(group, version, kind, operation, object, oldObject string) string {
	return `{"uid":"u-1","kind":{"group":"` + group + `","version":"` + version + `","kind":"` + kind + `"},` +
		`"resource":{"group":"` + group + `","version":"` + version + `","resource":"` + strings.ToLower(kind) + `s"},` +
		`"namespace":"team-a","operation":"` + operation + `","userInfo":{"username":"alice"},"object":` + object + `,"oldObject":` + oldObject + `}`
}

// reviewDecoded is Review without the scan: Decode, then Input.
func reviewDecoded(p *policy.Policy, body []byte) (policy.Input, policy.Decision, Response, error) {
	review, err := Decode(body)
	if err != nil {
		return policy.Input{}, policy.Decision{}, Response{}, err
	}
	in, judge, err := Input(review.Request)
	var d policy.Decision
	switch {
	case err != nil:
		unreadable(p, err, &d)
	case judge:
		d = p.Evaluate(in)
	default:
		d = policy.Decision{Allowed: true, Outcome: policy.OutcomeAllowed, Mode: p.Mode()}
	}
	return in, d, NewResponse(review, &d), nil
}

// checkScan checks scanReview against Decode on body: whatever it reads,
// Decode reads the same, and the objects are what the lean types read
// with encoding/json; and Review answers exactly as Decode and Input do.
func checkScan(t *testing.T, p *policy.Policy, body []byte) (ok bool) {
	t.Helper()
	got, objs, ok := scanReview(body)
	if ok {
		want, err := Decode(body)
		if err != nil {
			t.Fatalf("scan accepted a body Decode rejects (%v): %q", err, body)
		}
		if got.TypeMeta != want.TypeMeta || (got.Request == nil) != (want.Request == nil) {
			t.Fatalf("scan read %q as %+v, Decode as %+v", body, got, want)
		}
		if r, w := got.Request, want.Request; r != nil {
			if r.UID != w.UID || r.Kind != w.Kind || r.Resource != w.Resource || r.SubResource != w.SubResource ||
				r.Namespace != w.Namespace || r.Operation != w.Operation || r.UserInfo.Username != w.UserInfo.Username ||
				!reflect.DeepEqual(r.UserInfo.Groups, w.UserInfo.Groups) {
				t.Fatalf("scan read the request of %q as\n%+v\nDecode as\n%+v", body, r, w)
			}
			checkObject(t, body, "object", objs.object, w.Object.Raw)
			checkObject(t, body, "oldObject", objs.oldObject, w.OldObject.Raw)
		}
	}
	gotIn, gotD, gotResp, gotErr := Review(p, body)
	wantIn, wantD, wantResp, wantErr := reviewDecoded(p, body)
	if (gotErr == nil) != (wantErr == nil) || gotErr != nil && gotErr.Error() != wantErr.Error() {
		t.Fatalf("Review error %v, Decode and Input's %v, for %q", gotErr, wantErr, body)
	}
	if !reflect.DeepEqual(gotIn, wantIn) || !reflect.DeepEqual(gotD, wantD) || !reflect.DeepEqual(gotResp, wantResp) {
		t.Fatalf("Review answered %q with\n%#v\n%#v\n%#v\nDecode and Input with\n%#v\n%#v\n%#v", body, gotIn, gotD, gotResp, wantIn, wantD, wantResp)
	}
	return ok
}

func checkObject(t *testing.T, body []byte, field string, got object, raw []byte) {
	t.Helper()
	if !bytes.Equal(got.raw, raw) || (got.lean == nil) != (len(raw) == 0) {
		t.Fatalf("scan found %s %q (read: %v), Decode %q, in %q", field, got.raw, got.lean != nil, raw, body)
	}
	if got.lean == nil {
		return
	}
	var want leanObject
	if err := json.Unmarshal(raw, &want); err != nil || !reflect.DeepEqual(*got.lean, want) {
		t.Fatalf("scan read %s %q as\n%#v\nencoding/json as\n%#v (%v)", field, raw, *got.lean, want, err)
	}
}

func TestScanReadsWhatTheAPIServerSends(t *testing.T) {
	t.Parallel()
	p := scanPolicy(t)
	// Requests the apiserver would not send, which Decode reads instead.
	decoded := map[string]bool{
		"denied-undecodable-object.request.json": true, // an image that is a number
	}
	for name, body := range goldenRequests(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if ok := checkScan(t, p, body); ok == decoded[name] {
				t.Errorf("scan ok = %v, want %v", ok, !decoded[name])
			}
		})
	}
}

func TestScanLeavesTheRestToDecode(t *testing.T) {
	t.Parallel()
	p := scanPolicy(t)
	pod := `{"spec":{"containers":[{"name":"a","image":"registry.my.com/a:1"}]}}`
	valid := podRequest("", "v1", "Pod", "CREATE", pod, "null")
	tests := []struct {
		name   string
		body   string
		wantOK bool // false: Decode reads it (or says what is wrong)
	}{
		{name: "v1", body: string(wrap("v1", valid)), wantOK: true},
		{name: "v1beta1", body: string(wrap("v1beta1", valid)), wantOK: true},
		{name: "no request", body: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, wantOK: true},
		{name: "every request field", body: string(wrap("v1", strings.Replace(valid, `"uid":"u-1"`,
			`"uid":"u-1","subResource":"s","requestKind":{"group":"","version":"v1","kind":"Pod"},"requestResource":null,"requestSubResource":"","name":"n",`+
				`"dryRun":true,"options":{"kind":"CreateOptions"},"future":[1]`, 1))), wantOK: true},
		{name: "every userInfo field", body: string(wrap("v1", strings.Replace(valid, `{"username":"alice"}`,
			`{"username":"alice","uid":"1","groups":["a",null],"extra":{"k":["v"],"l":null}}`, 1))), wantOK: true},
		{name: "an update", body: string(wrap("v1", podRequest("apps", "v1", "Deployment", "UPDATE",
			`{"spec":{"template":{"metadata":{"annotations":{"a":"b"}},"spec":{"containers":[{"name":"a","image":"registry.my.com/a:2"}]}}}}`,
			`{"spec":{"template":{"spec":{"containers":[{"name":"a","image":"registry.my.com/a:1"}],"volumes":[{"name":"v","image":{"reference":"x"}},{"name":"w"}]}}}}`))), wantOK: true},
		{name: "an object of another kind", body: string(wrap("v1", podRequest("", "v1", "Service", "CREATE", `{"spec":{"ports":[]}}`, "null"))), wantOK: true},
		{name: "a response", body: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"u"}}`},
		{name: "an object the lean types cannot read", body: string(wrap("v1", podRequest("", "v1", "Pod", "CREATE", `{"spec":{"containers":"no"}}`, "null")))},
		{name: "an object that is not an object", body: string(wrap("v1", podRequest("", "v1", "Pod", "CREATE", `[1]`, "null")))},
		{name: "a request field of the wrong type", body: string(wrap("v1", strings.Replace(valid, `"uid":"u-1"`, `"uid":1`, 1)))},
		{name: "dryRun of the wrong type", body: string(wrap("v1", strings.Replace(valid, `"uid":"u-1"`, `"uid":"u-1","dryRun":"yes"`, 1)))},
		{name: "extra of the wrong type", body: string(wrap("v1", strings.Replace(valid, `{"username":"alice"}`, `{"extra":{"k":"v"}}`, 1)))},
		{name: "a field matched ignoring case", body: string(wrap("v1", strings.Replace(valid, `"operation"`, `"Operation"`, 1)))},
		{name: "a repeated object", body: string(wrap("v1", strings.Replace(valid, `"object":`, `"object":{},"object":`, 1)))},
		{name: "a repeated annotation is not a repeated field", body: string(wrap("v1", podRequest("", "v1", "Pod", "CREATE",
			`{"metadata":{"annotations":{"a":"1","a":"2"}},"spec":{"containers":[{"image":"registry.my.com/a:1"}]}}`, "null"))), wantOK: true},
		{name: "unknown version", body: string(wrap("v1alpha1", valid))},
		{name: "trailing data", body: string(wrap("v1", valid)) + ` {}`},
		{name: "empty", body: ``},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if ok := checkScan(t, p, []byte(tc.body)); ok != tc.wantOK {
				t.Errorf("scan ok = %v, want %v", ok, tc.wantOK)
			}
		})
	}
}

// FuzzScanAdmissionReview checks the one-pass scan against Decode and Input
// on arbitrary bodies: it never reads a body differently, nor accepts one
// Decode rejects, and Review answers exactly as Decode and Input would.
func FuzzScanAdmissionReview(f *testing.F) {
	for _, body := range goldenRequests(f) {
		var compact bytes.Buffer
		if json.Compact(&compact, body) == nil {
			f.Add(compact.Bytes()) // as the apiserver sends it; shorter to mutate
		}
	}
	f.Add(wrap("v1beta1", `{"uid":"u","kind":{"group":"batch","version":"v1","kind":"CronJob"},"operation":"UPDATE","userInfo":{"groups":["g"]},`+
		`"object":{"spec":{"jobTemplate":{"spec":{"template":{"spec":{"initContainers":[{"image":"a:1"}],"ephemeralContainers":[null]}}}}}},`+
		`"oldObject":{"template":null,"spec":{"template":{"metadata":null}}}}`))
	p := scanPolicy(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		checkScan(t, p, body)
	})
}

// FuzzScanLeanObject checks the scanner's reading of an object through the
// lean types against encoding/json's.
func FuzzScanLeanObject(f *testing.F) {
	for _, obj := range []string{
		`{"apiVersion":"v1","kind":"Pod","metadata":{"annotations":{"a":"b"}},"spec":{"initContainers":[{"name":"i","image":"i:1"}],"containers":[{"name":"a","image":"a:1"}],"ephemeralContainers":[],"volumes":[{"name":"v","image":{"reference":"v:1"}},{"name":"w","image":null}]}}`,
		`{"template":{"metadata":{},"spec":{"containers":[null]}},"spec":{"template":null,"jobTemplate":{"spec":{"template":{"spec":{}}}}}}`,
		`{"spec":{"Containers":[]}}`, `null`, `[]`,
	} {
		f.Add([]byte(obj))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		s := jsonscan.New(raw)
		got := scanLeanObject(&s)
		if !s.End() {
			return
		}
		var want leanObject
		if err := json.Unmarshal(raw, &want); err != nil {
			t.Fatalf("scan accepted %q, which encoding/json rejects: %v", raw, err)
		}
		if !reflect.DeepEqual(*got, want) {
			t.Fatalf("scan read %q as\n%#v\nencoding/json as\n%#v", raw, *got, want)
		}
	})
}

// BenchmarkReview compares Review, which scans what the apiserver sends,
// with Decode and Input, which read the review with encoding/json (and its
// object with the lean types' scan, as both do), on the load test's
// Deployment (4 KiB with managedFields).
func BenchmarkReview(b *testing.B) {
	body := goldenRequests(b)["deployment-create.request.json"]
	var compact bytes.Buffer
	if err := json.Compact(&compact, body); err != nil {
		b.Fatal(err)
	}
	body = compact.Bytes()
	p := scanPolicy(b)
	for _, bc := range []struct {
		name   string
		review func(*policy.Policy, []byte) (policy.Input, policy.Decision, Response, error)
	}{{"scan", Review}, {"Decode+Input", reviewDecoded}} {
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
