package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/pkg/policy"
	"github.com/imagegate/imagegate/pkg/server"
)

// warnPolicy is testPolicy in warn mode; golden requests named warn-mode-*
// are judged under it.
var warnPolicy = func() policy.Options {
	o := testPolicy
	o.Mode = policy.ModeWarn
	return o
}()

// reviewHeader is the part of an AdmissionReview, request or reply, that the
// apiserver matches: the type and the uid.
type reviewHeader struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Request    *struct {
		UID string `json:"uid"`
	} `json:"request"`
	Response *struct {
		UID     string `json:"uid"`
		Allowed bool   `json:"allowed"`
		Status  *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"status"`
		Warnings []string `json:"warnings"`
	} `json:"response"`
}

func parseHeader(t testing.TB, body []byte) reviewHeader {
	t.Helper()
	var h reviewHeader
	if err := json.Unmarshal(body, &h); err != nil {
		t.Fatalf("not an AdmissionReview: %v: %s", err, body)
	}
	return h
}

// TestAdmissionReviewGolden pins the whole reply for each request under
// testdata/admission and for each sample in examples/admission, byte for
// byte, and checks what the apiserver checks: the reply has the request's
// apiVersion, kind and uid. The file name says the verdict: denied-* must be
// denied, everything else allowed. Run `go test ./pkg/server -run Golden
// -update` to regenerate on purpose, then review the diff.
func TestAdmissionReviewGolden(t *testing.T) {
	t.Parallel()
	enforce := newFixture(t, testPolicy, nil).srv.Handler()
	warn := newFixture(t, warnPolicy, nil).srv.Handler()
	fq := newFixture(t, fullyQualifiedPolicy, nil).srv.Handler()
	requests, _ := filepath.Glob("testdata/admission/*.request.json")
	examples, _ := filepath.Glob("../../examples/admission/*.json")
	if len(requests) < 40 || len(examples) < 4 {
		t.Fatalf("found %d golden requests and %d examples, want the full set", len(requests), len(examples))
	}
	for _, reqFile := range append(requests, examples...) {
		name := filepath.Base(reqFile)
		golden := strings.TrimSuffix(reqFile, ".request.json") + ".response.json"
		if strings.Contains(reqFile, "examples") {
			golden = filepath.Join("testdata/admission/examples", strings.TrimSuffix(name, ".json")+".response.json")
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			body, err := os.ReadFile(reqFile)
			if err != nil {
				t.Fatal(err)
			}
			h := enforce
			switch {
			case strings.HasPrefix(name, "warn-mode-"):
				h = warn
			case strings.Contains(name, "-require-fully-qualified"):
				h = fq
			}
			rec := post(h, server.PathValidate+"?timeout=5s", "application/json", body)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d, want 200: %s", rec.Code, rec.Body)
			}
			checkGolden(t, rec, golden)

			req, resp := parseHeader(t, body), parseHeader(t, rec.Body.Bytes())
			if resp.APIVersion != req.APIVersion || resp.Kind != "AdmissionReview" {
				t.Errorf("reply is %s %s, want the request's %s AdmissionReview", resp.APIVersion, resp.Kind, req.APIVersion)
			}
			if resp.Response == nil {
				t.Fatal("reply has no response")
			}
			if req.Request != nil && resp.Response.UID != req.Request.UID {
				t.Errorf("reply uid %q, want the request's %q", resp.Response.UID, req.Request.UID)
			}
			// Whatever the name promises, the verdict must agree, and a
			// denial must be a 403 that says why.
			if denied := strings.HasPrefix(name, "denied") || strings.HasSuffix(name, "-denied.json") || strings.Contains(name, "-denied-"); denied == resp.Response.Allowed {
				t.Errorf("%s answered allowed=%v", name, resp.Response.Allowed)
			}
			if !resp.Response.Allowed && (resp.Response.Status == nil || resp.Response.Status.Code != 403 || resp.Response.Status.Message == "") {
				t.Errorf("a denial without status.code 403 and a message: %+v", resp.Response.Status)
			}
			for _, w := range resp.Response.Warnings {
				if len(w) > 400 {
					t.Errorf("warning of %d bytes, want at most 400: %q", len(w), w)
				}
			}
		})
	}
}

func TestAdmissionReviewAliasPathAnswersTheSame(t *testing.T) {
	t.Parallel()
	h := newFixture(t, testPolicy, nil).srv.Handler()
	body, err := os.ReadFile("../../examples/admission/deployment-denied.json")
	if err != nil {
		t.Fatal(err)
	}
	a := post(h, server.PathValidate, "application/json", body)
	b := post(h, server.PathValidateBouncer, "application/json", body)
	if a.Code != 200 || b.Code != 200 || a.Body.String() != b.Body.String() {
		t.Errorf("%s and %s differ: %d %s / %d %s", server.PathValidate, server.PathValidateBouncer, a.Code, a.Body, b.Code, b.Body)
	}
}

