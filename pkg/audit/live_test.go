package audit_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/scheme"
	k8stesting "k8s.io/client-go/testing"

	"github.com/imagegate/imagegate/pkg/audit"
	"github.com/imagegate/imagegate/pkg/policy"
)

// liveOrder is the order Live lists kinds in; the apiserver lists each by
// namespace, then name.
var liveOrder = []string{"Pod", "PodTemplate", "ReplicationController", "Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob"}

// call is one list request the fake apiserver answered.
type call struct {
	resource, namespace, cont string
	limit                     int64
}

// pager is a fake dynamic client that pages its lists as the apiserver
// does, which the fake itself does not (its list actions drop limit and
// continue): at most Limit items, then a continue token (the offset of the
// next page). It keeps the list calls it answered.
type pager struct {
	*dynamicfake.FakeDynamicClient
	mu    sync.Mutex
	calls []call
}

func paged(objs ...runtime.Object) *pager {
	return &pager{FakeDynamicClient: dynamicfake.NewSimpleDynamicClient(scheme.Scheme, objs...)}
}

func (pg *pager) Resource(gvr schema.GroupVersionResource) dynamic.NamespaceableResourceInterface {
	return pagedResource{pg.FakeDynamicClient.Resource(gvr), pg, gvr.Resource}
}

type pagedResource struct {
	dynamic.NamespaceableResourceInterface
	pg       *pager
	resource string
}

func (r pagedResource) Namespace(ns string) dynamic.ResourceInterface {
	return pagedList{r.NamespaceableResourceInterface.Namespace(ns), r.pg, call{resource: r.resource, namespace: ns}}
}

type pagedList struct {
	dynamic.ResourceInterface
	pg *pager
	at call // resource and namespace
}

func (l pagedList) List(ctx context.Context, opts metav1.ListOptions) (*unstructured.UnstructuredList, error) {
	c := l.at
	c.cont, c.limit = opts.Continue, opts.Limit
	l.pg.mu.Lock()
	l.pg.calls = append(l.pg.calls, c)
	l.pg.mu.Unlock()
	list, err := l.ResourceInterface.List(ctx, opts)
	if err != nil {
		return nil, err
	}
	from, _ := strconv.Atoi(opts.Continue)
	to := len(list.Items)
	if limit := int(opts.Limit); limit > 0 && from+limit < to {
		to = from + limit
		list.SetContinue(strconv.Itoa(to))
	}
	list.Items = list.Items[from:to]
	return list, nil
}

// continues are the continue tokens resource was listed with, in order.
func (pg *pager) continues(resource string) []string {
	pg.mu.Lock()
	defer pg.mu.Unlock()
	var got []string
	for _, c := range pg.calls {
		if c.resource == resource {
			got = append(got, c.cont)
		}
	}
	return got
}

func podSpec(image string) corev1.PodSpec {
	return corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}}
}

func template(image string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{Spec: podSpec(image)}
}

// everyKind is one object of each kind Live lists, plus a Service, in
// namespace ns, each running quay.io/acme/KIND:1, which the example
// policy's default rule refuses.
func everyKind(ns string) []runtime.Object {
	m := func(kind string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Namespace: ns, Name: strings.ToLower(kind)}
	}
	img := func(kind string) string { return "quay.io/acme/" + strings.ToLower(kind) + ":1" }
	return []runtime.Object{
		&corev1.Pod{ObjectMeta: m("Pod"), Spec: podSpec(img("Pod"))},
		&corev1.PodTemplate{ObjectMeta: m("PodTemplate"), Template: template(img("PodTemplate"))},
		&corev1.ReplicationController{ObjectMeta: m("ReplicationController"), Spec: corev1.ReplicationControllerSpec{Template: new(template(img("ReplicationController")))}},
		&appsv1.Deployment{ObjectMeta: m("Deployment"), Spec: appsv1.DeploymentSpec{Template: template(img("Deployment"))}},
		&appsv1.ReplicaSet{ObjectMeta: m("ReplicaSet"), Spec: appsv1.ReplicaSetSpec{Template: template(img("ReplicaSet"))}},
		&appsv1.StatefulSet{ObjectMeta: m("StatefulSet"), Spec: appsv1.StatefulSetSpec{Template: template(img("StatefulSet"))}},
		&appsv1.DaemonSet{ObjectMeta: m("DaemonSet"), Spec: appsv1.DaemonSetSpec{Template: template(img("DaemonSet"))}},
		&batchv1.Job{ObjectMeta: m("Job"), Spec: batchv1.JobSpec{Template: template(img("Job"))}},
		&batchv1.CronJob{ObjectMeta: m("CronJob"), Spec: batchv1.CronJobSpec{JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: template(img("CronJob"))}}}},
		&corev1.Service{ObjectMeta: m("Service")},
	}
}

