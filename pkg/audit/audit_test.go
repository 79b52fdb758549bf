package audit_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/pkg/audit"
	"github.com/imagegate/imagegate/pkg/config"
	"github.com/imagegate/imagegate/pkg/policy"
	"github.com/imagegate/imagegate/pkg/policyfile"
	"github.com/imagegate/imagegate/pkg/rewrite"
)

// loadExample compiles the example policy file as serve would, with o.
func loadExample(t *testing.T, o policyfile.Overrides) *policy.Policy {
	t.Helper()
	pc := config.DefaultPolicy()
	pc.File, pc.FileOverrides = "../../examples/policy/policy.yaml", o
	p, _, err := pc.Compile()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func examplePolicy(t *testing.T) *policy.Policy {
	t.Helper()
	return loadExample(t, policyfile.Overrides{})
}

func auditFile(t *testing.T, p *policy.Policy, name string) *audit.Report {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep, err := audit.Audit(p, f)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// row is a finding as one comparable line.
func row(f audit.Finding) string {
	c := f.Container
	if f.Source != "" {
		c += " (" + f.Source + ")"
	}
	return strings.Join([]string{f.Namespace, f.Kind + "/" + f.Name, c, f.Image, f.RuleName + "/" + string(f.Check), string(f.Outcome)}, " ")
}

// noRewrites is the example policy with its rewrites turned off, as
// --registry-mirror= does.
func noRewrites(t *testing.T) *policy.Policy {
	t.Helper()
	none := []rewrite.Rule{}
	return loadExample(t, policyfile.Overrides{Rewrites: &none})
}

// The fixture is what `kubectl get pods,deployments,statefulsets,daemonsets,
// jobs,cronjobs -A -o json` prints for a small cluster under the example
// policy without its rewrites; the audit lists exactly its violating
// containers.
func TestAuditListsExactlyTheViolatingContainers(t *testing.T) {
	t.Parallel()
	rep := auditFile(t, noRewrites(t), "testdata/cluster.json")
	want := []string{
		"kube-system DaemonSet/kindnet kindnet-cni docker.io/kindest/kindnetd:v20250512-df8de77b system/registry denied",
		"shop Deployment/web nginx nginx:1.27 default/registry denied",
		"shop Pod/web-5d8c7b9f6-abcde nginx nginx:1.27 default/registry denied",
		"shop Pod/web-5d8c7b9f6-abcde debugger-x7k2 (ephemeral container) busybox:1.36 default/registry denied",
		"team-a-dev StatefulSet/db exporter registry.corp.example.com/deprecated/pg-exporter:1.0 team-a/denied-repository denied",
		"payments Deployment/api api registry.corp.example.com/pay/api:3.1.0 payments/digest-required denied",
		"sandbox-1 Job/load-test load busybox sandbox/registry warned",
		"sandbox-1 Job/load-test load busybox sandbox/latest-tag warned",
		"shop Job/hotfix fix quay.io/acme/hotfix:0.1 default/registry denied",
	}
	if len(rep.Rewrites) != 0 {
		t.Errorf("rewrites %+v without rewrite rules", rep.Rewrites)
	}
	var got []string
	for _, f := range rep.Findings {
		got = append(got, row(f))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("findings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if rep.Objects != 12 || rep.Images != 15 || rep.Skipped["v1 Service"] != 1 {
		t.Errorf("objects %d images %d skipped %v, want 12, 15 and one v1 Service", rep.Objects, rep.Images, rep.Skipped)
	}
	hotfix := rep.Findings[len(rep.Findings)-1]
	if !strings.Contains(hotfix.BreakGlassRefused, "requires an expiry") {
		t.Errorf("the hotfix Job's break-glass refusal = %q, want the missing expiry", hotfix.BreakGlassRefused)
	}
}

// With the example's rewrite of Docker Hub to the company's proxy cache,
// the audit judges what the cluster would run after the mutating webhook:
// the images the rewrite fixes are listed apart, and what is still wrong
// stays a finding that names the rewrite. kube-system's rule rewrites
// nothing.
func TestAuditReportsRewritesApartFromWhatStaysRefused(t *testing.T) {
	t.Parallel()
	rep := auditFile(t, examplePolicy(t), "testdata/cluster.json")
	var findings []string
	for _, f := range rep.Findings {
		findings = append(findings, row(f)+" "+f.Rewritten)
	}
	wantFindings := []string{
		"kube-system DaemonSet/kindnet kindnet-cni docker.io/kindest/kindnetd:v20250512-df8de77b system/registry denied ",
		"team-a-dev StatefulSet/db exporter registry.corp.example.com/deprecated/pg-exporter:1.0 team-a/denied-repository denied ",
		"payments Deployment/api api registry.corp.example.com/pay/api:3.1.0 payments/digest-required denied ",
		"sandbox-1 Job/load-test load busybox sandbox/latest-tag warned registry.corp.example.com/dockerhub/library/busybox",
		"shop Job/hotfix fix quay.io/acme/hotfix:0.1 default/registry denied ",
	}
	if strings.Join(findings, "\n") != strings.Join(wantFindings, "\n") {
		t.Errorf("findings:\n%s\nwant:\n%s", strings.Join(findings, "\n"), strings.Join(wantFindings, "\n"))
	}
	var rewrites []string
	for _, r := range rep.Rewrites {
		rewrites = append(rewrites, fmt.Sprintf("%s %s/%s %s %s -> %s %s fixes %v remaining %v", r.Namespace, r.Kind, r.Name, r.Container, r.Image, r.Rewritten, r.Mirror, r.Fixes, r.Remaining))
	}
	wantRewrites := []string{
		"shop Deployment/web nginx nginx:1.27 -> registry.corp.example.com/dockerhub/library/nginx:1.27 docker.io=registry.corp.example.com/dockerhub fixes [registry] remaining []",
		"shop Pod/web-5d8c7b9f6-abcde nginx nginx:1.27 -> registry.corp.example.com/dockerhub/library/nginx:1.27 docker.io=registry.corp.example.com/dockerhub fixes [registry] remaining []",
		"shop Pod/web-5d8c7b9f6-abcde debugger-x7k2 busybox:1.36 -> registry.corp.example.com/dockerhub/library/busybox:1.36 docker.io=registry.corp.example.com/dockerhub fixes [registry] remaining []",
		"sandbox-1 Job/load-test load busybox -> registry.corp.example.com/dockerhub/library/busybox docker.io=registry.corp.example.com/dockerhub fixes [registry] remaining [latest-tag]",
	}
	if strings.Join(rewrites, "\n") != strings.Join(wantRewrites, "\n") {
		t.Errorf("rewrites:\n%s\nwant:\n%s", strings.Join(rewrites, "\n"), strings.Join(wantRewrites, "\n"))
	}
	var b bytes.Buffer
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"warned   rewritten to registry.corp.example.com/dockerhub/library/busybox: it has no tag",
		"Images the mutating webhook would rewrite to a mirror:\nNAMESPACE  KIND/NAME ",
		"registry (still latest-tag: see the findings)",
		"5 finding(s) in 12 object(s) with 15 image(s), policy " + rep.Policy + "; 4 image(s) rewritten to a mirror, 3 of them fixed by it; skipped (no pods): 1 v1 Service\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"rewritten": "registry.corp.example.com/dockerhub/library/busybox"`, `"rewrites": [`, `"mirror": "docker.io=registry.corp.example.com/dockerhub"`, `"fixes": [`, `"remaining": [`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("JSON lacks %s", want)
		}
	}
}

// A rewrite of an image the policy allowed anyway fixes nothing; it is
// reported all the same (the mirror must have it).
func TestAuditReportsRewritesThatFixNothing(t *testing.T) {
	t.Parallel()
	p, err := policy.New(policy.Options{RejectLatest: true, Rewrites: []rewrite.Rule{{From: "docker.io", To: "mirror.example.com/hub"}}})
	if err != nil {
		t.Fatal(err)
	}
	rep := auditFile(t, p, "testdata/pod.json")
	if len(rep.Findings) != 0 || len(rep.Rewrites) != 2 || rep.Rewrites[0].Fixes != nil {
		t.Errorf("findings %+v, rewrites %+v; want none and two that fix nothing", rep.Findings, rep.Rewrites)
	}
	var b bytes.Buffer
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "2 image(s) rewritten to a mirror, 0 of them fixed by it") {
		t.Errorf("table:\n%s", b.String())
	}
}

