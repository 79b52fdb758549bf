package audit_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/imagegate/imagegate/pkg/audit"
	"github.com/imagegate/imagegate/pkg/policy"
)

var update = flag.Bool("update", false, "rewrite the golden files from the current output")

// The times of a first and a second audit.
var (
	t0 = time.Date(2026, 12, 1, 10, 0, 0, 123456789, time.UTC)
	t1 = t0.Add(time.Hour)
)

func fakeDynamic(objs ...runtime.Object) *dynamicfake.FakeDynamicClient {
	return dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{audit.ReportResource: "ReportList"}, objs...)
}

// openReport is a Report as read back, with the fields imagegate writes.
type openReport struct {
	metav1.ObjectMeta `json:"metadata"`
	Source            string `json:"source"`
	Scope             any    `json:"scope"`
	Configuration     *struct {
		Limits struct {
			MaxResults int `json:"maxResults"`
		} `json:"limits"`
	} `json:"configuration"`
	Summary struct {
		Pass  int `json:"pass"`
		Fail  int `json:"fail"`
		Warn  int `json:"warn"`
		Error int `json:"error"`
		Skip  int `json:"skip"`
	} `json:"summary"`
	Results []struct {
		Source     string                   `json:"source"`
		Policy     string                   `json:"policy"`
		Rule       string                   `json:"rule"`
		Result     string                   `json:"result"`
		Severity   string                   `json:"severity"`
		Scored     bool                     `json:"scored"`
		Timestamp  metav1.Timestamp         `json:"timestamp"`
		Resources  []corev1.ObjectReference `json:"resources"`
		Message    string                   `json:"message"`
		Properties map[string]string        `json:"properties"`
	} `json:"results"`
}

// reports are the Reports in the fake cluster, by namespace/name.
func reports(t *testing.T, dc *dynamicfake.FakeDynamicClient) map[string]openReport {
	t.Helper()
	l, err := dc.Resource(audit.ReportResource).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]openReport{}
	for _, item := range l.Items {
		var r openReport
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(item.Object, &r); err != nil {
			t.Fatal(err)
		}
		got[item.GetNamespace()+"/"+item.GetName()] = r
	}
	return got
}

// rows are a Report's results as "kind/name container rule result severity
// seconds".
func rows(r openReport) []string {
	var got []string
	for _, res := range r.Results {
		got = append(got, fmt.Sprintf("%s/%s %s %s %s %s %d", res.Resources[0].Kind, res.Resources[0].Name,
			res.Properties["container"], res.Rule, res.Result, res.Severity, res.Timestamp.Seconds))
	}
	return got
}

// actions are the requests made, as "verb namespace[/name]", with the
// resourceVersion an update carries.
func actions(dc *dynamicfake.FakeDynamicClient) []string {
	var got []string
	for _, a := range dc.Actions() {
		s := a.GetVerb() + " " + a.GetNamespace()
		switch a := a.(type) {
		case k8stesting.CreateActionImpl:
			s += "/" + a.GetObject().(*unstructured.Unstructured).GetName()
		case k8stesting.UpdateActionImpl:
			o := a.GetObject().(*unstructured.Unstructured)
			s += "/" + o.GetName() + " rv=" + o.GetResourceVersion()
		case k8stesting.DeleteActionImpl:
			s += "/" + a.GetName()
		case k8stesting.ListActionImpl:
			s += " " + a.GetListRestrictions().Labels.String()
		}
		got = append(got, s)
	}
	return got
}

// finding is a registry finding of container in kind/name, quay.io/acme/CONTAINER:1.
func finding(ns, kind, name, container string, check policy.Check, outcome policy.Outcome) audit.Finding {
	return audit.Finding{
		Place: audit.Place{Namespace: ns, Kind: kind, Name: name, Container: container}, APIVersion: "v1", UID: ns + "-" + name,
		Image: "quay.io/acme/" + container + ":1", Check: check, RuleName: "default", Outcome: outcome,
		Reason: "registry quay.io is not allowed",
	}
}

// labelled is a Report named name in ns, with labels.
func labelled(ns, name string, labels map[string]string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"source": "someone", "summary": map[string]any{"pass": int64(1)}}}
	u.SetGroupVersionKind(audit.ReportResource.GroupVersion().WithKind("Report"))
	u.SetNamespace(ns)
	u.SetName(name)
	u.SetLabels(labels)
	return u
}

var ours = map[string]string{"app.kubernetes.io/managed-by": "imagegate", "app.kubernetes.io/name": "imagegate"}

