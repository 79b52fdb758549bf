package imagereview_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/distribution/reference"
	"k8s.io/api/imagepolicy/v1alpha1"
	sigsjson "sigs.k8s.io/json"

	"github.com/imagegate/imagegate/pkg/imagereview"
	"github.com/imagegate/imagegate/pkg/policy"
)

func corpusPolicy(t testing.TB) *policy.Policy {
	t.Helper()
	p, err := policy.New(policy.Options{AllowedRegistries: []string{"registry.my.com"}, RejectLatest: true, AllowBreakGlass: true})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDecode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		body    string
		wantErr string // empty: must decode
	}{
		{name: "apiserver request", body: `{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","metadata":{"creationTimestamp":null},"spec":{"containers":[{"image":"a:1"}],"namespace":"ns"},"status":{"allowed":false}}`},
		{name: "unknown fields are tolerated", body: `{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","spec":{"new":true}}`},
		{name: "whitespace around the object", body: " \n{\"kind\":\"ImageReview\",\"apiVersion\":\"imagepolicy.k8s.io/v1alpha1\"}\n "},
		{name: "empty", body: ``, wantErr: "decode ImageReview: empty body"},
		{name: "truncated", body: `{"kind":`, wantErr: "unexpected EOF"},
		{name: "two objects", body: `{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1"} {}`, wantErr: "unexpected data after the JSON object"},
		{name: "wrong version", body: `{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1beta1"}`, wantErr: `got apiVersion "imagepolicy.k8s.io/v1beta1"`},
		{name: "admission review", body: `{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}`, wantErr: `expected apiVersion "imagepolicy.k8s.io/v1alpha1" and kind "ImageReview"`},
		{name: "image is a number", body: `{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","spec":{"containers":[{"image":5}]}}`, wantErr: "cannot unmarshal number"},
		{name: "a type matched only ignoring case is no type", body: `{"Kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1"}`, wantErr: `got apiVersion "imagepolicy.k8s.io/v1alpha1" and kind ""`},
		{name: "a repeated member name", body: `{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","spec":{"namespace":"a","namespace":"b"}}`, wantErr: `decode ImageReview: jsontext: duplicate object member name "namespace" within "/spec"`},
		{name: "a repeated annotation", body: `{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","spec":{"annotations":{"a":"1","a":"2"}}}`, wantErr: `duplicate object member name "a" within "/spec/annotations"`},
		{name: "invalid UTF-8", body: "{\"kind\":\"ImageReview\",\"apiVersion\":\"imagepolicy.k8s.io/v1alpha1\",\"spec\":{\"namespace\":\"\xff\"}}", wantErr: `decode ImageReview: jsontext: invalid UTF-8 within "/spec/namespace"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := imagereview.Decode([]byte(tc.body))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Decode: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("Decode error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestReviewCarriesNamespaceAnnotationsAndOrder(t *testing.T) {
	t.Parallel()
	body := `{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","spec":{"containers":[{"image":"b:1"},{"image":"a:1"}],"namespace":"team-a","annotations":{"x.image-policy.k8s.io/break-glass":"true"}}}`
	var in policy.Input
	var d policy.Decision
	resp, err := imagereview.Review(corpusPolicy(t), []byte(body), &in, &d)
	if err != nil {
		t.Fatal(err)
	}
	if in.Namespace != "team-a" || len(in.Images) != 2 || in.Images[0].Ref != "b:1" || in.Images[1].Ref != "a:1" {
		t.Errorf("Input = %+v, want namespace team-a and images b:1, a:1 in order", in)
	}
	if d.Outcome != policy.OutcomeBreakGlass || !resp.Status.Allowed || resp.Status.AuditAnnotations["break-glass"] != "true" {
		t.Errorf("got outcome %s, status %+v; want an audited break-glass allow", d.Outcome, resp.Status)
	}
	if resp.APIVersion != imagereview.APIVersion || resp.Kind != imagereview.Kind {
		t.Errorf("reply type %s/%s, want %s/%s", resp.APIVersion, resp.Kind, imagereview.APIVersion, imagereview.Kind)
	}
}

// TestReviewCannotBreakARunningPodByExpiring: an ImageReview may be an
// update of a pod admitted before its break-glass expiry passed, so a passed
// expiry is honoured; the refusals an admitted pod cannot newly earn hold.
func TestReviewCannotBreakARunningPodByExpiring(t *testing.T) {
	t.Parallel()
	p, err := policy.Compile(policy.Spec{Default: policy.RuleOptions{AllowedRegistries: []string{"registry.my.com"},
		BreakGlass: policy.BreakGlassOptions{Enabled: true, MaxAge: 4 * time.Hour}}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, expires string // "" for no expiry annotation
		wantRefusal   string // substring; "" for break-glass
	}{
		{name: "a passed expiry is honoured", expires: "2000-01-01T00:00:00Z"},
		{name: "an expiry within maxAge is honoured", expires: time.Now().Add(time.Hour).UTC().Format(time.RFC3339)},
		{name: "a missing expiry is refused", wantRefusal: "requires an expiry"},
		{name: "a malformed expiry is refused", expires: "tomorrow", wantRefusal: "not an RFC 3339 time"},
		{name: "an expiry beyond maxAge is refused", expires: "2999-01-01T00:00:00Z", wantRefusal: "more than 4h0m0s ahead"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			annotations := `"ops.image-policy.k8s.io/break-glass":"true"`
			if tc.expires != "" {
				annotations += `,"ops.image-policy.k8s.io/expires":"` + tc.expires + `"`
			}
			body := `{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","spec":{"containers":[{"image":"nginx:1.25"}],"namespace":"default","annotations":{` + annotations + `}}}`
			var in policy.Input
			var d policy.Decision
			resp, err := imagereview.Review(p, []byte(body), &in, &d)
			if err != nil {
				t.Fatal(err)
			}
			if !in.OperationUnknown {
				t.Error("got an Input whose operation is known, want OperationUnknown: an ImageReview does not say")
			}
			if wantAllowed := tc.wantRefusal == ""; resp.Status.Allowed != wantAllowed || !strings.Contains(d.BreakGlassRefused, tc.wantRefusal) {
				t.Errorf("got allowed %v, refusal %q; want allowed %v, refusal containing %q", resp.Status.Allowed, d.BreakGlassRefused, wantAllowed, tc.wantRefusal)
			}
		})
	}
}

// FuzzDecodeImageReview feeds arbitrary bodies to the adapter: it never
// panics, every decoded body gets a typed reply, the adapter judges what
// the kube-apiserver's own decoding (sigs.k8s.io/json) reads in it, and a
// clean allow under a registry.my.com whitelist only ever covers
// registry.my.com images.
func FuzzDecodeImageReview(f *testing.F) {
	for _, s := range []string{
		`{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","spec":{"containers":[{"image":"registry.my.com/a:1"}]}}`,
		`{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","spec":{"containers":[{"image":"registry.my.com.evil.io/a:1"}],"annotations":{"a.image-policy.k8s.io/break-glass":"true"}}}`,
		`{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","spec":{"containers":[]}}`,
		`{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","spec":{"containers":[{"image":"registry.my.com/a:1","Image":"nginx"}],"Namespace":"x"}}`,
		`{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","spec":{"containers":[{"image":"nginx","image":"registry.my.com/a:1"}]}}`,
		`{"kind":"ImageReview"}`, `[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	p := corpusPolicy(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		review, err := imagereview.Decode(body)
		var d policy.Decision
		resp, rerr := imagereview.Review(p, body, new(policy.Input), &d)
		if (err == nil) != (rerr == nil) {
			t.Fatalf("Decode and Review disagree: %v / %v", err, rerr)
		}
		if err != nil {
			return
		}
		var apiserver v1alpha1.ImageReview
		if err := sigsjson.UnmarshalCaseSensitivePreserveInts(body, &apiserver); err != nil {
			t.Fatalf("decoded a body the apiserver's decoding rejects (%v): %q", err, body)
		}
		if got, want := imagereview.Input(review), imagereview.Input(&apiserver); !reflect.DeepEqual(got, want) {
			t.Fatalf("read %q as\n%+v\nthe apiserver's decoding as\n%+v", body, got, want)
		}
		if resp.APIVersion != imagereview.APIVersion || resp.Kind != imagereview.Kind {
			t.Fatalf("reply type %s/%s", resp.APIVersion, resp.Kind)
		}
		if _, err := json.Marshal(resp); err != nil {
			t.Fatalf("reply does not encode: %v", err)
		}
		if resp.Status.Allowed != d.Allowed || (!d.Allowed && resp.Status.Reason == "") {
			t.Fatalf("status %+v does not render decision %s", resp.Status, d.Outcome)
		}
		if !d.Allowed {
			return
		}
		if len(review.Spec.Containers) == 0 {
			t.Fatal("allowed a review without images")
		}
		for _, c := range review.Spec.Containers {
			named, err := reference.ParseNormalizedNamed(c.Image)
			if err != nil {
				t.Fatalf("allowed unparsable image %q", c.Image)
			}
			if d.Outcome == policy.OutcomeAllowed && strings.ToLower(reference.Domain(named)) != "registry.my.com" {
				t.Fatalf("allowed %q from %s", c.Image, reference.Domain(named))
			}
		}
	})
}

// BenchmarkReview decodes and judges a 3-container ImageReview as the
// apiserver sends it.
func BenchmarkReview(b *testing.B) {
	body := []byte(`{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","metadata":{"creationTimestamp":null},"spec":{"containers":[` +
		`{"image":"registry.my.com/team-a/app:1.4.2"},{"image":"registry.my.com/platform/envoy:v1.31.2"},{"image":"registry.my.com/platform/otel:0.104"}],` +
		`"annotations":{"ops.image-policy.k8s.io/owner":"team-a"},"namespace":"team-a"},"status":{"allowed":false}}`)
	p := corpusPolicy(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		var d policy.Decision
		if _, err := imagereview.Review(p, body, new(policy.Input), &d); err != nil || !d.Allowed {
			b.Fatal(err, d.Violations)
		}
	}
}
