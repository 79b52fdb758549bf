package admission_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/distribution/reference"
	sigsjson "sigs.k8s.io/json"

	"github.com/imagegate/imagegate/pkg/admission"
	"github.com/imagegate/imagegate/pkg/policy"
)

// FuzzDecodeAdmissionReview feeds arbitrary bodies to the adapter. It never
// panics; every AdmissionReview gets a reply in its own version with its own
// uid, a denial is a 403 with a message, warnings are ones the apiserver
// forwards; and the adapter fails closed: under a registry.my.com whitelist,
// an allowed CREATE (UPDATE) that is neither break-glass nor warn mode runs
// no image (no new image) outside registry.my.com. The images are found by
// an oracle written independently of the adapter's own reading, which
// decodes as the kube-apiserver does (sigs.k8s.io/json: member names match
// exactly, a repeated name's last value wins).
func FuzzDecodeAdmissionReview(f *testing.F) {
	examples, _ := filepath.Glob("../../examples/admission/*.json")
	for _, file := range examples {
		body, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body)
	}
	objects := map[string]string{
		`"group":"","version":"v1","kind":"Pod"`:                   `{"metadata":{"annotations":{"a.image-policy.k8s.io/break-glass":"true"}},"spec":` + podSpec + `}`,
		`"group":"","version":"v1","kind":"PodTemplate"`:           `{"template":{"spec":` + podSpec + `}}`,
		`"group":"","version":"v1","kind":"ReplicationController"`: `{"spec":{"template":{"spec":` + podSpec + `}}}`,
		`"group":"apps","version":"v1","kind":"Deployment"`:        `{"apiVersion":"apps/v1","kind":"Deployment","spec":{"template":{"spec":{"containers":[{"name":"a","image":"registry.my.com/a:1"}],"volumes":[{"name":"v","image":{"reference":"registry.my.com.evil.io/v:1"}}]}}}}`,
		`"group":"apps","version":"v1","kind":"StatefulSet"`:       `{"spec":{"template":{"spec":{"initContainers":[{"name":"i","image":"registry.my.com/i:1"}],"containers":[{"name":"a","Image":"nginx:1"}]}}}}`,
		`"group":"batch","version":"v1","kind":"CronJob"`:          `{"spec":{"jobTemplate":{"spec":{"template":{"spec":{"containers":[{"name":"a","image":"registry.my.com/a:1"}]}}}}}}`,
		`"group":"batch","version":"v1","kind":"Job"`:              `{"spec":{"template":{"spec":{"containers":[{"name":"a","image":"registry.my.com/a:1"},{"name":"b","image":"docker.io/b:1"}]}}}}`,
		`"group":"autoscaling","version":"v1","kind":"Scale"`:      `{"spec":{"replicas":1}}`,
		`"group":"apps","version":"v1","kind":"DaemonSet"`:         `null`,
		`"group":"apps","version":"v1","kind":"ReplicaSet"`:        `{"spec":{"template":{"spec":{"containers":[]}}}}`,
		`"group":"","version":"v1","kind":"Pod","extra":{"k":"v"}`: `[1,2]`,
	}
	for kind, object := range objects {
		for _, op := range []string{"CREATE", "UPDATE"} {
			req := `{"uid":"u","kind":{` + kind + `},"operation":"` + op + `","object":` + object + `,"oldObject":{"spec":{"template":{"spec":{"containers":[{"image":"nginx:1"}]}}}}}`
			f.Add(review("v1", req))
			f.Add(review("v1beta1", req))
		}
	}
	f.Add(review("v1", `{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","object":{"spec":{"containers":[{"image":"registry.my.com/a:1","Image":"nginx:1"},{"image":"nginx:1","image":"registry.my.com/a:1"}]}}}`))
	for _, s := range []string{``, `null`, `[]`, `{}`, `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":5}}`} {
		f.Add([]byte(s))
	}
	enforce := testPolicy(f, policy.ModeEnforce)
	warn := testPolicy(f, policy.ModeWarn)
	f.Fuzz(func(t *testing.T, body []byte) {
		_, _ = admission.Review(warn, body, new(policy.Input), new(policy.Decision))
		var in policy.Input
		var d policy.Decision
		resp, err := admission.Review(enforce, body, &in, &d)
		if err != nil {
			return // not an AdmissionReview: the server answers 400
		}
		review, derr := admission.Decode(body)
		if derr != nil {
			t.Fatalf("Review answered a body Decode rejects: %v", derr)
		}
		r := resp.Response
		if resp.APIVersion != review.APIVersion || resp.Kind != admission.Kind || r == nil {
			t.Fatalf("reply %s %s %v, want the request's %s", resp.APIVersion, resp.Kind, r, review.APIVersion)
		}
		if review.Request != nil && r.UID != review.Request.UID {
			t.Fatalf("reply uid %q, want %q", r.UID, review.Request.UID)
		}
		if r.Allowed != d.Allowed || (!r.Allowed && (r.Result == nil || r.Result.Code != 403 || r.Result.Message == "")) {
			t.Fatalf("inconsistent reply %+v for decision %+v", r, d)
		}
		if _, err := json.Marshal(resp); err != nil {
			t.Fatalf("reply does not encode: %v", err)
		}
		for _, w := range r.Warnings {
			if w == "" || len(w) > 400 || !utf8.ValidString(w) || strings.IndexFunc(w, unicode.IsControl) >= 0 {
				t.Fatalf("warning the apiserver would drop or cut: %q", w)
			}
		}
		if !r.Allowed || d.Outcome == policy.OutcomeBreakGlass || d.Outcome == policy.OutcomeWarned {
			return
		}
		var req struct {
			Kind struct {
				Group   string `json:"group"`
				Version string `json:"version"`
				Kind    string `json:"kind"`
			} `json:"kind"`
			Operation string          `json:"operation"`
			Object    json.RawMessage `json:"object"`
			OldObject json.RawMessage `json:"oldObject"`
		}
		var env struct {
			Request json.RawMessage `json:"request"`
		}
		if err := sigsjson.UnmarshalCaseSensitivePreserveInts(body, &env); err != nil || sigsjson.UnmarshalCaseSensitivePreserveInts(env.Request, &req) != nil {
			t.Fatalf("allowed a request the oracle cannot read: %s", body)
		}
		switch req.Operation {
		case "DELETE", "CONNECT":
			return
		case "CREATE", "UPDATE":
		default:
			t.Fatalf("allowed operation %q", req.Operation)
		}
		current, ok := oracleImages(req.Kind.Group+"/"+req.Kind.Version+"/"+req.Kind.Kind, req.Object)
		if !ok {
			t.Fatalf("allowed %s %s/%s %s that the oracle cannot read", req.Operation, req.Kind.Group, req.Kind.Version, req.Kind.Kind)
		}
		old := map[string]bool{}
		if req.Operation == "UPDATE" {
			prev, ok := oracleImages(req.Kind.Group+"/"+req.Kind.Version+"/"+req.Kind.Kind, req.OldObject)
			if ok {
				for _, img := range prev {
					old[img] = true
				}
			}
		}
		for _, img := range current {
			if !old[img] && !whitelisted(img) {
				t.Fatalf("allowed %s of image %q outside registry.my.com: %s", req.Operation, img, body)
			}
		}
	})
}

