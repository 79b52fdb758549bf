// Package admission translates the kube-apiserver's ValidatingAdmissionWebhook
// wire format, admission.k8s.io/v1 and v1beta1 AdmissionReview, to a
// policy.Input and a policy.Decision back to an AdmissionReview response.
//
// It reads Pods (including the pods/ephemeralcontainers subresource that
// kubectl debug writes) and the pod templates of PodTemplate,
// ReplicationController, Deployment, ReplicaSet, StatefulSet, DaemonSet, Job
// and CronJob, so a bad image is refused when the workload is applied rather
// than later in a controller's events.
//
// The policy decides; this package only decides what the policy cannot be
// asked about:
//   - DELETE and CONNECT carry no pod to judge and pass.
//   - UPDATE judges only the images the old object did not already have, so
//     scaling or relabelling a workload that predates the policy is not
//     blocked while any new image is. If no image is new, it passes.
//   - A request it cannot read (no request, an unknown operation or kind, an
//     object that does not decode) is denied with a message that says what
//     it got: the webhook fails closed, in warn mode too.
//
// Like an ImageReview, a denial is an ordinary answer (HTTP 200 with
// allowed false and status.code 403); only a body that is not an
// AdmissionReview at all is an error.
package admission

import (
	"bytes"
	stdjson "encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode"

	"github.com/imagegate/imagegate/pkg/wirejson"

	admissionv1 "k8s.io/api/admission/v1"
	admissionv1beta1 "k8s.io/api/admission/v1beta1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/imagegate/imagegate/pkg/policy"
)

// Kind is the only type this package speaks, in either of two versions.
const Kind = "AdmissionReview"

// The AdmissionReview versions this package reads and answers in.
var (
	APIVersionV1      = admissionv1.SchemeGroupVersion.String()
	APIVersionV1beta1 = admissionv1beta1.SchemeGroupVersion.String()
)

// Sources label what uses an image in messages (see policy.Image.Source);
// containers keep the policy's default label, "container".
const (
	SourceInitContainer      = "init container"
	SourceEphemeralContainer = "ephemeral container"
	SourceVolume             = "volume"
)

// envelope is the part of an AdmissionReview read before the version is
// known, when a review does not decode (see decodeInSteps).
type envelope struct {
	metav1.TypeMeta `json:",inline"`
	Request         stdjson.RawMessage `json:"request,omitempty"`
}

// Decode parses an AdmissionReview body of either version. A v1beta1 request
// is decoded into the v1 types, which share its wire schema field for field;
// the returned review keeps the apiVersion that was sent so the reply can
// answer in it. Unknown fields are tolerated (see wirejson.Options). Malformed
// JSON, trailing data, a wrong apiVersion or kind, or a request whose fields
// have the wrong types are errors that say what was wrong; a missing request
// is not (Review denies it).
func Decode(body []byte) (*admissionv1.AdmissionReview, error) {
	var review admissionv1.AdmissionReview
	if err := wirejson.Unmarshal(body, &review); err != nil {
		return nil, describeError(body, err)
	}
	if err := checkType(review.TypeMeta); err != nil {
		return nil, err
	}
	return &review, nil
}

// describeError says why body did not decode: as encoding/json says it
// (decodeInSteps), as imagegate always has, or, for what only the stricter
// decoder rejects (a repeated member name, invalid UTF-8), as it says it.
//
//go:noinline
func describeError(body []byte, err error) error {
	if _, v1err := decodeInSteps(body); v1err != nil {
		return v1err
	}
	return fmt.Errorf("decode AdmissionReview: %w", err)
}

func checkType(t metav1.TypeMeta) error {
	if t.Kind != Kind || (t.APIVersion != APIVersionV1 && t.APIVersion != APIVersionV1beta1) {
		return fmt.Errorf("expected kind %q with apiVersion %q or %q, got apiVersion %q and kind %q",
			Kind, APIVersionV1, APIVersionV1beta1, t.APIVersion, t.Kind)
	}
	return nil
}

