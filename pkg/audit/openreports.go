package audit

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/imagegate/imagegate/pkg/policy"
)

// ReportName names imagegate's OpenReports Report in each namespace with
// findings.
const ReportName = "imagegate"

// MaxReportResults bounds the results of one Report, so that it stays
// within the size etcd stores (1.5 MiB by default): a result takes a
// kilobyte or so. The summary still counts every finding.
const MaxReportResults = 1000

// ReportResource is the OpenReports Report, namespaced.
var ReportResource = schema.GroupVersionResource{Group: "openreports.io", Version: "v1alpha1", Resource: "reports"}

const (
	reportSource   = "imagegate"
	managedByLabel = "app.kubernetes.io/managed-by"
	nameLabel      = "app.kubernetes.io/name"
	// A message quotes each image cut to 300 bytes already; what is added
	// to it (the rewritten image) and the properties are cut here, so no
	// image written to be huge makes a report too large to store, and made
	// printable, as everything imagegate prints of what it was sent.
	maxMessage  = 1024
	maxProperty = 300
)

// openReport mirrors the fields imagegate writes of an
// openreports.io/v1alpha1 Report (github.com/openreports/reports-api,
// apis/openreports.io/v1alpha1): it has no scope, as it reports on a whole
// namespace.
type openReport struct {
	Source        string         `json:"source"`
	Configuration *reportConfig  `json:"configuration,omitempty"`
	Summary       reportSummary  `json:"summary"`
	Results       []reportResult `json:"results,omitempty"`
}

type reportConfig struct {
	Limits reportLimits `json:"limits"`
}

type reportLimits struct {
	MaxResults int `json:"maxResults"`
}

type reportSummary struct {
	Pass  int `json:"pass"`
	Fail  int `json:"fail"`
	Warn  int `json:"warn"`
	Error int `json:"error"`
	Skip  int `json:"skip"`
}

// reportResult is one finding. Result is fail for a container the policy
// denies, with severity high, and warn for one it admits anyway (warn mode
// or break-glass), with severity medium: both are to be fixed, the denied
// first.
type reportResult struct {
	Source     string                   `json:"source"`
	Policy     string                   `json:"policy"`
	Rule       string                   `json:"rule,omitempty"`
	Severity   string                   `json:"severity,omitempty"`
	Timestamp  metav1.Timestamp         `json:"timestamp"`
	Result     string                   `json:"result,omitempty"`
	Scored     bool                     `json:"scored,omitempty"`
	Resources  []corev1.ObjectReference `json:"resources,omitempty"`
	Message    string                   `json:"message,omitempty"`
	Properties map[string]string        `json:"properties,omitempty"`
}

// Written counts what [WriteReports] did to the Reports.
type Written struct {
	Created, Updated, Unchanged, Deleted int
}

// String is the line the audit prints after writing the Reports.
func (w Written) String() string {
	return fmt.Sprintf("reports: %d created, %d updated, %d unchanged, %d deleted", w.Created, w.Updated, w.Unchanged, w.Deleted)
}

