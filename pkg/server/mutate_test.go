package server_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"

	"github.com/imagegate/imagegate/pkg/admission"
	"github.com/imagegate/imagegate/pkg/digest"
	"github.com/imagegate/imagegate/pkg/metrics"
	"github.com/imagegate/imagegate/pkg/policy"
	"github.com/imagegate/imagegate/pkg/server"
)

// mutateFixture serves testdata/mutate/policy.yaml, the policy every
// request under testdata/mutate is answered with, but those named
// *-require-fully-qualified (see mutateHandler).
func mutateFixture(t *testing.T) *fixture {
	return mutateFixtureFile(t, "testdata/mutate/policy.yaml", nil)
}

func mutateFixtureFile(t *testing.T, path string, edit func(*server.Options)) *fixture {
	t.Helper()
	f := newFixture(t, testPolicy, edit)
	p, warnings := compileFile(t, path)
	if len(warnings) > 0 {
		t.Fatalf("%s has warnings: %v", path, warnings)
	}
	f.active.Store(p)
	return f
}

// mutateHandlers returns a function that picks the handler for a golden
// request: testdata/mutate/policy-require-fully-qualified.yaml's for the
// requests named *-require-fully-qualified*, policy-pin-digests.yaml's,
// with pinResolver, for those named *-pin-digests*, policy.yaml's for the
// others.
func mutateHandlers(t *testing.T) func(reqFile string) http.Handler {
	t.Helper()
	h := mutateFixture(t).srv.Handler()
	fq := mutateFixtureFile(t, "testdata/mutate/policy-require-fully-qualified.yaml", nil).srv.Handler()
	pin := mutateFixtureFile(t, "testdata/mutate/policy-pin-digests.yaml", func(o *server.Options) {
		o.Resolver, o.PinTimeout = pinResolver, 3*time.Second
	}).srv.Handler()
	return func(reqFile string) http.Handler {
		switch {
		case strings.Contains(reqFile, "-require-fully-qualified"):
			return fq
		case strings.Contains(reqFile, "-pin-digests"):
			return pin
		}
		return h
	}
}

// pinResolver serves pinDigest(ref) for every tag under registry.my.com
// but those under registry.my.com/missing, so the golden replies are the
// same on every run; pkg/digest's tests ask a real registry.
var pinResolver = admission.ResolverFunc(func(_ context.Context, ref string) (string, error) {
	if !strings.HasPrefix(ref, "registry.my.com/") || strings.HasPrefix(ref, "registry.my.com/missing/") {
		return "", &digest.Error{Ref: ref, Outcome: metrics.DigestNotFound, Err: errors.New("HEAD https://registry.my.com/v2/...: unexpected status code 404 Not Found")}
	}
	return pinDigest(ref), nil
})

func pinDigest(ref string) string {
	sum := sha256.Sum256([]byte(ref))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// unpin returns ref without the digest pinResolver pinned it to, and
// whether it had that digest.
func unpin(ref string) (string, bool) {
	base, d, ok := strings.Cut(ref, "@")
	if !ok || d != pinDigest(base) {
		return ref, false
	}
	return base, true
}

// mutateReply is the part of a mutate reply the tests read.
type mutateReply struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Response   struct {
		UID       string   `json:"uid"`
		Allowed   bool     `json:"allowed"`
		PatchType *string  `json:"patchType"`
		Patch     []byte   `json:"patch"` // base64 on the wire
		Warnings  []string `json:"warnings"`
	} `json:"response"`
}

func parseMutateReply(t *testing.T, body []byte) mutateReply {
	t.Helper()
	var r mutateReply
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("not an AdmissionReview reply: %v: %s", err, body)
	}
	return r
}

// patchOp is one operation of a reply's JSONPatch.
type patchOp struct {
	Op    string          `json:"op"`
	Path  string          `json:"path"`
	Value json.RawMessage `json:"value"`
}

