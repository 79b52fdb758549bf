package admission_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/pkg/admission"
	"github.com/imagegate/imagegate/pkg/audit"
	"github.com/imagegate/imagegate/pkg/policy"
)

// The validating webhook, the mutating webhook and the audit see the same
// images, used by the same containers and volumes in the same order, for
// every kind and every field a pod pulls an image from: were one to miss
// an image, it would be a way around the policy or a false report.
func TestEveryConsumerSeesTheSameImages(t *testing.T) {
	t.Parallel()
	p := mirrorPolicy(t) // rewrites every image below, so the mutating webhook and the audit list each one
	kinds := []struct {
		group, kind string
		object      string // the object around its pod spec (%s)
	}{
		{kind: "Pod", object: `"spec":%s`},
		{kind: "PodTemplate", object: `"template":{"spec":%s}`},
		{kind: "ReplicationController", object: `"spec":{"template":{"spec":%s}}`},
		{group: "apps", kind: "Deployment", object: `"spec":{"template":{"spec":%s}}`},
		{group: "apps", kind: "ReplicaSet", object: `"spec":{"template":{"spec":%s}}`},
		{group: "apps", kind: "StatefulSet", object: `"spec":{"template":{"spec":%s}}`},
		{group: "apps", kind: "DaemonSet", object: `"spec":{"template":{"spec":%s}}`},
		{group: "batch", kind: "Job", object: `"spec":{"template":{"spec":%s}}`},
		{group: "batch", kind: "CronJob", object: `"spec":{"jobTemplate":{"spec":{"template":{"spec":%s}}}}`},
	}
	fields := []struct {
		name string
		spec string // the pod spec
		want []policy.Image
	}{
		{name: "init containers", spec: `{"initContainers":[{"name":"i","image":"i:1"}]}`, want: []policy.Image{{Container: "i", Source: admission.SourceInitContainer, Ref: "i:1"}}},
		{name: "containers", spec: `{"containers":[{"name":"a","image":"a:1"},{"name":"b","image":"b:1"}]}`, want: []policy.Image{{Container: "a", Ref: "a:1"}, {Container: "b", Ref: "b:1"}}},
		{name: "ephemeral containers", spec: `{"ephemeralContainers":[{"name":"e","image":"e:1"}]}`, want: []policy.Image{{Container: "e", Source: admission.SourceEphemeralContainer, Ref: "e:1"}}},
		{name: "image volumes", spec: `{"volumes":[{"name":"cfg","configMap":{"name":"x"}},{"name":"v","image":{"reference":"v:1"}}]}`, want: []policy.Image{{Container: "v", Source: admission.SourceVolume, Ref: "v:1"}}},
		{name: "every field, in the order the kubelet starts them", spec: `{"volumes":[{"name":"v","image":{"reference":"v:1"}}],"ephemeralContainers":[{"name":"e","image":"e:1"}],` +
			`"containers":[{"name":"a","image":"a:1"}],"initContainers":[{"name":"i","image":"i:1"}]}`, want: []policy.Image{
			{Container: "i", Source: admission.SourceInitContainer, Ref: "i:1"}, {Container: "a", Ref: "a:1"},
			{Container: "e", Source: admission.SourceEphemeralContainer, Ref: "e:1"}, {Container: "v", Source: admission.SourceVolume, Ref: "v:1"},
		}},
	}
	for _, k := range kinds {
		for _, f := range fields {
			t.Run(k.kind+" "+f.name, func(t *testing.T) {
				t.Parallel()
				apiVersion := strings.TrimPrefix(k.group+"/v1", "/")
				object := `{"apiVersion":"` + apiVersion + `","kind":"` + k.kind + `","metadata":{"name":"x","namespace":"team-a"},` + fmt.Sprintf(k.object, f.spec) + `}`
				body := review("v1", request(k.group, "v1", k.kind, "CREATE", object, "null"))

				var validated policy.Input
				_, err := admission.Review(p, body, &validated, new(policy.Decision))
				if err != nil {
					t.Fatal(err)
				}
				m, _, err := admission.Mutate(p, body)
				if err != nil {
					t.Fatal(err)
				}
				var mutated []policy.Image
				for _, rw := range m.Rewritten {
					mutated = append(mutated, rw.Image)
				}
				rep, err := audit.Audit(p, strings.NewReader(object))
				if err != nil {
					t.Fatal(err)
				}
				var audited []policy.Image
				for _, rw := range rep.Rewrites {
					audited = append(audited, policy.Image{Container: rw.Container, Source: rw.Source, Ref: rw.Image})
				}
				for _, got := range []struct {
					who    string
					images []policy.Image
				}{{"the validating webhook", validated.Images}, {"the mutating webhook", mutated}, {"the audit", audited}} {
					if !slices.Equal(got.images, f.want) {
						t.Errorf("%s saw %+v, want %+v", got.who, got.images, f.want)
					}
				}
			})
		}
	}
}
