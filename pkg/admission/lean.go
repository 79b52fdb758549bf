package admission

import (
	"fmt"
	"strings"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/imagegate/imagegate/pkg/wirejson"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagegate/imagegate/pkg/policy"
)

// The lean types read only what imagegate judges or rewrites in an object:
// its type, annotations, and the name and image of every container and image
// volume. Decoding a whole Deployment into the typed apps/v1 structs (every
// container field, quantities, managedFields) costs several times more than
// the rest of a review; reading these few fields skips the rest of the bytes.
// Both webhooks read objects through them, in the same pass as the review
// (see wireRequest).
//
// The apiserver validates an object against its schema before it calls a
// webhook, so the typed decoding has nothing to add for what it sends. When
// the lean decoding fails, the typed one runs anyway to say what is wrong
// with the object in the API's terms, and the request is not read.
// FuzzLeanObject holds the lean reading to the typed one as the apiserver
// decodes it.
type leanContainer struct {
	Name  string `json:"name"`
	Image string `json:"image"`
}

type leanVolume struct {
	Name  string           `json:"name"`
	Image *leanVolumeImage `json:"image"`
}

type leanVolumeImage struct {
	Reference string `json:"reference"`
}

type leanPodSpec struct {
	InitContainers      []leanContainer `json:"initContainers"`
	Containers          []leanContainer `json:"containers"`
	EphemeralContainers []leanContainer `json:"ephemeralContainers"`
	Volumes             []leanVolume    `json:"volumes"`
}

// leanMeta is an object's metadata. Whether it and its annotations are
// there at all matters to a patch that adds an annotation.
type leanMeta struct {
	Annotations leanAnnotations `json:"annotations"`
}

// leanAnnotations keeps only the annotations imagegate reads: break-glass
// keys (a superset: every key ParseBreakGlass could accept contains
// breakGlassKeyPart) and the original images. The rest are checked to be
// strings, as the apiserver requires, and skipped, so a pod carrying
// megabytes of other annotations costs a review no memory beyond its body.
type leanAnnotations map[string]string

const breakGlassKeyPart = ".image-policy.k8s.io/"

// UnmarshalJSONFrom reads an annotations object, or null.
func (a *leanAnnotations) UnmarshalJSONFrom(dec *jsontext.Decoder) error {
	tok, err := dec.ReadToken()
	switch {
	case err != nil:
		return err
	case tok.Kind() == 'n':
		*a = nil
		return nil
	case tok.Kind() != '{':
		return fmt.Errorf("annotations: want an object, got %v", tok.Kind())
	}
	if *a == nil {
		*a = leanAnnotations{}
	}
	for dec.PeekKind() != '}' {
		name, err := dec.ReadToken()
		if err != nil {
			return err
		}
		key := name.String()
		if k := dec.PeekKind(); k != '"' {
			return fmt.Errorf("annotation %q: want a string, got %v", key, k)
		}
		if !strings.Contains(key, breakGlassKeyPart) && key != AnnotationOriginalImages {
			if err := dec.SkipValue(); err != nil {
				return err
			}
			continue
		}
		value, err := dec.ReadToken()
		if err != nil {
			return err
		}
		(*a)[key] = value.String()
	}
	_, err = dec.ReadToken()
	return err
}

type leanTemplate struct {
	Metadata *leanMeta   `json:"metadata"`
	Spec     leanPodSpec `json:"spec"`
}

// leanObject has every path to a pod template that the kinds imagegate
// reads use; each kind picks its own (see templates).
type leanObject struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   *leanMeta      `json:"metadata"`
	Spec       leanObjectSpec `json:"spec"`
	Template   *leanTemplate  `json:"template"` // PodTemplate
}

type leanObjectSpec struct {
	leanPodSpec                 // Pod
	Template    *leanTemplate   `json:"template"`    // workloads
	JobTemplate leanJobTemplate `json:"jobTemplate"` // CronJob
}

type leanJobTemplate struct {
	Spec struct {
		Template *leanTemplate `json:"template"`
	} `json:"spec"`
}

// templatePicker picks a kind's pod template out of an object, nil if it has
// none, and gives the template's JSON pointer in the object, for patches.
type templatePicker func(*leanObject) (tmpl *leanTemplate, pointer string)

func specTemplate(o *leanObject) (*leanTemplate, string) { return o.Spec.Template, "/spec/template" }