// wireReview is an AdmissionReview of either version as the webhooks read
// it: the typed review, whose request reads its objects through the lean
// types in the same pass.
type wireReview struct {
	admissionv1.AdmissionReview
	Request *wireRequest `json:"request"` // in place of AdmissionReview.Request
}

// wireRequest is the typed request, every field checked as Decode checks
// it, but for its objects, which the lean types read where they lie
// instead of copying them into a RawExtension to be read again.
type wireRequest struct {
	admissionv1.AdmissionRequest
	Object    *leanObject `json:"object"`    // in place of AdmissionRequest.Object
	OldObject *leanObject `json:"oldObject"` // in place of AdmissionRequest.OldObject
}

// decodeReview decodes body for a webhook: the review and its request's
// objects, in one pass. A body that this does not read, Decode reads, or
// says what is wrong with: for a review whose object the lean types cannot
// read, the objects are its bytes and readLean says what is wrong with them.
func decodeReview(body []byte) (*admissionv1.AdmissionReview, requestObjects, error) {
	var w wireReview
	if err := wirejson.Unmarshal(body, &w); err != nil {
		return decode(body)
	}
	if err := checkType(w.TypeMeta); err != nil {
		return nil, requestObjects{}, err
	}
	review := &w.AdmissionReview
	if w.Request == nil {
		return review, requestObjects{}, nil
	}
	review.Request = &w.Request.AdmissionRequest
	return review, requestObjects{object{lean: w.Request.Object}, object{lean: w.Request.OldObject}}, nil
}

// decode is the path for what decodeReview does not read, kept out of its
// frame.
//
//go:noinline
func decode(body []byte) (*admissionv1.AdmissionReview, requestObjects, error) {
	review, err := Decode(body)
	if err != nil {
		return nil, requestObjects{}, err
	}
	return review, objects(review.Request), nil
}

// decodeInSteps reads the envelope, then the request in its own version,
// so that an error names the field and type of the version sent.
func decodeInSteps(body []byte) (*admissionv1.AdmissionReview, error) {
	var env envelope
	// encoding/json.Unmarshal rejects exactly what the decoder below rejects
	// (malformed JSON, trailing data), without copying the body into a
	// decoder's buffer; the decoder only runs again to say what was wrong.
	if err := stdjson.Unmarshal(body, &env); err != nil {
		env = envelope{}
		dec := stdjson.NewDecoder(bytes.NewReader(body))
		if err := dec.Decode(&env); err != nil {
			return nil, fmt.Errorf("decode AdmissionReview: %w", wirejson.DescribeStdError(err))
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return nil, errors.New("decode AdmissionReview: unexpected data after the JSON object")
		}
		return nil, fmt.Errorf("decode AdmissionReview: %w", wirejson.DescribeStdError(err))
	}
	if err := checkType(env.TypeMeta); err != nil {
		return nil, err
	}
	review := &admissionv1.AdmissionReview{TypeMeta: env.TypeMeta}
	if len(env.Request) == 0 || bytes.Equal(env.Request, []byte("null")) {
		return review, nil
	}
	if env.APIVersion == APIVersionV1 {
		review.Request = new(admissionv1.AdmissionRequest)
		if err := stdjson.Unmarshal(env.Request, review.Request); err != nil {
			return nil, fmt.Errorf("decode AdmissionReview request: %w", err)
		}
		return review, nil
	}
	var req admissionv1beta1.AdmissionRequest
	if err := stdjson.Unmarshal(env.Request, &req); err != nil {
		return nil, fmt.Errorf("decode AdmissionReview request: %w", err)
	}
	review.Request = fromV1beta1(&req)
	return review, nil
}

