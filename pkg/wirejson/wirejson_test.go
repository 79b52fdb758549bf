package wirejson_test

import (
	stdjson "encoding/json"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/pkg/wirejson"
)

type container struct {
	Name  string `json:"name"`
	Image string `json:"image"`
}

func TestUnmarshal(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     container
		wantErr  string
	}{
		{name: "exact names", in: `{"name":"app","image":"nginx:1.25"}`, want: container{"app", "nginx:1.25"}},
		{name: "unknown members ignored", in: `{"name":"app","image":"nginx:1.25","imagePullPolicy":"Always"}`, want: container{"app", "nginx:1.25"}},
		// The apiserver's decoder ignores "Image"; so must we.
		{name: "case differs: not read", in: `{"name":"app","Image":"nginx:1.25"}`, want: container{Name: "app"}},
		{name: "repeated name", in: `{"image":"registry.my.com/app:1","image":"evil.io/app:1"}`, wantErr: "duplicate"},
		{name: "invalid UTF-8", in: "{\"image\":\"a\xffb\"}", wantErr: "UTF-8"},
		{name: "trailing data", in: `{"image":"a"} {}`, wantErr: "invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got container
			err := wirejson.Unmarshal([]byte(tc.in), &got)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestDescribeStdError(t *testing.T) {
	var v container
	err := wirejson.DescribeStdError(stdjson.Unmarshal([]byte(`{"image": x}`), &v))
	if err == nil || !strings.Contains(err.Error(), "(at byte 11)") {
		t.Errorf("syntax error = %v, want its byte offset", err)
	}
	dec := stdjson.NewDecoder(strings.NewReader(""))
	if err := wirejson.DescribeStdError(dec.Decode(&v)); err == nil || err.Error() != "empty body" {
		t.Errorf("empty body = %v, want \"empty body\"", err)
	}
}

func TestSniffReadsTheStartOfACutBody(t *testing.T) {
	t.Parallel()
	body := `{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"u-1","kind":{"kind":"Pod"},"namespace":"team-a","object":{"metadata":{"annotations":{"big":"<<<<`
	tests := []struct {
		name string
		cut  int // bytes of body given
		want map[string]string
	}{
		{name: "up to the object", cut: len(body), want: map[string]string{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request.uid": "u-1", "request.namespace": "team-a"}},
		{name: "inside the uid: not found", cut: strings.Index(body, "u-1") + 1, want: map[string]string{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}},
		{name: "nothing", cut: 0, want: map[string]string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := wirejson.Sniff([]byte(body[:tc.cut]), "kind", "apiVersion", "request.uid", "request.namespace")
			if len(got) != len(tc.want) {
				t.Fatalf("Sniff = %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("Sniff[%q] = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

// FuzzSniff holds Sniff to the decoder on whole bodies: whatever it finds
// in a body the decoder reads is what the decoder reads there, and on a
// cut body it finds nothing the whole body does not say.
func FuzzSniff(f *testing.F) {
	f.Add([]byte(`{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","spec":{}}`), uint16(20))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","request":{"uid":"a","uid":"b"}}`), uint16(60))
	f.Add([]byte(`{"request":{"object":{"uid":"inner"},"uid":"x"},"request":{}}`), uint16(100))
	f.Fuzz(func(t *testing.T, body []byte, cut uint16) {
		var whole struct {
			Kind    string `json:"kind"`
			Request *struct {
				UID string `json:"uid"`
			} `json:"request"`
		}
		found := wirejson.Sniff(body, "kind", "request.uid")
		if wirejson.Unmarshal(body, &whole) == nil {
			if v, ok := found["kind"]; ok && v != whole.Kind {
				t.Fatalf("Sniff kind %q, decoder %q", v, whole.Kind)
			}
			if v, ok := found["request.uid"]; ok && (whole.Request == nil || v != whole.Request.UID) {
				t.Fatalf("Sniff uid %q, decoder %+v", v, whole.Request)
			}
		}
		part := wirejson.Sniff(body[:min(int(cut), len(body))], "kind", "request.uid")
		for k, v := range part {
			if found[k] != v {
				t.Fatalf("cut body: Sniff[%q] = %q, whole body %q", k, v, found[k])
			}
		}
	})
}
