package admission_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/distribution/reference"
	jsonpatch "github.com/evanphx/json-patch/v5"

	"github.com/imagegate/imagegate/pkg/admission"
	"github.com/imagegate/imagegate/pkg/policy"
	"github.com/imagegate/imagegate/pkg/rewrite"
)

// mirrorPolicy allows registry.my.com and mirrors every other registry the
// tests use into it.
func mirrorPolicy(t testing.TB) *policy.Policy {
	t.Helper()
	p, err := policy.New(mirrorOptions())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mirrorOptions() policy.Options {
	return policy.Options{
		AllowedRegistries: []string{"registry.my.com"}, RejectLatest: true, AllowBreakGlass: true,
		Rewrites: []rewrite.Rule{
			{From: "docker.io", To: "registry.my.com/hub"},
			{From: "quay.io", To: "registry.my.com/quay"},
			{From: "registry.my.com.evil.io", To: "registry.my.com/evil"},
		},
	}
}

// Every image field of every kind is found at its JSON pointer, and the
// annotation goes where the pods will carry it.
func TestMutatePatchesEveryImageOfEveryKind(t *testing.T) {
	t.Parallel()
	p := mirrorPolicy(t)
	wantImages := []string{"/spec/initContainers/0/image", "/spec/containers/0/image", "/spec/containers/1/image", "/spec/ephemeralContainers/0/image", "/spec/volumes/1/image/reference"}
	tests := []struct {
		group, kind, object string
		// template is the JSON pointer of the pod template.
		template string
	}{
		{kind: "Pod", object: `{"metadata":{"name":"p"},"spec":` + podSpec + `}`},
		{kind: "PodTemplate", object: `{"template":{"metadata":{},"spec":` + podSpec + `}}`, template: "/template"},
		{kind: "ReplicationController", object: `{"spec":{"template":{"metadata":{"labels":{"a":"b"}},"spec":` + podSpec + `}}}`, template: "/spec/template"},
		{group: "apps", kind: "Deployment", object: `{"spec":{"template":{"metadata":{},"spec":` + podSpec + `}}}`, template: "/spec/template"},
		{group: "apps", kind: "ReplicaSet", object: `{"spec":{"template":{"metadata":{},"spec":` + podSpec + `}}}`, template: "/spec/template"},
		{group: "apps", kind: "StatefulSet", object: `{"spec":{"template":{"metadata":{},"spec":` + podSpec + `}}}`, template: "/spec/template"},
		{group: "apps", kind: "DaemonSet", object: `{"spec":{"template":{"metadata":{},"spec":` + podSpec + `}}}`, template: "/spec/template"},
		{group: "batch", kind: "Job", object: `{"spec":{"template":{"metadata":{},"spec":` + podSpec + `}}}`, template: "/spec/template"},
		{group: "batch", kind: "CronJob", object: `{"spec":{"jobTemplate":{"spec":{"template":{"metadata":{},"spec":` + podSpec + `}}}}}`, template: "/spec/jobTemplate/spec/template"},
	}
	for _, tc := range tests {
		t.Run(tc.kind, func(t *testing.T) {
			t.Parallel()
			body := review("v1", request(tc.group, "v1", tc.kind, "CREATE", tc.object, "null"))
			m, resp, err := admission.Mutate(p, body)
			if err != nil {
				t.Fatal(err)
			}
			var paths []string
			for _, rw := range m.Rewritten {
				paths = append(paths, strings.TrimPrefix(rw.Path, tc.template))
				if !strings.HasPrefix(rw.Path, tc.template+"/spec/") {
					t.Errorf("path %s is outside the template %s", rw.Path, tc.template)
				}
			}
			if strings.Join(paths, " ") != strings.Join(wantImages, " ") {
				t.Errorf("rewrote %v, want %v", paths, wantImages)
			}
			var ops []struct{ Op, Path string }
			if err := json.Unmarshal(resp.Response.Patch, &ops); err != nil {
				t.Fatal(err)
			}
			last := ops[len(ops)-1]
			wantAnnotation := tc.template + "/metadata/annotations"
			if tc.kind == "Pod" {
				wantAnnotation = "/metadata/annotations"
			}
			if last.Op != "add" || last.Path != wantAnnotation {
				t.Errorf("last operation %s %s, want add %s", last.Op, last.Path, wantAnnotation)
			}
		})
	}
}

// The mutating webhook rewrites what the rules match and leaves everything
// else, including every request it cannot read, allowed and unpatched.
func TestMutateLeavesAloneWhatNoRuleMatches(t *testing.T) {
	t.Parallel()
	p := mirrorPolicy(t)
	noMirrors := testPolicy(t, policy.ModeEnforce)
	qualifyOnly, err := policy.New(policy.Options{RequireFullyQualified: true})
	if err != nil {
		t.Fatal(err)
	}
	pod := func(images ...string) string {
		var cs []string
		for i, img := range images {
			cs = append(cs, `{"name":"c`+string(rune('0'+i))+`","image":"`+img+`"}`)
		}
		return `{"metadata":{},"spec":{"containers":[` + strings.Join(cs, ",") + `]}}`
	}
	tests := []struct {
		name   string
		policy *policy.Policy
		body   []byte
		// wantRewritten is how many images are rewritten; wantWarning a
		// part of a warning, "" for none.
		wantRewritten int
		wantWarning   string
	}{
		{name: "no rewrite rules at all", policy: noMirrors, body: review("v1", request("", "v1", "Pod", "CREATE", pod("nginx:1"), "null"))},
		{name: "images already allowed", policy: p, body: review("v1", request("", "v1", "Pod", "CREATE", pod("registry.my.com/a:1", "gcr.io/b:1"), "null"))},
		{name: "lookalike hosts are other registries", policy: p, body: review("v1", request("", "v1", "Pod", "CREATE", pod("docker.io.evil.io/x:1", "quay.io.evil/x:1"), "null"))},
		{name: "a mirror of a lookalike is a rule like any other", policy: p, body: review("v1", request("", "v1", "Pod", "CREATE", pod("registry.my.com.evil.io/x:1"), "null")), wantRewritten: 1, wantWarning: "registry.my.com/evil/x:1"},
		{name: "invalid references are left to the validating webhook", policy: p, body: review("v1", request("", "v1", "Pod", "CREATE", pod("Nginx:1", "", "nginx:1 "), "null"))},
		{name: "DELETE passes", policy: p, body: review("v1", request("", "v1", "Pod", "DELETE", "null", pod("nginx:1")))},
		{name: "an unknown kind passes with a warning", policy: p, body: review("v1", request("", "v1", "Service", "CREATE", `{}`, "null")), wantWarning: `imagegate cannot read apiVersion "v1" kind "Service"`},
		{name: "an undecodable object passes with a warning", policy: p, body: review("v1", request("", "v1", "Pod", "CREATE", `{"spec":{"containers":{}}}`, "null")), wantWarning: "cannot read request.object"},
		{name: "an UPDATE without an old object rewrites everything", policy: p, body: review("v1", request("", "v1", "Pod", "UPDATE", pod("nginx:1"), "null")), wantRewritten: 1},
		{name: "an UPDATE keeps the images the old object had", policy: p, body: review("v1", request("", "v1", "Pod", "UPDATE", pod("nginx:1", "nginx:2"), pod("nginx:1"))), wantRewritten: 1},
		{name: "an UPDATE with an undecodable old object passes with a warning", policy: p, body: review("v1", request("", "v1", "Pod", "UPDATE", pod("nginx:1"), `[]`)), wantWarning: "request.oldObject"},
		{name: "short names are qualified under --require-fully-qualified without rewrite rules", policy: qualifyOnly,
			body:          review("v1", request("", "v1", "Pod", "CREATE", pod("nginx:1", "library/busybox:1", "localhost:5000/a:1"), "null")),
			wantRewritten: 2, wantWarning: `to "docker.io/library/nginx:1" (rule "default" requires fully qualified references)`},
		{name: "a workload without a template passes", policy: p, body: review("v1", request("apps", "v1", "Deployment", "CREATE", `{"spec":{}}`, "null"))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, resp, err := admission.Mutate(tc.policy, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			r := resp.Response
			if !r.Allowed || r.UID != "u-1" {
				t.Errorf("reply allowed=%v uid=%q, want allowed with the request's uid", r.Allowed, r.UID)
			}
			if len(m.Rewritten) != tc.wantRewritten || (len(r.Patch) > 0) != (tc.wantRewritten > 0) || (r.PatchType != nil) != (tc.wantRewritten > 0) {
				t.Errorf("rewrote %d images (patch %s), want %d", len(m.Rewritten), r.Patch, tc.wantRewritten)
			}
			warnings := strings.Join(r.Warnings, "\n")
			if tc.wantWarning == "" && tc.wantRewritten == 0 && warnings != "" || !strings.Contains(warnings, tc.wantWarning) {
				t.Errorf("warnings %q, want one containing %q", warnings, tc.wantWarning)
			}
		})
	}
}

// A pod asking for break-glass keeps its images as written only when the
// validating path would honour that break-glass for the user who sent it;
// one it would refuse changes nothing, so the images are rewritten.
func TestMutateRewritesWhenBreakGlassWouldBeRefused(t *testing.T) {
	t.Parallel()
	rule := func(bg policy.BreakGlassOptions) *policy.Policy {
		bg.Enabled = true
		p, err := policy.Compile(policy.Spec{Default: policy.RuleOptions{
			AllowedRegistries: []string{"registry.my.com"}, BreakGlass: bg,
			Rewrites: []rewrite.Rule{{From: "docker.io", To: "registry.my.com/hub"}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	requireTicket := rule(policy.BreakGlassOptions{RequireTicket: true})
	onlyBob := rule(policy.BreakGlassOptions{AllowedUsers: []string{"bob"}})
	onlyAlice := rule(policy.BreakGlassOptions{AllowedUsers: []string{"alice"}})
	onlyOncall := rule(policy.BreakGlassOptions{AllowedGroups: []string{"oncall"}})
	maxAge := rule(policy.BreakGlassOptions{MaxAge: time.Hour})
	open := rule(policy.BreakGlassOptions{})
	tests := []struct {
		name   string
		policy *policy.Policy
		// annotations is the pod's annotations as JSON; groups the
		// requester's groups (the user is alice).
		annotations, groups string
		// wantKept is true when the images stay as written.
		wantKept bool
	}{
		{name: "no ticket under requireTicket is rewritten", policy: requireTicket, annotations: `{"ops.image-policy.k8s.io/break-glass":"true"}`},
		{name: "an invisible ticket under requireTicket is rewritten", policy: requireTicket, annotations: `{"ops.image-policy.k8s.io/break-glass":"true","ops.image-policy.k8s.io/ticket":"\u200b"}`},
		{name: "a ticket under requireTicket is kept", policy: requireTicket, annotations: `{"ops.image-policy.k8s.io/break-glass":"true","ops.image-policy.k8s.io/ticket":"INC-1"}`, wantKept: true},
		{name: "a user not allowed is rewritten", policy: onlyBob, annotations: `{"ops.image-policy.k8s.io/INC-1":"break-glass"}`},
		{name: "an allowed user is kept", policy: onlyAlice, annotations: `{"ops.image-policy.k8s.io/INC-1":"break-glass"}`, wantKept: true},
		{name: "a member of an allowed group is kept", policy: onlyOncall, groups: `["dev","oncall"]`, annotations: `{"ops.image-policy.k8s.io/INC-1":"break-glass"}`, wantKept: true},
		{name: "no member of an allowed group is rewritten", policy: onlyOncall, groups: `["dev"]`, annotations: `{"ops.image-policy.k8s.io/INC-1":"break-glass"}`},
		{name: "a missing expiry under maxAge is rewritten", policy: maxAge, annotations: `{"ops.image-policy.k8s.io/break-glass":"true"}`},
		{name: "an expired expiry is rewritten", policy: open, annotations: `{"ops.image-policy.k8s.io/break-glass":"true","ops.image-policy.k8s.io/expires":"2000-01-01T00:00:00Z"}`},
		{name: "a malformed expiry is rewritten", policy: open, annotations: `{"ops.image-policy.k8s.io/break-glass":"true","ops.image-policy.k8s.io/expires":"tomorrow"}`},
		{name: "break-glass honoured is kept", policy: open, annotations: `{"ops.image-policy.k8s.io/break-glass":"true"}`, wantKept: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req := request("", "v1", "Pod", "CREATE", `{"metadata":{"annotations":`+tc.annotations+`},"spec":{"containers":[{"name":"app","image":"nginx:1.25"}]}}`, "null")
			if tc.groups != "" {
				req = strings.Replace(req, `"userInfo":{"username":"alice"}`, `"userInfo":{"username":"alice","groups":`+tc.groups+`}`, 1)
			}
			m, resp, err := admission.Mutate(tc.policy, review("v1", req))
			if err != nil {
				t.Fatal(err)
			}
			if m.BreakGlass != tc.wantKept || m.Patched() == tc.wantKept || (len(resp.Response.Patch) > 0) == tc.wantKept {
				t.Errorf("got break-glass %v, %d images rewritten (patch %s); want break-glass %v and rewritten %v", m.BreakGlass, len(m.Rewritten), resp.Response.Patch, tc.wantKept, !tc.wantKept)
			}
			wantWarning := "imagegate rewrote container \"app\" image \"nginx:1.25\" to \"registry.my.com/hub/library/nginx:1.25\""
			if tc.wantKept {
				wantWarning = "the pod asks for break-glass, which keeps its images as written"
			}
			if got := strings.Join(resp.Response.Warnings, "\n"); !strings.Contains(got, wantWarning) {
				t.Errorf("got warnings %q, want one containing %q", got, wantWarning)
			}
		})
	}
}

// FuzzMutate feeds arbitrary bodies to the mutating adapter, seeded with the
// golden requests. It never panics and never refuses; every AdmissionReview
// gets an allowed reply in its own version with its uid; warnings are ones
// the apiserver forwards; a patch is sent exactly with a JSONPatch type,
// holds only replace operations on image fields with valid references
// under a mirror (pinned or not) and adds of metadata; and when it applies
// to the object, a second pass over the patched object rewrites and pins
// nothing.
func FuzzMutate(f *testing.F) {
	files, _ := filepath.Glob("../server/testdata/mutate/*.request.json")
	for _, file := range files {
		body, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body)
	}
	for _, op := range []string{"CREATE", "UPDATE"} {
		f.Add(review("v1", request("", "v1", "Pod", op, `{"metadata":{"annotations":{"imagegate.dev/original-images":"{\"c\":1}"}},"spec":`+podSpec+`}`, `{"spec":{"containers":[{"name":"app","image":"c:1"}]}}`)))
		f.Add(review("v1beta1", request("apps", "v1", "Deployment", op, `{"spec":{"template":{"spec":`+podSpec+`}}}`, "null")))
		f.Add(review("v1", request("batch", "v1", "CronJob", op, `{"spec":{"jobTemplate":{"spec":{"template":{"metadata":null,"spec":`+podSpec+`}}}}}`, "null")))
	}
	opts := mirrorOptions()
	opts.PinDigests = true
	p, err := policy.New(opts)
	if err != nil {
		f.Fatal(err)
	}
	var lookups atomic.Int64
	res := fakeResolver(&lookups)
	f.Fuzz(func(t *testing.T, body []byte) {
		m, resp, err := admission.MutateWith(t.Context(), p, res, body)
		if err != nil {
			return // not an AdmissionReview: the server answers 400
		}
		review, derr := admission.Decode(body)
		if derr != nil {
			t.Fatalf("Mutate answered a body Decode rejects: %v", derr)
		}
		r := resp.Response
		if resp.APIVersion != review.APIVersion || resp.Kind != admission.Kind || r == nil || !r.Allowed {
			t.Fatalf("reply %s %s %+v, want an allowed reply in the request's %s", resp.APIVersion, resp.Kind, r, review.APIVersion)
		}
		if review.Request != nil && r.UID != review.Request.UID {
			t.Fatalf("reply uid %q, want %q", r.UID, review.Request.UID)
		}
		if _, err := json.Marshal(resp); err != nil {
			t.Fatalf("reply does not encode: %v", err)
		}
		for _, w := range r.Warnings {
			if w == "" || len(w) > 400 || !utf8.ValidString(w) || strings.IndexFunc(w, unicode.IsControl) >= 0 {
				t.Fatalf("warning the apiserver would drop or cut: %q", w)
			}
		}
		if (len(r.Patch) > 0) != (r.PatchType != nil) || (len(r.Patch) > 0) != m.Patched() {
			t.Fatalf("patch %q with patch type %v for %d rewritten images", r.Patch, r.PatchType, len(m.Rewritten))
		}
		if len(r.Patch) == 0 {
			return
		}
		var ops []struct {
			Op, Path string
			Value    json.RawMessage
		}
		if err := json.Unmarshal(r.Patch, &ops); err != nil {
			t.Fatalf("patch is not a JSONPatch: %v", err)
		}
		for _, op := range ops {
			switch {
			case op.Op == "replace" && (strings.HasSuffix(op.Path, "/image") || strings.HasSuffix(op.Path, "/image/reference")):
				var img string
				if err := json.Unmarshal(op.Value, &img); err != nil {
					t.Fatalf("%s: value %s", op.Path, op.Value)
				}
				named, err := reference.ParseNormalizedNamed(img)
				if err != nil || reference.Domain(named) != "registry.my.com" {
					t.Fatalf("%s: rewritten to %q, not a reference under a mirror (%v)", op.Path, img, err)
				}
			case op.Op == "add" && strings.Contains(op.Path, "/metadata"):
			default:
				t.Fatalf("operation %s %s", op.Op, op.Path)
			}
		}
		patch, err := jsonpatch.DecodePatch(r.Patch)
		if err != nil {
			t.Fatalf("patch does not decode: %v", err)
		}
		patched, err := patch.Apply(review.Request.Object.Raw)
		if err != nil {
			// Only an object the apiserver never sends (keys in another
			// case, duplicate keys) reads differently from how it patches.
			return
		}
		again := *review.Request
		again.Object.Raw, again.Object.Object = patched, nil
		body2, err := json.Marshal(map[string]any{"apiVersion": review.APIVersion, "kind": "AdmissionReview", "request": &again})
		if err != nil {
			t.Fatal(err)
		}
		m2, _, err := admission.MutateWith(t.Context(), p, res, body2)
		if err != nil {
			t.Fatalf("the patched review does not decode: %v", err)
		}
		if len(m2.Rewritten) > 0 || len(m2.Pinned) > 0 {
			t.Fatalf("a second pass rewrote %v and pinned %v again", m2.Rewritten, m2.Pinned)
		}
	})
}
