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
	"errors"

	"github.com/imagegate/imagegate/pkg/wirejson"

	admissionv1 "k8s.io/api/admission/v1"
	admissionv1beta1 "k8s.io/api/admission/v1beta1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// Input reads what the policy judges in req: its namespace, the images it
// would add and the annotations of the pods it would make. judge is false
// when there is nothing to judge (DELETE, CONNECT, or an UPDATE that adds no
// image). An error means the request cannot be read and must be denied; it
// says what was received.
func Input(req *admissionv1.AdmissionRequest) (in policy.Input, judge bool, err error) {
	judge, err = input(req, objects(req), &in)
	return in, judge, err
}

// input is Input filling in, with req's objects in objs.
func input(req *admissionv1.AdmissionRequest, objs requestObjects, in *policy.Input) (judge bool, err error) {
	if req != nil {
		in.Namespace = req.Namespace
		in.User, in.Groups = req.UserInfo.Username, req.UserInfo.Groups
	}
	r, judge, err := readRequest(req, objs, "webhook")
	if r.images != nil { // the object was read
		in.Images, in.Annotations = r.pod()
	}
	return judge, err
}

// ReadObject reads raw, an object of kind k in namespace, as the validating
// webhook reads a CREATE of it: the images its pods would pull, in the
// order the kubelet starts them, and their annotations. It is what the
// webhook judges, for callers that judge objects read elsewhere (imagegate
// audit). ok is false for a kind imagegate does not read; an error says
// what is wrong with the object.
func ReadObject(k metav1.GroupVersionKind, namespace string, raw []byte) (in policy.Input, ok bool, err error) {
	if kinds[k] == nil {
		return in, false, nil
	}
	_, err = input(&admissionv1.AdmissionRequest{Kind: k, Namespace: namespace, Operation: admissionv1.Create}, requestObjects{object: object{raw: raw}}, &in)
	// The object's own fault, without the webhook's words for which field
	// of the request it is.
	if inner := errors.Unwrap(err); inner != nil {
		err = inner
	}
	return in, true, err
}

// Review decodes body and judges it with p, filling in with the input it
// judged and d with the decision, and returns the reply to encode. An
// error means body is not an AdmissionReview and deserves a 400;
// everything else, including a request imagegate cannot read, is an answer.
//
// It fills the caller's in and d rather than returning them: each HTTP/2
// request runs on a new goroutine whose stack starts small, and every frame
// holding its own copy of them on the way up is stack that goroutine grows
// into by copying what it has, which costs more than the whole decoding.
//
// It reads the review and its objects in one pass (see decodeReview).
func Review(p *policy.Policy, body []byte, in *policy.Input, d *policy.Decision) (Response, error) {
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
