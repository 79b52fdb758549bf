package audit_test

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/pkg/audit"
	"github.com/imagegate/imagegate/pkg/policy"
	"github.com/imagegate/imagegate/pkg/policyfile"
)

func examplePolicy(t *testing.T) *policy.Policy {
	t.Helper()
	l, err := policyfile.Load("../../examples/policy/policy.yaml", policyfile.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	return l.Policy
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
	return strings.Join([]string{f.Namespace, f.Kind + "/" + f.Name, c, f.Image, f.PolicyRule + "/" + string(f.Rule), string(f.Outcome)}, " ")
}

// The fixture is what `kubectl get pods,deployments,statefulsets,daemonsets,
// jobs,cronjobs -A -o json` prints for a small cluster under the example
// policy; the audit lists exactly its violating containers.
func TestAuditListsExactlyTheViolatingContainers(t *testing.T) {
	t.Parallel()
	rep := auditFile(t, examplePolicy(t), "testdata/cluster.json")
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

func TestAuditTable(t *testing.T) {
	t.Parallel()
	rep := auditFile(t, examplePolicy(t), "testdata/cluster.json")
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
	rep := auditFile(t, examplePolicy(t), "testdata/cluster.json")
	var b bytes.Buffer
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back audit.Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, b.String())
	}
	if len(back.Findings) != 9 || back.Findings[3].Source != "ephemeral container" || back.Findings[4].Rule != policy.RuleDeniedRepository {
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
	p := examplePolicy(t)
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