// templates are the kinds imagegate reads, each with its pod template: the
// kinds of the typed readers (TestLeanReadsTheTypedKinds).
var templates = map[metav1.GroupVersionKind]templatePicker{
	{Version: "v1", Kind: "Pod"}: func(o *leanObject) (*leanTemplate, string) {
		return &leanTemplate{Metadata: o.Metadata, Spec: o.Spec.leanPodSpec}, ""
	},
	{Version: "v1", Kind: "PodTemplate"}:                func(o *leanObject) (*leanTemplate, string) { return o.Template, "/template" },
	{Version: "v1", Kind: "ReplicationController"}:      specTemplate,
	{Group: "apps", Version: "v1", Kind: "Deployment"}:  specTemplate,
	{Group: "apps", Version: "v1", Kind: "ReplicaSet"}:  specTemplate,
	{Group: "apps", Version: "v1", Kind: "StatefulSet"}: specTemplate,
	{Group: "apps", Version: "v1", Kind: "DaemonSet"}:   specTemplate,
	{Group: "batch", Version: "v1", Kind: "Job"}:        specTemplate,
	{Group: "batch", Version: "v1", Kind: "CronJob"}: func(o *leanObject) (*leanTemplate, string) {
		return o.Spec.JobTemplate.Spec.Template, "/spec/jobTemplate/spec/template"
	},
}

// readLean returns obj, request.object or request.oldObject (field) of req,
// read through the lean types: as the review's decoding read it, or from its
// bytes. An error says the object is missing, does not decode, or says it
// is of another type than request.kind.
func readLean(req *admissionv1.AdmissionRequest, field string, obj object) (*leanObject, error) {
	o := obj.lean
	if o == nil {
		if len(obj.raw) == 0 {
			return nil, fmt.Errorf("%s is missing from a %s of %s", field, req.Operation, describeKind(req.Kind))
		}
		o = new(leanObject)
		if err := wirejson.Unmarshal(obj.raw, o); err != nil {
			return nil, fmt.Errorf("cannot read %s as %s: %w", field, describeKind(req.Kind), describeObjectError(req.Kind, obj.raw, err))
		}
	}
	if (o.APIVersion != "" || o.Kind != "") && (o.Kind != req.Kind.Kind || o.APIVersion != apiVersion(req.Kind)) {
		return nil, fmt.Errorf("%s is apiVersion %q kind %q, but request.kind is %s", field, o.APIVersion, o.Kind, describeKind(req.Kind))
	}
	return o, nil
}

// describeObjectError says why raw, an object of kind k, did not decode
// through the lean types: as the typed decoding (encoding/json into the
// k8s.io/api types) says it, naming the field in the API's terms as
// imagegate always has, or, for what only the stricter decoder rejects
// (a repeated member name, invalid UTF-8), as it says it.
//
//go:noinline
func describeObjectError(k metav1.GroupVersionKind, raw []byte, err error) error {
	if read, ok := kinds[k]; ok {
		if _, _, terr := read(raw); terr != nil {
			return terr
		}
	}
	return err
}

// leanPod is what the pods of o, an object of a kind imagegate reads, would
// be: its template's images in the order the kubelet starts them (init
// containers, containers, ephemeral containers, then image volumes) and
// annotations.
func leanPod(pick templatePicker, o *leanObject) pod {
	t, _ := pick(o)
	if t == nil {
		// No template: no images, an empty list as the typed reading of
		// an empty template gives.
		return pod{images: []policy.Image{}}
	}
	var p pod
	spec := &t.Spec
	n := len(spec.InitContainers) + len(spec.Containers) + len(spec.EphemeralContainers) + len(spec.Volumes)
	p.images = make([]policy.Image, 0, n)
	for _, c := range spec.InitContainers {
		p.images = append(p.images, policy.Image{Container: c.Name, Source: SourceInitContainer, Ref: c.Image})
	}
	for _, c := range spec.Containers {
		p.images = append(p.images, policy.Image{Container: c.Name, Ref: c.Image})
	}
	for _, c := range spec.EphemeralContainers {
		p.images = append(p.images, policy.Image{Container: c.Name, Source: SourceEphemeralContainer, Ref: c.Image})
	}
	for _, v := range spec.Volumes {
		if v.Image != nil {
			p.images = append(p.images, policy.Image{Container: v.Name, Source: SourceVolume, Ref: v.Image.Reference})
		}
	}
	if t.Metadata != nil {
		p.annotations = t.Metadata.Annotations
	}
	return p
}