// TestMutateGolden pins the whole reply for each request under
// testdata/mutate byte for byte, and its JSONPatch, decoded, in
// NAME.patch.json. The name says what must happen: mutated-* carry a
// JSONPatch, unchanged-* none; every reply is allowed, in the request's
// version, with its uid. Run `go test ./pkg/server -run Golden -update` to
// regenerate on purpose, then review the diff.
func TestMutateGolden(t *testing.T) {
	t.Parallel()
	handler := mutateHandlers(t)
	requests, _ := filepath.Glob("testdata/mutate/*.request.json")
	if len(requests) < 25 {
		t.Fatalf("found %d golden requests, want the full set", len(requests))
	}
	for _, reqFile := range requests {
		name := strings.TrimSuffix(filepath.Base(reqFile), ".request.json")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			body, err := os.ReadFile(reqFile)
			if err != nil {
				t.Fatal(err)
			}
			rec := post(handler(reqFile), server.PathMutate+"?timeout=5s", "application/json", body)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d, want 200: %s", rec.Code, rec.Body)
			}
			checkGolden(t, rec, strings.TrimSuffix(reqFile, ".request.json")+".response.json")

			req, resp := parseHeader(t, body), parseMutateReply(t, rec.Body.Bytes())
			if resp.APIVersion != req.APIVersion || resp.Kind != "AdmissionReview" {
				t.Errorf("reply is %s %s, want the request's %s AdmissionReview", resp.APIVersion, resp.Kind, req.APIVersion)
			}
			if req.Request != nil && resp.Response.UID != req.Request.UID {
				t.Errorf("reply uid %q, want the request's %q", resp.Response.UID, req.Request.UID)
			}
			if !resp.Response.Allowed {
				t.Error("the mutating webhook refused a request; refusing is the validating path's job")
			}
			mutated := strings.HasPrefix(name, "mutated-")
			if got := len(resp.Response.Patch) > 0; got != mutated {
				t.Fatalf("%s: patch present = %v", name, got)
			}
			if mutated && (resp.Response.PatchType == nil || *resp.Response.PatchType != "JSONPatch") {
				t.Errorf("patchType = %v, want JSONPatch", resp.Response.PatchType)
			}
			if !mutated && resp.Response.PatchType != nil {
				t.Errorf("patchType %q without a patch", *resp.Response.PatchType)
			}
			patchFile := filepath.Join("testdata/mutate", name+".patch.json")
			if !mutated {
				if _, err := os.Stat(patchFile); err == nil {
					t.Errorf("%s exists, but the reply has no patch", patchFile)
				}
				return
			}
			checkGoldenJSON(t, "patch", resp.Response.Patch, patchFile)
		})
	}
}