// fromV1beta1 converts a v1beta1 request; the two versions differ only in
// their defaults, not in their fields (TestV1beta1RequestConvertsEveryField
// keeps it that way).
func fromV1beta1(r *admissionv1beta1.AdmissionRequest) *admissionv1.AdmissionRequest {
	return &admissionv1.AdmissionRequest{
		UID:                r.UID,
		Kind:               r.Kind,
		Resource:           r.Resource,
		SubResource:        r.SubResource,
		RequestKind:        r.RequestKind,
		RequestResource:    r.RequestResource,
		RequestSubResource: r.RequestSubResource,
		Name:               r.Name,
		Namespace:          r.Namespace,
		Operation:          admissionv1.Operation(r.Operation),
		UserInfo:           r.UserInfo,
		Object:             r.Object,
		OldObject:          r.OldObject,
		DryRun:             r.DryRun,
		Options:            r.Options,
	}
}

// podTemplateReader decodes an object of one kind into its k8s.io/api type
// with encoding/json and returns the template of the pods it makes (for a
// Pod, the pod itself), or nil if it has none. The webhooks read objects
// through the lean types; these say what is wrong with an object those
// cannot read, and read objects for imagegate audit (PodTemplate).
type podTemplateReader func(raw []byte) (*corev1.PodTemplateSpec, metav1.TypeMeta, error)

// reader adapts a typed accessor to a podTemplateReader.
func reader[T any, PT interface {
	*T
	runtime.Object
}](template func(PT) *corev1.PodTemplateSpec) podTemplateReader {
	return func(raw []byte) (*corev1.PodTemplateSpec, metav1.TypeMeta, error) {
		obj := PT(new(T))
		if err := stdjson.Unmarshal(raw, obj); err != nil {
			return nil, metav1.TypeMeta{}, err
		}
		var meta metav1.TypeMeta // what the object says it is
		if tm, ok := obj.GetObjectKind().(*metav1.TypeMeta); ok {
			meta = *tm
		}
		return template(obj), meta, nil
	}
}

func gvk(k schema.GroupVersionKind) metav1.GroupVersionKind {
	return metav1.GroupVersionKind{Group: k.Group, Version: k.Version, Kind: k.Kind}
}

// kinds are the objects whose pods imagegate can judge. Break-glass
// annotations come from the pod template's metadata, which the resulting
// pods carry, never from the workload's own metadata: a Deployment allowed
// by an annotation its pods lack would only move the denial to its pods.
var kinds = map[metav1.GroupVersionKind]podTemplateReader{
	gvk(corev1.SchemeGroupVersion.WithKind("Pod")): reader(func(p *corev1.Pod) *corev1.PodTemplateSpec {
		return &corev1.PodTemplateSpec{ObjectMeta: p.ObjectMeta, Spec: p.Spec}
	}),
	gvk(corev1.SchemeGroupVersion.WithKind("PodTemplate")): reader(func(t *corev1.PodTemplate) *corev1.PodTemplateSpec { return &t.Template }),
	gvk(corev1.SchemeGroupVersion.WithKind("ReplicationController")): reader(func(rc *corev1.ReplicationController) *corev1.PodTemplateSpec {
		return rc.Spec.Template
	}),
	gvk(appsv1.SchemeGroupVersion.WithKind("Deployment")):  reader(func(d *appsv1.Deployment) *corev1.PodTemplateSpec { return &d.Spec.Template }),
	gvk(appsv1.SchemeGroupVersion.WithKind("ReplicaSet")):  reader(func(r *appsv1.ReplicaSet) *corev1.PodTemplateSpec { return &r.Spec.Template }),
	gvk(appsv1.SchemeGroupVersion.WithKind("StatefulSet")): reader(func(s *appsv1.StatefulSet) *corev1.PodTemplateSpec { return &s.Spec.Template }),
	gvk(appsv1.SchemeGroupVersion.WithKind("DaemonSet")):   reader(func(d *appsv1.DaemonSet) *corev1.PodTemplateSpec { return &d.Spec.Template }),
	gvk(batchv1.SchemeGroupVersion.WithKind("Job")):        reader(func(j *batchv1.Job) *corev1.PodTemplateSpec { return &j.Spec.Template }),
	gvk(batchv1.SchemeGroupVersion.WithKind("CronJob")): reader(func(c *batchv1.CronJob) *corev1.PodTemplateSpec {
		return &c.Spec.JobTemplate.Spec.Template
	}),
}

