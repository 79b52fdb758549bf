// Package audit judges what already runs in a cluster: it reads what
// `kubectl get pods,deployments,statefulsets,daemonsets,jobs,cronjobs -A -o
// json` prints (a List, a typed list such as PodList, or a single object)
// and reports every container whose image the policy finds a violation in,
// so an operator can see what enforcing a policy would refuse before turning
// it on.
package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/imagegate/imagegate/pkg/admission"
	"github.com/imagegate/imagegate/pkg/policy"
)

// Finding is one violation of one container's image.
type Finding struct {
	Namespace string `json:"namespace"`
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	// Container names the container; Source says what it is when not a
	// plain container ("init container", "ephemeral container", "volume").
	Container string `json:"container"`
	Source    string `json:"source,omitempty"`
	Image     string `json:"image"`
	// Rule is the check violated (registry, latest-tag, ...) and PolicyRule
	// the policy rule that judged the namespace.
	Rule       policy.Rule `json:"rule"`
	PolicyRule string      `json:"policyRule"`
	// Outcome is what the policy would do with the object now: denied, or
	// admitted anyway by warn mode or a break-glass annotation.
	Outcome policy.Outcome `json:"outcome"`
	Reason  string         `json:"reason"`
	// BreakGlassRefused says why the object's break-glass request would be
	// refused, when it has one.
	BreakGlassRefused string `json:"breakGlassRefused,omitempty"`
}

// Report is the result of an audit.
type Report struct {
	// Findings are in input order, then image order, then rule order.
	Findings []Finding `json:"findings"`
	// Objects counts the objects judged, Images the images in them.
	Objects int `json:"objects"`
	Images  int `json:"images"`
	// Skipped counts objects of kinds that run no pods, by kind
	// ("v1 Service").
	Skipped map[string]int `json:"skipped,omitempty"`
	// Policy is the hash of the policy that judged.
	Policy string `json:"policy"`
}

// object is the part of an item read before its kind is known.
type object struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Items []json.RawMessage `json:"items"`
}

// Audit reads kubectl's JSON output from r and judges every pod and pod
// template in it with p.
func Audit(p *policy.Policy, r io.Reader) (*Report, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	rep := &Report{Policy: p.Hash()}
	dec := json.NewDecoder(bytes.NewReader(data))
	for n := 0; ; n++ {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			if n == 0 {
				return nil, errors.New("the input is empty; pipe in `kubectl get pods,deployments,statefulsets,daemonsets,jobs,cronjobs -A -o json`")
			}
			break
		} else if err != nil {
			return nil, fmt.Errorf("the input is not kubectl's JSON output: %w", err)
		}
		if err := rep.add(p, raw, fmt.Sprintf("document %d", n+1)); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

func (rep *Report) add(p *policy.Policy, raw json.RawMessage, where string) error {
	var obj object
	if err := json.Unmarshal(raw, &obj); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	if obj.Kind == "List" || strings.HasSuffix(obj.Kind, "List") || (obj.Kind == "" && obj.Items != nil) {
		for i, item := range obj.Items {
			if err := rep.add(p, item, fmt.Sprintf("%s item %d", where, i)); err != nil {
				return err
			}
		}
		return nil
	}
	gv, err := schema.ParseGroupVersion(obj.APIVersion)
	if err != nil || obj.Kind == "" {
		return fmt.Errorf("%s: an object without a valid apiVersion and kind (%q %q); use kubectl get -o json", where, obj.APIVersion, obj.Kind)
	}
	kind := metav1.GroupVersionKind{Group: gv.Group, Version: gv.Version, Kind: obj.Kind}
	tmpl, images, ok, err := admission.PodTemplate(kind, raw)
	if !ok {
		if rep.Skipped == nil {
			rep.Skipped = map[string]int{}
		}
		rep.Skipped[obj.APIVersion+" "+obj.Kind]++
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %s %s/%s: %w", where, obj.Kind, obj.Metadata.Namespace, obj.Metadata.Name, err)
	}
	rep.Objects++
	rep.Images += len(images)
	in := policy.Input{Namespace: obj.Metadata.Namespace, Images: images}
	if tmpl != nil {
		in.Annotations = tmpl.Annotations
	}
	if len(images) == 0 {
		return nil // a template without containers is not a pod worth reporting
	}
	d := p.Evaluate(in)
	for _, v := range d.Violations {
		rep.Findings = append(rep.Findings, Finding{
			Namespace: obj.Metadata.Namespace, Kind: obj.Kind, Name: obj.Metadata.Name,
			Container: v.Container, Source: v.Source, Image: v.Image,
			Rule: v.Rule, PolicyRule: d.RuleName, Outcome: d.Outcome, Reason: v.Message,
			BreakGlassRefused: d.BreakGlassRefused,
		})
	}
	return nil
}

// WriteTable writes the findings as an aligned table with a header, then a
// summary line.
func (rep *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(rep.Findings) > 0 {
		fmt.Fprintln(tw, "NAMESPACE\tKIND/NAME\tCONTAINER\tIMAGE\tRULE\tOUTCOME\tREASON")
	}
	for _, f := range rep.Findings {
		container := f.Container
		if f.Source != "" {
			container += " (" + f.Source + ")"
		}
		reason := f.Reason
		if f.BreakGlassRefused != "" {
			reason += " (break-glass refused: " + f.BreakGlassRefused + ")"
		}
		fmt.Fprintf(tw, "%s\t%s/%s\t%s\t%s\t%s/%s\t%s\t%s\n", f.Namespace, f.Kind, f.Name, container,
			quoteIfNeeded(f.Image), f.PolicyRule, f.Rule, f.Outcome, reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d finding(s) in %d object(s) with %d image(s), policy %s%s\n",
		len(rep.Findings), rep.Objects, rep.Images, rep.Policy, rep.skippedNote())
	return err
}

func (rep *Report) skippedNote() string {
	if len(rep.Skipped) == 0 {
		return ""
	}
	kinds := make([]string, 0, len(rep.Skipped))
	for k, n := range rep.Skipped {
		kinds = append(kinds, fmt.Sprintf("%d %s", n, k))
	}
	slices.Sort(kinds)
	return "; skipped (no pods): " + strings.Join(kinds, ", ")
}

// quoteIfNeeded quotes an image with spaces or control characters, so a
// hostile reference cannot break the table.
func quoteIfNeeded(s string) string {
	for _, r := range s {
		if r <= ' ' || r == 0x7f || r == '"' {
			return fmt.Sprintf("%q", s)
		}
	}
	if s == "" {
		return `""`
	}
	return s
}

// WriteJSON writes the report as one indented JSON object.
func (rep *Report) WriteJSON(w io.Writer) error {
	if rep.Findings == nil {
		rep.Findings = []Finding{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}