// WriteReports writes rep's findings to the cluster behind dc as
// OpenReports Reports: one named [ReportName] in each namespace with
// findings, labelled app.kubernetes.io/managed-by=imagegate, created,
// updated in place when its content changed, or left alone; and it deletes
// its Report of each namespace in scope (namespace, "" for all) that no
// longer has findings. It lists the Reports chunkSize at a time (0 for one
// page) with that label, and touches no Report without it, nor of another
// name: the RBAC it needs is list, create, update and delete on
// reports.openreports.io. A result keeps the timestamp of the same finding
// in the previous Report, so it says when the finding was first seen; new
// ones get now.
func WriteReports(ctx context.Context, dc dynamic.Interface, rep *Report, namespace string, chunkSize int64, now time.Time) (Written, error) {
	var w Written
	existing, err := listReports(ctx, dc, namespace, chunkSize)
	if err != nil {
		return w, err
	}
	byNamespace := map[string][]Finding{}
	for _, f := range rep.Findings {
		byNamespace[f.Namespace] = append(byNamespace[f.Namespace], f)
	}
	ts := metav1.Timestamp{Seconds: now.Unix(), Nanos: int32(now.Nanosecond())} //nolint:gosec // below 1e9
	for _, ns := range slices.Sorted(maps.Keys(byNamespace)) {
		if err := w.write(ctx, dc.Resource(ReportResource).Namespace(ns), ns, byNamespace[ns], rep.Policy, existing[ns], ts); err != nil {
			return w, err
		}
	}
	for _, ns := range slices.Sorted(maps.Keys(existing)) {
		if _, found := byNamespace[ns]; found {
			continue
		}
		// The uid precondition spares a Report created anew since the list.
		uid := existing[ns].GetUID()
		err := dc.Resource(ReportResource).Namespace(ns).Delete(ctx, ReportName, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if apierrors.IsNotFound(err) {
			continue // deleted since the list
		}
		if err != nil {
			return w, fmt.Errorf("delete Report %s in namespace %s: %w", ReportName, ns, err)
		}
		w.Deleted++
	}
	return w, nil
}

// listReports lists imagegate's Reports in namespace ("" for all), by
// namespace.
func listReports(ctx context.Context, dc dynamic.Interface, namespace string, chunkSize int64) (map[string]*unstructured.Unstructured, error) {
	found := map[string]*unstructured.Unstructured{}
	opts := metav1.ListOptions{LabelSelector: managedByLabel + "=" + reportSource, Limit: chunkSize}
	for {
		l, err := dc.Resource(ReportResource).Namespace(namespace).List(ctx, opts)
		if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
			return nil, fmt.Errorf("list reports.openreports.io: the cluster has no openreports.io/v1alpha1 Report resource; "+
				"install its CRD (the Helm chart's crds/ or the kustomize component config/audit-report): %w", err)
		}
		if err != nil {
			return nil, fmt.Errorf("list reports.openreports.io: %w", err)
		}
		for i := range l.Items {
			if r := &l.Items[i]; r.GetName() == ReportName {
				found[r.GetNamespace()] = r
			}
		}
		if opts.Continue = l.GetContinue(); opts.Continue == "" {
			return found, nil
		}
	}
}

// write creates, updates or leaves alone the Report of namespace ns, old
// as listed (nil for none).
func (w *Written) write(ctx context.Context, rc dynamic.ResourceInterface, ns string, findings []Finding, policyHash string, old *unstructured.Unstructured, now metav1.Timestamp) error {
	var prev *openReport
	if old != nil {
		prev = new(openReport)
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(old.Object, prev); err != nil {
			prev = nil // unreadable, edited by hand: rewritten whole
		}
	}
	want := reportOf(findings, policyHash, prev, now)
	if old != nil && prev != nil && reflect.DeepEqual(*prev, want) && labelled(old.GetLabels()) {
		w.Unchanged++
		return nil
	}
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&want)
	if err != nil {
		return fmt.Errorf("convert Report %s in namespace %s: %w", ReportName, ns, err)
	}
	obj := &unstructured.Unstructured{Object: content}
	obj.SetGroupVersionKind(ReportResource.GroupVersion().WithKind("Report"))
	if old == nil {
		obj.SetNamespace(ns)
		obj.SetName(ReportName)
		obj.SetLabels(map[string]string{managedByLabel: reportSource, nameLabel: reportSource})
		_, err := rc.Create(ctx, obj, metav1.CreateOptions{FieldManager: reportSource})
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create Report %s in namespace %s: %w; it is not imagegate's (it lacks the label %s=%s): delete it, and the next audit writes it",
				ReportName, ns, err, managedByLabel, reportSource)
		}
		if err != nil {
			return fmt.Errorf("create Report %s in namespace %s: %w", ReportName, ns, err)
		}
		w.Created++
		return nil
	}
	// The listed object's metadata, so its resourceVersion guards the
	// update, with every other field replaced.
	md, _, _ := unstructured.NestedFieldNoCopy(old.Object, "metadata")
	obj.Object["metadata"] = runtime.DeepCopyJSONValue(md)
	labels := obj.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels[managedByLabel], labels[nameLabel] = reportSource, reportSource
	obj.SetLabels(labels)
	if _, err := rc.Update(ctx, obj, metav1.UpdateOptions{FieldManager: reportSource}); err != nil {
		return fmt.Errorf("update Report %s in namespace %s: %w", ReportName, ns, err)
	}
	w.Updated++
	return nil
}