// Under a rule that requires fully qualified references, the audit shows
// the short names the mutating webhook would write out, and what that
// fixes; the images as they run now are refused for it.
func TestAuditReportsShortNamesTheWebhookWouldQualify(t *testing.T) {
	t.Parallel()
	p, err := policy.New(policy.Options{RequireFullyQualified: true, AllowedRegistries: []string{"docker.io", "registry.corp.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	rep := auditFile(t, p, "testdata/pod.json")
	var rewrites []string
	for _, r := range rep.Rewrites {
		rewrites = append(rewrites, fmt.Sprintf("%s %s -> %s qualified %s mirror %q fixes %v remaining %v", r.Container, r.Image, r.Rewritten, r.Qualified, r.Mirror, r.Fixes, r.Remaining))
	}
	wantRewrites := []string{
		`nginx nginx:1.27 -> docker.io/library/nginx:1.27 qualified docker.io/library/nginx:1.27 mirror "" fixes [fully-qualified] remaining []`,
		`debugger-x7k2 busybox:1.36 -> docker.io/library/busybox:1.36 qualified docker.io/library/busybox:1.36 mirror "" fixes [fully-qualified] remaining []`,
	}
	if len(rep.Findings) != 0 || strings.Join(rewrites, "\n") != strings.Join(wantRewrites, "\n") {
		t.Errorf("findings %+v, rewrites:\n%s\nwant none and:\n%s", rep.Findings, strings.Join(rewrites, "\n"), strings.Join(wantRewrites, "\n"))
	}
	var b bytes.Buffer
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Images the mutating webhook would rewrite (short names written out in full, to a mirror):\n",
		"; 2 image(s) rewritten (2 short name(s) written out in full), 2 of them fixed by it\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
	if want, lines := "shop Pod/web-5d8c7b9f6-abcde nginx nginx:1.27 docker.io/library/nginx:1.27 default fully-qualified", strings.Split(b.String(), "\n"); len(lines) < 3 ||
		strings.Join(strings.Fields(lines[2]), " ") != want {
		t.Errorf("table's first rewrite row %q, want the fields %q", lines[2], want)
	}
	b.Reset()
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	if want := `"qualified": "docker.io/library/nginx:1.27"`; !strings.Contains(b.String(), want) || strings.Contains(b.String(), `"mirror"`) {
		t.Errorf("JSON lacks %s or has a mirror:\n%s", want, b.String())
	}
}

func TestAuditTable(t *testing.T) {
	t.Parallel()
	rep := auditFile(t, noRewrites(t), "testdata/cluster.json")
	var b bytes.Buffer
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 11 {
		t.Fatalf("table has %d lines, want header, 9 findings and a summary:\n%s", len(lines), b.String())
	}
	for _, col := range []string{"NAMESPACE", "KIND/NAME", "CONTAINER", "IMAGE", "RULE", "OUTCOME", "REASON"} {
		if !strings.Contains(lines[0], col) {
			t.Errorf("header %q lacks %s", lines[0], col)
		}
	}
	if f := strings.Fields(lines[1]); len(f) < 6 || f[0] != "kube-system" || f[1] != "DaemonSet/kindnet" || f[4] != "system/registry" || f[5] != "denied" {
		t.Errorf("first row = %q", lines[1])
	}
	if want := "9 finding(s) in 12 object(s) with 15 image(s), policy " + rep.Policy + "; skipped (no pods): 1 v1 Service"; lines[10] != want {
		t.Errorf("summary = %q, want %q", lines[10], want)
	}
}

func TestAuditJSON(t *testing.T) {
	t.Parallel()
	rep := auditFile(t, noRewrites(t), "testdata/cluster.json")
	var b bytes.Buffer
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back audit.Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, b.String())
	}
	if len(back.Findings) != 9 || back.Findings[3].Source != "ephemeral container" || back.Findings[4].Check != policy.CheckDeniedRepository {
		t.Errorf("decoded %+v", back.Findings)
	}
	for _, key := range []string{`"namespace": "shop"`, `"kind": "Deployment"`, `"container": "nginx"`, `"policyRule": "default"`, `"outcome": "denied"`, `"reason": "registry docker.io is not allowed`} {
		if !strings.Contains(b.String(), key) {
			t.Errorf("JSON lacks %s", key)
		}
	}
	empty := &audit.Report{}
	b.Reset()
	if err := empty.WriteJSON(&b); err != nil || !strings.Contains(b.String(), `"findings": []`) {
		t.Errorf("an empty report renders %s (%v), want an empty findings list", b.String(), err)
	}
}

// kubectl prints a single object for `kubectl get pod NAME -o json` and a
// typed list for some commands; both are read.
func TestAuditReadsSingleObjectsAndTypedLists(t *testing.T) {
	t.Parallel()
	p := noRewrites(t)
	for _, name := range []string{"testdata/pod.json", "testdata/podlist.json"} {
		rep := auditFile(t, p, name)
		if rep.Objects != 1 || len(rep.Findings) != 2 {
			t.Errorf("%s: %d objects, %d findings, want 1 and 2 (nginx and the debug container)", name, rep.Objects, len(rep.Findings))
		}
	}
}

func TestAuditRejectsWhatIsNotKubectlOutput(t *testing.T) {
	t.Parallel()
	p := examplePolicy(t)
	tests := []struct {
		name, input, want string
	}{
		{name: "empty", input: "", want: "the input is empty"},
		{name: "not JSON", input: "NAME READY STATUS\nweb 1/1 Running\n", want: "the input is not kubectl's JSON output"},
		{name: "no kind", input: `{"metadata":{"name":"x"}}`, want: "an object without a valid apiVersion and kind"},
		{name: "wrong field type", input: `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x","namespace":"a"},"spec":{"containers":"nginx"}}`, want: "document 1: Pod a/x:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := audit.Audit(p, strings.NewReader(tc.input))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Audit(%q) error = %v, want it to contain %q", tc.input, err, tc.want)
			}
		})
	}
}