// TestMutatePatchesApplyAndPassValidation applies each golden JSONPatch to
// its request's object, as the apiserver does, and checks the result: only
// image fields are replaced (with the rewrite of what was there) and the
// original-images annotation is the only other change and names every
// original; the validating webhook then allows the patched object (the
// mirror is on the whitelist); and a second /mutate of it, as on
// reinvocation, patches nothing.
func TestMutatePatchesApplyAndPassValidation(t *testing.T) {
	t.Parallel()
	handler := mutateHandlers(t)
	requests, _ := filepath.Glob("testdata/mutate/mutated-*.request.json")
	if len(requests) < 15 {
		t.Fatalf("found %d mutated-* requests, want the full set", len(requests))
	}
	for _, reqFile := range requests {
		t.Run(filepath.Base(reqFile), func(t *testing.T) {
			t.Parallel()
			h := handler(reqFile)
			body, err := os.ReadFile(reqFile)
			if err != nil {
				t.Fatal(err)
			}
			var review map[string]any
			if err := json.Unmarshal(body, &review); err != nil {
				t.Fatal(err)
			}
			request := review["request"].(map[string]any)
			object, err := json.Marshal(request["object"])
			if err != nil {
				t.Fatal(err)
			}
			resp := parseMutateReply(t, post(h, server.PathMutate, "application/json", body).Body.Bytes())
			patch, err := jsonpatch.DecodePatch(resp.Response.Patch)
			if err != nil {
				t.Fatalf("the reply's patch does not decode: %v: %s", err, resp.Response.Patch)
			}
			patched, err := patch.Apply(object)
			if err != nil {
				t.Fatalf("the reply's patch does not apply to the request's object: %v", err)
			}

			// What the patch did, operation by operation.
			var ops []patchOp
			if err := json.Unmarshal(resp.Response.Patch, &ops); err != nil {
				t.Fatal(err)
			}
			var originals []string
			annotationOps := 0
			for _, op := range ops {
				switch {
				case op.Op == "replace" && (strings.HasSuffix(op.Path, "/image") || strings.HasSuffix(op.Path, "/image/reference")):
					before := valueAt(t, object, op.Path)
					var after string
					if err := json.Unmarshal(op.Value, &after); err != nil {
						t.Fatalf("%s: value %s is not a string", op.Path, op.Value)
					}
					qualified, _ := policy.Normalize(before)
					base, pinned := unpin(after)
					rewritten := strings.HasPrefix(base, "registry.my.com/") || base == qualified
					if !rewritten && (!pinned || base != before) || after == before {
						t.Errorf("%s: %q replaced by %q, want its mirror, its qualified form, or either pinned", op.Path, before, after)
					}
					originals = append(originals, before)
				case op.Op == "add" && strings.Contains(op.Path, "/metadata"):
					annotationOps++
				default:
					t.Errorf("unexpected operation %s %s", op.Op, op.Path)
				}
			}
			if len(originals) == 0 {
				t.Fatal("the patch replaces no image")
			}
			ephemeral := request["subResource"] == "ephemeralcontainers"
			if want := map[bool]int{true: 0, false: 1}[ephemeral]; annotationOps != want {
				t.Errorf("%d annotation operations, want %d", annotationOps, want)
			}
			if !ephemeral {
				annotations := annotationsOf(t, patched, templatePointer(request))
				var recorded map[string]string
				if err := json.Unmarshal([]byte(annotations[admission.AnnotationOriginalImages]), &recorded); err != nil {
					t.Fatalf("annotation %s = %q: %v", admission.AnnotationOriginalImages, annotations[admission.AnnotationOriginalImages], err)
				}
				values := make([]string, 0, len(recorded))
				for _, v := range recorded {
					values = append(values, v)
				}
				for _, o := range originals {
					if !slices.Contains(values, o) {
						t.Errorf("annotation %v does not record the original %q", recorded, o)
					}
				}
				// Only images and the annotation changed.
				undo := unmarshal(t, patched)
				setAt(t, undo, templatePointer(request)+"/metadata", nil)
				orig := unmarshal(t, object)
				setAt(t, orig, templatePointer(request)+"/metadata", nil)
				for _, op := range ops {
					if op.Op == "replace" {
						setAt(t, undo, op.Path, nil)
						setAt(t, orig, op.Path, nil)
					}
				}
				if a, b := mustJSON(t, undo), mustJSON(t, orig); a != b {
					t.Errorf("the patch changed more than images and metadata:\n%s\n%s", a, b)
				}
			}

			// The patched object, sent again: validation allows it, and a
			// second rewrite finds nothing to do.
			request["object"] = json.RawMessage(patched)
			again, err := json.Marshal(review)
			if err != nil {
				t.Fatal(err)
			}
			v := post(h, server.PathValidate, "application/json", again)
			if h := parseHeader(t, v.Body.Bytes()); v.Code != 200 || h.Response == nil || !h.Response.Allowed {
				t.Errorf("validation of the patched object: %d %s", v.Code, v.Body)
			}
			second := parseMutateReply(t, post(h, server.PathMutate, "application/json", again).Body.Bytes())
			if len(second.Response.Patch) > 0 || !second.Response.Allowed {
				t.Errorf("a second /mutate of the patched object patched again: %s", second.Response.Patch)
			}
		})
	}
}

// templatePointer is the JSON pointer of the pod template in the request's
// object: the pod itself for a Pod.
func templatePointer(request map[string]any) string {
	switch request["kind"].(map[string]any)["kind"] {
	case "Pod":
		return ""
	case "PodTemplate":
		return "/template"
	case "CronJob":
		return "/spec/jobTemplate/spec/template"
	default:
		return "/spec/template"
	}
}

