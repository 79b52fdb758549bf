package admission_test

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	admissionv1 "k8s.io/api/admission/v1"
	admissionv1beta1 "k8s.io/api/admission/v1beta1"

	"github.com/imagegate/imagegate/pkg/admission"
	"github.com/imagegate/imagegate/pkg/policy"
)

func testPolicy(t testing.TB, mode policy.Mode) *policy.Policy {
	t.Helper()
	p, err := policy.New(policy.Options{AllowedRegistries: []string{"registry.my.com"}, RejectLatest: true, AllowBreakGlass: true, Mode: mode})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// review wraps a request (JSON) in an AdmissionReview of version.
func review(version, request string) []byte {
	return []byte(`{"apiVersion":"admission.k8s.io/` + version + `","kind":"AdmissionReview","request":` + request + `}`)
}

// request builds a request JSON for kind (group/version/kind) and operation
// with the given object and old object (JSON, or "null").
func request(group, version, kind, operation, object, oldObject string) string {
	return `{"uid":"u-1","kind":{"group":"` + group + `","version":"` + version + `","kind":"` + kind + `"},` +
		`"resource":{"group":"` + group + `","version":"` + version + `","resource":"` + strings.ToLower(kind) + `s"},` +
		`"namespace":"team-a","operation":"` + operation + `","userInfo":{"username":"alice"},"object":` + object + `,"oldObject":` + oldObject + `}`
}

func TestDecode(t *testing.T) {
	t.Parallel()
	valid := string(review("v1", request("", "v1", "Pod", "CREATE", `{"spec":{"containers":[{"name":"a","image":"a:1"}]}}`, "null")))
	tests := []struct {
		name    string
		body    string
		wantErr string // empty: must decode
		wantReq bool   // a request must come out
	}{
		{name: "v1 review", body: valid, wantReq: true},
		{name: "v1beta1 review", body: strings.Replace(valid, "admission.k8s.io/v1", "admission.k8s.io/v1beta1", 1), wantReq: true},
		{name: "unknown fields are tolerated", body: strings.Replace(valid, `"uid"`, `"future":{"x":1},"uid"`, 1), wantReq: true},
		{name: "missing request is not an error", body: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`},
		{name: "null request is not an error", body: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":null}`},
		{name: "empty", body: ``, wantErr: "decode AdmissionReview: empty body"},
		{name: "truncated", body: valid[:40], wantErr: "unexpected EOF"},
		{name: "syntax error gives the offset", body: `{"apiVersion" 1}`, wantErr: "at byte 15"},
		{name: "two objects", body: valid + ` {}`, wantErr: "unexpected data after the JSON object"},
		{name: "not an object", body: `[]`, wantErr: "cannot unmarshal array"},
		{name: "unknown version", body: strings.Replace(valid, "admission.k8s.io/v1", "admission.k8s.io/v1alpha1", 1), wantErr: `got apiVersion "admission.k8s.io/v1alpha1" and kind "AdmissionReview"`},
		{name: "wrong kind", body: `{"apiVersion":"admission.k8s.io/v1","kind":"ImageReview"}`, wantErr: `kind "ImageReview"`},
		{name: "missing type", body: `{"request":{}}`, wantErr: `got apiVersion "" and kind ""`},
		{name: "request is a string", body: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":"x"}`, wantErr: "decode AdmissionReview request: json: cannot unmarshal string"},
		{name: "uid is a number in v1beta1", body: `{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":1}}`, wantErr: "decode AdmissionReview request"},
		{name: "a type matched only ignoring case is no type", body: `{"ApiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, wantErr: `got apiVersion "" and kind "AdmissionReview"`},
		{name: "a request matched only ignoring case is no request", body: strings.Replace(valid, `"request"`, `"Request"`, 1)},
		{name: "a repeated member name", body: strings.Replace(valid, `"uid":"u-1"`, `"uid":"u-1","uid":"u-2"`, 1), wantErr: `decode AdmissionReview: jsontext: duplicate object member name "uid" within "/request"`},
		{name: "a repeated name in an object", body: strings.Replace(valid, `"image":"a:1"`, `"image":"a:1","image":"b:1"`, 1), wantErr: `duplicate object member name "image" within "/request/object/spec/containers/0"`},
		{name: "invalid UTF-8", body: strings.Replace(valid, `"u-1"`, "\"u-\xff\"", 1), wantErr: `decode AdmissionReview: jsontext: invalid UTF-8 within "/request/uid"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := admission.Decode([]byte(tc.body))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Decode: %v", err)
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("Decode error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if (got.Request != nil) != tc.wantReq {
				t.Errorf("Request = %+v, want present=%v", got.Request, tc.wantReq)
			}
		})
	}
}

// The v1beta1 conversion copies fields one by one; this fails when either
// version gains a field, so the copy can be extended.
func TestV1beta1RequestConvertsEveryField(t *testing.T) {
	t.Parallel()
	fields := func(v any) []string {
		var out []string
		typ := reflect.TypeOf(v)
		for i := range typ.NumField() {
			out = append(out, typ.Field(i).Name+" "+typ.Field(i).Tag.Get("json"))
		}
		return out
	}
	if v1, v1beta1 := fields(admissionv1.AdmissionRequest{}), fields(admissionv1beta1.AdmissionRequest{}); !slices.Equal(v1, v1beta1) {
		t.Fatalf("AdmissionRequest fields differ between versions:\nv1      %v\nv1beta1 %v", v1, v1beta1)
	}
	full := `{"uid":"u-9","kind":{"group":"apps","version":"v1","kind":"Deployment"},"resource":{"group":"apps","version":"v1","resource":"deployments"},` +
		`"subResource":"status","requestKind":{"group":"apps","version":"v1beta2","kind":"Deployment"},"requestResource":{"group":"apps","version":"v1beta2","resource":"deployments"},` +
		`"requestSubResource":"status","name":"web","namespace":"team-a","operation":"UPDATE","userInfo":{"username":"alice","uid":"1","groups":["g"],"extra":{"k":["v"]}},` +
		`"object":{"a":1},"oldObject":{"b":2},"dryRun":true,"options":{"kind":"UpdateOptions"}}`
	v1, err := admission.Decode(review("v1", full))
	if err != nil {
		t.Fatal(err)
	}
	v1beta1, err := admission.Decode(review("v1beta1", full))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(v1.Request, v1beta1.Request) {
		t.Errorf("v1beta1 request converted to\n%+v\nwant the v1 decoding\n%+v", v1beta1.Request, v1.Request)
	}
	if v1beta1.APIVersion != admission.APIVersionV1beta1 {
		t.Errorf("APIVersion = %q, want the version sent", v1beta1.APIVersion)
	}
}

// podSpec has one image in each place a pod can name one.
const podSpec = `{"initContainers":[{"name":"setup","image":"i:1"}],"containers":[{"name":"app","image":"c:1"},{"name":"side","image":"c:2"}],` +
	`"ephemeralContainers":[{"name":"debug","image":"e:1"}],"volumes":[{"name":"cfg","configMap":{"name":"x"}},{"name":"data","image":{"reference":"v:1"}}]}`

var allImages = []policy.Image{
	{Container: "setup", Source: admission.SourceInitContainer, Ref: "i:1"},
	{Container: "app", Ref: "c:1"},
	{Container: "side", Ref: "c:2"},
	{Container: "debug", Source: admission.SourceEphemeralContainer, Ref: "e:1"},
	{Container: "data", Source: admission.SourceVolume, Ref: "v:1"},
}

func TestInputReadsEveryKind(t *testing.T) {
	t.Parallel()
	tmpl := `{"metadata":{"annotations":{"x.image-policy.k8s.io/from":"template"}},"spec":` + podSpec + `}`
	workload := `"metadata":{"annotations":{"x.image-policy.k8s.io/from":"workload"}},"spec":{"template":` + tmpl + `}}`
	tests := []struct {
		group, kind string
		object      string // the whole object
	}{
		{kind: "Pod", object: `{"metadata":{"annotations":{"x.image-policy.k8s.io/from":"template"}},"spec":` + podSpec + `}`},
		{kind: "PodTemplate", object: `{"metadata":{"annotations":{"x.image-policy.k8s.io/from":"workload"}},"template":` + tmpl + `}`},
		{kind: "ReplicationController", object: `{` + workload},
		{group: "apps", kind: "Deployment", object: `{` + workload},
		{group: "apps", kind: "ReplicaSet", object: `{` + workload},
		{group: "apps", kind: "StatefulSet", object: `{` + workload},
		{group: "apps", kind: "DaemonSet", object: `{` + workload},
		{group: "batch", kind: "Job", object: `{` + workload},
		{group: "batch", kind: "CronJob", object: `{"metadata":{"annotations":{"x.image-policy.k8s.io/from":"workload"}},"spec":{"jobTemplate":{"spec":{"template":` + tmpl + `}}}}`},
	}
	for _, tc := range tests {
		t.Run(tc.kind, func(t *testing.T) {
			t.Parallel()
			for _, version := range []string{"v1", "v1beta1"} {
				r, err := admission.Decode(review(version, request(tc.group, "v1", tc.kind, "CREATE", tc.object, "null")))
				if err != nil {
					t.Fatal(err)
				}
				in, judge, err := admission.Input(r.Request)
				if err != nil || !judge {
					t.Fatalf("%s: Input = judge %v, err %v; want a judgement", version, judge, err)
				}
				if !slices.Equal(in.Images, allImages) {
					t.Errorf("%s: images = %+v\nwant %+v", version, in.Images, allImages)
				}
				// Break-glass is read where the pods carry it.
				if in.Namespace != "team-a" || in.Annotations["x.image-policy.k8s.io/from"] != "template" {
					t.Errorf("%s: namespace %q, annotations %v; want team-a and the pod template's", version, in.Namespace, in.Annotations)
				}
			}
		})
	}
}

func TestInputOnUpdateJudgesOnlyNewImages(t *testing.T) {
	t.Parallel()
	deployment := func(images ...string) string {
		var cs []string
		for i, img := range images {
			cs = append(cs, `{"name":"c`+string(rune('0'+i))+`","image":"`+img+`"}`)
		}
		return `{"apiVersion":"apps/v1","kind":"Deployment","spec":{"template":{"spec":{"containers":[` + strings.Join(cs, ",") + `]}}}}`
	}
	tests := []struct {
		name      string
		old, new  string
		wantJudge bool
		wantRefs  []string
	}{
		{name: "unchanged images pass", old: deployment("nginx:1.25", "a:1"), new: deployment("nginx:1.25", "a:1")},
		{name: "a removed image passes", old: deployment("nginx:1.25", "a:1"), new: deployment("nginx:1.25")},
		{name: "an image moved to another container is not new", old: deployment("nginx:1.25", "a:1"), new: deployment("a:1", "nginx:1.25")},
		{name: "a changed image is judged", old: deployment("nginx:1.25"), new: deployment("nginx:1.27"), wantJudge: true, wantRefs: []string{"nginx:1.27"}},
		{name: "only the added image is judged", old: deployment("nginx:1.25"), new: deployment("nginx:1.25", "b:2"), wantJudge: true, wantRefs: []string{"b:2"}},
		{name: "without an old object every image is judged", old: "null", new: deployment("nginx:1.25"), wantJudge: true, wantRefs: []string{"nginx:1.25"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := admission.Decode(review("v1", request("apps", "v1", "Deployment", "UPDATE", tc.new, tc.old)))
			if err != nil {
				t.Fatal(err)
			}
			in, judge, err := admission.Input(r.Request)
			if err != nil {
				t.Fatal(err)
			}
			var refs []string
			for _, img := range in.Images {
				refs = append(refs, img.Ref)
			}
			if judge != tc.wantJudge || !slices.Equal(refs, tc.wantRefs) {
				t.Errorf("Input = judge %v, images %v; want judge %v, images %v", judge, refs, tc.wantJudge, tc.wantRefs)
			}
		})
	}
}

func TestInputFailsClosed(t *testing.T) {
	t.Parallel()
	pod := `{"spec":{"containers":[{"name":"a","image":"registry.my.com/a:1"}]}}`
	tests := []struct {
		name    string
		req     string
		wantErr string
	}{
		{name: "unknown kind", req: request("example.com", "v1", "Widget", "CREATE", `{}`, "null"), wantErr: `imagegate cannot read apiVersion "example.com/v1" kind "Widget" (resource "widgets.example.com")`},
		{name: "known kind at an unknown version", req: request("batch", "v1beta1", "CronJob", "CREATE", `{}`, "null"), wantErr: `apiVersion "batch/v1beta1" kind "CronJob"`},
		{name: "unknown operation", req: request("", "v1", "Pod", "APPLY", pod, "null"), wantErr: `operation "APPLY" is not one imagegate knows`},
		{name: "missing object", req: request("", "v1", "Pod", "CREATE", "null", "null"), wantErr: `request.object is missing from a CREATE of apiVersion "v1" kind "Pod"`},
		{name: "object is not an object", req: request("", "v1", "Pod", "CREATE", `"nginx"`, "null"), wantErr: `cannot read request.object as apiVersion "v1" kind "Pod": json: cannot unmarshal string`},
		{name: "old object does not decode", req: request("", "v1", "Pod", "UPDATE", pod, `{"spec":{"containers":{}}}`), wantErr: `cannot read request.oldObject as apiVersion "v1" kind "Pod"`},
		{name: "object of another kind", req: request("", "v1", "Pod", "CREATE", `{"apiVersion":"apps/v1","kind":"Deployment"}`, "null"), wantErr: `request.object is apiVersion "apps/v1" kind "Deployment", but request.kind is apiVersion "v1" kind "Pod"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var in policy.Input
			var d policy.Decision
			resp, err := admission.Review(testPolicy(t, policy.ModeWarn), review("v1", tc.req), &in, &d)
			if err != nil {
				t.Fatalf("Review: %v; want an answer", err)
			}
			if d.Allowed || resp.Response.Allowed || resp.Response.Result == nil || resp.Response.Result.Code != 403 {
				t.Fatalf("response = %+v, want a 403 denial even in warn mode", resp.Response)
			}
			if msg := resp.Response.Result.Message; !strings.Contains(msg, tc.wantErr) {
				t.Errorf("message = %q, want it to contain %q", msg, tc.wantErr)
			}
			if resp.Response.UID != "u-1" {
				t.Errorf("uid = %q, want the request's u-1", resp.Response.UID)
			}
		})
	}
}

func TestReviewPassesDeleteAndConnect(t *testing.T) {
	t.Parallel()
	for _, op := range []string{"DELETE", "CONNECT"} {
		var in policy.Input
		var d policy.Decision
		resp, err := admission.Review(testPolicy(t, policy.ModeEnforce), review("v1beta1", request("", "v1", "Pod", op, "null", `{"spec":{"containers":[{"name":"a","image":"nginx"}]}}`)), &in, &d)
		if err != nil || !d.Allowed || !resp.Response.Allowed || resp.APIVersion != admission.APIVersionV1beta1 {
			t.Errorf("%s: err %v, response %+v; want a v1beta1 allow", op, err, resp)
		}
	}
}

func TestWarnings(t *testing.T) {
	t.Parallel()
	many := make([]policy.Violation, 12)
	for i := range many {
		many[i] = policy.Violation{Container: "c", Image: "nginx:" + strings.Repeat("1", i+1), Check: policy.CheckRegistry, Message: "registry docker.io is not allowed"}
	}
	long := []policy.Violation{{Container: "c", Image: "x", Check: policy.CheckRegistry, Message: strings.Repeat("é", 400)}}
	tests := []struct {
		name string
		d    policy.Decision
		want []string // prefixes of each warning, in order
	}{
		{name: "a clean allow has none", d: policy.Decision{Allowed: true, Outcome: policy.OutcomeAllowed}},
		{name: "a denial has none", d: policy.Decision{Outcome: policy.OutcomeDenied, Violations: many[:1]}},
		{name: "warn mode has one per violation", d: policy.Decision{Allowed: true, Outcome: policy.OutcomeWarned, Violations: many[:2]},
			want: []string{`imagegate warn mode, not enforced: container "c" image "nginx:1": registry`, `imagegate warn mode, not enforced: container "c" image "nginx:11": registry`}},
		{name: "break-glass says so first, with the ticket sanitised",
			d:    policy.Decision{Allowed: true, Outcome: policy.OutcomeBreakGlass, Violations: many[:1], BreakGlass: policy.BreakGlass{Requested: true, Tickets: []string{"INC-1\n\x00"}}},
			want: []string{"imagegate: break-glass (ticket INC-1\uFFFD\uFFFD) bypassed the image policy", `imagegate break-glass overrode: container "c" image "nginx:1"`}},
		{name: "too many violations are summarised", d: policy.Decision{Allowed: true, Outcome: policy.OutcomeWarned, Violations: many},
			want: []string{"imagegate warn", "imagegate warn", "imagegate warn", "imagegate warn", "imagegate warn", "imagegate warn", "imagegate warn", "imagegate warn", "imagegate: 4 more violations are not shown"}},
		{name: "a long violation is cut on a rune boundary", d: policy.Decision{Allowed: true, Outcome: policy.OutcomeWarned, Violations: long},
			want: []string{`imagegate warn mode, not enforced: container "c" image "x": éé`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := admission.Warnings(&tc.d)
			if len(got) != len(tc.want) {
				t.Fatalf("Warnings = %q, want %d of them", got, len(tc.want))
			}
			for i, w := range got {
				if !strings.HasPrefix(w, tc.want[i]) {
					t.Errorf("warning %d = %q, want prefix %q", i, w, tc.want[i])
				}
				if len(w) > 400 || !utf8.ValidString(w) {
					t.Errorf("warning %d is %d bytes or invalid UTF-8: %q", i, len(w), w)
				}
			}
		})
	}
}

func TestResponseJSON(t *testing.T) {
	t.Parallel()
	resp, err := admission.Review(testPolicy(t, policy.ModeEnforce), review("v1", request("", "v1", "Pod", "CREATE", `{"spec":{"containers":[{"name":"app","image":"nginx:1.25"}]}}`, "null")), new(policy.Input), new(policy.Decision))
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"u-1","allowed":false,"status":{"metadata":{},"status":"Failure",` +
		`"message":"container \"app\" image \"nginx:1.25\": registry docker.io is not allowed (allowed: registry.my.com); push or mirror the image to an allowed registry and use that reference",` +
		`"reason":"Forbidden","code":403}}}`
	if string(got) != want {
		t.Errorf("reply =\n%s\nwant\n%s", got, want)
	}
}
