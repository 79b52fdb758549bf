package admission

import (
	"fmt"
	"strings"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/imagegate/imagegate/pkg/wirejson"

	admissionv1 "k8s.io/api/admission/v1"
)

// The lean types read only what imagegate judges or rewrites in an object:
// its type, annotations, and the name and image of every container and image
// volume. Decoding a whole Deployment into the typed apps/v1 structs (every
// container field, quantities, managedFields) costs several times more than
// the rest of a review; reading these few fields skips the rest of the bytes.
// Both webhooks read objects through them, in the same pass as the review
// (see wireRequest), and so does imagegate audit (see ReadObject).
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
// reads use; each kind picks its own (see kindTable).
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

// readLean returns obj, request.object or request.oldObject (field) of req,
// read through the lean types: as the review's decoding read it, or from its
// bytes. An error says the object is missing, does not decode, or says it
// is of another type than request.kind.
func readLean(req *admissionv1.AdmissionRequest, k *kind, field string, obj object) (*leanObject, error) {
	o := obj.lean
	if o == nil {
		if len(obj.raw) == 0 {
			return nil, fmt.Errorf("%s is missing from a %s of %s", field, req.Operation, describeKind(req.Kind))
		}
		o = new(leanObject)
		if err := wirejson.Unmarshal(obj.raw, o); err != nil {
			return nil, fmt.Errorf("cannot read %s as %s: %w", field, describeKind(req.Kind), describeObjectError(k, obj.raw, err))
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
func describeObjectError(k *kind, raw []byte, err error) error {
	if terr := k.decodes(raw); terr != nil {
		return terr
	}
	return err
}