func labelled(labels map[string]string) bool {
	return labels[managedByLabel] == reportSource && labels[nameLabel] == reportSource
}

// resultKey is what makes two results the same finding.
type resultKey struct {
	uid                                                types.UID
	kind, name, container, source, image, rule, policy string
}

func keyOf(r reportResult) resultKey {
	var ref corev1.ObjectReference
	if len(r.Resources) > 0 {
		ref = r.Resources[0]
	}
	p := r.Properties
	return resultKey{ref.UID, ref.Kind, ref.Name, p["container"], p["source"], p["image"], r.Rule, r.Policy}
}

// reportOf is the Report of one namespace's findings; a result found in
// prev (nil for none) keeps its timestamp, the others get now.
func reportOf(findings []Finding, policyHash string, prev *openReport, now metav1.Timestamp) openReport {
	rep := openReport{Source: reportSource}
	results := make([]reportResult, 0, len(findings))
	for _, f := range findings {
		r := resultOf(f, policyHash)
		if r.Result == "fail" {
			rep.Summary.Fail++
		} else {
			rep.Summary.Warn++
		}
		results = append(results, r)
	}
	slices.SortStableFunc(results, func(a, b reportResult) int {
		ka, kb := keyOf(a), keyOf(b)
		return cmp.Or(strings.Compare(ka.kind, kb.kind), strings.Compare(ka.name, kb.name),
			strings.Compare(ka.container, kb.container), strings.Compare(ka.rule, kb.rule),
			strings.Compare(ka.source, kb.source), strings.Compare(ka.image, kb.image), strings.Compare(ka.policy, kb.policy))
	})
	if len(results) > MaxReportResults {
		results = results[:MaxReportResults]
		rep.Configuration = &reportConfig{Limits: reportLimits{MaxResults: MaxReportResults}}
	}
	seen := map[resultKey]metav1.Timestamp{}
	if prev != nil {
		for _, r := range prev.Results {
			seen[keyOf(r)] = r.Timestamp
		}
	}
	for i := range results {
		results[i].Timestamp = now
		if ts, ok := seen[keyOf(results[i])]; ok {
			results[i].Timestamp = ts
		}
	}
	rep.Results = results
	return rep
}

func resultOf(f Finding, policyHash string) reportResult {
	r := reportResult{
		Source: reportSource, Policy: f.RuleName, Rule: string(f.Check), Result: "warn", Severity: "medium", Scored: true,
		Resources: []corev1.ObjectReference{{APIVersion: f.APIVersion, Kind: f.Kind, Namespace: f.Namespace, Name: f.Name, UID: types.UID(f.UID)}},
		Message:   policy.Printable(f.message(), maxMessage),
		Properties: map[string]string{
			"container":  policy.Printable(f.Container, maxProperty),
			"image":      policy.Printable(f.Image, maxProperty),
			"outcome":    string(f.Outcome),
			"policyHash": policyHash,
		},
	}
	if f.Outcome == policy.OutcomeDenied {
		r.Result, r.Severity = "fail", "high"
	}
	if f.Source != "" {
		r.Properties["source"] = f.Source
	}
	if f.Rewritten != "" {
		r.Properties["rewritten"] = policy.Printable(f.Rewritten, maxProperty)
	}
	return r
}