// knownKinds is said in the message for a kind imagegate cannot read.
const knownKinds = "v1 Pod (also pods/ephemeralcontainers), PodTemplate and ReplicationController, apps/v1 Deployment, ReplicaSet, StatefulSet and DaemonSet, batch/v1 Job and CronJob"

// Input reads what the policy judges in req: its namespace, the images it
// would add and the annotations of the pods it would make. judge is false
// when there is nothing to judge (DELETE, CONNECT, or an UPDATE that adds no
// image). An error means the request cannot be read and must be denied; it
// says what was received.
func Input(req *admissionv1.AdmissionRequest) (in policy.Input, judge bool, err error) {
	judge, err = input(req, objects(req), &in)
	return in, judge, err
}

// object is request.object or request.oldObject: what the lean types read
// in it when the review was decoded with them (see decodeReview), or else
// its bytes (none when it is missing or null).
type object struct {
	raw  []byte
	lean *leanObject
}

// requestObjects are a request's object and old object.
type requestObjects struct{ object, oldObject object }

// objects are the objects of a decoded request, not read yet.
func objects(req *admissionv1.AdmissionRequest) requestObjects {
	if req == nil {
		return requestObjects{}
	}
	return requestObjects{object{raw: req.Object.Raw}, object{raw: req.OldObject.Raw}}
}

// present reports whether the object was sent (and not null).
func (o object) present() bool { return o.lean != nil || len(o.raw) > 0 }

// pod is what imagegate judges of the pods an object would make.
type pod struct {
	images      []policy.Image
	annotations map[string]string
}

// input is Input filling in, with req's objects in objs.
func input(req *admissionv1.AdmissionRequest, objs requestObjects, in *policy.Input) (judge bool, err error) {
	if req == nil {
		return false, errors.New("the AdmissionReview carries no request")
	}
	in.Namespace = req.Namespace
	in.User, in.Groups = req.UserInfo.Username, req.UserInfo.Groups
	switch req.Operation {
	case admissionv1.Delete, admissionv1.Connect:
		return false, nil
	case admissionv1.Create, admissionv1.Update:
	default:
		return false, fmt.Errorf("operation %q is not one imagegate knows (CREATE, UPDATE, DELETE, CONNECT)", req.Operation)
	}
	pick, ok := templates[req.Kind]
	if !ok {
		return false, fmt.Errorf("imagegate cannot read %s (resource %s); it reads %s: remove the resource from the webhook's rules",
			describeKind(req.Kind), describeResource(req), knownKinds)
	}
	current, err := readLean(req, "request.object", objs.object)
	if err != nil {
		return false, err
	}
	p := leanPod(pick, current)
	in.Images, in.Annotations = p.images, p.annotations
	if req.Operation == admissionv1.Update && objs.oldObject.present() {
		old, err := readLean(req, "request.oldObject", objs.oldObject)
		if err != nil {
			return false, err
		}
		in.Images = newImages(in.Images, leanPod(pick, old).images)
		if len(in.Images) == 0 {
			return false, nil
		}
	}
	// A CREATE without images, or an UPDATE without an old object, is judged
	// as it is: the policy denies a pod with no image.
	return true, nil
}

