package admission

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/pkg/wirejson"

	jsonv2 "github.com/go-json-experiment/json"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"

	"github.com/imagegate/imagegate/pkg/policy"
)

// goldenRequests are the golden AdmissionReview requests, the load test's
// Deployment and the examples: what the apiserver sends, and some requests
// it never would.
func goldenRequests(t testing.TB) map[string][]byte {
	t.Helper()
	var files []string
	for _, glob := range []string{"../server/testdata/admission/*.request.json", "../server/testdata/mutate/*.request.json", "../server/testdata/bench/*.request.json", "../../examples/admission/*.json"} {
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

func internalPolicy(t testing.TB) *policy.Policy {
	t.Helper()
	p, err := policy.New(policy.Options{AllowedRegistries: []string{"registry.my.com"}, RejectLatest: true, AllowBreakGlass: true})
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

// reviewDecoded is Review in two steps: Decode, which keeps the objects'
// bytes, then Input, which reads them.
func reviewDecoded(p *policy.Policy, body []byte) (policy.Input, policy.Decision, Response, error) {
	review, err := Decode(body)
	if err != nil {
		return policy.Input{}, policy.Decision{}, Response{}, err
	}
	in, judge, err := Input(review.Request)
	var d policy.Decision
	switch {
	case err != nil:
		d = p.Refuse(in.Namespace, err.Error())
	case judge:
		d = p.Evaluate(in)
	default:
		d = p.Pass(in.Namespace)
	}
	return in, d, NewResponse(review, &d), nil
}

// checkOnePass checks that Review, which decodes a review and its objects
// in one pass (decodeReview), answers body exactly as Decode and Input do,
// and reports whether the one pass read it.
func checkOnePass(t *testing.T, p *policy.Policy, body []byte) (onePass bool) {
	t.Helper()
	var w wireReview
	onePass = jsonv2.Unmarshal(body, &w, wirejson.Options) == nil
	var gotIn policy.Input
	var gotD policy.Decision
	gotResp, gotErr := Review(p, body, &gotIn, &gotD)
	wantIn, wantD, wantResp, wantErr := reviewDecoded(p, body)
	if (gotErr == nil) != (wantErr == nil) || gotErr != nil && gotErr.Error() != wantErr.Error() {
		t.Fatalf("Review error %v, Decode and Input's %v, for %q", gotErr, wantErr, body)
	}
	if !reflect.DeepEqual(gotIn, wantIn) || !reflect.DeepEqual(gotD, wantD) || !reflect.DeepEqual(gotResp, wantResp) {
		t.Fatalf("Review answered %q with\n%#v\n%#v\n%#v\nDecode and Input with\n%#v\n%#v\n%#v", body, gotIn, gotD, gotResp, wantIn, wantD, wantResp)
	}
	return onePass
}

func TestOnePassReadsWhatTheAPIServerSends(t *testing.T) {
	t.Parallel()
	p := internalPolicy(t)
	// Requests the apiserver would not send, which Decode and Input read
	// (and deny) instead.
	twoSteps := map[string]bool{
		"denied-undecodable-object.request.json":    true, // an image that is a number
		"unchanged-undecodable-object.request.json": true,
	}
	for name, body := range goldenRequests(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if onePass := checkOnePass(t, p, body); onePass == twoSteps[name] {
				t.Errorf("read in one pass = %v, want %v", onePass, !twoSteps[name])
			}
		})
	}
}

// BenchmarkReview compares Review, which decodes the review and its object
// in one pass, with Decode and Input, which decode the review keeping the
// object's bytes and then read them, on the load test's Deployment (4 KiB
// with managedFields), compact as the apiserver sends it.
func BenchmarkReview(b *testing.B) {
	body := goldenRequests(b)["deployment-create.request.json"]
	var compact bytes.Buffer
	if err := json.Compact(&compact, body); err != nil {
		b.Fatal(err)
	}
	body = compact.Bytes()
	p := internalPolicy(b)
	for _, bc := range []struct {
		name   string
		review func(*policy.Policy, []byte) (policy.Input, policy.Decision, Response, error)
	}{{"one-pass", func(p *policy.Policy, body []byte) (in policy.Input, d policy.Decision, resp Response, err error) {
		resp, err = Review(p, body, &in, &d)
		return in, d, resp, err
	}}, {"Decode+Input", reviewDecoded}} {
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

func TestOnePassAnswersAsDecodeAndInput(t *testing.T) {
	t.Parallel()
	p := internalPolicy(t)
	pod := `{"spec":{"containers":[{"name":"a","image":"registry.my.com/a:1"}]}}`
	valid := podRequest("", "v1", "Pod", "CREATE", pod, "null")
	tests := []struct {
		name        string
		body        string
		wantOnePass bool // false: Decode and Input read it, or say what is wrong
	}{
		{name: "v1", body: string(wrap("v1", valid)), wantOnePass: true},
		{name: "v1beta1", body: string(wrap("v1beta1", valid)), wantOnePass: true},
		{name: "no request", body: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, wantOnePass: true},
		{name: "every request field", body: string(wrap("v1", strings.Replace(valid, `"uid":"u-1"`,
			`"uid":"u-1","subResource":"s","requestKind":{"group":"","version":"v1","kind":"Pod"},"requestResource":null,"requestSubResource":"","name":"n",`+
				`"dryRun":true,"options":{"kind":"CreateOptions"},"future":[1]`, 1))), wantOnePass: true},
		{name: "every userInfo field", body: string(wrap("v1", strings.Replace(valid, `{"username":"alice"}`,
			`{"username":"alice","uid":"1","groups":["a",null],"extra":{"k":["v"],"l":null}}`, 1))), wantOnePass: true},
		{name: "an update", body: string(wrap("v1", podRequest("apps", "v1", "Deployment", "UPDATE",
			`{"spec":{"template":{"metadata":{"annotations":{"a":"b"}},"spec":{"containers":[{"name":"a","image":"registry.my.com/a:2"}]}}}}`,
			`{"spec":{"template":{"spec":{"containers":[{"name":"a","image":"registry.my.com/a:1"}],"volumes":[{"name":"v","image":{"reference":"x"}},{"name":"w"}]}}}}`))), wantOnePass: true},
		{name: "an object of another kind", body: string(wrap("v1", podRequest("", "v1", "Service", "CREATE", `{"spec":{"ports":[]}}`, "null"))), wantOnePass: true},
		{name: "a response", body: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"u"}}`, wantOnePass: true},
		{name: "fields matched only ignoring case are not read", body: string(wrap("v1", strings.Replace(strings.Replace(valid, `"operation"`, `"Operation"`, 1), `"image"`, `"Image"`, 1))), wantOnePass: true},
		{name: "an object the lean types cannot read", body: string(wrap("v1", podRequest("", "v1", "Pod", "CREATE", `{"spec":{"containers":"no"}}`, "null")))},
		{name: "an object that is not an object", body: string(wrap("v1", podRequest("", "v1", "Pod", "CREATE", `[1]`, "null")))},
		{name: "an unreadable object of another kind", body: string(wrap("v1", podRequest("", "v1", "Service", "CREATE", `[1]`, "null")))},
		{name: "a request field of the wrong type", body: string(wrap("v1", strings.Replace(valid, `"uid":"u-1"`, `"uid":1`, 1)))},
		{name: "dryRun of the wrong type", body: string(wrap("v1", strings.Replace(valid, `"uid":"u-1"`, `"uid":"u-1","dryRun":"yes"`, 1)))},
		{name: "extra of the wrong type", body: string(wrap("v1", strings.Replace(valid, `{"username":"alice"}`, `{"extra":{"k":"v"}}`, 1)))},
		{name: "a repeated object", body: string(wrap("v1", strings.Replace(valid, `"object":`, `"object":{},"object":`, 1)))},
		{name: "a repeated annotation", body: string(wrap("v1", podRequest("", "v1", "Pod", "CREATE",
			`{"metadata":{"annotations":{"a":"1","a":"2"}},"spec":{"containers":[{"image":"registry.my.com/a:1"}]}}`, "null")))},
		{name: "invalid UTF-8 in an object", body: string(wrap("v1", podRequest("", "v1", "Pod", "CREATE", "{\"metadata\":{\"name\":\"\xff\"}}", "null")))},
		{name: "unknown version", body: string(wrap("v1alpha1", valid)), wantOnePass: true}, // decoded, then refused
		{name: "trailing data", body: string(wrap("v1", valid)) + ` {}`},
		{name: "empty", body: ``},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if onePass := checkOnePass(t, p, []byte(tc.body)); onePass != tc.wantOnePass {
				t.Errorf("read in one pass = %v, want %v", onePass, tc.wantOnePass)
			}
		})
	}
}

// typedTemplates read an object of each kind into the k8s.io/api types as
// the kube-apiserver decodes JSON (sigs.k8s.io/json: case-sensitive, a
// repeated name's last value wins), and return its pod template.
var typedTemplates = map[metav1.GroupVersionKind]func([]byte) (*corev1.PodTemplateSpec, error){
	v1("", "Pod"): typed(func(p *corev1.Pod) *corev1.PodTemplateSpec {
		return &corev1.PodTemplateSpec{ObjectMeta: p.ObjectMeta, Spec: p.Spec}
	}),
	v1("", "PodTemplate"):           typed(func(t *corev1.PodTemplate) *corev1.PodTemplateSpec { return &t.Template }),
	v1("", "ReplicationController"): typed(func(rc *corev1.ReplicationController) *corev1.PodTemplateSpec { return rc.Spec.Template }),
	v1("apps", "Deployment"):        typed(func(d *appsv1.Deployment) *corev1.PodTemplateSpec { return &d.Spec.Template }),
	v1("apps", "ReplicaSet"):        typed(func(r *appsv1.ReplicaSet) *corev1.PodTemplateSpec { return &r.Spec.Template }),
	v1("apps", "StatefulSet"):       typed(func(s *appsv1.StatefulSet) *corev1.PodTemplateSpec { return &s.Spec.Template }),
	v1("apps", "DaemonSet"):         typed(func(d *appsv1.DaemonSet) *corev1.PodTemplateSpec { return &d.Spec.Template }),
	v1("batch", "Job"):              typed(func(j *batchv1.Job) *corev1.PodTemplateSpec { return &j.Spec.Template }),
	v1("batch", "CronJob"): typed(func(c *batchv1.CronJob) *corev1.PodTemplateSpec {
		return &c.Spec.JobTemplate.Spec.Template
	}),
}

func typed[T any](template func(*T) *corev1.PodTemplateSpec) func([]byte) (*corev1.PodTemplateSpec, error) {
	return func(raw []byte) (*corev1.PodTemplateSpec, error) {
		obj := new(T)
		if err := sigsjson.UnmarshalCaseSensitivePreserveInts(raw, obj); err != nil {
			return nil, err
		}
		return template(obj), nil
	}
}

// typedImages lists the images of a typed pod template as the kubelet
// starts them: init containers, containers, ephemeral containers, then
// image volumes.
func typedImages(tmpl *corev1.PodTemplateSpec) []policy.Image {
	if tmpl == nil {
		return nil
	}
	var out []policy.Image
	for _, c := range tmpl.Spec.InitContainers {
		out = append(out, policy.Image{Container: c.Name, Source: SourceInitContainer, Ref: c.Image})
	}
	for _, c := range tmpl.Spec.Containers {
		out = append(out, policy.Image{Container: c.Name, Ref: c.Image})
	}
	for _, c := range tmpl.Spec.EphemeralContainers {
		out = append(out, policy.Image{Container: c.Name, Source: SourceEphemeralContainer, Ref: c.Image})
	}
	for _, v := range tmpl.Spec.Volumes {
		if v.Image != nil {
			out = append(out, policy.Image{Container: v.Name, Source: SourceVolume, Ref: v.Image.Reference})
		}
	}
	return out
}

// FuzzLeanObject holds the lean reading of an object of each kind, as
// every consumer reads it (readRequest), to the typed one as the
// kube-apiserver decodes it: where both read it, they find the same
// images, used by the same containers and volumes in the same order, and
// the same annotations. Where only one reads it, the request is refused
// (the lean types cannot read it) or was valid to the apiserver, which
// checks every field (the typed decoding cannot).
func FuzzLeanObject(f *testing.F) {
	for _, obj := range []string{
		`{"apiVersion":"v1","kind":"Pod","metadata":{"annotations":{"a":"b"}},"spec":{"initContainers":[{"name":"i","image":"i:1"}],"containers":[{"name":"a","image":"a:1"}],"ephemeralContainers":[],"volumes":[{"name":"v","image":{"reference":"v:1"}},{"name":"w","image":null}]}}`,
		`{"template":{"metadata":{},"spec":{"containers":[null]}},"spec":{"template":null,"jobTemplate":{"spec":{"template":{"spec":{}}}}}}`,
		`{"spec":{"template":{"metadata":{"annotations":{"x.image-policy.k8s.io/break-glass":"true","big":"<<<<","imagegate.dev/original-images":"{}"}},"spec":{"containers":[{"name":"a","image":"a:1","Image":"b:2"}]}}}}`,
		`{"spec":{"Containers":[],"containers":[{"image":"a:1","image":"b:2"}]}}`, `null`, `[]`, `{"spec":{"replicas":"x"}}`,
	} {
		for _, kind := range []uint8{0, 3, 8} {
			f.Add([]byte(obj), kind)
		}
	}
	keys := slices.SortedFunc(maps.Keys(kinds), func(a, b metav1.GroupVersionKind) int { return strings.Compare(a.String(), b.String()) })
	f.Fuzz(func(t *testing.T, raw []byte, kind uint8) {
		k := keys[int(kind)%len(keys)]
		r, _, leanErr := readRequest(&admissionv1.AdmissionRequest{Kind: k, Operation: admissionv1.Create}, requestObjects{object: object{raw: raw}}, "webhook")
		tmpl, typedErr := typedTemplates[k](raw)
		switch {
		case typedErr != nil:
			return // the lean types read fewer fields; the apiserver sends only valid objects
		case leanErr != nil:
			// The request is refused. The typed decoding may read it: a
			// repeated name or invalid UTF-8, an object that says it is
			// of another kind, or, since the lean types have every kind's
			// paths, another kind's field of the wrong type (a DaemonSet's
			// spec.initContainers), which the apiserver never sends.
			return
		}
		gotImages, gotAnnotations := r.pod()
		wantImages, wantAnnotations := typedImages(tmpl), map[string]string(nil)
		if tmpl != nil && tmpl.Annotations != nil {
			// The lean types keep only the annotations imagegate reads.
			wantAnnotations = map[string]string{}
			for k, v := range tmpl.Annotations {
				if strings.Contains(k, breakGlassKeyPart) || k == AnnotationOriginalImages {
					wantAnnotations[k] = v
				}
			}
		}
		if !slices.Equal(gotImages, wantImages) || !maps.Equal(gotAnnotations, wantAnnotations) {
			t.Fatalf("%s %q:\nlean  %+v %v\ntyped %+v %v", k.Kind, raw, gotImages, gotAnnotations, wantImages, wantAnnotations)
		}
		// And the mutating webhook would patch each image where it is.
		var doc any
		if err := sigsjson.UnmarshalCaseSensitivePreserveInts(raw, &doc); err != nil {
			t.Fatal(err)
		}
		for _, ref := range r.images {
			if at := pointerValue(doc, ref.pointer(r.prefix)); at != ref.Image.Ref {
				t.Fatalf("%s %q: %s is %q, not the image %q", k.Kind, raw, ref.pointer(r.prefix), at, ref.Image.Ref)
			}
		}
	})
}

// pointerValue is the string at a JSON pointer (of plain tokens) in doc,
// "" if there is none.
func pointerValue(doc any, pointer string) string {
	for _, tok := range strings.Split(pointer, "/")[1:] {
		switch v := doc.(type) {
		case map[string]any:
			doc = v[tok]
		case []any:
			i, _ := strconv.Atoi(tok)
			doc = v[i]
		}
	}
	s, _ := doc.(string)
	return s
}
