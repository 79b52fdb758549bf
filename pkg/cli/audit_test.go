package cli_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// kinds maps the resources a live audit lists to their kinds.
var kinds = map[string]string{
	"pods": "Pod", "podtemplates": "PodTemplate", "replicationcontrollers": "ReplicationController",
	"deployments": "Deployment", "replicasets": "ReplicaSet", "statefulsets": "StatefulSet",
	"daemonsets": "DaemonSet", "jobs": "Job", "cronjobs": "CronJob",
}

// apiserver answers list requests with the items of the List in file, by
// kind and namespace, paging as the apiserver does; it forbids listing the
// resources in forbid. Every page it serves is kept, in order. It keeps the
// OpenReports Reports written to it, by namespace.
type apiserver struct {
	mu     sync.Mutex
	paths  []string
	served bytes.Buffer
	// reports are the Reports by namespace, and writes the requests that
	// wrote them ("POST shop"); without the CRD (noCRD) each request for
	// them is answered 404, as by an apiserver without it.
	reports map[string]map[string]any
	writes  []string
	noCRD   bool
	version int
}

// withoutCRD makes the apiserver one without the Report CRD.
func (as *apiserver) withoutCRD() {
	as.mu.Lock()
	defer as.mu.Unlock()
	as.noCRD = true
}

// written are the writes of Reports so far.
func (as *apiserver) written() []string {
	as.mu.Lock()
	defer as.mu.Unlock()
	return slices.Clone(as.writes)
}

// serveReports serves the requests for reports.openreports.io:
// /apis/openreports.io/v1alpha1[/namespaces/NS]/reports[/NAME].
func (as *apiserver) serveReports(t *testing.T, w http.ResponseWriter, r *http.Request) {
	as.mu.Lock()
	defer as.mu.Unlock()
	if as.noCRD {
		http.NotFound(w, r)
		return
	}
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/apis/openreports.io/v1alpha1/"), "/")
	ns := ""
	if len(parts) > 2 && parts[0] == "namespaces" {
		ns = parts[1]
	}
	w.Header().Set("Content-Type", "application/json")
	var body any
	switch r.Method {
	case http.MethodGet:
		items := []map[string]any{}
		for _, n := range slices.Sorted(maps.Keys(as.reports)) {
			if ns == "" || n == ns {
				items = append(items, as.reports[n])
			}
		}
		body = map[string]any{"apiVersion": "openreports.io/v1alpha1", "kind": "ReportList", "metadata": map[string]any{}, "items": items}
	case http.MethodPost, http.MethodPut:
		var obj map[string]any
		dec := json.NewDecoder(r.Body)
		dec.UseNumber()
		if err := dec.Decode(&obj); err != nil {
			t.Error(err)
		}
		as.version++
		obj["metadata"].(map[string]any)["resourceVersion"] = strconv.Itoa(as.version)
		as.reports[ns], body = obj, obj
		as.writes = append(as.writes, r.Method+" "+ns)
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusCreated)
		}
	case http.MethodDelete:
		delete(as.reports, ns)
		as.writes = append(as.writes, r.Method+" "+ns)
		body = map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Success"}
	}
	if err := json.NewEncoder(w).Encode(body); err != nil {
		t.Error(err)
	}
}

// requests are the list requests served so far, and served their pages.
func (as *apiserver) requests() (paths []string, served []byte) {
	as.mu.Lock()
	defer as.mu.Unlock()
	return slices.Clone(as.paths), slices.Clone(as.served.Bytes())
}