// kindNames are the findings as "namespace kind/name image", in order.
func kindNames(rep *audit.Report) []string {
	var got []string
	for _, f := range rep.Findings {
		got = append(got, f.Namespace+" "+f.Kind+"/"+f.Name+" "+f.Image)
	}
	return got
}

func TestLiveAuditJudgesEveryKindAdmissionJudges(t *testing.T) {
	t.Parallel()
	pg := paged(everyKind("shop")...)
	rep, err := audit.Live(t.Context(), examplePolicy(t), pg, "", audit.DefaultChunkSize)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, k := range liveOrder {
		want = append(want, "shop "+k+"/"+strings.ToLower(k)+" quay.io/acme/"+strings.ToLower(k)+":1")
	}
	if got := kindNames(rep); !slices.Equal(got, want) {
		t.Errorf("got findings\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if rep.Objects != len(liveOrder) || rep.Images != len(liveOrder) || rep.Skipped != nil {
		t.Errorf("got %d objects, %d images, skipped %v; want %d, %d and nothing skipped (services are not listed)",
			rep.Objects, rep.Images, rep.Skipped, len(liveOrder), len(liveOrder))
	}
	for _, c := range pg.calls {
		if c.namespace != "" || c.limit != audit.DefaultChunkSize {
			t.Errorf("got %+v, want every namespace listed %d at a time", c, audit.DefaultChunkSize)
		}
	}
}

func TestLiveAuditReadsEveryPage(t *testing.T) {
	t.Parallel()
	var pods []runtime.Object
	for i := range 5 {
		pods = append(pods, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-" + strconv.Itoa(i)}, Spec: podSpec("quay.io/acme/web:" + strconv.Itoa(i))})
	}
	for _, tc := range []struct {
		chunk int64
		// continues are the tokens the pods are listed with, page by page.
		continues []string
	}{
		{chunk: 0, continues: []string{""}},
		{chunk: 1, continues: []string{"", "1", "2", "3", "4"}},
		{chunk: 2, continues: []string{"", "2", "4"}},
		{chunk: 5, continues: []string{""}},
		{chunk: 500, continues: []string{""}},
	} {
		t.Run("in chunks of "+strconv.FormatInt(tc.chunk, 10), func(t *testing.T) {
			t.Parallel()
			pg := paged(pods...)
			rep, err := audit.Live(t.Context(), examplePolicy(t), pg, "", tc.chunk)
			if err != nil {
				t.Fatal(err)
			}
			if got := pg.continues("pods"); !slices.Equal(got, tc.continues) {
				t.Errorf("got pods listed with continue tokens %q, want %q", got, tc.continues)
			}
			var want []string
			for i := range 5 {
				want = append(want, "shop Pod/web-"+strconv.Itoa(i)+" quay.io/acme/web:"+strconv.Itoa(i))
			}
			if got := kindNames(rep); !slices.Equal(got, want) {
				t.Errorf("got findings %q, want every pod of every page %q", got, want)
			}
		})
	}
}

func TestLiveAuditListsOnlyTheNamespaceAsked(t *testing.T) {
	t.Parallel()
	pg := paged(append(everyKind("shop"), everyKind("payments")...)...)
	rep, err := audit.Live(t.Context(), examplePolicy(t), pg, "payments", 2)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Objects != len(liveOrder) {
		t.Errorf("got %d objects judged, want one per kind: %q", rep.Objects, kindNames(rep))
	}
	for _, f := range rep.Findings {
		if f.Namespace != "payments" {
			t.Errorf("got a finding in %s, want only payments: %+v", f.Namespace, f)
		}
	}
	if len(pg.calls) != len(liveOrder) {
		t.Errorf("got %d list calls, want one per kind: %+v", len(pg.calls), pg.calls)
	}
	for _, c := range pg.calls {
		if c.namespace != "payments" {
			t.Errorf("got %+v, want it listed in payments only", c)
		}
	}
}

func TestLiveAuditSaysWhichListTheApiserverRefused(t *testing.T) {
	t.Parallel()
	pg := paged(everyKind("shop")...)
	pg.PrependReactor("list", "statefulsets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(appsv1.Resource("statefulsets"), "", nil)
	})
	_, err := audit.Live(t.Context(), examplePolicy(t), pg, "", 2)
	if err == nil || !strings.Contains(err.Error(), "list statefulsets:") || !apierrors.IsForbidden(err) {
		t.Errorf("got %v, want a forbidden error naming statefulsets", err)
	}
}

// The cluster of the file audit's fixture, created in a fake apiserver and
// audited live, gives the report auditing the same objects from a file
// gives, byte for byte in both formats: kubectl's JSON read by the file
// path and the objects the dynamic client lists read by the live path are judged
// alike.
func TestLiveAuditEqualsTheFileAuditOfTheSameObjects(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("testdata/cluster.json")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		t.Fatal(err)
	}
	// The file, in the order the apiserver lists it: kinds Live does not
	// list (a Service) left out.
	type item struct {
		kind, namespace, name string
		raw                   json.RawMessage
	}
	var items []item
	var objs []runtime.Object
	for _, raw := range list.Items {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(raw, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		m, _ := meta.Accessor(obj)
		kind := obj.GetObjectKind().GroupVersionKind().Kind
		objs = append(objs, obj)
		if slices.Contains(liveOrder, kind) {
			items = append(items, item{kind, m.GetNamespace(), m.GetName(), raw})
		}
	}
	slices.SortFunc(items, func(a, b item) int {
		return cmp.Or(slices.Index(liveOrder, a.kind)-slices.Index(liveOrder, b.kind), strings.Compare(a.namespace, b.namespace), strings.Compare(a.name, b.name))
	})
	var file bytes.Buffer
	file.WriteString(`{"apiVersion":"v1","kind":"List","items":[`)
	for i, it := range items {
		if i > 0 {
			file.WriteByte(',')
		}
		file.Write(it.raw)
	}
	file.WriteString("]}")

	for _, tc := range []struct {
		name string
		p    *policy.Policy
	}{
		{"the example policy", examplePolicy(t)},
		{"the example policy without its rewrites", noRewrites(t)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fromFile, err := audit.Audit(tc.p, bytes.NewReader(file.Bytes()))
			if err != nil {
				t.Fatal(err)
			}
			live, err := audit.Live(t.Context(), tc.p, paged(objs...), "", 2)
			if err != nil {
				t.Fatal(err)
			}
			if len(fromFile.Findings) == 0 {
				t.Fatal("the file audit found nothing: the comparison would prove nothing")
			}
			for _, format := range []struct {
				name  string
				write func(*audit.Report, *bytes.Buffer) error
			}{
				{"table", func(r *audit.Report, b *bytes.Buffer) error { return r.WriteTable(b) }},
				{"json", func(r *audit.Report, b *bytes.Buffer) error { return r.WriteJSON(b) }},
			} {
				var got, want bytes.Buffer
				if err := format.write(live, &got); err != nil {
					t.Fatal(err)
				}
				if err := format.write(fromFile, &want); err != nil {
					t.Fatal(err)
				}
				if got.String() != want.String() {
					t.Errorf("got the live %s\n%s\nwant the file's\n%s", format.name, got.String(), want.String())
				}
			}
		})
	}
}
