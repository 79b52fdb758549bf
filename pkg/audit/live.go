package audit

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"

	"github.com/imagegate/imagegate/pkg/admission"
	"github.com/imagegate/imagegate/pkg/policy"
)

// DefaultChunkSize is how many objects a live audit asks for per page, as
// kubectl's --chunk-size does.
const DefaultChunkSize = 500

// Live lists every kind the admission webhook judges ([admission.Kinds]:
// pods, podtemplates, replicationcontrollers, deployments, replicasets,
// statefulsets, daemonsets, jobs and cronjobs, in that order; the RBAC it
// needs is list on each) from the cluster behind dc, in namespace ("" for
// all), chunkSize objects a page (0 for one page), and judges each object
// with p exactly as [Audit] judges it read from a file: the report is the
// one `kubectl get` of the same objects would give. Objects are judged a
// page at a time, so a large cluster is never held in memory whole.
func Live(ctx context.Context, p *policy.Policy, dc dynamic.Interface, namespace string, chunkSize int64) (*Report, error) {
	rep := &Report{Policy: p.Hash()}
	for _, gvk := range admission.Kinds() {
		// The plurals of these kinds are regular (pods, ..., cronjobs).
		gvr, _ := meta.UnsafeGuessKindToResource(gvk)
		for page, cont := 1, ""; ; page++ {
			l, err := dc.Resource(gvr).Namespace(namespace).List(ctx, metav1.ListOptions{Limit: chunkSize, Continue: cont})
			if err != nil {
				return nil, fmt.Errorf("list %s: %w", gvr.Resource, err)
			}
			for i := range l.Items {
				// The file path reads an object by its apiVersion and kind.
				l.Items[i].SetGroupVersionKind(gvk)
				raw, err := l.Items[i].MarshalJSON()
				if err != nil {
					return nil, err
				}
				if err := rep.add(p, raw, fmt.Sprintf("%s page %d", gvr.Resource, page)); err != nil {
					return nil, err
				}
			}
			if cont = l.GetContinue(); cont == "" {
				break
			}
		}
	}
	return rep, nil
}
