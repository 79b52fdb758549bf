package admission

import (
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/imagegate/imagegate/internal/jsonscan"
)

// The member names of admissionv1.AdmissionReview and the structs in it,
// as encoding/json matches them: every one is read or type-checked, so the
// scan accepts only what Decode accepts.
var (
	reviewFields   = jsonscan.NewFields("apiVersion", "kind", "request", "response")
	requestFields  = jsonscan.NewFields("uid", "kind", "resource", "subResource", "requestKind", "requestResource", "requestSubResource", "name", "namespace", "operation", "userInfo", "object", "oldObject", "dryRun", "options")
	gvkFields      = jsonscan.NewFields("group", "version", "kind")
	gvrFields      = jsonscan.NewFields("group", "version", "resource")
	userInfoFields = jsonscan.NewFields("username", "uid", "groups", "extra")
)

// scanReview reads an AdmissionReview body of either version in one pass:
// the request's fields that Input and NewResponse use, its objects through
// the lean types, and everything else checked as encoding/json would check
// it, so that the object is not scanned three times (the body, the
// request, the object) and nothing is read by reflection. ok is false for
// anything it does not read exactly as Decode would, including every body
// Decode rejects and objects the lean types cannot read: the caller then
// takes that path, which says what was wrong.
//
// The request it returns has only the fields Input and NewResponse read,
// and objects that are slices of body.
func scanReview(body []byte) (review *admissionv1.AdmissionReview, objs requestObjects, ok bool) {
	s := jsonscan.New(body)
	review = new(admissionv1.AdmissionReview)
	for o := s.Object(reviewFields); o.Next(); {
		switch o.Name() {
		case "apiVersion":
			review.APIVersion = s.ReadString()
		case "kind":
			review.Kind = s.ReadString()
		case "request":
			if s.Null() {
				break
			}
			review.Request = new(admissionv1.AdmissionRequest)
			objs = scanRequest(&s, body, review.Request)
		case "response":
			// The apiserver never sends one; encoding/json would check
			// its status, patch and the rest.
			if !s.Null() {
				s.Stop()
			}
		default:
			s.Skip()
		}
	}
	if !s.End() || checkType(review.TypeMeta) != nil {
		return nil, requestObjects{}, false
	}
	return review, objs, true
}

func scanRequest(s *jsonscan.Scanner, body []byte, req *admissionv1.AdmissionRequest) (objs requestObjects) {
	for o := s.Object(requestFields); o.Next(); {
		switch o.Name() {
		case "uid":
			req.UID = types.UID(s.ReadString())
		case "kind":
			req.Kind = scanGVK(s)
		case "resource":
			req.Resource = scanGVR(s)
		case "subResource":
			req.SubResource = s.ReadString()
		case "namespace":
			req.Namespace = s.ReadString()
		case "operation":
			req.Operation = admissionv1.Operation(s.ReadString())
		case "userInfo":
			for o := s.Object(userInfoFields); o.Next(); {
				switch o.Name() {
				case "username":
					req.UserInfo.Username = s.ReadString()
				case "groups":
					req.UserInfo.Groups = s.ReadStrings()
				case "uid":
					s.SkipString()
				case "extra":
					for o := s.Object(nil); o.Next(); {
						s.SkipStrings()
					}
				default:
					s.Skip()
				}
			}
		case "object":
			objs.object = scanObject(s, body)
		case "oldObject":
			objs.oldObject = scanObject(s, body)
		case "requestKind":
			checkStringFields(s, gvkFields)
		case "requestResource":
			checkStringFields(s, gvrFields)
		case "requestSubResource", "name":
			s.SkipString()
		case "dryRun":
			s.ReadBool()
		case "options":
			s.Skip() // a RawExtension: any JSON
		default:
			s.Skip()
		}
	}
	return objs
}

// scanObject reads request.object or request.oldObject through the lean
// types. A null one is missing, as it is to runtime.RawExtension.
func scanObject(s *jsonscan.Scanner, body []byte) object {
	if s.Null() {
		return object{}
	}
	start := s.ValueStart()
	lean := scanLeanObject(s)
	return object{raw: body[start:s.Offset()], lean: lean}
}

func scanGVK(s *jsonscan.Scanner) (k metav1.GroupVersionKind) {
	for o := s.Object(gvkFields); o.Next(); {
		switch o.Name() {
		case "group":
			k.Group = s.ReadString()
		case "version":
			k.Version = s.ReadString()
		case "kind":
			k.Kind = s.ReadString()
		default:
			s.Skip()
		}
	}
	return k
}

func scanGVR(s *jsonscan.Scanner) (r metav1.GroupVersionResource) {
	for o := s.Object(gvrFields); o.Next(); {
		switch o.Name() {
		case "group":
			r.Group = s.ReadString()
		case "version":
			r.Version = s.ReadString()
		case "resource":
			r.Resource = s.ReadString()
		default:
			s.Skip()
		}
	}
	return r
}

// checkStringFields checks a struct of string fields, or null, without
// reading it.
func checkStringFields(s *jsonscan.Scanner, fields *jsonscan.Fields) {
	for o := s.Object(fields); o.Next(); {
		if o.Name() == "" {
			s.Skip()
		} else {
			s.SkipString()
		}
	}
}
