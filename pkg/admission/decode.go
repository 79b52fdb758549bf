package admission

import (
	"bytes"
	stdjson "encoding/json"
	"errors"
	"fmt"
	"io"

	admissionv1 "k8s.io/api/admission/v1"
	admissionv1beta1 "k8s.io/api/admission/v1beta1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagegate/imagegate/pkg/wirejson"
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
