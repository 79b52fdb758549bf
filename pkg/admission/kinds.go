package admission

import (
	"cmp"
	stdjson "encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/imagegate/imagegate/pkg/policy"
)

// kind is everything imagegate knows about one type of object whose pods
// it judges. Break-glass annotations come from the pod template's
// metadata, which the resulting pods carry, never from the workload's own
// metadata: a Deployment allowed by an annotation its pods lack would only
// move the denial to its pods.
type kind struct {
	gvk metav1.GroupVersionKind
	// also is a subresource read too, said in knownKinds.
	also string
	// template picks the pod template out of an object (for a Pod, the pod
	// itself), nil if it has none, and gives its JSON pointer, for patches.
	template func(*leanObject) (tmpl *leanTemplate, pointer string)
	// decodes decodes an object into its k8s.io/api type with
	// encoding/json, only to say what is wrong with an object the lean
	// types cannot read (see describeObjectError).
	decodes func(raw []byte) error
}

// kindTable is every kind imagegate reads.
var kindTable = []kind{
	{gvk: v1("", "Pod"), also: "pods/ephemeralcontainers", decodes: decodes[corev1.Pod], template: func(o *leanObject) (*leanTemplate, string) {
		return &leanTemplate{Metadata: o.Metadata, Spec: o.Spec.leanPodSpec}, ""
	}},
	{gvk: v1("", "PodTemplate"), decodes: decodes[corev1.PodTemplate], template: func(o *leanObject) (*leanTemplate, string) {
		return o.Template, "/template"
	}},
	{gvk: v1("", "ReplicationController"), decodes: decodes[corev1.ReplicationController], template: specTemplate},
	{gvk: v1("apps", "Deployment"), decodes: decodes[appsv1.Deployment], template: specTemplate},
	{gvk: v1("apps", "ReplicaSet"), decodes: decodes[appsv1.ReplicaSet], template: specTemplate},
	{gvk: v1("apps", "StatefulSet"), decodes: decodes[appsv1.StatefulSet], template: specTemplate},
	{gvk: v1("apps", "DaemonSet"), decodes: decodes[appsv1.DaemonSet], template: specTemplate},
	{gvk: v1("batch", "Job"), decodes: decodes[batchv1.Job], template: specTemplate},
	{gvk: v1("batch", "CronJob"), decodes: decodes[batchv1.CronJob], template: func(o *leanObject) (*leanTemplate, string) {
		return o.Spec.JobTemplate.Spec.Template, "/spec/jobTemplate/spec/template"
	}},
}

func v1(group, name string) metav1.GroupVersionKind {
	return metav1.GroupVersionKind{Group: group, Version: "v1", Kind: name}
}

func specTemplate(o *leanObject) (*leanTemplate, string) { return o.Spec.Template, "/spec/template" }

func decodes[T any](raw []byte) error { return stdjson.Unmarshal(raw, new(T)) }

// Kinds are the kinds imagegate judges, in the table's order: Pod, then
// the workloads whose pod templates make pods.
func Kinds() []schema.GroupVersionKind {
	out := make([]schema.GroupVersionKind, len(kindTable))
	for i, k := range kindTable {
		out[i] = schema.GroupVersionKind{Group: k.gvk.Group, Version: k.gvk.Version, Kind: k.gvk.Kind}
	}
	return out
}

// kinds looks kindTable up by request.kind.
var kinds = func() map[metav1.GroupVersionKind]*kind {
	m := make(map[metav1.GroupVersionKind]*kind, len(kindTable))
	for i := range kindTable {
		m[kindTable[i].gvk] = &kindTable[i]
	}
	return m
}()

// knownKinds is said in the message for a kind imagegate cannot read: by
// API group, in the table's order within one, e.g. "v1 Pod and
// PodTemplate, apps/v1 Deployment".
var knownKinds = func() string {
	ks := slices.Clone(kindTable)
	slices.SortStableFunc(ks, func(a, b kind) int {
		return cmp.Or(cmp.Compare(a.gvk.Group, b.gvk.Group), cmp.Compare(a.gvk.Version, b.gvk.Version))
	})
	var b strings.Builder
	for i, k := range ks {
		first := i == 0 || apiVersion(ks[i-1].gvk) != apiVersion(k.gvk)
		if last := i+1 == len(ks) || apiVersion(ks[i+1].gvk) != apiVersion(k.gvk); !first && last {
			b.WriteString(" and ")
		} else if i > 0 {
			b.WriteString(", ")
		}
		if first {
			b.WriteString(apiVersion(k.gvk) + " ")
		}
		b.WriteString(k.gvk.Kind)
		if k.also != "" {
			b.WriteString(" (also " + k.also + ")")
		}
	}
	return b.String()
}()

// imageRef is one image a pod pulls and where it is written in the pod
// spec: the list and the index of its container or volume.
type imageRef struct {
	Image policy.Image
	field string
	index int
}