func serveCluster(t *testing.T, file string, forbid ...string) (*apiserver, string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		t.Fatal(err)
	}
	as := &apiserver{reports: map[string]map[string]any{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/apis/openreports.io/") {
			as.serveReports(t, w, r)
			return
		}
		parts := strings.Split(r.URL.Path, "/")
		resource, ns := parts[len(parts)-1], ""
		if len(parts) > 3 && parts[len(parts)-3] == "namespaces" {
			ns = parts[len(parts)-2]
		}
		w.Header().Set("Content-Type", "application/json")
		for _, f := range forbid {
			if f == resource {
				w.WriteHeader(http.StatusForbidden)
				fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403,"message":"%s is forbidden: User \"audit\" cannot list resource \"%s\""}`, resource, resource)
				return
			}
		}
		var items []json.RawMessage
		for _, raw := range list.Items {
			var o struct {
				Kind     string `json:"kind"`
				Metadata struct {
					Namespace string `json:"namespace"`
				} `json:"metadata"`
			}
			if err := json.Unmarshal(raw, &o); err == nil && o.Kind == kinds[resource] && (ns == "" || o.Metadata.Namespace == ns) {
				items = append(items, raw)
			}
		}
		from, _ := strconv.Atoi(r.URL.Query().Get("continue"))
		to, cont := len(items), ""
		if limit, _ := strconv.Atoi(r.URL.Query().Get("limit")); limit > 0 && from+limit < to {
			to, cont = from+limit, strconv.Itoa(from+limit)
		}
		apiVersion := "v1"
		if parts[1] == "apis" {
			apiVersion = parts[2] + "/" + parts[3]
		}
		body, err := json.Marshal(map[string]any{
			"apiVersion": apiVersion, "kind": kinds[resource] + "List",
			"metadata": map[string]string{"continue": cont}, "items": append([]json.RawMessage{}, items[from:to]...),
		})
		if err != nil {
			t.Error(err)
		}
		as.mu.Lock()
		as.paths = append(as.paths, r.URL.Path+" limit="+r.URL.Query().Get("limit"))
		as.served.Write(body)
		as.mu.Unlock()
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "`+srv.URL+`"}}]
users: [{name: test, user: {}}]
contexts: [{name: test, context: {cluster: test, user: test}}]
current-context: test
`), 0o600); err != nil {
		t.Fatal(err)
	}
	return as, kubeconfig
}

// A live audit prints, and exits with, what auditing the pages the
// apiserver served, saved to a file, does.
func TestAuditOfAKubeconfigsClusterIsTheAuditOfWhatItLists(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		// pages are the list requests, each of them for a path containing
		// wantPath and ending with wantLimit.
		pages               int
		wantPath, wantLimit string
	}{
		{name: "all namespaces in pages of 500", pages: 9, wantPath: "/", wantLimit: " limit=500"},
		// 12 objects of 6 kinds, one a page, and an empty page for each of
		// the 3 kinds the cluster has none of.
		{name: "all namespaces in pages of 1, as json", args: []string{"--chunk-size=1", "-o", "json"}, pages: 12 + 3, wantPath: "/", wantLimit: " limit=1"},
		{name: "one namespace in one page", args: []string{"-n", "shop", "--chunk-size", "0"}, pages: 9, wantPath: "/namespaces/shop/", wantLimit: " limit="},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			as, kubeconfig := serveCluster(t, "../audit/testdata/cluster.json")
			live := run(t, nil, nil, append([]string{"audit", "--config", examplePolicy, "--kubeconfig", kubeconfig}, tc.args...)...)
			paths, served := as.requests()
			if len(paths) != tc.pages {
				t.Errorf("got %d list requests, want %d: %q", len(paths), tc.pages, paths)
			}
			for _, p := range paths {
				if !strings.Contains(p, tc.wantPath) || !strings.HasSuffix(p, tc.wantLimit) {
					t.Errorf("got request %q, want its path to contain %q and it to end %q", p, tc.wantPath, tc.wantLimit)
				}
			}
			file := filepath.Join(t.TempDir(), "served.json")
			if err := os.WriteFile(file, served, 0o600); err != nil {
				t.Fatal(err)
			}
			var outputArgs []string
			if strings.Contains(strings.Join(tc.args, " "), "json") {
				outputArgs = []string{"-o", "json"}
			}
			fromFile := run(t, nil, nil, append([]string{"audit", "--config", examplePolicy, "-f", file}, outputArgs...)...)
			if live.code != fromFile.code || live.stdout != fromFile.stdout || live.stderr != fromFile.stderr {
				t.Errorf("got exit %d\n%s%s\nwant, as from the file, exit %d\n%s%s", live.code, live.stdout, live.stderr, fromFile.code, fromFile.stdout, fromFile.stderr)
			}
			if live.code != 1 {
				t.Errorf("got exit %d, want 1 for the findings:\n%s%s", live.code, live.stdout, live.stderr)
			}
		})
	}
}

