package audit

import (
	"context"
	"encoding/json"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"

	"github.com/imagegate/imagegate/pkg/policy"
)

// DefaultChunkSize is how many objects a live audit asks for per page, as
// kubectl's --chunk-size does.
const DefaultChunkSize = 500

// listFunc lists one page of one kind.
type listFunc func(context.Context, metav1.ListOptions) (runtime.Object, error)

// typed turns a typed client's List into a listFunc.
func typed[L runtime.Object](list func(context.Context, metav1.ListOptions) (L, error)) listFunc {
	return func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return list(ctx, o) }
}

// liveKinds are the kinds a live audit lists, in the order it lists them:
// every kind the admission webhook judges.
var liveKinds = []struct {
	gvk      schema.GroupVersionKind
	resource string
	list     func(cs kubernetes.Interface, namespace string) listFunc
}{
	{corev1.SchemeGroupVersion.WithKind("Pod"), "pods", func(cs kubernetes.Interface, ns string) listFunc {
		return typed(cs.CoreV1().Pods(ns).List)
	}},
	{corev1.SchemeGroupVersion.WithKind("PodTemplate"), "podtemplates", func(cs kubernetes.Interface, ns string) listFunc {
		return typed(cs.CoreV1().PodTemplates(ns).List)
	}},
	{corev1.SchemeGroupVersion.WithKind("ReplicationController"), "replicationcontrollers", func(cs kubernetes.Interface, ns string) listFunc {
		return typed(cs.CoreV1().ReplicationControllers(ns).List)
	}},
	{appsv1.SchemeGroupVersion.WithKind("Deployment"), "deployments", func(cs kubernetes.Interface, ns string) listFunc {
		return typed(cs.AppsV1().Deployments(ns).List)
	}},
	{appsv1.SchemeGroupVersion.WithKind("ReplicaSet"), "replicasets", func(cs kubernetes.Interface, ns string) listFunc {
		return typed(cs.AppsV1().ReplicaSets(ns).List)
	}},
	{appsv1.SchemeGroupVersion.WithKind("StatefulSet"), "statefulsets", func(cs kubernetes.Interface, ns string) listFunc {
		return typed(cs.AppsV1().StatefulSets(ns).List)
	}},
	{appsv1.SchemeGroupVersion.WithKind("DaemonSet"), "daemonsets", func(cs kubernetes.Interface, ns string) listFunc {
		return typed(cs.AppsV1().DaemonSets(ns).List)
	}},
	{batchv1.SchemeGroupVersion.WithKind("Job"), "jobs", func(cs kubernetes.Interface, ns string) listFunc {
		return typed(cs.BatchV1().Jobs(ns).List)
	}},
	{batchv1.SchemeGroupVersion.WithKind("CronJob"), "cronjobs", func(cs kubernetes.Interface, ns string) listFunc {
		return typed(cs.BatchV1().CronJobs(ns).List)
	}},
}

// Live lists pods, pod templates, replication controllers, deployments,
// replica sets, stateful sets, daemon sets, jobs and cron jobs (the RBAC it
// needs is list on each) from the cluster behind cs, in
// namespace ("" for all), chunkSize objects a page (0 for one page), and
// judges each object with p exactly as [Audit] judges it read from a file:
// the report is the one `kubectl get` of the same objects would give.
// Objects are judged a page at a time, so a large cluster is never held in
// memory whole.
func Live(ctx context.Context, p *policy.Policy, cs kubernetes.Interface, namespace string, chunkSize int64) (*Report, error) {
	rep := &Report{Policy: p.Hash()}
	for _, k := range liveKinds {
		list := k.list(cs, namespace)
		for page, cont := 1, ""; ; page++ {
			l, err := list(ctx, metav1.ListOptions{Limit: chunkSize, Continue: cont})
			if err != nil {
				return nil, fmt.Errorf("list %s: %w", k.resource, err)
			}
			// Typed clients drop the items' apiVersion and kind, which the
			// file path reads them by.
			err = meta.EachListItem(l, func(o runtime.Object) error {
				o.GetObjectKind().SetGroupVersionKind(k.gvk)
				raw, err := json.Marshal(o)
				if err != nil {
					return err
				}
				return rep.add(p, raw, fmt.Sprintf("%s page %d", k.resource, page))
			})
			if err != nil {
				return nil, err
			}
			lm, err := meta.ListAccessor(l)
			if err != nil {
				return nil, fmt.Errorf("list %s: %w", k.resource, err)
			}
			if cont = lm.GetContinue(); cont == "" {
				break
			}
		}
	}
	return rep, nil
}