func TestWriteReports(t *testing.T) {
	t.Parallel()
	var (
		web      = finding("shop", "Deployment", "web", "nginx", policy.CheckRegistry, policy.OutcomeDenied)
		webTag   = finding("shop", "Deployment", "web", "nginx", policy.CheckLatestTag, policy.OutcomeDenied)
		job      = finding("shop", "Job", "load", "load", policy.CheckRegistry, policy.OutcomeWarned)
		api      = finding("payments", "Pod", "api", "api", policy.CheckRegistry, policy.OutcomeBreakGlass)
		selector = "app.kubernetes.io/managed-by=imagegate"
	)
	hostile := finding("shop", "Pod", "x", "x", policy.CheckRegistry, policy.OutcomeDenied)
	hostile.Image = "quay.io/acme/x:1\n" + strings.Repeat("é", 3000)
	hostile.Rewritten, hostile.Reason = strings.Repeat("r", 3000), strings.Repeat("why ", 1000)
	many := make([]audit.Finding, 1200)
	for i := range many {
		// In reverse, so that the bound keeps the first by name, not by input.
		many[i] = finding("shop", "Pod", fmt.Sprintf("p%04d", len(many)-1-i), "app", policy.CheckRegistry, policy.OutcomeDenied)
	}
	tests := []struct {
		name string
		// objs are Reports in the cluster before; first, when not nil, the
		// findings of an audit of every namespace at t0, before the one at
		// t1 of findings in namespace.
		objs      []runtime.Object
		first     []audit.Finding
		findings  []audit.Finding
		namespace string
		want      audit.Written
		// wantActions are the requests of the audit at t1, wantRows the
		// results of each Report after it, by namespace/name.
		wantActions []string
		wantRows    map[string][]string
		check       func(t *testing.T, got map[string]openReport)
	}{
		{
			name:        "a report is created in each namespace with findings, its results sorted",
			findings:    []audit.Finding{job, web, api, webTag},
			want:        audit.Written{Created: 2},
			wantActions: []string{"list  " + selector, "create payments/imagegate", "create shop/imagegate"},
			wantRows: map[string][]string{
				"payments/imagegate": {"Pod/api api registry warn medium 1796122800"},
				"shop/imagegate": {
					"Deployment/web nginx latest-tag fail high 1796122800",
					"Deployment/web nginx registry fail high 1796122800",
					"Job/load load registry warn medium 1796122800",
				},
			},
			check: func(t *testing.T, got map[string]openReport) {
				r := got["shop/imagegate"]
				if r.Labels["app.kubernetes.io/managed-by"] != "imagegate" || r.Labels["app.kubernetes.io/name"] != "imagegate" || r.Source != "imagegate" || r.Scope != nil {
					t.Errorf("got labels %v, source %q, scope %v; want imagegate's labels and source, no scope", r.Labels, r.Source, r.Scope)
				}
				if s := r.Summary; s.Fail != 2 || s.Warn != 1 || s.Pass+s.Error+s.Skip != 0 || r.Configuration != nil {
					t.Errorf("got summary %+v, configuration %v; want 2 fail, 1 warn, no limit", s, r.Configuration)
				}
				res := r.Results[2]
				if res.Source != "imagegate" || res.Policy != "default" || !res.Scored || res.Timestamp.Nanos != 123456789 || res.Message != job.Reason ||
					res.Resources[0] != (corev1.ObjectReference{APIVersion: "v1", Kind: "Job", Namespace: "shop", Name: "load", UID: "shop-load"}) {
					t.Errorf("got result %+v", res)
				}
				if p := res.Properties; p["image"] != "quay.io/acme/load:1" || p["outcome"] != "warned" || p["policyHash"] != "hash" || len(p) != 4 {
					t.Errorf("got properties %v; want container, image, outcome and policyHash", p)
				}
			},
		},
		{
			name:        "after a fix the report is updated in place, a kept result keeping when it was found",
			first:       []audit.Finding{web, webTag},
			findings:    []audit.Finding{web, job},
			want:        audit.Written{Updated: 1},
			wantActions: []string{"list  " + selector, "update shop/imagegate rv=41"},
			wantRows: map[string][]string{"shop/imagegate": {
				"Deployment/web nginx registry fail high 1796119200",
				"Job/load load registry warn medium 1796122800",
			}},
			check: func(t *testing.T, got map[string]openReport) {
				if s := got["shop/imagegate"].Summary; s.Fail != 1 || s.Warn != 1 {
					t.Errorf("got summary %+v, want 1 fail and 1 warn", s)
				}
			},
		},
		{
			name:        "an unchanged report is not written",
			first:       []audit.Finding{web, api},
			findings:    []audit.Finding{api, web},
			want:        audit.Written{Unchanged: 2},
			wantActions: []string{"list  " + selector},
			wantRows: map[string][]string{
				"payments/imagegate": {"Pod/api api registry warn medium 1796119200"},
				"shop/imagegate":     {"Deployment/web nginx registry fail high 1796119200"},
			},
		},
		{
			name: "the report of a clean namespace is deleted, and no report without the label or of another name",
			objs: []runtime.Object{
				labelled("legacy", "imagegate", map[string]string{"app": "x"}),
				labelled("payments", "other", ours),
			},
			first:       []audit.Finding{web, api},
			findings:    []audit.Finding{web},
			want:        audit.Written{Unchanged: 1, Deleted: 1},
			wantActions: []string{"list  " + selector, "delete payments/imagegate"},
			wantRows: map[string][]string{
				"shop/imagegate":   {"Deployment/web nginx registry fail high 1796119200"},
				"legacy/imagegate": nil, "payments/other": nil,
			},
		},
		{
			name:        "with --namespace only its report is listed and deleted",
			first:       []audit.Finding{web, api},
			namespace:   "shop",
			want:        audit.Written{Deleted: 1},
			wantActions: []string{"list shop " + selector, "delete shop/imagegate"},
			wantRows:    map[string][]string{"payments/imagegate": {"Pod/api api registry warn medium 1796119200"}},
		},
		{
			name:        "a report holds the first 1000 results, and counts them all",
			findings:    many,
			want:        audit.Written{Created: 1},
			wantActions: []string{"list  " + selector, "create shop/imagegate"},
			check: func(t *testing.T, got map[string]openReport) {
				r := got["shop/imagegate"]
				if len(r.Results) != 1000 || r.Configuration == nil || r.Configuration.Limits.MaxResults != 1000 || r.Summary.Fail != 1200 ||
					r.Results[0].Resources[0].Name != "p0000" || r.Results[999].Resources[0].Name != "p0999" {
					t.Errorf("got %d results (p0000 to p0999?), configuration %+v, summary %+v; want 1000, maxResults 1000, 1200 fail",
						len(r.Results), r.Configuration, r.Summary)
				}
			},
		},
		{
			name:        "a huge image or reason is cut, and an image that is not one line is made one",
			findings:    []audit.Finding{hostile},
			want:        audit.Written{Created: 1},
			wantActions: []string{"list  " + selector, "create shop/imagegate"},
			check: func(t *testing.T, got map[string]openReport) {
				res := got["shop/imagegate"].Results[0]
				if img := res.Properties["image"]; len(img) > 303 || !strings.HasPrefix(img, "quay.io/acme/x:1\uFFFDé") || len(res.Message) > 1027 ||
					len(res.Properties["rewritten"]) > 303 {
					t.Errorf("got image %q (%d bytes), rewritten %d bytes, message %d bytes; want its newline replaced, each cut to 300 and the message to 1024",
						img, len(img), len(res.Properties["rewritten"]), len(res.Message))
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dc := fakeDynamic(tc.objs...)
			if tc.first != nil {
				if _, err := audit.WriteReports(t.Context(), dc, &audit.Report{Findings: tc.first, Policy: "hash"}, "", 0, t0); err != nil {
					t.Fatal(err)
				}
				// The fake keeps no resourceVersion; the apiserver would.
				stampResourceVersions(t, dc, "41")
				dc.ClearActions()
			}
			w, err := audit.WriteReports(t.Context(), dc, &audit.Report{Findings: tc.findings, Policy: "hash"}, tc.namespace, 0, t1)
			if err != nil {
				t.Fatal(err)
			}
			if w != tc.want {
				t.Errorf("got %v, want %v", w, tc.want)
			}
			if got := actions(dc); !slices.Equal(got, tc.wantActions) {
				t.Errorf("got requests %q, want %q", got, tc.wantActions)
			}
			got := reports(t, dc)
			if tc.wantRows != nil {
				if len(got) != len(tc.wantRows) {
					t.Errorf("got %d reports, want %d", len(got), len(tc.wantRows))
				}
				for key, want := range tc.wantRows {
					r, ok := got[key]
					if !ok {
						t.Errorf("got no report %s", key)
					} else if want != nil && !slices.Equal(rows(r), want) {
						t.Errorf("report %s: got results\n%s\nwant\n%s", key, strings.Join(rows(r), "\n"), strings.Join(want, "\n"))
					}
				}
			}
			if tc.check != nil {
				tc.check(t, got)
			}
		})
	}
}

func stampResourceVersions(t *testing.T, dc *dynamicfake.FakeDynamicClient, rv string) {
	t.Helper()
	l, err := dc.Resource(audit.ReportResource).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range l.Items {
		item := &l.Items[i]
		item.SetResourceVersion(rv)
		if err := dc.Tracker().Update(audit.ReportResource, item, item.GetNamespace()); err != nil {
			t.Fatal(err)
		}
	}
}

// Reports are listed a page at a time: a report on the last page is
// deleted as well as one on the first.
func TestWriteReportsReadsEveryPage(t *testing.T) {
	t.Parallel()
	pg := &pager{FakeDynamicClient: fakeDynamic(labelled("a", "imagegate", ours), labelled("b", "imagegate", ours), labelled("c", "imagegate", ours))}
	w, err := audit.WriteReports(t.Context(), pg, &audit.Report{}, "", 2, t0)
	if err != nil {
		t.Fatal(err)
	}
	continues := pg.continues("reports")
	if w.Deleted != 3 || !slices.Equal(continues, []string{"", "2"}) {
		t.Errorf("got %v after lists with continue tokens %q; want 3 deleted after two pages", w, continues)
	}
}

func TestWriteReportsSaysWhatTheApiserverRefused(t *testing.T) {
	t.Parallel()
	notFound := apierrors.NewNotFound(audit.ReportResource.GroupResource(), "")
	noMatch := &meta.NoKindMatchError{GroupKind: schema.GroupKind{Group: "openreports.io", Kind: "Report"}}
	shop := []audit.Finding{finding("shop", "Pod", "web", "nginx", policy.CheckRegistry, policy.OutcomeDenied)}
	tests := []struct {
		name string
		objs []runtime.Object
		// verb and err, when set, are what the fake refuses, and with what.
		verb string
		err  error
		want []string
	}{
		{name: "no CRD: the list is not found", verb: "list", err: notFound,
			want: []string{"the cluster has no openreports.io/v1alpha1 Report resource; install its CRD (the Helm chart's crds/ or the kustomize component config/audit-report)", "not found"}},
		{name: "no CRD: no kind matches", verb: "list", err: noMatch, want: []string{"install its CRD"}},
		{name: "the list is forbidden", verb: "list", err: apierrors.NewForbidden(audit.ReportResource.GroupResource(), "", nil), want: []string{"list reports.openreports.io: ", "forbidden"}},
		{name: "the create is forbidden", verb: "create", err: apierrors.NewForbidden(audit.ReportResource.GroupResource(), "imagegate", nil),
			want: []string{"create Report imagegate in namespace shop: ", "forbidden"}},
		{name: "the update conflicts", objs: []runtime.Object{labelled("shop", "imagegate", ours)}, verb: "update",
			err:  apierrors.NewConflict(audit.ReportResource.GroupResource(), "imagegate", errors.New("the object has been modified")),
			want: []string{"update Report imagegate in namespace shop: ", "the object has been modified"}},
		{name: "a report of the name without the label is in the way", objs: []runtime.Object{labelled("shop", "imagegate", nil)},
			want: []string{"create Report imagegate in namespace shop: ", "already exists", "it lacks the label app.kubernetes.io/managed-by=imagegate"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dc := fakeDynamic(tc.objs...)
			if tc.verb != "" {
				dc.PrependReactor(tc.verb, "reports", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, tc.err })
			}
			_, err := audit.WriteReports(t.Context(), dc, &audit.Report{Findings: shop, Policy: "hash"}, "", 0, t0)
			for _, want := range tc.want {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("got error %v, want it to contain %q", err, want)
				}
			}
		})
	}
}

// The reports of the fixture cluster under the example policy, as written
// to the apiserver, are the golden file's: a wire contract of their own.
// The policy hash is left out, so that a change of the example policy does
// not change them.
func TestReportsOfTheFixtureAreTheGoldenOnes(t *testing.T) {
	t.Parallel()
	rep := auditFile(t, examplePolicy(t), "testdata/cluster.json")
	dc := fakeDynamic()
	w, err := audit.WriteReports(t.Context(), dc, rep, "", 0, t0)
	if err != nil {
		t.Fatal(err)
	}
	if w != (audit.Written{Created: 5}) {
		t.Errorf("got %v, want a report created in each of the 5 namespaces with findings", w)
	}
	var objs []map[string]any
	for _, a := range dc.Actions() {
		if c, ok := a.(k8stesting.CreateActionImpl); ok {
			objs = append(objs, c.GetObject().(*unstructured.Unstructured).Object)
		}
	}
	got, err := json.MarshalIndent(objs, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(bytes.ReplaceAll(got, []byte(rep.Policy), []byte("POLICY-HASH")), '\n')
	const golden = "testdata/reports.golden.json"
	if *update {
		if err := os.WriteFile(golden, got, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("got reports\n%s\nwant %s's\n%s", got, golden, want)
	}
}
