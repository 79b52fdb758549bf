package admission

import (
	"encoding/json"
	"errors"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
type leanContainer struct {
	Name  string `json:"name"`
	Image string `json:"image"`
}

type leanVolume struct {
	Name  string `json:"name"`
	Image *struct {
		Reference string `json:"reference"`
	} `json:"image"`
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
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Metadata   leanMeta `json:"metadata"`
	Spec       struct {
		leanPodSpec               // Pod
		Template    *leanTemplate `json:"template"` // workloads
		JobTemplate struct {
			Spec struct {
				Template *leanTemplate `json:"template"`
			} `json:"spec"`
		} `json:"jobTemplate"` // CronJob
	} `json:"spec"`
	Template *leanTemplate `json:"template"` // PodTemplate
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

var errNotLean = errors.New("no lean reader")

// readLean reads raw as kind with the lean types. Any error sends the
// caller to the typed reader.
func readLean(kind metav1.GroupVersionKind, raw []byte) (*corev1.PodTemplateSpec, metav1.TypeMeta, error) {
	pick, ok := leanKinds[kind]
	if !ok {
		return nil, metav1.TypeMeta{}, errNotLean
	}
	var o leanObject
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, metav1.TypeMeta{}, err
	}
	meta := metav1.TypeMeta{APIVersion: o.APIVersion, Kind: o.Kind}
	t := pick(&o)
	if t == nil {
		return &corev1.PodTemplateSpec{}, meta, nil
	}
	tmpl := &corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Annotations: t.Metadata.Annotations}}
	spec := &tmpl.Spec
	for _, c := range t.Spec.InitContainers {
		spec.InitContainers = append(spec.InitContainers, corev1.Container{Name: c.Name, Image: c.Image})
	}
	for _, c := range t.Spec.Containers {
		spec.Containers = append(spec.Containers, corev1.Container{Name: c.Name, Image: c.Image})
	}
	for _, c := range t.Spec.EphemeralContainers {
		spec.EphemeralContainers = append(spec.EphemeralContainers, corev1.EphemeralContainer{
			EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: c.Name, Image: c.Image},
		})
	}
	for _, v := range t.Spec.Volumes {
		vol := corev1.Volume{Name: v.Name}
		if v.Image != nil {
			vol.Image = &corev1.ImageVolumeSource{Reference: v.Image.Reference}
		}
		spec.Volumes = append(spec.Volumes, vol)
	}
	return tmpl, meta, nil
}
