package server_test

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/imagegate/imagegate/pkg/policy"
	"github.com/imagegate/imagegate/pkg/server"
)

// oncallPolicy lets only alice and the sre group break glass in team-a,
// whose rule also allows the team's own registries.
const oncallPolicy = `apiVersion: imagegate.dev/v1alpha1
kind: ImagePolicy
default:
  allowedRegistries: [registry.my.com]
rules:
  - name: team-a
    namespaces: [team-a]
    allowedRegistries: [registry.my.com, "*.team-a.example.com"]
    breakGlass:
      allowedUsers: [alice]
      allowedGroups: [sre]
`

func policyFileHandler(t *testing.T, src string) (*server.Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	p, _ := compileFile(t, path)
	var active atomic.Pointer[policy.Policy]
	active.Store(p)
	return server.New(server.Options{Policy: &active, Log: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))}), p.Hash()
}

// The validating webhook passes the requesting user to the policy; the
// ImageReview path has none, so a rule restricted to users refuses it.
func TestPolicyFileOnBothEndpoints(t *testing.T) {
	t.Parallel()
	srv, hash := policyFileHandler(t, oncallPolicy)
	h := srv.Handler()
	breakGlass := `{"ops.image-policy.k8s.io/break-glass":"true"}`
	tests := []struct {
		name     string
		path     string
		body     string
		want     []string // substrings of the reply
		wantDeny bool
	}{
		{name: "team registry allowed by the namespace rule", path: server.PathValidate,
			body: admissionReview("CREATE", "eu.team-a.example.com/app:1", ""),
			want: []string{`"allowed":true`, `"policy-hash":"` + hash + `"`, `"policy-rule":"team-a"`}},
		{name: "alice may break glass", path: server.PathValidate,
			body: admissionReview("CREATE", "nginx:1.25", breakGlass),
			want: []string{`"allowed":true`, `"break-glass":"true"`}},
		{name: "bob may not", path: server.PathValidate, wantDeny: true,
			body: strings.Replace(admissionReview("CREATE", "nginx:1.25", breakGlass), `"username":"alice"`, `"username":"bob","groups":["dev"]`, 1),
			want: []string{`break-glass refused: rule \"team-a\" does not let user \"bob\" break glass`, `"break-glass-refused":`}},
		{name: "bob in sre may", path: server.PathValidate,
			body: strings.Replace(admissionReview("CREATE", "nginx:1.25", breakGlass), `"username":"alice"`, `"username":"bob","groups":["dev","sre"]`, 1),
			want: []string{`"allowed":true`}},
		{name: "an ImageReview carries no user", path: server.PathImagePolicy, wantDeny: true,
			body: `{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[{"image":"nginx:1.25"}],"annotations":` + breakGlass + `,"namespace":"team-a"}}`,
			want: []string{`"allowed":false`, `an ImageReview carries no user`, `"policy-hash":"` + hash + `"`}},
		{name: "ImageReview in another namespace uses the default rule", path: server.PathImagePolicy,
			body: `{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[{"image":"nginx:1.25"}],"annotations":` + breakGlass + `,"namespace":"shop"}}`,
			want: []string{`"allowed":true`, `"policy-rule":"default"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := post(h, tc.path, "application/json", []byte(tc.body))
			if rec.Code != 200 {
				t.Fatalf("code %d: %s", rec.Code, rec.Body)
			}
			body := rec.Body.String()
			if strings.Contains(body, `"allowed":false`) != tc.wantDeny {
				t.Errorf("reply %s, want denied=%v", body, tc.wantDeny)
			}
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("reply %s\nlacks %s", body, w)
				}
			}
		})
	}
}
