package admission

import (
	"encoding/json"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagegate/imagegate/internal/jsonscan"
	"github.com/imagegate/imagegate/pkg/policy"
)

// The lean types read only what imagegate judges in an object: its type,
// annotations, and the name and image of every container and image volume.
// Decoding a whole Deployment into the typed apps/v1 structs (every
// container field, quantities, managedFields) costs several times more than
// the rest of a review; reading these few fields skips the rest of the bytes.
//
// The apiserver validates an object against its schema before it calls a
// validating webhook, so the typed decoding has nothing to add for what it
// sends. When the lean decoding fails, the typed one runs anyway, so a broken
// object is described exactly as before.
//
// scanLeanObject reads them in one pass (see jsonscan) and is the way
// objects are read; encoding/json reads them only when the scanner gives up,
// and FuzzScanLeanObject holds the two to the same reading.
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

type leanMeta struct {
	Annotations map[string]string `json:"annotations"`
}

type leanTemplate struct {
	Metadata leanMeta    `json:"metadata"`
	Spec     leanPodSpec `json:"spec"`
}

// leanObject has every path to a pod template that the kinds imagegate
// reads use; each kind picks its own (see leanKinds).
type leanObject struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   leanMeta       `json:"metadata"`
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

func podTemplate(o *leanObject) *leanTemplate { return o.Spec.Template }

var leanKinds = map[metav1.GroupVersionKind]func(*leanObject) *leanTemplate{
	{Version: "v1", Kind: "Pod"}: func(o *leanObject) *leanTemplate {
		return &leanTemplate{Metadata: o.Metadata, Spec: o.Spec.leanPodSpec}
	},
	{Version: "v1", Kind: "PodTemplate"}:                func(o *leanObject) *leanTemplate { return o.Template },
	{Version: "v1", Kind: "ReplicationController"}:      podTemplate,
	{Group: "apps", Version: "v1", Kind: "Deployment"}:  podTemplate,
	{Group: "apps", Version: "v1", Kind: "ReplicaSet"}:  podTemplate,
	{Group: "apps", Version: "v1", Kind: "StatefulSet"}: podTemplate,
	{Group: "apps", Version: "v1", Kind: "DaemonSet"}:   podTemplate,
	{Group: "batch", Version: "v1", Kind: "Job"}:        podTemplate,
	{Group: "batch", Version: "v1", Kind: "CronJob"}:    func(o *leanObject) *leanTemplate { return o.Spec.JobTemplate.Spec.Template },
}

// decodeLean reads raw through the lean types: with the scanner, or with
// encoding/json when the scanner gives up.
func decodeLean(raw []byte) (*leanObject, error) {
	s := jsonscan.New(raw)
	if o := scanLeanObject(&s); s.End() {
		return o, nil
	}
	o := new(leanObject)
	if err := json.Unmarshal(raw, o); err != nil {
		return nil, err
	}
	return o, nil
}

// leanPod is what kind's pods would be, read from o. ok is false for a kind
// without lean types.
func leanPod(kind metav1.GroupVersionKind, o *leanObject) (p pod, meta metav1.TypeMeta, ok bool) {
	pick, ok := leanKinds[kind]
	if !ok {
		return pod{}, metav1.TypeMeta{}, false
	}
	meta = metav1.TypeMeta{APIVersion: o.APIVersion, Kind: o.Kind}
	t := pick(o)
	if t == nil {
		// No template: no images, an empty list as the typed reading of
		// an empty template gives.
		return pod{images: []policy.Image{}}, meta, true
	}
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
	p.annotations = t.Metadata.Annotations
	return p, meta, true
}

// The member names of the lean types, as encoding/json matches them.
var (
	leanObjectFields      = jsonscan.NewFields("apiVersion", "kind", "metadata", "spec", "template")
	leanObjectSpecFields  = jsonscan.NewFields("initContainers", "containers", "ephemeralContainers", "volumes", "template", "jobTemplate")
	leanPodSpecFields     = jsonscan.NewFields("initContainers", "containers", "ephemeralContainers", "volumes")
	leanTemplateFields    = jsonscan.NewFields("metadata", "spec")
	leanMetaFields        = jsonscan.NewFields("annotations")
	leanSpecFields        = jsonscan.NewFields("spec")
	leanTemplateOnly      = jsonscan.NewFields("template")
	leanContainerFields   = jsonscan.NewFields("name", "image")
	leanVolumeFields      = jsonscan.NewFields("name", "image")
	leanVolumeImageFields = jsonscan.NewFields("reference")
)