// images lists every image a pod template would pull, in the order the
// kubelet starts them: init containers, containers, ephemeral containers,
// then image volumes.
func images(tmpl *corev1.PodTemplateSpec) []policy.Image {
	if tmpl == nil {
		return nil
	}
	spec := &tmpl.Spec
	out := make([]policy.Image, 0, len(spec.InitContainers)+len(spec.Containers)+len(spec.EphemeralContainers))
	for _, c := range spec.InitContainers {
		out = append(out, policy.Image{Container: c.Name, Source: SourceInitContainer, Ref: c.Image})
	}
	for _, c := range spec.Containers {
		out = append(out, policy.Image{Container: c.Name, Ref: c.Image})
	}
	for _, c := range spec.EphemeralContainers {
		out = append(out, policy.Image{Container: c.Name, Source: SourceEphemeralContainer, Ref: c.Image})
	}
	for _, v := range spec.Volumes {
		if v.Image != nil {
			out = append(out, policy.Image{Container: v.Name, Source: SourceVolume, Ref: v.Image.Reference})
		}
	}
	return out
}

// newImages keeps the images of current whose reference old does not
// already use, wherever old used it.
func newImages(current, old []policy.Image) []policy.Image {
	had := make(map[string]bool, len(old))
	for _, img := range old {
		had[img.Ref] = true
	}
	out := current[:0:0]
	for _, img := range current {
		if !had[img.Ref] {
			out = append(out, img)
		}
	}
	return out
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

// Response is the reply body: an AdmissionReview in the version that was
// sent, carrying only the response. v1beta1's AdmissionResponse has the same
// fields and JSON names as v1's, so one type serves both.
type Response struct {
	APIVersion string                         `json:"apiVersion"`
	Kind       string                         `json:"kind"`
	Response   *admissionv1.AdmissionResponse `json:"response"`
}

// NewResponse renders a decision as the reply to review, echoing its
// apiVersion and request.uid: the apiserver rejects a reply whose uid or
// type does not match what it sent.
func NewResponse(review *admissionv1.AdmissionReview, d *policy.Decision) Response {
	resp := &admissionv1.AdmissionResponse{
		Allowed:          d.Allowed,
		AuditAnnotations: d.AuditAnnotations,
		Warnings:         Warnings(d),
	}
	if review.Request != nil {
		resp.UID = review.Request.UID
	}
	if !d.Allowed {
		resp.Result = &metav1.Status{
			Status:  metav1.StatusFailure,
			Message: d.Reason(),
			Reason:  metav1.StatusReasonForbidden,
			Code:    http.StatusForbidden,
		}
	}
	return Response{APIVersion: review.APIVersion, Kind: Kind, Response: resp}
}

// Warning limits. The apiserver sends each warning as an HTTP Warning
// header and, once their total passes 4096 characters, cuts every one to 256;
// it drops a warning with control characters or invalid UTF-8. imagegate
// stays inside that budget so what kubectl prints is what imagegate wrote:
// at most maxViolationWarnings violations, plus a header and a trailer line,
// of at most maxWarningBytes each.
const (
	maxViolationWarnings = 8
	maxWarningBytes      = 400
)

// Warnings renders what kubectl should show the user about an allowed
// request that did not simply pass: one line per violation in warn mode or
// under break-glass, after a line saying break-glass bypassed the policy.
// Full details are in the audit annotations and imagegate's log.
func Warnings(d *policy.Decision) []string {
	var out []string
	prefix := ""
	switch d.Outcome {
	case policy.OutcomeWarned:
		prefix = "imagegate warn mode, not enforced: "
	case policy.OutcomeBreakGlass:
		out = append(out, "imagegate: break-glass"+ticket(d)+" bypassed the image policy; the override is recorded in the audit log")
		prefix = "imagegate break-glass overrode: "
	case policy.OutcomeAllowed:
		if d.AuditAnnotations[policy.AuditBreakGlass] == "true" {
			out = append(out, "imagegate: break-glass"+ticket(d)+" was requested but every image passes the policy; the request is audited anyway, so consider removing the annotation")
		}
	}
	if prefix != "" {
		for i, v := range d.Violations {
			if i == maxViolationWarnings {
				out = append(out, fmt.Sprintf("imagegate: %d more violations are not shown; see the audit log", len(d.Violations)-i))
				break
			}
			out = append(out, prefix+v.String())
		}
	}
	for i, w := range out {
		out[i] = warningText(w)
	}
	return out
}

func ticket(d *policy.Decision) string {
	if t := d.BreakGlass.Ticket(); t != "" {
		return " (ticket " + t + ")"
	}
	return ""
}

// warningText makes s a warning the apiserver forwards unchanged: valid
// UTF-8, no control characters, at most maxWarningBytes.
func warningText(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return unicode.ReplacementChar
		}
		return r
	}, strings.ToValidUTF8(s, string(unicode.ReplacementChar)))
	if len(s) <= maxWarningBytes {
		return s
	}
	n := maxWarningBytes - len("...")
	for n > 0 && !isRuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// Review decodes body and judges it with p, returning the input it judged,