// oracleImages finds the images of an object of kind group/version/Kind with
// minimal structs of its own. ok is false for a kind it does not know or an
// object whose image fields do not decode.
func oracleImages(kind string, raw json.RawMessage) (images []string, ok bool) {
	type container struct {
		Image string `json:"image"`
	}
	type spec struct {
		InitContainers      []container `json:"initContainers"`
		Containers          []container `json:"containers"`
		EphemeralContainers []container `json:"ephemeralContainers"`
		Volumes             []struct {
			Image *struct {
				Reference string `json:"reference"`
			} `json:"image"`
		} `json:"volumes"`
	}
	type tmpl struct {
		Spec spec `json:"spec"`
	}
	var s spec
	var err error
	unmarshal := sigsjson.UnmarshalCaseSensitivePreserveInts
	switch kind {
	case "/v1/Pod":
		var o struct {
			Spec spec `json:"spec"`
		}
		err, s = unmarshal(raw, &o), o.Spec
	case "/v1/PodTemplate":
		var o struct {
			Template tmpl `json:"template"`
		}
		err, s = unmarshal(raw, &o), o.Template.Spec
	case "batch/v1/CronJob":
		var o struct {
			Spec struct {
				JobTemplate struct {
					Spec struct {
						Template tmpl `json:"template"`
					} `json:"spec"`
				} `json:"jobTemplate"`
			} `json:"spec"`
		}
		err, s = unmarshal(raw, &o), o.Spec.JobTemplate.Spec.Template.Spec
	case "/v1/ReplicationController", "apps/v1/Deployment", "apps/v1/ReplicaSet", "apps/v1/StatefulSet", "apps/v1/DaemonSet", "batch/v1/Job":
		var o struct {
			Spec struct {
				Template *tmpl `json:"template"`
			} `json:"spec"`
		}
		err = unmarshal(raw, &o)
		if o.Spec.Template != nil {
			s = o.Spec.Template.Spec
		}
	default:
		return nil, false
	}
	if err != nil {
		return nil, false
	}
	for _, cs := range [][]container{s.InitContainers, s.Containers, s.EphemeralContainers} {
		for _, c := range cs {
			images = append(images, c.Image)
		}
	}
	for _, v := range s.Volumes {
		if v.Image != nil {
			images = append(images, v.Image.Reference)
		}
	}
	return images, true
}

func whitelisted(image string) bool {
	named, err := reference.ParseNormalizedNamed(image)
	return err == nil && strings.EqualFold(reference.Domain(named), "registry.my.com")
}