// pointer is the JSON pointer of the image's field in an object whose pod
// template is at prefix; made only for an image that is patched.
func (r imageRef) pointer(prefix string) string {
	p := prefix + "/spec/" + r.field + "/" + strconv.Itoa(r.index) + "/image"
	if r.field == "volumes" {
		p += "/reference"
	}
	return p
}

// images is the only list of what a pod pulls: every image of the
// template (none for a nil one), in the order the kubelet starts them:
// init containers, containers, ephemeral containers, then image volumes.
func (t *leanTemplate) images() []imageRef {
	if t == nil {
		return []imageRef{}
	}
	s := &t.Spec
	out := make([]imageRef, 0, len(s.InitContainers)+len(s.Containers)+len(s.EphemeralContainers)+len(s.Volumes))
	add := func(list []leanContainer, field, source string) {
		for i, c := range list {
			out = append(out, imageRef{policy.Image{Container: c.Name, Source: source, Ref: c.Image}, field, i})
		}
	}
	add(s.InitContainers, "initContainers", SourceInitContainer)
	add(s.Containers, "containers", "")
	add(s.EphemeralContainers, "ephemeralContainers", SourceEphemeralContainer)
	for i, v := range s.Volumes {
		if v.Image != nil {
			out = append(out, imageRef{policy.Image{Container: v.Name, Source: SourceVolume, Ref: v.Image.Reference}, "volumes", i})
		}
	}
	return out
}

// newImages keeps the images of refs whose reference old does not already
// pull, wherever old pulled it.
func newImages(refs []imageRef, old *leanTemplate) []imageRef {
	had := map[string]bool{}
	for _, r := range old.images() {
		had[r.Image.Ref] = true
	}
	out := refs[:0:0]
	for _, r := range refs {
		if !had[r.Image.Ref] {
			out = append(out, r)
		}
	}
	return out
}

// request is what both webhooks, and the audit, read of one
// AdmissionRequest.
type request struct {
	tmpl, oldTmpl *leanTemplate // the pod templates, nil if none
	prefix        string        // the template's JSON pointer
	images        []imageRef    // for an UPDATE, only those the old object lacks
}

// pod is the images and annotations of the pods the request would make,
// as the policy judges them.
func (r *request) pod() ([]policy.Image, map[string]string) {
	imgs := make([]policy.Image, len(r.images))
	for i, ref := range r.images {
		imgs[i] = ref.Image
	}
	if r.tmpl == nil || r.tmpl.Metadata == nil {
		return imgs, nil
	}
	return imgs, r.tmpl.Metadata.Annotations
}

// readRequest reads req, whose objects are objs: the pod templates of its
// object and old object and the images it adds. judge is false when there
// is nothing to judge (DELETE, CONNECT, or an UPDATE that adds no image).
// An error means the request cannot be read; it says what was received,
// and which rules (webhook's) should not have sent a kind imagegate does
// not read. On an error reading the old object, r has the object's images.
func readRequest(req *admissionv1.AdmissionRequest, objs requestObjects, webhook string) (r request, judge bool, err error) {
	if req == nil {
		return r, false, errors.New("the AdmissionReview carries no request")
	}
	switch req.Operation {
	case admissionv1.Delete, admissionv1.Connect:
		return r, false, nil
	case admissionv1.Create, admissionv1.Update:
	default:
		return r, false, fmt.Errorf("operation %q is not one imagegate knows (CREATE, UPDATE, DELETE, CONNECT)", req.Operation)
	}
	k, ok := kinds[req.Kind]
	if !ok {
		return r, false, fmt.Errorf("imagegate cannot read %s (resource %s); it reads %s: remove the resource from the %s's rules",
			describeKind(req.Kind), describeResource(req), knownKinds, webhook)
	}
	obj, err := readLean(req, k, "request.object", objs.object)
	if err != nil {
		return r, false, err
	}
	r.tmpl, r.prefix = k.template(obj)
	r.images = r.tmpl.images()
	if req.Operation == admissionv1.Update && objs.oldObject.present() {
		old, err := readLean(req, k, "request.oldObject", objs.oldObject)
		if err != nil {
			return r, false, err
		}
		r.oldTmpl, _ = k.template(old)
		r.images = newImages(r.images, r.oldTmpl)
		if len(r.images) == 0 {
			return r, false, nil
		}
	}
	// A CREATE without images, or an UPDATE without an old object, is judged
	// as it is: the policy denies a pod with no image.
	return r, true, nil
}

func apiVersion(k metav1.GroupVersionKind) string {
	if k.Group == "" {
		return k.Version
	}
	return k.Group + "/" + k.Version
}

func describeKind(k metav1.GroupVersionKind) string {
	return fmt.Sprintf("apiVersion %q kind %q", apiVersion(k), k.Kind)
}

func describeResource(req *admissionv1.AdmissionRequest) string {
	r := req.Resource.Resource
	if req.Resource.Group != "" {
		r += "." + req.Resource.Group
	}
	if req.SubResource != "" {
		r += "/" + req.SubResource
	}
	return fmt.Sprintf("%q", r)
}