// the decision and the reply to encode. An error means body is not an
// AdmissionReview and deserves a 400; everything else, including a request
// imagegate cannot read, is an answer.
func Review(p *policy.Policy, body []byte) (policy.Input, policy.Decision, Response, error) {
	var in policy.Input
	var d policy.Decision
	resp, err := ReviewInto(p, body, &in, &d)
	return in, d, resp, err
}

// ReviewInto is Review for a server: it fills the caller's in and d instead
// of returning them. Each HTTP/2 request runs on a new goroutine whose stack
// starts small, and every frame holding its own copy of them on the way up
// is stack that goroutine grows into by copying what it has, which costs
// more than the whole decoding.
//
// It reads the review and its objects in one pass (see decodeReview).
func ReviewInto(p *policy.Policy, body []byte, in *policy.Input, d *policy.Decision) (Response, error) {
	review, objs, err := decodeReview(body)
	if err != nil {
		return Response{}, err
	}
	judge, err := input(review.Request, objs, in)
	switch {
	case err != nil:
		*d = p.Refuse(in.Namespace, err.Error())
	case judge:
		*d = p.Evaluate(*in)
	default:
		*d = p.Pass(in.Namespace)
	}
	return NewResponse(review, d), nil
}

// Refuse answers an AdmissionReview that imagegate could not read whole
// (it is larger than the server reads, or arrived while the server was at
// its memory budget) from the start of its body, where the apiserver
// writes the version and the request's uid and namespace: a denial saying
// why, in the version sent, so the apiserver gets a verdict rather than an
// error its failurePolicy would resolve. ok is false when the start of the
// body is not an AdmissionReview's with a uid.
func Refuse(p *policy.Policy, prefix []byte, why string, d *policy.Decision) (resp Response, ok bool) {
	review, ok := sniff(prefix)
	if !ok {
		return Response{}, false
	}
	*d = p.Refuse(review.Request.Namespace, why)
	return NewResponse(review, d), true
}

// sniff reads what a reply needs from the start of a review's body.
func sniff(prefix []byte) (*admissionv1.AdmissionReview, bool) {
	head := wirejson.Sniff(prefix, "apiVersion", "kind", "request.uid", "request.namespace")
	if checkType(metav1.TypeMeta{APIVersion: head["apiVersion"], Kind: head["kind"]}) != nil || head["request.uid"] == "" {
		return nil, false
	}
	return &admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: head["apiVersion"], Kind: Kind},
		Request:  &admissionv1.AdmissionRequest{UID: types.UID(head["request.uid"]), Namespace: head["request.namespace"]},
	}, true
}

// PodTemplate decodes raw, an object of kind k, and returns the template of
// the pods it makes (for a Pod, the pod itself) and every image those pods
// would pull, in the order the kubelet starts them. ok is false for a kind
// imagegate cannot read. It is what the webhook judges, for callers that
// judge objects read elsewhere (imagegate audit).
func PodTemplate(k metav1.GroupVersionKind, raw []byte) (tmpl *corev1.PodTemplateSpec, imgs []policy.Image, ok bool, err error) {
	read, ok := kinds[k]
	if !ok {
		return nil, nil, false, nil
	}
	tmpl, _, err = read(raw)
	if err != nil {
		return nil, nil, true, err
	}
	return tmpl, images(tmpl), true, nil
}