func TestAuditRefusesWhatItCannotList(t *testing.T) {
	t.Parallel()
	as, kubeconfig := serveCluster(t, "../audit/testdata/cluster.json")
	_, forbidden := serveCluster(t, "../audit/testdata/cluster.json", "statefulsets")
	for _, tc := range []struct {
		name       string
		args       []string
		wantStderr string
	}{
		{"a kubeconfig besides -f", []string{"-f", "-", "--kubeconfig", kubeconfig}, "--kubeconfig, --namespace and --chunk-size are for listing them from the cluster"},
		{"a namespace besides -f", []string{"-f", "-", "-n", "shop"}, "--kubeconfig, --namespace and --chunk-size are for listing them from the cluster"},
		{"reports of -f", []string{"-f", "../audit/testdata/cluster.json", "--report"}, "--report writes to the cluster it lists; it is not for -f"},
		{"a negative chunk size", []string{"--kubeconfig", kubeconfig, "--chunk-size=-1"}, "--chunk-size -1: want 0 or more"},
		{"neither -f nor --kubeconfig outside a pod", nil, "-f FILE, -f - (standard input) or --kubeconfig FILE is required outside a pod"},
		{"a kubeconfig that is not there", []string{"--kubeconfig", filepath.Join(t.TempDir(), "missing")}, "cluster configuration: "},
		{"a kind the apiserver forbids listing", []string{"--kubeconfig", forbidden}, `list statefulsets: statefulsets is forbidden: User "audit" cannot list resource "statefulsets"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := run(t, nil, nil, append([]string{"audit", "--config", examplePolicy}, tc.args...)...)
			if r.code != 2 || !strings.Contains(r.stderr, tc.wantStderr) || r.stdout != "" {
				t.Errorf("got exit %d, stdout %q, stderr %q; want 2, nothing and %q", r.code, r.stdout, r.stderr, tc.wantStderr)
			}
		})
	}
	t.Cleanup(func() { // after the parallel subtests
		if paths, _ := as.requests(); len(paths) != 0 {
			t.Errorf("got list requests %q for usage errors, want none", paths)
		}
	})
}

// findingNamespaces are the namespaces of the fixture with findings under
// the example policy.
var findingNamespaces = []string{"kube-system", "payments", "sandbox-1", "shop", "team-a-dev"}

func TestAuditReport(t *testing.T) {
	t.Parallel()
	created := "reports: 5 created, 0 updated, 0 unchanged, 0 deleted\n"
	var posts []string
	for _, ns := range findingNamespaces {
		posts = append(posts, "POST "+ns)
	}
	for _, tc := range []struct {
		name  string
		args  []string
		noCRD bool
		// wantStdout is a part of the table (or JSON) printed.
		wantCode               int
		wantStdout, wantStderr string
		wantWrites             []string
	}{
		{name: "--report writes a Report in each namespace with findings, and exits 1 for them", args: []string{"--report"},
			wantCode: 1, wantStdout: "5 finding(s) in 12 object(s)", wantStderr: created, wantWrites: posts},
		{name: "--fail-on-findings=false exits 0 once they are written", args: []string{"--report", "--fail-on-findings=false"},
			wantCode: 0, wantStdout: "5 finding(s) in 12 object(s)", wantStderr: created, wantWrites: posts},
		{name: "with -o json what was written is said on standard error", args: []string{"--report", "-o", "json"},
			wantCode: 1, wantStdout: `"findings": [`, wantStderr: created, wantWrites: posts},
		{name: "--namespace writes only its Report", args: []string{"--report", "-n", "shop"},
			wantCode: 1, wantStdout: "1 finding(s)", wantStderr: "reports: 1 created, 0 updated, 0 unchanged, 0 deleted\n", wantWrites: []string{"POST shop"}},
		{name: "without the CRD it exits 2, saying to install it, after the table", args: []string{"--report"}, noCRD: true,
			wantCode: 2, wantStdout: "5 finding(s) in 12 object(s)",
			wantStderr: "imagegate audit: list reports.openreports.io: the cluster has no openreports.io/v1alpha1 Report resource; install its CRD (the Helm chart's crds/ or the kustomize component config/audit-report): the server could not find the requested resource\n"},
		{name: "--fail-on-findings=false without --report exits 0 with the table", args: []string{"--fail-on-findings=false"},
			wantCode: 0, wantStdout: "5 finding(s) in 12 object(s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			as, kubeconfig := serveCluster(t, "../audit/testdata/cluster.json")
			if tc.noCRD {
				as.withoutCRD()
			}
			r := run(t, nil, nil, append([]string{"audit", "--config", examplePolicy, "--kubeconfig", kubeconfig}, tc.args...)...)
			if r.code != tc.wantCode || !strings.Contains(r.stdout, tc.wantStdout) || r.stderr != tc.wantStderr {
				t.Errorf("got exit %d, stderr %q, stdout\n%s\nwant exit %d, stderr %q and stdout with %q", r.code, r.stderr, r.stdout, tc.wantCode, tc.wantStderr, tc.wantStdout)
			}
			if got := as.written(); !slices.Equal(got, tc.wantWrites) {
				t.Errorf("got writes %q, want %q", got, tc.wantWrites)
			}
		})
	}
	t.Run("--fail-on-findings=false of -f exits 0 with the table", func(t *testing.T) {
		t.Parallel()
		r := run(t, nil, nil, "audit", "--config", examplePolicy, "-f", "../audit/testdata/cluster.json", "--fail-on-findings=false")
		if r.code != 0 || !strings.Contains(r.stdout, "5 finding(s) in 12 object(s)") || r.stderr != "" {
			t.Errorf("got exit %d, stdout\n%s%s\nwant 0 and the table", r.code, r.stdout, r.stderr)
		}
	})
}

// Audited again, the Reports read back from the apiserver are the same and
// left alone; once the cluster is clean under the policy they are deleted.
func TestAuditReportsAreKeptThenDeleted(t *testing.T) {
	t.Parallel()
	as, kubeconfig := serveCluster(t, "../audit/testdata/cluster.json")
	permissive := []string{"--registry-whitelist", "registry.k8s.io,docker.io,registry.corp.example.com,quay.io,eu.registry.team-a.example.com,us.registry.team-a.example.com", "--reject-latest=false"}
	for i, step := range []struct {
		policy     []string
		wantCode   int
		wantStderr string
	}{
		{[]string{"--config", examplePolicy}, 1, "reports: 5 created, 0 updated, 0 unchanged, 0 deleted\n"},
		{[]string{"--config", examplePolicy}, 1, "reports: 0 created, 0 updated, 5 unchanged, 0 deleted\n"},
		{permissive, 0, "reports: 0 created, 0 updated, 0 unchanged, 5 deleted\n"},
	} {
		r := run(t, nil, nil, append([]string{"audit", "--kubeconfig", kubeconfig, "--report"}, step.policy...)...)
		if r.code != step.wantCode || r.stderr != step.wantStderr {
			t.Errorf("audit %d: got exit %d, stderr %q; want %d and %q", i+1, r.code, r.stderr, step.wantCode, step.wantStderr)
		}
	}
	var want []string
	for _, verb := range []string{"POST", "DELETE"} {
		for _, ns := range findingNamespaces {
			want = append(want, verb+" "+ns)
		}
	}
	if got := as.written(); !slices.Equal(got, want) {
		t.Errorf("got writes %q, want %q", got, want)
	}
}