// scanLeanObject reads an object (or null, which reads as a zero object)
// through the lean types.
func scanLeanObject(s *jsonscan.Scanner) *leanObject {
	o := new(leanObject)
	for m := s.Object(leanObjectFields); m.Next(); {
		switch m.Name() {
		case "apiVersion":
			o.APIVersion = s.ReadString()
		case "kind":
			o.Kind = s.ReadString()
		case "metadata":
			o.Metadata = scanLeanMeta(s)
		case "spec":
			for m := s.Object(leanObjectSpecFields); m.Next(); {
				switch m.Name() {
				case "template":
					o.Spec.Template = scanLeanTemplate(s)
				case "jobTemplate":
					for m := s.Object(leanSpecFields); m.Next(); {
						if m.Name() != "spec" {
							s.Skip()
							continue
						}
						for m := s.Object(leanTemplateOnly); m.Next(); {
							if m.Name() != "template" {
								s.Skip()
								continue
							}
							o.Spec.JobTemplate.Spec.Template = scanLeanTemplate(s)
						}
					}
				default:
					scanLeanPodSpecField(s, &o.Spec.leanPodSpec, m.Name())
				}
			}
		case "template":
			o.Template = scanLeanTemplate(s)
		default:
			s.Skip()
		}
	}
	return o
}

func scanLeanMeta(s *jsonscan.Scanner) (m leanMeta) {
	for o := s.Object(leanMetaFields); o.Next(); {
		if o.Name() == "annotations" {
			m.Annotations = s.ReadStringMap()
		} else {
			s.Skip()
		}
	}
	return m
}

func scanLeanTemplate(s *jsonscan.Scanner) *leanTemplate {
	if s.Null() {
		return nil
	}
	t := new(leanTemplate)
	for o := s.Object(leanTemplateFields); o.Next(); {
		switch o.Name() {
		case "metadata":
			t.Metadata = scanLeanMeta(s)
		case "spec":
			for o := s.Object(leanPodSpecFields); o.Next(); {
				scanLeanPodSpecField(s, &t.Spec, o.Name())
			}
		default:
			s.Skip()
		}
	}
	return t
}

// scanLeanPodSpecField reads the member name of a pod spec into spec, or
// skips it.
func scanLeanPodSpecField(s *jsonscan.Scanner, spec *leanPodSpec, name string) {
	switch name {
	case "initContainers":
		spec.InitContainers = scanLeanContainers(s)
	case "containers":
		spec.Containers = scanLeanContainers(s)
	case "ephemeralContainers":
		spec.EphemeralContainers = scanLeanContainers(s)
	case "volumes":
		if s.Null() {
			return
		}
		spec.Volumes = []leanVolume{}
		for a := s.Array(); a.Next(); {
			var v leanVolume
			for o := s.Object(leanVolumeFields); o.Next(); {
				switch o.Name() {
				case "name":
					v.Name = s.ReadString()
				case "image":
					if s.Null() {
						break
					}
					v.Image = new(leanVolumeImage)
					for o := s.Object(leanVolumeImageFields); o.Next(); {
						if o.Name() == "reference" {
							v.Image.Reference = s.ReadString()
						} else {
							s.Skip()
						}
					}
				default:
					s.Skip()
				}
			}
			spec.Volumes = append(spec.Volumes, v)
		}
	default:
		s.Skip()
	}
}

func scanLeanContainers(s *jsonscan.Scanner) []leanContainer {
	if s.Null() {
		return nil
	}
	out := []leanContainer{}
	for a := s.Array(); a.Next(); {
		var c leanContainer
		for o := s.Object(leanContainerFields); o.Next(); {
			switch o.Name() {
			case "name":
				c.Name = s.ReadString()
			case "image":
				c.Image = s.ReadString()
			default:
				s.Skip()
			}
		}
		out = append(out, c)
	}
	return out
}