// admissionReview builds a v1 AdmissionReview for a Deployment whose pod
// template runs image and carries annotations (a JSON object, or "").
func admissionReview(operation, image, annotations string) string {
	tmplMeta := `{"labels":{"app":"web"}}`
	if annotations != "" {
		tmplMeta = `{"labels":{"app":"web"},"annotations":` + annotations + `}`
	}
	object := `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":"team-a"},` +
		`"spec":{"selector":{"matchLabels":{"app":"web"}},"template":{"metadata":` + tmplMeta + `,` +
		`"spec":{"containers":[{"name":"app","image":"` + image + `"}]}}}}`
	newObj, oldObj := object, "null"
	if operation == "DELETE" {
		newObj, oldObj = "null", object
	}
	return `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"4f5e6d7c",` +
		`"kind":{"group":"apps","version":"v1","kind":"Deployment"},"resource":{"group":"apps","version":"v1","resource":"deployments"},` +
		`"namespace":"team-a","operation":"` + operation + `","userInfo":{"username":"alice"},"object":` + newObj + `,"oldObject":` + oldObj + `}}`
}

func TestAdmissionReviewHandler(t *testing.T) {
	t.Parallel()
	enforce := newFixture(t, testPolicy, nil).srv.Handler()
	warn := newFixture(t, warnPolicy, nil).srv.Handler()
	breakGlass := `{"ops.image-policy.k8s.io/break-glass":"true","ops.image-policy.k8s.io/ticket":"INC-7"}`
	tests := []struct {
		name        string
		handler     http.Handler // enforce when nil
		path        string       // PathValidate when empty
		method      string       // POST when empty
		contentType string       // application/json when empty; "-" for none
		body        string
		wantCode    int
		wantAllowed bool     // for 200 answers
		wantBody    []string // substrings of the reply
	}{
		{name: "allowed image", body: admissionReview("CREATE", "registry.my.com/app:1.0", ""), wantCode: 200, wantAllowed: true,
			wantBody: []string{`"uid":"4f5e6d7c","allowed":true}`}},
		{name: "denied image names the container", body: admissionReview("CREATE", "nginx:latest", ""), wantCode: 200,
			wantBody: []string{`"code":403`, `container \"app\" image \"nginx:latest\": registry docker.io is not allowed`, `tag \"latest\" is mutable`}},
		{name: "break-glass allows with audit annotations and a warning", body: admissionReview("CREATE", "nginx:1.25", breakGlass), wantCode: 200, wantAllowed: true,
			wantBody: []string{`"auditAnnotations":{"break-glass":"true"`, `"ticket":"INC-7"`, `"warnings":["imagegate: break-glass (ticket INC-7) bypassed the image policy`}},
		{name: "warn mode allows and warns per violation", handler: warn, body: admissionReview("CREATE", "nginx:latest", ""), wantCode: 200, wantAllowed: true,
			wantBody: []string{`"warn-mode-violations":`, `"imagegate warn mode, not enforced: container \"app\" image \"nginx:latest\": registry docker.io`, `"imagegate warn mode, not enforced: container \"app\" image \"nginx:latest\": tag`}},
		{name: "DELETE passes", body: admissionReview("DELETE", "nginx:latest", ""), wantCode: 200, wantAllowed: true},
		{name: "unknown kind is denied naming it", body: strings.Replace(admissionReview("CREATE", "registry.my.com/app:1.0", ""), `"kind":"Deployment"},`, `"kind":"Rollout"},`, 1), wantCode: 200,
			wantBody: []string{`imagegate cannot read apiVersion \"apps/v1\" kind \"Rollout\" (resource \"deployments.apps\")`}},
		{name: "object that does not decode is denied", body: strings.Replace(admissionReview("CREATE", "nginx", ""), `"containers":[`, `"containers":"x","c":[`, 1), wantCode: 200,
			wantBody: []string{`cannot read request.object as apiVersion \"apps/v1\" kind \"Deployment\": json: cannot unmarshal string`}},
		{name: "v1beta1 is answered in v1beta1", body: strings.Replace(admissionReview("CREATE", "nginx:latest", ""), "admission.k8s.io/v1", "admission.k8s.io/v1beta1", 1), wantCode: 200,
			wantBody: []string{`{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","response":{"uid":"4f5e6d7c","allowed":false`}},
		{name: "POST / is the same endpoint", path: server.PathValidateBouncer, body: admissionReview("CREATE", "nginx:latest", ""), wantCode: 200,
			wantBody: []string{`container \"app\" image \"nginx:latest\"`}},
		{name: "malformed body", body: `{"apiVersion":"admission.k8s.io/v1","kind":`, wantCode: 400, wantBody: []string{"decode AdmissionReview: unexpected EOF"}},
		{name: "empty body", body: ``, wantCode: 400, wantBody: []string{"decode AdmissionReview: empty body"}},
		{name: "trailing data", body: admissionReview("CREATE", "nginx", "") + `{}`, wantCode: 400, wantBody: []string{"unexpected data after the JSON object"}},
		{name: "request with a wrong field type", body: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":7}}`, wantCode: 400, wantBody: []string{"decode AdmissionReview request: json: cannot unmarshal number"}},
		{name: "wrong version", body: strings.Replace(admissionReview("CREATE", "nginx", ""), "admission.k8s.io/v1", "admission.k8s.io/v2", 1), wantCode: 400,
			wantBody: []string{`expected kind "AdmissionReview" with apiVersion "admission.k8s.io/v1" or "admission.k8s.io/v1beta1", got apiVersion "admission.k8s.io/v2"`}},
		{name: "an ImageReview is not an AdmissionReview", body: `{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[{"image":"nginx"}]}}`, wantCode: 400,
			wantBody: []string{`got apiVersion "imagepolicy.k8s.io/v1alpha1" and kind "ImageReview"`}},
		{name: "form content type", contentType: "application/x-www-form-urlencoded", body: admissionReview("CREATE", "nginx", ""), wantCode: 415, wantBody: []string{"send application/json"}},
		{name: "GET is not allowed", method: http.MethodGet, wantCode: 405, wantBody: []string{"method GET is not allowed on /validate"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h, path, method := tc.handler, tc.path, tc.method
			if h == nil {
				h = enforce
			}
			if path == "" {
				path = server.PathValidate
			}
			if method == "" {
				method = http.MethodPost
			}
			req := httptest.NewRequest(method, path, strings.NewReader(tc.body))
			switch tc.contentType {
			case "":
				req.Header.Set("Content-Type", "application/json")
			case "-":
			default:
				req.Header.Set("Content-Type", tc.contentType)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.wantCode {
				t.Fatalf("status = %d, want %d (body %s)", rec.Code, tc.wantCode, rec.Body)
			}
			for _, want := range tc.wantBody {
				if !strings.Contains(rec.Body.String(), want) {
					t.Errorf("body = %s\nwant it to contain %s", rec.Body, want)
				}
			}
			if rec.Code != 200 {
				return
			}
			resp := parseHeader(t, rec.Body.Bytes()).Response
			if resp == nil || resp.Allowed != tc.wantAllowed || resp.UID != "4f5e6d7c" {
				t.Errorf("response = %+v, want allowed=%v with uid 4f5e6d7c", resp, tc.wantAllowed)
			}
			if resp != nil && !resp.Allowed && (resp.Status == nil || resp.Status.Code != 403) {
				t.Errorf("denial status = %+v, want code 403", resp.Status)
			}
		})
	}
}

// Warn mode is how an operator rolls a policy out: both endpoints allow,
// say what they would have denied, and log it at info for the operator.
func TestWarnModeAllowsReportsAndLogsOnBothEndpoints(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, path, body string
		wantBody         []string
	}{
		{name: "ImageReview", path: server.PathImagePolicy,
			body:     `{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"namespace":"team-a","containers":[{"image":"nginx:1.25"}]}}`,
			wantBody: []string{`"allowed":true`, `"reason":"warn mode, not enforced: image \"nginx:1.25\": registry docker.io is not allowed`, `"warn-mode-violations":`}},
		{name: "AdmissionReview", path: server.PathValidate,
			body:     admissionReview("CREATE", "nginx:1.25", ""),
			wantBody: []string{`"allowed":true`, `"warnings":["imagegate warn mode, not enforced: container \"app\" image \"nginx:1.25\": registry docker.io is not allowed`, `"warn-mode-violations":`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, warnPolicy, nil)
			rec := post(f.srv.Handler(), tc.path, "application/json", []byte(tc.body))
			if rec.Code != 200 {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			for _, want := range tc.wantBody {
				if !strings.Contains(rec.Body.String(), want) {
					t.Errorf("body = %s\nwant it to contain %s", rec.Body, want)
				}
			}
			var line map[string]any
			if err := json.Unmarshal(f.logs.Bytes(), &line); err != nil {
				t.Fatalf("want one JSON log line, got %q: %v", f.logs, err)
			}
			if line["level"] != "INFO" || line["outcome"] != "warned" || !strings.Contains(fmt.Sprint(line["violations"]), "nginx:1.25") {
				t.Errorf("log line %v, want an INFO line with outcome warned naming nginx:1.25", line)
			}
		})
	}
}