func unmarshal(t *testing.T, raw []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// walk follows a JSON pointer (no escapes needed for these paths) to the
// container of its last token.
func walk(t *testing.T, doc any, pointer string) (parent any, last string) {
	t.Helper()
	tokens := strings.Split(strings.TrimPrefix(pointer, "/"), "/")
	cur := doc
	for _, tok := range tokens[:len(tokens)-1] {
		switch c := cur.(type) {
		case map[string]any:
			cur = c[tok]
		case []any:
			i := 0
			for _, r := range tok {
				i = i*10 + int(r-'0')
			}
			cur = c[i]
		default:
			t.Fatalf("%s: cannot walk into %T", pointer, cur)
		}
	}
	return cur, tokens[len(tokens)-1]
}

func valueAt(t *testing.T, raw []byte, pointer string) string {
	t.Helper()
	parent, last := walk(t, unmarshal(t, raw), pointer)
	s, _ := parent.(map[string]any)[last].(string)
	return s
}

func setAt(t *testing.T, doc any, pointer string, v any) {
	t.Helper()
	parent, last := walk(t, doc, pointer)
	if m, ok := parent.(map[string]any); ok {
		m[last] = v
	}
}

func annotationsOf(t *testing.T, raw []byte, tmpl string) map[string]string {
	t.Helper()
	parent, last := walk(t, unmarshal(t, raw), tmpl+"/metadata/annotations")
	out := map[string]string{}
	if m, ok := parent.(map[string]any)[last].(map[string]any); ok {
		for k, v := range m {
			out[k], _ = v.(string)
		}
	}
	return out
}

// A mutating webhook never turns a request into an HTTP error except for a
// body that is not an AdmissionReview at all, like /validate.
func TestMutateRejectsWhatIsNotAReview(t *testing.T) {
	t.Parallel()
	h := mutateFixture(t).srv.Handler()
	tests := []struct {
		name, contentType, body string
		wantCode                int
	}{
		{name: "malformed JSON", contentType: "application/json", body: `{"apiVersion":`, wantCode: 400},
		{name: "an ImageReview", contentType: "application/json", body: `{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview"}`, wantCode: 400},
		{name: "not JSON", contentType: "text/plain", body: `{}`, wantCode: 415},
		{name: "too large", contentType: "application/json", body: `{"x":"` + strings.Repeat("a", server.MaxRequestBytes) + `"}`, wantCode: 413},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if rec := post(h, server.PathMutate, tc.contentType, []byte(tc.body)); rec.Code != tc.wantCode {
				t.Errorf("status %d, want %d: %s", rec.Code, tc.wantCode, rec.Body)
			}
		})
	}
	req := httptest.NewRequest(http.MethodGet, server.PathMutate, nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET %s: status %d, want 405", server.PathMutate, rec.Code)
	}
}

// One info line per rewritten image, and the metrics count the review as
// mutated and each image as rewritten.
func TestMutateLogsAndCountsEveryRewrite(t *testing.T) {
	t.Parallel()
	f := mutateFixture(t)
	body, err := os.ReadFile("testdata/mutate/mutated-pod-v1.request.json")
	if err != nil {
		t.Fatal(err)
	}
	if rec := post(f.srv.Handler(), server.PathMutate, "application/json", body); rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var lines []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(f.logged()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "image rewritten" {
			lines = append(lines, m)
		}
	}
	if len(lines) != 3 {
		t.Fatalf("%d 'image rewritten' lines, want 3 (init container, container, volume):\n%s", len(lines), f.logged())
	}
	first := lines[0]
	for k, want := range map[string]any{
		"level": "INFO", "endpoint": "mutate", "namespace": "shop", "kind": "Pod", "name": "web", "rule": "default",
		"source": "init container", "container": "setup", "image": "busybox:1.36", "rewritten": "registry.my.com/busybox:1.36",
		"mirror": "docker.io/library/busybox=registry.my.com/busybox",
	} {
		if first[k] != want {
			t.Errorf("log field %s = %v, want %v", k, first[k], want)
		}
	}
	reg := f.rec.Registry()
	if got := sumCounter(t, reg, "imagegate_image_rewrites_total"); got != 3 {
		t.Errorf("imagegate_image_rewrites_total = %v, want 3", got)
	}
}
